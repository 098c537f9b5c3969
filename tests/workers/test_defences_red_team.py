"""What the defences v2 red team broke, each as the attack it ran (SECURITY.md, "Defences
v2 red team"), on PostgreSQL through the inbound use case."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from shared.rules.phones import destination_verdict
from shared.store.rollups import NEW_SENDERS, minute_of
from tests.workers.defences import NOW, block_numbers, judge, senders
from workers import signals
from workers.replay.scenarios import SLOGANS

PLAIN = SLOGANS[2]  # "Tous sur ce numero, forum 18-25 represente, on va vous ruiner"
CAMOUFLAGE = {
    "mark inside each word": lambda text: " ".join(
        word[:2] + "." + word[2:] if len(word) > 3 else word for word in text.split()),
    "digit inside each word": lambda text: " ".join(
        word[:2] + "2" + word[2:] if len(word) > 3 else word for word in text.split()),
    "space inside each word": lambda text: " ".join(
        word[:2] + " " + word[2:] if len(word) > 3 else word for word in text.split()),
    "words shuffled": lambda text: " ".join(random.Random(text).sample(text.split(),
                                                                         len(text.split()))),
    "eight random words appended": lambda text: text + " soleil genre voiture bref lol jpp "
                                                       "grave aled",
}


@pytest.fixture(autouse=True)
def _fresh_baselines():
    signals._baselines.clear()
    yield
    signals._baselines.clear()


def _answered(number: str, texts: list[str], seed: int) -> int:
    return judge([(raider, text) for raider, text in zip(senders(len(texts), seed), texts,
                                                          strict=True)], number, NOW
                 ).count("reply")


def test_disguised_slogans_answer_no_more_raiders_than_the_plain_one(db, campaign):
    numbers = [campaign(f"3370000000{index}") for index in range(len(CAMOUFLAGE) + 1)]
    plain = _answered(numbers[0], [PLAIN] * 300, 1)
    assert plain <= 30, "the raid is seen once it passes its threshold"
    for (kind, disguise), number in zip(CAMOUFLAGE.items(), numbers[1:], strict=True):
        answered = _answered(number, [disguise(PLAIN)] * 300, 2)
        assert answered <= plain + 15, f"{kind}: {answered} of 300 answered, plain {plain}"


def test_foreign_numbers_the_gate_refuses_do_not_teach_the_campaign_its_normal(db, campaign):
    """The gate stops their replies; counted as normal they raised the raid threshold
    for free (105 of 110 raiders answered after, against 28)."""
    number = campaign()
    rng, belgians = random.Random(3), []
    while len(belgians) < 40:
        candidate = f"324{rng.randrange(70, 100)}{rng.randrange(10**6):06d}"
        if destination_verdict(candidate, "32470000000") is None:
            belgians.append(candidate)
    judge([(belgian, "Salut, tu viens ce soir ?") for belgian in belgians], number,
          NOW - timedelta(days=1))
    series = {row["series"] for row in db.execute("SELECT series FROM traffic_rollups")}
    assert NEW_SENDERS not in series and "inbound" not in series


def test_a_raids_own_first_senders_never_count_as_normal(db, campaign):
    number = campaign()
    judge([(raider, f"message numero {index} pour toi")
           for index, raider in enumerate(senders(100, 4))], number, NOW)
    [row] = db.execute("SELECT SUM(value) AS n FROM traffic_rollups WHERE series = %s"
                       " AND minute = %s", (NEW_SENDERS, minute_of(NOW))).fetchall()
    assert row["n"] < 15, "only while the campaign was calm (under half the raid threshold)"


def test_raiders_cannot_make_their_own_slogan_usual(db, campaign):
    """A SIM farm pasting a slogan with no insult: its first raiders, answered before the
    raid was seen, made the slogan 'usual' and the rest got through (79 of 100)."""
    number = campaign()
    slogan = "les kheys debarquent sur ta ligne ce soir"
    primers = senders(25, 5)
    judge([(primer, slogan) for primer in primers], number, NOW - timedelta(hours=3))
    farm = block_numbers(100, 6, "3367123")
    verdicts = judge([(raider, slogan) for raider in farm], number, NOW)
    assert verdicts.count("reply") <= 30
    assert db.execute("SELECT COUNT(DISTINCT day) AS days FROM usual_texts").fetchone()[
        "days"] < 3, "priming within hours is not usual (usual_text_days = 3)"


def test_a_raider_caught_in_the_burst_is_not_answered_once_it_is_over(db, campaign):
    """Raiders send 3 to 5 messages over two hours: those suppressed as the raid peaked
    were answered for a later one, once the new senders fell under the threshold (313
    answered of 1,000 disguised raiders, against 256 plain, before they were held)."""
    number = campaign()
    raiders = senders(60, 7)
    verdicts = judge([(raider, SLOGANS[0]) for raider in raiders], number, NOW)
    caught = [raider for raider, verdict in zip(raiders, verdicts, strict=True)
              if verdict == "suppress"]
    assert len(caught) >= 25
    later = judge([(raider, "t'es la ? reponds sale feministe") for raider in caught],
                  number, NOW + timedelta(hours=1))
    assert later == ["block"] * len(caught)
