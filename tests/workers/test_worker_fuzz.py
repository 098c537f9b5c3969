"""Hostile input on the worker path: property-based fuzzing of `process_inbound` (hypothesis).

Every payload `parse_inbound` accepts (long texts, every Unicode category, parts of
concatenated SMS and their refs, duplicated message ids), mixed with raw payloads the web
never produces (missing keys, wrong types, NUL, lone surrogates, not even a dict), goes
through the real batch into PostgreSQL. Each message is recorded, or waits as a part, or is
a duplicate, or is parked (sealed): never dropped, never requeued while the database is up,
never taking its batch-mates down; and the call returns.

`RELOUS_FUZZ_EXAMPLES=5000` runs more examples than the default (read in the test).
"""

from __future__ import annotations

import json
import os
import random
import string
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from celery_batches import SimpleRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.settings import Settings
from shared.store.campaigns import add_campaign
from shared.store.db import database_for
from shared.vault import unseal
from shared.vonage.webhooks import MAX_TEXT_LENGTH, InvalidField, parse_inbound
from tests.helpers import TABLES, batch_request, inbound
from workers import tasks
from workers.parking import DONE

DEFAULT_EXAMPLES = 200
MAX_CALL_SECONDS = 30.0
CAMPAIGN, OTHER_NUMBER = "33700000001", "33700000002"
# A few senders, so that parts and repetitions of one sender meet in a batch.
SENDERS = ("33612345601", "33612345602", "447700900123", "123456", "999999999999999")
REFS = ("A1", "a1", "R-2", "x.y:z", "0" * 64)
# Valid, at datetime's limits (parts once overflowed `at ± PART_WINDOW`), or refused.
TIMESTAMPS = ("2026-05-01 12:00:00", "1970-01-01 00:00:00", "0001-01-01 00:00:00",
              "0001-01-01 00:09:59", "9999-12-31 23:59:59", "2026-02-30 00:00:00",
              "yesterday", "2026-05-01T12:00:00")
MAX_KEY_LENGTH = 100  # shared/store/parked.py: a parked row keeps the key's first 100 chars


