"""gunicorn settings of the `web` process (Procfile). Read by `gunicorn --config`."""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Vonage waits 15 s for an answer; a request stuck longer than this is killed.
timeout = 20
graceful_timeout = 20
# No access log: GET webhooks carry the sender's number in the query string, and
# CONTRACT.md forbids raw numbers in logs. The app logs each rejection without it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
# Build the app (and its broker and database clients) in each worker, after the fork.
preload_app = False
