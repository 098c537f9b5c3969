"""The adversarial scenarios of issue 12 (workers/replay/data/, variants.py) have the shape
their descriptions announce, the same for a seed; the storm report's per-class figures and
cap overshoot, on small synthetic results. Plain functions: no server."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from itertools import pairwise

import pytest

from shared.rules.phones import destination_verdict
from shared.rules.skeleton import fold
from workers.replay import variants
from workers.replay.report import cap_overshoot, class_figures, summary
from workers.replay.runner import StormResult
from workers.replay.scenarios import (
    SLOGANS,
    TimedWebhook,
    is_malicious,
    load_scenario,
    scenario_names,
    timeline,
)

CAMPAIGN = "33700000001"
NEW = ("obfuscated-raid", "surge-plus-raid", "pumping", "slow-drip", "sim-farm")
START = datetime(2017, 10, 1, tzinfo=UTC)
HOUR = 3600


@cache
def webhooks_of(name: str, seed: int = 2017) -> tuple[TimedWebhook, ...]:
    return tuple(timeline(load_scenario(name), CAMPAIGN, seed, START))


def messages_of(name: str, role: str) -> dict[str, list[TimedWebhook]]:
    """number -> its distinct messages (Vonage's resends left out), in time order."""
    seen: set[str] = set()
    by_number: dict[str, list[TimedWebhook]] = defaultdict(list)
    for webhook in webhooks_of(name):
        if webhook.role == role and webhook.params["messageId"] not in seen:
            seen.add(webhook.params["messageId"])
            by_number[webhook.params["msisdn"]].append(webhook)
    return by_number


def squash(text: str) -> str:
    """Letters and digits only: what is left once spaces and punctuation are removed."""
    return "".join(char for char in text if char.isalnum())


@pytest.mark.parametrize("name", NEW)
def test_each_adversarial_scenario_ships_documented_and_loads(name):
    spec = load_scenario(name)
    assert name in scenario_names()
    assert len(spec["description"]) > 200, "says what it is and what it tests"
    assert {group["class"] for group in spec["classes"]} & {"ordinary", "surge"}
    assert any(is_malicious(group["class"]) for group in spec["classes"])


@pytest.mark.parametrize("name", NEW)
def test_each_adversarial_scenario_is_the_same_for_a_seed_and_differs_across_seeds(name):
    def first(seed: int) -> list[tuple[float, str, dict[str, str]]]:
        return [(w.at, w.role, w.params) for w in webhooks_of(name, seed)[:300]]

    assert first(7) == [(w.at, w.role, w.params) for w in
                        timeline(load_scenario(name), CAMPAIGN, 7, START)[:300]]
    assert first(7) != first(8)


def test_obfuscated_raid_is_octobre_2017_with_every_raid_message_respelled():
    plain, respelled = webhooks_of("octobre-2017"), webhooks_of("obfuscated-raid")
    assert [(w.at, w.role, w.params["msisdn"]) for w in plain] == \
        [(w.at, w.role, w.params["msisdn"]) for w in respelled], "same senders and times"
    pairs = [(a.params["text"], b.params["text"]) for a, b in zip(plain, respelled,
                                                                   strict=True)
             if a.role == "raider"]
    assert all(text != twin for twin, text in pairs)
    assert not {text for _, text in pairs} & set(SLOGANS), "no raider sends a plain slogan"
    folded_back = sum(squash(fold(text)) == squash(twin) for twin, text in pairs)
    assert 0.3 * len(pairs) < folded_back < 0.7 * len(pairs), folded_back
    assert len({text for _, text in pairs}) > 0.8 * len(pairs), "hardly any two alike"
    raiders = messages_of("obfuscated-raid", "raider")
    assert len(raiders) == 1000
    assert all(3 <= len(sent) <= 5 for sent in raiders.values())
    assert all(sent[0].at >= 30 * HOUR and sent[-1].at <= 32 * HOUR + 20 * 60
               for sent in raiders.values()), "within two hours (and 20 minutes)"


def test_surge_plus_raid_has_5000_new_people_greeting_in_30_minutes_and_a_raid():
    surge, raiders = messages_of("surge-plus-raid", "surge"), messages_of("surge-plus-raid",
                                                                         "raider")
    assert len(surge) == 5000 and len(raiders) == 1000
    assert not set(surge) & set(raiders)
    assert all(1 <= len(sent) <= 2 for sent in surge.values())
    assert all(HOUR <= sent[0].at <= 1.5 * HOUR for sent in surge.values())
    assert all(HOUR <= sent[0].at <= 1.5 * HOUR for sent in raiders.values())
    greetings = Counter(w.params["text"].rstrip(" !?.😊😂") for sent in surge.values()
                        for w in sent)
    bare = {greeting.rstrip(" !?.") for greeting in variants.SURGE_GREETINGS}
    assert set(greetings) <= bare
    assert greetings.most_common(1)[0][1] > 300, "the same short texts by the hundred"
    assert load_scenario("surge-plus-raid")["budget"]["hourly"] == "500"


def test_pumping_numbers_are_all_refused_by_the_destination_gate():
    pumpers, ordinary = messages_of("pumping", "pumper"), messages_of("pumping", "ordinary")
    assert len(pumpers) == 10_000 and len(ordinary) == 200
    reasons = Counter(destination_verdict(number, CAMPAIGN) for number in pumpers)
    assert None not in reasons
    assert not [reason for reason in reasons if reason.endswith("invalid number")]
    assert {"destination not allowed: premium rate", "destination not allowed: shared cost",
            "destination not allowed: country LV"} <= set(reasons)
    assert all(destination_verdict(number, CAMPAIGN) is None for number in ordinary)


def test_slow_drip_sends_one_message_every_10_minutes_for_24_hours():
    drippers = messages_of("slow-drip", "dripper")
    assert len(drippers) == 50
    for sent in drippers.values():
        assert len(sent) == 144
        gaps = [b.at - a.at for a, b in pairwise(sent)]
        assert all(540 <= gap <= 660 for gap in gaps)
        assert sent[-1].at <= 24 * HOUR
        texts = [w.params["text"] for w in sent]
        assert len(set(texts)) > 50, "varied insults"


def test_sim_farm_numbers_come_from_two_blocks_of_ten_thousand():
    farm = messages_of("sim-farm", "farm")
    assert len(farm) == 500
    blocks = Counter(number[:-variants.BLOCK_DIGITS] for number in farm)
    assert len(blocks) == 2 and min(blocks.values()) > 100
    assert all(destination_verdict(number, CAMPAIGN) is None for number in farm)
    assert all(1 <= len(sent) <= 4 for sent in farm.values())
    assert all(10 * HOUR <= sent[0].at <= 11 * HOUR for sent in farm.values())
    texts = Counter(w.params["text"] for sent in farm.values() for w in sent)
    assert len(texts) > 200 and texts.most_common(1)[0][1] < 20, "varied insults"


def test_look_alikes_and_invisibles_fold_to_the_latin_letter():
    for latin, look_alikes in variants.LOOK_ALIKES.items():
        assert all(fold(char) == latin for char in look_alikes), latin
    assert all(fold(f"a{char}b") == "ab" for char in variants.INVISIBLES)


def test_every_respelling_differs_and_the_character_tricks_fold_back():
    rng = random.Random(5)
    drawn = [(slogan, variants.obfuscate(slogan, rng)) for slogan in SLOGANS
             for _ in range(400)]
    assert {kind for _, variant in drawn for kind in variant.kinds} == set(variants.KINDS)
    assert any(len(variant.kinds) == 2 for _, variant in drawn), "mixed per message"
    for slogan, variant in drawn:
        assert variant.text != slogan
        if set(variant.kinds) <= variants.FOLDABLE:
            assert squash(fold(variant.text)) == squash(slogan), variant
            if "spacing" not in variant.kinds and "punctuation" not in variant.kinds:
                assert fold(variant.text) == slogan, "no space or mark was added"
        if variant.kinds == ("rotation",):
            assert variant.text in variants.ROTATIONS
        if variant.kinds == ("appended",):
            extra = variant.text.removeprefix(slogan + " ").split(" ")
            assert variant.text.startswith(slogan) and set(extra) <= set(variants.RANDOM_WORDS)
        if variant.kinds == ("leet",):
            assert len(variant.text) == len(slogan)
            assert all(a == b or b in variants.LEET[a.lower()]
                       for a, b in zip(slogan, variant.text, strict=True))


# --- the report (workers/replay/runner.py) -----------------------------------------------

def _at(hour: int, minute: int = 0) -> float:
    return START.replace(hour=hour, minute=minute).timestamp()


def synthetic() -> StormResult:
    """Three ordinary senders (answered once, never, queued but never sent), two of a surge
    (once, twice), two raiders (one answered) and a pumper (never answered)."""
    result = StormResult(speed=1, started=_at(0), finished=_at(5))
    result.senders = {"o1": "ordinary", "o2": "ordinary", "o3": "ordinary", "s1": "surge",
                      "s2": "surge", "r1": "raider", "r2": "raider", "p1": "pumper"}
    result.messages.update({"ordinary": 4, "surge": 3, "raider": 8, "pumper": 2})
    result.delivered.update(result.messages)
    result.acked.update(result.messages)
    result.unsent = {"o3"}
    result.replies = [{"to": to, "price": "0.08", "at": _at(hour)}
                      for to, hour in (("o1", 1), ("s1", 1), ("s2", 2), ("s2", 3), ("r1", 1))]
    return result


def test_report_counts_answered_once_suppressed_and_malicious_per_class():
    figures = class_figures(synthetic())
    ordinary, surge, raider = figures["ordinary"], figures["surge"], figures["raider"]
    assert (ordinary.once, ordinary.never, ordinary.waiting) == (1, 2, 1)
    assert (surge.once, surge.never, surge.replies) == (1, 0, 3)
    assert (raider.replies, raider.spend, raider.per_message) == (1, Decimal("0.08"),
                                                                  Decimal("0.01"))
    assert figures["pumper"].never == 1

    rows, lines = summary(synthetic())
    assert rows[0][7:] == ["answered once", "never answered", "EUR per message"]
    assert rows[-1][0] == "all" and rows[-1][7:9] == ["3", "4"]
    assert "spend per malicious message: 0.00800 EUR" in lines[1]
    assert "ordinary senders answered exactly once: 1/3 (33.3%)" in lines
    assert "surge senders answered exactly once: 1/2 (50.0%)" in lines
    assert ("legitimate senders suppressed (never answered, false positives): 1; 1 more "
            "queued but never sent (caps or a halt)") in lines
    assert "malicious messages answered: 1 of 10" in lines


def test_cap_overshoot_is_the_spend_beyond_a_cap_in_one_period():
    result = synthetic()
    assert cap_overshoot(result) == (Decimal(0), ""), "no cap"
    result.caps = {"hour": 0.24, "day": 1.0, "total": 10.0}
    assert cap_overshoot(result) == (Decimal(0), ""), "three replies in hour 1 fit 0.24"
    result.caps["hour"] = 0.20
    assert cap_overshoot(result) == (Decimal("0.04"), "hour 2017-10-01 01:00 UTC")
    result.caps = {"total": 0.30}
    assert cap_overshoot(result) == (Decimal("0.10"), "total all")
    assert summary(result)[1][-1] == "cap overshoot: 0.1000 EUR (total all)"


def test_cap_overshoot_counts_days_in_the_campaigns_time_zone():
    # 23:30 UTC on 1 October and 00:30 UTC on 2 October: two days in UTC, one in Paris
    # (01:30 and 02:30 on 2 October).
    late = (START + timedelta(hours=23, minutes=30)).timestamp()
    result = StormResult(speed=1, started=_at(0), caps={"day": 0.10})
    result.senders = {"a": "ordinary", "b": "ordinary"}
    result.replies = [{"to": "a", "price": "0.08", "at": late},
                      {"to": "b", "price": "0.08", "at": late + HOUR}]
    assert cap_overshoot(result)[0] == 0, "two UTC days"
    result.zone = "Europe/Paris"
    assert cap_overshoot(result) == (Decimal("0.06"), "day 2017-10-02 00:00 CEST")
