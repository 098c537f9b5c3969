"""Logging set-up shared by every process: one line per event, to stdout, no raw numbers."""

from __future__ import annotations

import logging
import sys

# Libraries that would print a raw number at DEBUG (request bodies, query strings): they
# never log below WARNING here, whatever LOG_LEVEL says.
QUIET_LOGGERS = ("vonage_http_client", "urllib3", "werkzeug")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
