"""`GET /status`: a read-only page for operators without Grafana.

HTTP Basic, user `operator`, password `STATUS_PASSWORD`; the route answers 404 while that
variable is unset. Per campaign: state, spend against each cap, inbound by verdict, replies
by status, top reasons and a 24-hour chart; then a decision log filterable by verdict with
plain GET parameters. A sender appears only as a short pseudonym, a message never by its
text (both are private, and the texts are harassment). Every change stays in the CLI: the
page has no action.

The reasons it shows hold attacker-chosen words (lexicon matches), so everything is
autoescaped, the Content-Security-Policy allows no script at all (only the page's own
stylesheet, by nonce, and the chart as a data: PNG), and parameters are checked against
known sets before any query: a bad one is a 400 that does not echo it.
"""

from __future__ import annotations

import base64
import hmac
import io
import secrets
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, current_app, render_template, request

from shared.rules.money import euros
from shared.rules.phones import is_phone_number
from shared.store.status_page import (
    BUCKET,
    BUCKETS,
    LOG_LIMIT,
    REPLY_STATUSES,
    VERDICTS,
    Traffic,
    status_page,
)

bp = Blueprint("status", __name__, template_folder="templates")
USER = "operator"
# Nothing may run, load or frame; the page's one stylesheet carries the request's nonce.
POLICY = ("default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; form-action 'self';"
          " frame-ancestors 'none'; base-uri 'none'")
COLOURS = {"reply": "#2e7d32", "suppress": "#ef8f00", "block": "#c62828",
           "answered": "#1a237e", "spend": "#5c6bc0"}


@bp.get("/status")
def status() -> Response:
    password = current_app.extensions["relous.settings"].status_password
    if not password:
        abort(404)
    if not _authorised(password):
        return _plain("authentication required\n", 401, {
            "WWW-Authenticate": 'Basic realm="anti-relous status", charset="UTF-8"'})
    verdict = request.args.get("verdict") or None
    if verdict is not None and verdict not in VERDICTS:
        return _plain(f"verdict must be one of: {', '.join(VERDICTS)} (or empty for all)\n",
                      400)
    campaign = request.args.get("campaign") or None
    if campaign is not None and not is_phone_number(campaign):
        return _plain("campaign must be a campaign's number (E.164 digits)\n", 400)
    now = datetime.now(UTC)
    with current_app.extensions["relous.database"].transaction() as tx:
        page = status_page(tx, now, campaign, verdict)
    if campaign is not None and campaign not in page.numbers:
        return _plain("no campaign answers on that number\n", 400)
    nonce = secrets.token_urlsafe(18)
    html = render_template(
        "status.html", page=page, verdict=verdict, campaign=campaign, nonce=nonce,
        verdicts=VERDICTS, statuses=REPLY_STATUSES, euros=euros, limit=LOG_LIMIT,
        charts={c.number: chart(c.traffic) for c in page.campaigns},
        now=now.strftime("%Y-%m-%d %H:%M:%S"))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = POLICY.format(nonce=nonce)
    return response


@bp.after_request
def _protect(response: Response) -> Response:
    """Every answer of this blueprint: not cached, not framed, not sniffed, no referrer."""
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _authorised(password: str) -> bool:
    """User and password compared in constant time, both always."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode(), USER.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), password.encode())
    return user_ok and password_ok


def _plain(text: str, code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status=code, mimetype="text/plain", headers=headers or {})


def chart(traffic: Traffic) -> str | None:
    """The campaign's last 24 hours as a data: PNG (inbound per 15 minutes by verdict,
    replies gone out, spend); None when there was neither traffic nor spend. Filled
    steps, not bars, and a fixed layout: about 70 ms a chart."""
    if not any(map(any, traffic.buckets.values())) and not any(traffic.spend):
        return None
    # Imported here: only this page draws, and the Figure API needs no pyplot state, so
    # concurrent requests in one process draw safely.
    from matplotlib.dates import DateFormatter, HourLocator, date2num
    from matplotlib.figure import Figure

    edges = date2num([traffic.start + BUCKET * index for index in range(BUCKETS + 1)])
    figure = Figure(figsize=(10, 3.8), dpi=100)
    figure.subplots_adjust(left=0.07, right=0.99, top=0.97, bottom=0.12, hspace=0.08)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    stacked = [0] * BUCKETS
    for verdict in VERDICTS:
        upper = [a + b for a, b in zip(stacked, traffic.buckets.get(verdict, stacked),
                                       strict=True)]
        top.stairs(upper, edges, baseline=stacked, fill=True, label=verdict,
                   color=COLOURS[verdict])
        stacked = upper
    top.stairs(traffic.answered, edges, color=COLOURS["answered"], linewidth=1.4,
               label="replies gone out (by message time)")
    top.set_ylabel("inbound / 15 min")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", fontsize=8, ncols=4, frameon=False)
    top.grid(axis="y", alpha=0.3)
    bottom.stairs([float(value) for value in traffic.spend], edges, fill=True,
                  color=COLOURS["spend"])
    bottom.set_ylabel("EUR / 15 min")
    bottom.set_ylim(bottom=0)
    bottom.grid(axis="y", alpha=0.3)
    bottom.xaxis.set_major_locator(HourLocator(interval=3, tz=UTC))
    bottom.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=UTC))
    bottom.set_xlim(edges[0], edges[-1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
