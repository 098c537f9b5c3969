"""Segments follow the real split: a GSM-7 escape pair or a UCS-2 surrogate pair never
straddles two parts, so the reservation covers what the provider bills."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.rules.budget import estimate_cost
from shared.rules.segments import encode, split_parts
from shared.rules.templates import check_template, describe

EURO_IN_THE_MIDDLE = "a" * 152 + "€" + "b" * 152      # 306 septets
EMOJI_IN_THE_MIDDLE = "ж" * 66 + "\U0001f600" + "ж" * 66  # 134 UCS-2 units


def _septets(part: str) -> int:
    return sum(2 if char in "^{}\\[~]|€\f" else 1 for char in part)


# --- the undercount ------------------------------------------------------------------------

def test_an_escape_pair_at_a_part_boundary_costs_a_third_part():
    encoding = encode(EURO_IN_THE_MIDDLE)
    assert (encoding.units, encoding.naive_segments, encoding.segments) == (306, 2, 3)
    parts = split_parts(EURO_IN_THE_MIDDLE)
    assert "".join(parts) == EURO_IN_THE_MIDDLE
    assert [_septets(part) for part in parts] == [152, 153, 1]


def test_a_surrogate_pair_at_a_part_boundary_costs_a_third_part():
    encoding = encode(EMOJI_IN_THE_MIDDLE)
    assert (encoding.vonage_type, encoding.units, encoding.segments) == ("unicode", 134, 3)
    units = [len(part.encode("utf-16-le")) // 2 for part in split_parts(EMOJI_IN_THE_MIDDLE)]
    assert units == [66, 67, 1]


def test_the_reservation_is_on_the_real_split():
    assert estimate_cost(EURO_IN_THE_MIDDLE, Decimal("0.07")) == Decimal("0.21")


def test_template_check_reports_the_extra_part():
    report = check_template(EURO_IN_THE_MIDDLE, Decimal("0.07"))
    lines = describe(report)
    assert "segments: 3" in lines and report.cost == Decimal("0.21")
    assert any(line.startswith("split: 3 parts, not 2") for line in lines), lines


# --- the texts that split as before --------------------------------------------------------

@pytest.mark.parametrize("text, segments", [
    ("x" * 306, 2), ("x" * 307, 3), ("€" * 80, 1), ("€" * 81, 2),
    ("a" * 151 + "€" + "b" * 153, 2),             # the pair ends part one exactly
    ("\U0001f600" * 35, 1),                       # 70 units: one part
    ("\U0001f600" * 36, 2),
    ("ê" * 134, 2), ("", 1),
])
def test_texts_without_a_straddling_pair_keep_their_count(text, segments):
    encoding = encode(text)
    assert encoding.segments == segments == encoding.naive_segments
    assert not any(line.startswith("split:")
                   for line in describe(check_template(text, Decimal("0.07"))))
