"""Traffic scenarios: the 2017 attacks, the adversarial ones and ordinary senders, as
lists of inbound webhooks.

Deterministic for a seed, so that a replay can be repeated and compared. Used by the
integration tests, by `relous storm` and by bench/cost.py. A scenario file
(workers/replay/data/NAME.json) has a `description`, `duration_hours`, `retry_ratio` and
`retry_copies` (Vonage's resends), an optional `budget` (the caps bench/cost.py gives the
campaign, EUR per period) and `classes`, each with:
- `class`: who the senders are; `ordinary` and `surge` are real people (LEGITIMATE),
  every other class is malicious;
- `senders`, `messages` ([fewest, most] per sender), `start_hours` (each sender begins at
  a uniform time in this range) and `spread_minutes` (its messages fall uniformly within
  this span of its start), or `interval_minutes` (one message every so often, give or
  take `jitter_seconds`);
- `texts`: `ordinary`, `flood`, `raid` (the 2017 slogans), `obfuscated` (the same slogans
  respelled, workers/replay/variants.py), `greeting` (what a TV-mention surge types) or
  `insult` (varied insults);
- `numbers` (optional): `mobile` (French mobiles, the default), `pumping` (premium-rate and
  foreign ranges the destination gate refuses) or `blocks` (`blocks` blocks of 10,000
  consecutive numbers, a SIM farm).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from shared.rules.phones import destination_verdict
from shared.rules.segments import non_gsm_characters
from workers.replay import variants

GREETINGS = ("Salut", "Coucou", "Bonsoir", "Hey", "Bonjour", "Re", "Yo", "Hello")
NAMES = ("Julie", "Sarah", "Camille", "Léa", "Manon", "Inès", "Chloé", "Emma", "Lucie",
         "Clara", "Anaïs", "Marie", "Zoé", "Jade", "Louise", "Alice", "Nina", "Eva")
ASKS = ("on se voit quand", "tu fais quoi ce soir", "pourquoi tu réponds pas",
        "c'était sympa hier", "tu es rentrée", "je passe te prendre à quelle heure",
        "t'as eu mon message", "tu viens samedi", "on boit un verre", "ça va depuis")
TAILS = ("?", " ?", " !", "...", " :)", " ;)", "", " stp")
SLOGANS = (
    "RAID sur ce faux numero de merde, spammez tous !",
    "On vous spam jusqu'a ce que vous payez bande de feministes",
    "Tous sur ce numero, forum 18-25 represente, on va vous ruiner",
    "JVC est la, spammez ce numero de merde",
)
FLOOD_TEXTS = ("Réponds", "Réponds !!!", "allo", "REPONDS SALOPE", "pk tu reponds pas")


@dataclass
class Scenario:
    """Webhooks to post, in order, and who sent them, by role."""

    webhooks: list[dict[str, str]] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # number -> flooder/raider/ordinary

    def numbers(self, role: str) -> list[str]:
        return [number for number, kind in self.roles.items() if kind == role]


def _number(rng: random.Random, used: set[str]) -> str:
    """A French mobile number in an allocated range (the destination gate answers no
    other), distinct from the ones already used."""
    while True:
        number = f"33{rng.choice('67')}{rng.randrange(10**8):08d}"
        if number not in used and destination_verdict(number, number) is None:
            used.add(number)
            return number


def _ordinary_text(rng: random.Random) -> str:
    return (f"{rng.choice(GREETINGS)} {rng.choice(NAMES)}, {rng.choice(ASKS)}"
            f"{rng.choice(TAILS)}")


def replay_2017(to: str, *, flooders: int = 5, flood_messages: int = 1000, raiders: int = 300,
                raid_messages: int = 4, ordinary: int = 500, retry_ratio: float = 0.03,
                seed: int = 2017) -> Scenario:
    """Floods, a forum raid and ordinary senders, interleaved; some webhooks retried."""
    rng = random.Random(seed)
    used: set[str] = set()
    scenario = Scenario()
    streams: list[list[tuple[str, str]]] = []
    for _ in range(flooders):
        number = _number(rng, used)
        scenario.roles[number] = "flooder"
        streams.append([(number, rng.choice(FLOOD_TEXTS)) for _ in range(flood_messages)])
    for _ in range(raiders):
        number = _number(rng, used)
        scenario.roles[number] = "raider"
        streams.append([(number, rng.choice(SLOGANS)) for _ in range(raid_messages)])
    for _ in range(ordinary):
        number = _number(rng, used)
        scenario.roles[number] = "ordinary"
        streams.append([(number, _ordinary_text(rng)) for _ in range(rng.randint(1, 3))])
    messages = _interleave(rng, streams)
    timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    for index, (number, text) in enumerate(messages):
        scenario.webhooks.append({
            "msisdn": number, "to": to, "messageId": f"R{seed}-{index:06d}", "text": text,
            "type": "text", "keyword": text.split(" ")[0].upper()[:20],
            "message-timestamp": timestamp,
        })
    retried = rng.sample(range(len(scenario.webhooks)), int(len(scenario.webhooks) * retry_ratio))
    for index in sorted(retried, reverse=True):
        # Vonage resends a webhook a little later: somewhere after the original.
        position = rng.randint(index + 1, len(scenario.webhooks))
        scenario.webhooks.insert(position, dict(scenario.webhooks[index]))
    return scenario


def _interleave(rng: random.Random, streams: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Merge streams at random while keeping each sender's own order."""
    order = [index for index, stream in enumerate(streams) for _ in stream]
    rng.shuffle(order)
    cursors = [0] * len(streams)
    merged = []
    for index in order:
        merged.append(streams[index][cursors[index]])
        cursors[index] += 1
    return merged