def _long_text(kind: str, length: int, seed: int) -> str:
    """A long text, built from a seed (hypothesis' buffer would not hold 4,000 code points)."""
    chooser = random.Random(seed)
    if kind == "letters":  # hard to compress: the fingerprint's btree entry attack
        return "".join(chooser.choice(string.ascii_letters) for _ in range(length))
    if kind == "any":  # any code point of any plane, surrogates aside (refused by the web)
        points = (chooser.randrange(0x110000) for _ in range(length))
        return "".join(chr(p) if not 0xD800 <= p <= 0xDFFF else "\ufffd" for p in points)
    if kind == "expanding":  # NFKC makes each of these many characters long
        return "".join(chooser.choice("\ufdfa\ufdfb\u3392\u2474\ufb03\u0390")
                       for _ in range(length))
    if kind == "combining":
        return "a" + "".join(chooser.choice("\u0301\u0327\u20dd\u0489") for _ in range(length - 1))
    if kind == "emoji":
        return "".join(chooser.choice(["\U0001F600", "\U0001F469\u200d\U0001F4BB", "\u2764\ufe0f",
                                       "\U0001F1EB\U0001F1F7"]) for _ in range(length // 4))
    return chooser.choice("zZ \u00e9\u0645\u4e2d") * length  # the same character, repeated


TEXTS = st.one_of(
    st.text(max_size=160),  # every category but surrogates (st.characters' default)
    st.text(st.characters(codec=None, categories=["Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp",
                                                  "Mn", "Me", "Sk", "So"]), max_size=80),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=10),
    st.builds(_long_text, st.sampled_from(["letters", "any", "expanding", "combining",
                                           "emoji", "repeat"]),
              st.one_of(st.integers(1000, MAX_TEXT_LENGTH),
                        st.sampled_from([MAX_TEXT_LENGTH, MAX_TEXT_LENGTH + 1])),
              st.integers(0, 2**32)),
    st.sampled_from(["", " ", "STOP", "stop stop stop", "\u200b", "\x00", "a\x00b", "\ud800x"]),
)


@st.composite
def webhook_fields(draw: st.DrawFn, index: int, earlier: list[dict[str, str]]) -> dict[str, str]:
    """Vonage's inbound fields, mostly valid; `earlier`: this batch's fields so far."""
    base = f"M{index:02d}"
    style = draw(st.sampled_from(["plain"] * 4 + ["odd", "long", "same-id", "copy", "invalid"]))
    if style in ("copy", "same-id") and not earlier:
        style = "plain"
    if style == "copy":  # the same webhook twice (Vonage retries)
        return dict(draw(st.sampled_from(earlier)))
    message_id = {
        "plain": base,
        # ':' (hence `concat:<id>`, a reassembled SMS's key) is refused by the web: see
        # test_a_message_id_shaped_like_an_assembled_key_cannot_take_its_place.
        "odd": base + draw(st.sampled_from(".-_")) + draw(
            st.from_regex(r"\A[A-Za-z0-9._:-]{0,20}\Z")),
        "long": (base + "." + "9" * 64)[:64],
        "invalid": draw(st.sampled_from([base + "!", base + " ", "", "x" * 65, base + "\u00e9"])),
    }.get(style, "")
    if style == "same-id":  # another message with an id already used
        message_id = draw(st.sampled_from(earlier))["messageId"]
    fields = {
        "msisdn": draw(st.one_of(st.sampled_from(SENDERS), st.from_regex(r"\A[1-9][0-9]{5,14}\Z"),
                                 st.sampled_from(["", "+33612345601", "0612"]))),
        "to": draw(st.sampled_from([CAMPAIGN] * 5 + [OTHER_NUMBER])),
        "messageId": message_id[:64] if style != "invalid" else message_id,
        "type": draw(st.sampled_from(["text", "text", "unicode", "binary", "", "wap"])),
        "api-key": "k",
    }
    if draw(st.booleans()) or fields["type"] != "binary":
        fields["text"] = draw(TEXTS)
    if draw(st.booleans()):
        fields["keyword"] = draw(st.text(max_size=120))
    if draw(st.booleans()):
        fields["message-timestamp"] = draw(st.sampled_from(TIMESTAMPS))
    if draw(st.integers(0, 2)) == 0:
        total = draw(st.integers(1, 5))
        fields.update({"concat": draw(st.sampled_from(["true", "TRUE", "True"])),
                       "concat-ref": draw(st.sampled_from(REFS)),
                       "concat-total": str(total),
                       "concat-part": str(draw(st.integers(1, total + 1)))})
    return fields


def _accepted(fields: dict[str, str]) -> dict[str, Any] | None:
    """The payload the web would publish for these fields, or None when it refuses them."""
    try:
        return parse_inbound(fields).to_payload()
    except InvalidField:
        return None


ODD_VALUES = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(),
                       st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                            st.integers(),
                                                                            max_size=2),
                       st.text(max_size=20), st.just("x" * 150))

ODD_IDS = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(),
                    st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                    st.just("x" * 150), st.sampled_from(["A\x00B", "A\ud800B"]),
                    st.text(max_size=20))


@st.composite
def raw_payload(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    """A payload `parse_inbound` would never produce, made from a valid one."""
    payload = dict(valid)
    how = draw(st.sampled_from(["missing", "extra", "wrong-type", "nul-text", "surrogate-text",
                                "not-a-dict", "odd-id"]))
    if how == "missing":
        del payload[draw(st.sampled_from(sorted(payload)))]
    elif how == "extra":
        payload[draw(st.sampled_from(["sig", "messageId", "unexpected"]))] = "1"
    elif how == "wrong-type":
        field = draw(st.sampled_from(["text", "msisdn", "to", "type", "keyword",
                                      "concat_part", "concat_total", "concat_ref",
                                      "message_timestamp"]))
        payload[field] = draw(ODD_VALUES)
    elif how == "odd-id":
        payload["message_id"] = draw(ODD_IDS)
    elif how == "nul-text":
        payload["text"] = str(payload["text"]) + "\x00"
    elif how == "surrogate-text":
        payload["text"] = "\ud83d" + str(payload["text"])
    else:
        return draw(st.one_of(st.text(max_size=20), st.integers(), st.none(),
                              st.lists(st.text(max_size=5), max_size=3)))
    return payload


def _raw_request(payload: Any, task_id: str) -> SimpleRequest:
    """An inbound task as celery-batches hands it over, with any payload at all."""
    return SimpleRequest(id=task_id, name="relous.process_inbound", args=(payload,),
                         kwargs={}, delivery_info={}, hostname="test", ignore_result=True,
                         reply_to=None, correlation_id=None, request_dict={})


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, Any, SimpleRequest]]:
    """1 to 20 requests: (\"valid\", payload, request) or (\"raw\", payload, request)."""
    size = draw(st.integers(1, 20))
    earlier: list[dict[str, str]] = []
    batch: list[tuple[str, Any, SimpleRequest]] = []
    for index in range(size):
        fields = draw(webhook_fields(index, earlier))
        payload = _accepted(fields)
        if payload is None:
            continue  # the web answered 400: it never reaches a worker
        earlier.append(fields)
        if draw(st.sampled_from(["valid"] * 7 + ["raw"])) == "raw":
            raw = draw(raw_payload(payload))
            batch.append(("raw", raw, _raw_request(raw, f"task-{index}")))
        else:
            batch.append(("valid", payload, batch_request(fields)))
    return batch


