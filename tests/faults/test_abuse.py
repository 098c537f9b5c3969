"""Abuse of the service itself: no one can make it text a number of their choice more than
once per reply window, and its HTTP surface is only what CONTRACT.md lists.

An attacker who wants an "SMS cannon" against a third party can replay a genuine signed
webhook, forge one (unsigned, another secret, a tampered field, a stale or future
timestamp), or, since SMS sender ids can be spoofed, have Vonage itself deliver many
genuine messages "from" the victim. Each rejection at the ingest is tested one by one in
tests/test_ingest.py and fuzzed in test_fuzz.py; here the outcome that matters is counted
at the (fake) provider: the SMS the victim receives. The bearer token of /metrics is
tested in tests/test_metrics.py (test client) and test_privacy.py (the real process).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from ingest import create_app
from shared.settings import Settings
from tests.helpers import ROOT, SIGNATURE_SECRET, VHOSTS, inbound, sign, wait_for, wait_until_idle

pytestmark = [pytest.mark.faults]
VHOST = VHOSTS["test"]
VICTIM = "33611110000"
ATTACKER = "33622220000"
CAMPAIGN = "33700000001"
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"


def _app(secret: str | None = SIGNATURE_SECRET):
    settings = Settings.from_env().with_overrides(vonage_signature_secret=secret,
                                                  allow_unsigned_webhooks=secret is None)
    return create_app(settings, configure_logs=False)


def _post_all(app, webhooks: list[dict[str, str]], encoding: str = "form") -> list[int]:
    """Post concurrently (8 at a time), each with its own client; the HTTP statuses."""
    def post(params: dict[str, str]) -> int:
        client = app.test_client()
        if encoding == "query":
            return client.get("/webhooks/inbound", query_string=params).status_code
        if encoding == "json":
            return client.post("/webhooks/inbound", json=params).status_code
        return client.post("/webhooks/inbound", data=params).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, webhooks))


def test_a_replayed_signed_webhook_texts_its_number_once(worker, db, campaign, fake_vonage):
    campaign(CAMPAIGN)
    genuine = sign(inbound(msisdn=VICTIM, message_id="REPLAYED"))
    app = _app()
    codes = [code for encoding in ("form", "query", "json")
             for code in _post_all(app, [genuine] * 20, encoding)]
    assert set(codes) == {200}, "a replay is answered like a retry: 2xx, ignored"
    wait_for(lambda: fake_vonage.sent_to(VICTIM), message="the one reply")
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent_to(VICTIM)) == 1
    assert db.execute("SELECT count(*) AS n FROM inbound_messages").fetchone()["n"] == 1


def test_forged_webhooks_never_text_the_third_party(worker, db, campaign, fake_vonage):
    campaign(CAMPAIGN)
    genuine = sign(inbound(msisdn=ATTACKER, message_id="GENUINE"))
    now = int(time.time())
    forged = [
        inbound(msisdn=VICTIM, message_id="UNSIGNED"),
        sign(inbound(msisdn=VICTIM, message_id="OTHER-SECRET"), secret="guessed-secret"),
        dict(genuine, msisdn=VICTIM),  # the attacker's own signed webhook, re-addressed
        dict(genuine, msisdn=VICTIM, sig=sign(inbound(msisdn=VICTIM))["sig"]),  # sig reused
        sign(inbound(msisdn=VICTIM, message_id="STALE"), timestamp=now - 259200 - 60),
        sign(inbound(msisdn=VICTIM, message_id="FUTURE"), timestamp=now + 3600),
        sign(inbound(msisdn=VICTIM, message_id="MD5"), method="md5"),  # another method
    ]
    app = _app()
    for encoding in ("form", "query", "json"):
        assert _post_all(app, forged * 5, encoding) == [401] * len(forged) * 5
    assert _post_all(app, [genuine]) == [200]
    wait_for(lambda: fake_vonage.sent_to(ATTACKER), message="the attacker's own reply")
    wait_until_idle(VHOST)
    assert fake_vonage.sent_to(VICTIM) == []
    assert len(fake_vonage.sent) == 1


def test_many_genuine_messages_from_one_number_get_one_sms_per_reply_window(
        worker, db, campaign, fake_vonage):
    """Spoofed sender ids reach us as genuine, signed webhooks: the reply window is what
    limits the victim to one SMS, however many messages and however concurrent."""
    campaign(CAMPAIGN)
    app = _app()

    def flood(prefix: str) -> None:
        webhooks = [sign(inbound(msisdn=VICTIM, message_id=f"{prefix}{n}", text=f"Salut {n}"))
                    for n in range(40)]
        assert set(_post_all(app, webhooks)) == {200}
        wait_until_idle(VHOST)

    flood("W1-")
    assert len(fake_vonage.sent_to(VICTIM)) == 1
    # A month later (the window and every rate counter behind us), one more reply, once.
    month = timedelta(days=31)
    db.execute("UPDATE inbound_messages SET received_at = received_at - %s", (month,))
    db.execute("UPDATE senders SET first_seen_at = first_seen_at - %(m)s,"
               " last_seen_at = last_seen_at - %(m)s, blocked_until = NULL,"
               " reply_window_ends_at = %(ended)s",
               {"m": month, "ended": datetime.now(UTC) - timedelta(seconds=1)})
    flood("W2-")
    assert len(fake_vonage.sent_to(VICTIM)) == 2
    assert db.execute("SELECT count(*) AS n FROM inbound_messages").fetchone()["n"] == 80


def test_without_signatures_a_forger_gets_at_most_one_sms_per_number(worker, db, campaign,
                                                                     fake_vonage):
    """SECURITY.md: with signatures off, anyone may post webhooks; still one SMS per number
    and window, and none for a campaign number that does not exist."""
    campaign(CAMPAIGN)
    app = _app(secret=None)
    webhooks = [inbound(msisdn=VICTIM, message_id=f"FORGED{n}", text=f"Texte {n}")
                for n in range(30)]
    webhooks += [inbound(msisdn=VICTIM, to="33799999999", message_id=f"ELSEWHERE{n}")
                 for n in range(5)]
    assert set(_post_all(app, webhooks)) == {200}
    wait_for(lambda: fake_vonage.sent_to(VICTIM), message="the one reply")
    wait_until_idle(VHOST)
    assert len(fake_vonage.sent) == 1
    verdicts = db.execute("SELECT verdict, count(*) AS n FROM inbound_messages"
                          " GROUP BY verdict").fetchall()
    assert {row["verdict"]: row["n"] for row in verdicts}["unroutable"] == 5


def _documented_routes(text: str) -> set[tuple[str, str]]:
    """(method, path) of every row of the first table of the `## HTTP` section."""
    section = text.split("\n## HTTP", 1)[1].split("\n## ", 1)[0]
    routes = set()
    for line in section.splitlines():
        cell = line.split("|")[1] if line.startswith("| `") else ""
        path = re.search(r"\s(/[\w/.-]*)`", cell)
        for method in re.findall(r"`?\b(GET|POST|PUT|PATCH|DELETE)\b", cell):
            routes.add((method, path.group(1)))
    return routes


def test_the_http_surface_is_exactly_the_documented_routes():
    """The admin surface is the CLI: the web serves the webhooks, health, readiness and
    metrics, and nothing else (no admin, debug or static route)."""
    documented = _documented_routes((ROOT / "README.md").read_text())
    if CONTRACT.exists():  # beside the checkout on the dev machines
        assert documented == _documented_routes(CONTRACT.read_text())
    app = _app()
    served = {(method, rule.rule) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented
    assert len(documented) == 8
    client = app.test_client()
    for path in {path for _, path in documented}:
        for method in ("PUT", "PATCH", "DELETE"):
            assert client.open(path, method=method).status_code == 405
    for path in ("/admin", "/static/x", "/api", "/debug", "/console", "/webhooks"):
        assert client.get(path).status_code == 404
