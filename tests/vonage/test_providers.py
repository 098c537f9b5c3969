"""The vonage provider through the real SDK against the fake Vonage over HTTPS: what each
provider answer means for the bookkeeping (sent, retry, failed, unknown)."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest

from shared.vonage.sms import ConsoleProvider, VonageProvider
from tests.fake_vonage import Behaviour
from tests.helpers import FAKE_VONAGE


@pytest.fixture
def vonage(fake_vonage) -> VonageProvider:
    return VonageProvider(fake_vonage.api_key, fake_vonage.api_secret, FAKE_VONAGE.host,
                          timeout=1)


def test_accepted_send_reports_parts_ids_and_price(vonage, fake_vonage):
    result = vonage.send("33612345621", "33700000001", "Stop.", client_ref="7")
    assert result.outcome == "sent"
    assert [part.message_id for part in result.parts] == fake_vonage.sent[0].message_ids
    assert result.price == Decimal("0.0333") and result.segments == 1
    assert (fake_vonage.sent[0].type, fake_vonage.sent[0].client_ref) == ("text", "7")


def test_text_outside_gsm7_is_sent_as_unicode(vonage, fake_vonage):
    vonage.send("33612345621", "33700000001", "Ça suffit, arrêtez.", client_ref="1")
    assert fake_vonage.sent[0].type == "unicode"


@pytest.mark.parametrize("behaviour, outcome", [
    (Behaviour(status="1"), "retry"),          # throttled
    (Behaviour(status="5"), "retry"),          # internal error
    (Behaviour(http_status=429), "retry"),     # a rate limiter refused it
    (Behaviour(http_status=503, retry_after="5"), "retry"),  # load shed, come back later
    (Behaviour(http_status=401), "retry"),     # credentials fixed later; nothing was sent
    (Behaviour(status="3"), "failed"),         # invalid params
    (Behaviour(status="7"), "failed"),         # number barred
    (Behaviour(status="4"), "failed"),         # bad credentials (status form)
    (Behaviour(delay=2.5), "unknown"),         # timed out after the request left
])
def test_provider_answers_map_to_what_may_happen_next(vonage, fake_vonage, behaviour,
                                                       outcome):
    fake_vonage.script(behaviour)
    result = vonage.send("33612345621", "33700000001", "Stop.", client_ref="1")
    assert result.outcome == outcome, result


@pytest.mark.parametrize("drop", ["sent", "unsent"])
def test_connection_closed_before_the_answer_is_unknown_and_not_posted_again(
        vonage, fake_vonage, drop):
    """The SDK would re-POST on RemoteDisconnected: a second SMS when the first went out."""
    fake_vonage.script(Behaviour(drop=drop))
    result = vonage.send("33612345621", "33700000001", "Stop.", client_ref="1")
    assert (result.outcome, result.reason) == ("unknown", "connection_lost")
    assert fake_vonage.requests == 1
    assert len(fake_vonage.sent) == (1 if drop == "sent" else 0)


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_that_may_follow_processing_is_unknown(vonage, fake_vonage, code):
    """A 500 from Vonage, or a 502/504 (or a 503 without Retry-After, e.g. Envoy's
    "reset before headers") from an edge proxy, may come after Vonage took the SMS."""
    fake_vonage.script(Behaviour(http_status=code))
    result = vonage.send("33612345621", "33700000001", "Stop.", client_ref="1")
    assert (result.outcome, result.reason) == ("unknown", "http_ambiguous"), result
    assert result.error == f"HTTP {code}" and fake_vonage.requests == 1


@pytest.mark.parametrize("part_status, outcome", [
    ("1", "retry"),    # every part throttled: nothing went out
    ("5", "retry"),    # every part an internal error
    ("6", "failed"),   # every part an invalid message
])
def test_multipart_with_every_part_refused_is_classed_like_one_part(
        vonage, fake_vonage, part_status, outcome):
    fake_vonage.script(Behaviour(failed_parts=2, part_status=part_status))
    result = vonage.send("33612345621", "33700000001", "x" * 200, client_ref="1")
    assert fake_vonage.total_price == 0, "the fake sent and billed no part"
    assert [sms.message_ids for sms in fake_vonage.sent] == [[]]
    assert (result.outcome, result.reason) == (outcome, f"status_{part_status}"), result
    assert result.parts == () and result.price == 0


def test_parts_without_message_price_keep_an_unknown_price(vonage, fake_vonage):
    """An unknown price is None, not 0: the ledger settles at the estimate."""
    fake_vonage.script(Behaviour(price=False))
    result = vonage.send("33612345621", "33700000001", "x" * 200, client_ref="1")
    assert result.outcome == "sent" and len(result.parts) == 2
    assert [part.price for part in result.parts] == [None, None]
    assert len(fake_vonage.sent[0].message_ids) == 2


def test_send_result_says_when_its_price_is_unknown(vonage, fake_vonage):
    """`SendResult.price` sums a missing price as 0: the ledger must be told it is unknown."""
    fake_vonage.script(Behaviour(price=False))
    unpriced = vonage.send("33612345621", "33700000001", "Stop.", client_ref="1")
    priced = vonage.send("33612345621", "33700000001", "Stop.", client_ref="2")
    assert (unpriced.price_known, priced.price_known) == (False, True)


def test_partial_failure_without_price_keeps_the_sent_part_unknown(vonage, fake_vonage):
    fake_vonage.script(Behaviour(price=False, failed_parts=1))
    result = vonage.send("33612345621", "33700000001", "x" * 200, client_ref="1")
    assert result.outcome == "sent" and [part.price for part in result.parts] == [None]


def test_partial_failure_keeps_the_parts_that_went_out(vonage, fake_vonage):
    fake_vonage.script(Behaviour(failed_parts=1))
    result = vonage.send("33612345621", "33700000001", "x" * 200, client_ref="1")
    assert result.outcome == "sent"
    assert len(result.parts) == 1 and "partial" in result.error


def test_connection_refused_is_retried_later():
    provider = VonageProvider("k", "s", "127.0.0.1:1", timeout=1)
    assert provider.send("33612345621", "33700000001", "Stop.", client_ref="1").outcome == "retry"


def test_console_provider_masks_the_number_and_spends_nothing():
    stream = io.StringIO()
    result = ConsoleProvider(stream=stream).send("33612345621", "33700000001", "Stop.", "3")
    assert "336••••••21" in stream.getvalue() and "33612345621" not in stream.getvalue()
    assert result.outcome == "sent" and result.price == 0