def _reset(db) -> None:
    db.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        # A reply is never due at once: no send task is published to the test broker.
        add_campaign(tx, CAMPAIGN, "Laissez-la tranquille.", delay_seconds=3600,
                     window_seconds=30 * 86400, price_per_segment=Decimal("0.0333"),
                     allow_multipart=False, now=datetime.now(UTC))


def _keys(db, sql: str) -> set[str]:
    return {row["key"] for row in db.execute(sql).fetchall()}


def _check_batch(db, batch: list[tuple[str, Any, SimpleRequest]], statuses: Any,
                 evidence_key: str) -> None:
    assert statuses == [DONE] * len(batch), f"statuses {statuses}: the database is up"
    rows = db.execute("SELECT m.dedup_key, m.text, EXISTS (SELECT 1 FROM inbound_parts p"
                      " WHERE p.inbound_message_id = m.id) AS assembled"
                      " FROM inbound_messages m").fetchall()
    recorded = {row["dedup_key"]: row for row in rows}
    parts = {row["key"]: row for row in db.execute(
        "SELECT provider_message_id AS key, inbound_message_id FROM inbound_parts").fetchall()}
    parked = {row["message_key"]: row for row in db.execute(
        "SELECT message_key, payload, error FROM parked_messages").fetchall()}
    ids = [payload.get("message_id") if isinstance(payload, dict) else None
           for _, payload, _ in batch]
    texts: dict[Any, set[str]] = {}
    for payload, message_id in zip((payload for _, payload, _ in batch), ids, strict=True):
        if isinstance(message_id, str):  # the text of any message with this id, raw or not
            texts.setdefault(message_id, set()).add(str(payload.get("text")))
    # Raw ids of other types are stored in PostgreSQL's text form (42, {1,2}, true...):
    # counted, not named.
    unnamed = 0
    for (kind, payload, request), message_id in zip(batch, ids, strict=True):
        keys = {str(request.id)[:MAX_KEY_LENGTH]}
        if message_id is not None:
            keys.add(str(message_id)[:MAX_KEY_LENGTH])
        if kind == "raw":  # recorded (under its id) or parked (under its id or task id)
            if keys & parked.keys():
                continue
            if isinstance(message_id, str):
                assert message_id in recorded or message_id in parts, \
                    f"raw payload lost: {payload!r}"
            else:
                assert isinstance(payload, dict) and message_id is not None, \
                    f"unreadable payload not parked: {payload!r}"
                unnamed += 1
            continue
        duplicated = ids.count(message_id) > 1
        row = recorded.get(message_id)
        # Its own row: not the assembly of parts, and the text of a message with its id.
        own_row = row is not None and not row["assembled"] and row["text"] in texts[message_id]
        if payload["to"] != CAMPAIGN or payload["concat_ref"] is None:
            found = own_row or (duplicated and message_id in parts)
        else:
            found = message_id in parts or (duplicated and own_row)
        if not found and message_id in parked:
            raise AssertionError(f"a valid payload was parked ({parked[message_id]['error']}):"
                                 f" {payload!r}")
        assert found, f"neither recorded, kept as a part, a duplicate nor parked: {payload!r}"
    named = {i for i in ids if isinstance(i, str)}
    strays = [key for key in recorded if key not in named and key.removeprefix("concat:")
              not in parts] + [key for key in parts if key not in named]
    assert len(strays) <= unnamed, f"rows of no message of the batch: {strays!r}"
    for key, row in parked.items():
        assert any(key in (str(i)[:MAX_KEY_LENGTH], str(r.id)[:MAX_KEY_LENGTH])
                   for i, (_, _, r) in zip(ids, batch, strict=True)), f"unexpected park {key!r}"
        opened = unseal(row["payload"], evidence_key)  # sealed: it opens with the key only
        json.loads(opened)
        for _, payload, _ in batch:
            msisdn = str(payload.get("msisdn", "")) if isinstance(payload, dict) else ""
            if len(msisdn) >= 10:  # shorter runs of digits occur in base64 by chance
                assert msisdn not in row["payload"], "a sender's number parked in clear"
            if len(msisdn) >= 6:
                assert msisdn not in row["error"], "a sender's number in a parked error"


