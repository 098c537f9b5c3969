"""`GET /status`: a read-only page for operators without Grafana.

HTTP Basic, user `operator`, password `STATUS_PASSWORD`; the route answers 404 while that
variable is unset. It shows campaign numbers, counts and money, never a sender's number or
pseudonym. Every change stays in the CLI: the page has no action.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, current_app, render_template_string, request

from shared.store.reports import campaign_overview

bp = Blueprint("status", __name__)
USER = "operator"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anti-relous status</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#eee}</style>
</head><body><h1>anti-relous</h1><p>as of {{ now }} UTC</p>
{% if not campaigns %}<p>No campaign yet: <code>relous campaign add NUMBER --reply TEXT</code></p>
{% else %}<table id="campaigns"><tr><th>campaign</th><th>state</th><th>mode</th>
<th>inbound 1 h</th><th>pending</th><th>sent</th><th>failed</th><th>expired</th>
<th>spent today (EUR)</th><th>caps left (EUR)</th><th>top reasons (24 h)</th></tr>
{% for c in campaigns %}<tr class="campaign"><td>{{ c.number }}</td>
<td>{{ "halted: " ~ c.halted if c.halted else "paused" if c.paused else "active" }}</td>
<td>{{ "STORM" if c.storm_mode else "normal" }}</td>
<td>{{ c.inbound.values()|sum }}</td><td>{{ c.replies.get("pending", 0) }}</td>
<td>{{ c.replies.get("sent", 0) + c.replies.get("delivered", 0) }}</td>
<td>{{ c.replies.get("failed", 0) }}</td><td>{{ c.replies.get("expired", 0) }}</td>
<td>{{ "%.4f"|format(c.budget.day[0] + 0) }}</td>
<td>{% for period, (used, cap) in c.budget.items() if cap is not none %}{{ period }}
{{ "%.2f"|format(cap - used + 0) }}/{{ "%.2f"|format(cap) }} {% else %}no cap{% endfor %}</td>
<td>{% for kind, n in c.top_reasons %}{{ kind }} {{ n }} {% else %}none{% endfor %}</td></tr>
{% endfor %}</table>{% endif %}</body></html>"""


@bp.get("/status")
def status() -> Response | tuple[str, int, dict[str, str]]:
    password = current_app.extensions["relous.settings"].status_password
    if not password:
        abort(404)
    auth = request.authorization
    if auth is None or auth.type != "basic" or not (
            hmac.compare_digest((auth.username or "").encode(), USER.encode())
            & hmac.compare_digest((auth.password or "").encode(), password.encode())):
        return "authentication required\n", 401, {
            "WWW-Authenticate": 'Basic realm="anti-relous status", charset="UTF-8"'}
    now = datetime.now(UTC)
    with current_app.extensions["relous.database"].transaction() as tx:
        campaigns = campaign_overview(tx, now)
    html = render_template_string(PAGE, campaigns=campaigns,
                                  now=now.strftime("%Y-%m-%d %H:%M:%S"))
    return Response(html, mimetype="text/html",
                    headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})
