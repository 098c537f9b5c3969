"""Scenarios and the storm report, as plain functions (no server)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from workers.replay.report import format_table, summary
from workers.replay.runner import StormResult
from workers.replay.scenarios import load_scenario, scenario_names, timeline


def test_every_documented_scenario_ships():
    assert set(scenario_names()) >= {"octobre-2017", "flood", "raid", "retry-storm", "viral",
                                     "obfuscated-raid", "surge-plus-raid", "pumping",
                                     "slow-drip", "sim-farm"}
    for name in scenario_names():
        assert load_scenario(name)["description"]


def test_octobre_2017_has_the_real_shape():
    webhooks = timeline(load_scenario("octobre-2017"), "33700000001", seed=1)
    messages = {w.params["messageId"]: w.role for w in webhooks}
    by_role = Counter(messages.values())
    assert 24_000 <= len(messages) <= 26_000
    assert 15_500 <= by_role["flooder"] + by_role["raider"] <= 16_500
    assert 0.02 <= (len(webhooks) - len(messages)) / len(messages) <= 0.04, "a few % retried"
    assert webhooks[-1].at <= 73 * 3600
    assert [w.at for w in webhooks] == sorted(w.at for w in webhooks)
    numbers = {w.params["msisdn"] for w in webhooks}
    assert len(numbers) == 4 + 1000 + 4500, "distinct numbers per sender"


def test_timelines_are_reproducible_from_their_seed():
    spec = load_scenario("raid")
    first = [(w.at, w.params["msisdn"]) for w in timeline(spec, "33700000001", seed=7)[:50]]
    again = [(w.at, w.params["msisdn"]) for w in timeline(spec, "33700000001", seed=7)[:50]]
    other = [(w.at, w.params["msisdn"]) for w in timeline(spec, "33700000001", seed=8)[:50]]
    assert first == again and first != other


def test_retry_storm_delivers_every_webhook_three_to_five_times():
    webhooks = timeline(load_scenario("retry-storm"), "33700000001", seed=3)
    copies = Counter(w.params["messageId"] for w in webhooks)
    assert set(copies.values()) <= {3, 4, 5} and len(set(copies.values())) > 1


def test_report_counts_per_class_and_spend_per_malicious_message():
    result = StormResult(speed=600, started=0.0, finished=60.0)
    result.senders = {"33611111111": "flooder", "33622222222": "ordinary",
                      "33633333333": "ordinary"}
    result.messages.update({"flooder": 1000, "ordinary": 3})
    result.delivered.update({"flooder": 1030, "ordinary": 3})
    result.acked.update({"flooder": 1030, "ordinary": 3})
    result.replies = [{"to": "33611111111", "price": "0.0333", "at": 1.0},
                      {"to": "33622222222", "price": "0.0333", "at": 2.0}]
    rows, lines = summary(result)
    table = format_table(rows)
    assert table.splitlines()[0].split() == [
        "class", "senders", "messages", "webhooks", "acked", "replies", "spend", "EUR",
        "answered", "once", "never", "answered", "EUR", "per", "message"]
    assert rows[1] == ["flooder", "1", "1000", "1030", "1030", "1", "0.0333", "1", "0",
                       "0.00003"]
    assert rows[2][7:] == ["1", "1", "0.01110"], "one ordinary sender never answered"
    assert "spend per malicious message: 0.00003 EUR" in lines[1]
    assert "answered exactly once: 1/2 (50.0%)" in lines[2]
    assert "false positives): 1" in lines[3]
    assert "malicious messages answered: 1 of 1000" in lines[4]
    assert lines[-1] == "cap overshoot: 0.0000 EUR", "no cap, no overshoot"


@pytest.mark.parametrize("name", ["flood", "viral"])
def test_big_scenarios_have_the_announced_size(name):
    webhooks = timeline(load_scenario(name), "33700000001", seed=2)
    messages = {w.params["messageId"] for w in webhooks}
    expected = {"flood": 100_000, "viral": 50_000}[name]
    assert expected <= len(messages) <= expected * 1.01


@pytest.mark.parametrize("totals", [None, (42, Decimal("3.36"))])
def test_without_per_sender_data_the_report_never_claims_nobody_was_answered(totals):
    """`relous storm --target` with no --provider-log: per class unknown, the service's
    own totals from its /metrics when it could be read, never "0/300 (0.0%)"."""
    result = StormResult(speed=600, started=0.0, finished=60.0, service_totals=totals)
    result.senders = {"33622222222": "ordinary", "33611111111": "raider"}
    result.messages.update({"ordinary": 1, "raider": 4})
    rows, lines = summary(result)
    assert rows[1][5:] == ["?"] * 5 and rows[2][5:] == ["?"] * 5
    text = "\n".join(lines)
    assert "answered exactly once" not in text and "0.0%" not in text
    assert "replies per class: unknown" in text
    if totals:
        assert "the service counted 42 replies sent and 3.3600 EUR spent" in text
    else:
        assert "could not be read" in text


def test_the_service_totals_count_each_reply_once_whatever_its_receipts(tmp_path):
    """A delivery receipt moves a reply already counted `sent` to `delivered` too: the
    totals count `sent` only (adding both counted a delivered reply twice)."""
    import http.server
    import threading

    from workers.replay.runner import read_metrics

    body = (b'relous_replies_total{campaign="33700000001",status="sent"} 3.0\n'
            b'relous_replies_total{campaign="33700000001",status="delivered"} 1.0\n'
            b'relous_spend_euros_total{campaign="33700000001"} 0.24\n'
            b'relous_budget_cap_euros{campaign="33700000001",period="total"} 50.0\n')

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        read = read_metrics(f"http://127.0.0.1:{server.server_port}", "33700000001", None)
    finally:
        server.shutdown()
    assert read == ({"total": 50.0}, (3, Decimal("0.24")))