def test_every_accepted_payload_is_recorded_or_parked_never_lost_or_looping(db):
    examples = int(os.environ.get("RELOUS_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
    evidence_key = Settings.from_env().evidence_key

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture,
                                     HealthCheck.filter_too_much])
    @given(batch=batches().filter(bool))
    def fuzz(batch: list[tuple[str, Any, SimpleRequest]]) -> None:
        _reset(db)
        started = time.monotonic()
        statuses = tasks.process_inbound([request for _, _, request in batch])
        elapsed = time.monotonic() - started
        assert elapsed < MAX_CALL_SECONDS, f"a batch of {len(batch)} took {elapsed:.1f}s"
        _check_batch(db, batch, statuses, evidence_key)

    fuzz()


# Defects the fuzz found, each pinned by a test; their cases are back in the fuzz.

def _parked_and_recorded(db) -> tuple[dict[str, str], dict[str, str]]:
    parked = {row["message_key"]: row["error"] for row in db.execute(
        "SELECT message_key, error FROM parked_messages").fetchall()}
    recorded = {row["dedup_key"]: row["text"] for row in db.execute(
        "SELECT dedup_key, text FROM inbound_messages").fetchall()}
    return parked, recorded


@pytest.mark.parametrize("stamp", ["0001-01-01 00:00:00", "9999-12-31 23:59:59"])
def test_a_part_stamped_near_datetimes_limits_is_recorded(db, stamp):
    """Found by the fuzz: OverflowError in unassembled_parts (`at - PART_WINDOW`), parked."""
    _reset(db)
    fields = inbound(message_id="EDGE", text="salut", concat="true",
                     **{"concat-ref": "A1", "concat-total": "1", "concat-part": "1",
                        "message-timestamp": stamp})
    assert tasks.process_inbound([batch_request(fields)]) == [DONE]
    parked, recorded = _parked_and_recorded(db)
    assert parked == {} and recorded == {"concat:EDGE": "salut"}


@pytest.mark.parametrize("together", [True, False], ids=["same-batch", "plain-first"])
def test_a_message_id_shaped_like_an_assembled_key_cannot_take_its_place(db, together):
    """Found by the fuzz (and the red team): `messageId=concat:P1` took the key of the
    later 2-part SMS. Ids no longer hold ':' (refused by the web); a payload carrying one
    anyway is parked, and the SMS is recorded whole."""
    _reset(db)
    with pytest.raises(InvalidField):
        parse_inbound(inbound(message_id="concat:P1"))
    payload = parse_inbound(inbound(msisdn="33612345698", message_id="PLAIN",
                                    text="plain")).to_payload() | {"message_id": "concat:P1"}
    plain = _raw_request(payload, "task-plain")
    parts = [batch_request(inbound(msisdn="33612345699", message_id=f"P{n}", text=f"p{n}",
                                   concat="true", **{"concat-ref": "R", "concat-total": "2",
                                                     "concat-part": str(n)}))
             for n in (1, 2)]
    if together:
        assert tasks.process_inbound([plain, *parts]) == [DONE] * 3
    else:
        assert tasks.process_inbound([plain]) == [DONE]
        assert tasks.process_inbound(parts) == [DONE] * 2
    parked, recorded = _parked_and_recorded(db)
    assert list(parked) == ["task-plain"]
    assert sorted(recorded.values()) == ["p1p2"], "the SMS recorded whole"


@pytest.mark.parametrize("message_id", ["A\x00B", "A\ud800B", None, {"a": 1}],
                         ids=["nul", "lone-surrogate", "none", "dict"])
def test_a_raw_payload_with_an_unstorable_message_id_is_parked_alone(db, message_id):
    """Found by the fuzz: as a parked key, NUL was refused (RETRY forever); a lone surrogate,
    None or a dict raised out of record_requests and took the batch down."""
    _reset(db)
    payload = parse_inbound(inbound(msisdn="33612345697", message_id="RAW")).to_payload()
    payload["message_id"] = message_id
    requests = [_raw_request(payload, "task-raw"),
                batch_request(inbound(msisdn="33612345696", message_id="OK"))]
    assert tasks.process_inbound(requests) == [DONE, DONE]
    parked, recorded = _parked_and_recorded(db)
    assert list(recorded) == ["OK"] and len(parked) == 1