# --- scenario files (workers/replay/data/*.json), for `relous storm` ---------------------

@dataclass(frozen=True)
class TimedWebhook:
    """One inbound webhook, `at` seconds into the scenario, sent by a sender of `role`."""

    at: float
    role: str
    params: dict[str, str]


def scenario_names() -> list[str]:
    folder = resources.files("workers.replay") / "data"
    return sorted(entry.name.removesuffix(".json") for entry in folder.iterdir()
                  if entry.name.endswith(".json"))


def load_scenario(name: str) -> dict:
    """A scenario's description (see workers/replay/data/); KeyError for an unknown one."""
    if name not in scenario_names():
        raise KeyError(name)
    return json.loads((resources.files("workers.replay") / "data" / f"{name}.json")
                      .read_text())


LEGITIMATE = ("ordinary", "surge")


def is_malicious(role: str) -> bool:
    """Every class but real people's: what the report prices per malicious SMS."""
    return role not in LEGITIMATE


TextMaker = Callable[[random.Random], str]


def text_makers(seed: int) -> dict[str, TextMaker]:
    """The text generators a class may name. `obfuscated` draws the slogan from the
    scenario's generator, as `raid` does, and respells it with a generator of its own: with
    the same classes, an obfuscated scenario has the same senders, times and slogans as
    its plain twin, only the texts differ."""
    respelling = random.Random(f"variants-{seed}")
    return {"flood": lambda rng: rng.choice(FLOOD_TEXTS), "raid": lambda rng: rng.choice(SLOGANS),
            "ordinary": _ordinary_text, "greeting": variants.greeting,
            "insult": variants.insult,
            "obfuscated": lambda rng: variants.obfuscate(rng.choice(SLOGANS), respelling).text}


def _sender_times(group: dict[str, Any], rng: random.Random) -> list[float]:
    """When one sender of `group` texts, in seconds from the scenario's start."""
    first_hour, last_hour = group["start_hours"]
    begin = rng.uniform(first_hour, last_hour) * 3600
    count = rng.randint(*group["messages"])
    if "interval_minutes" in group:
        interval, jitter = group["interval_minutes"] * 60, group.get("jitter_seconds", 0)
        return sorted(max(0.0, begin + index * interval + rng.uniform(-jitter, jitter))
                      for index in range(count))
    spread = group["spread_minutes"] * 60
    return sorted(begin + rng.uniform(0, spread) for _ in range(count))


def _number_maker(group: dict[str, Any], rng: random.Random, used: set[str],
                  to: str) -> Callable[[], str]:
    """Where the senders of `group` text from (see the module's docstring)."""
    kind = group.get("numbers", "mobile")
    if kind == "pumping":
        return lambda: variants.pumping_number(rng, used, to)
    if kind == "blocks":
        prefixes = variants.block_prefixes(rng, group["blocks"])
        return lambda: variants.block_number(rng, used, prefixes)
    return lambda: _number(rng, used)


def timeline(spec: dict, to: str, seed: int = 2017,
             start: datetime | None = None) -> list[TimedWebhook]:
    """Every webhook of a scenario with its time, in time order; retries included."""
    rng = random.Random(seed)
    used: set[str] = set()
    start = start or datetime.now(UTC)
    texts = text_makers(seed)
    events: list[tuple[float, str, str, str]] = []
    for group in spec["classes"]:
        number_of = _number_maker(group, rng, used, to)
        for _ in range(group["senders"]):
            number = number_of()
            for at in _sender_times(group, rng):
                events.append((at, group["class"], number, texts[group["texts"]](rng)))
    events.sort(key=lambda event: event[0])
    webhooks = []
    for index, (at, role, number, text) in enumerate(events):
        params = {
            "msisdn": number, "to": to, "messageId": f"S{seed}-{index:07d}", "text": text,
            # As Vonage labels it: `unicode` when a character is outside GSM-7.
            "type": "text" if not non_gsm_characters(text) else "unicode",
            "keyword": text.split(" ")[0].upper()[:20],
            "message-timestamp": (start + timedelta(seconds=at)).strftime("%Y-%m-%d %H:%M:%S"),
        }
        webhooks.append(TimedWebhook(at, role, params))
        if rng.random() < spec.get("retry_ratio", 0):
            low, high = spec.get("retry_copies", [2, 2])
            for _ in range(rng.randint(low, high) - 1):
                webhooks.append(TimedWebhook(at + rng.uniform(5, 600), role, dict(params)))
    webhooks.sort(key=lambda webhook: webhook.at)
    return webhooks
