"""SMS encoding and segment counting (GSM 03.38 / UCS-2).

Vonage does not detect the encoding: the sender must set `type=unicode` when any
character is outside GSM-7, and each extra segment is billed. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = "^{}\\[~]|€\f"
_BASIC = frozenset(GSM7_BASIC)
_EXTENDED = frozenset(GSM7_EXTENDED)


@dataclass(frozen=True)
class Encoding:
    """How a text goes out: `type` for Vonage, the segments it costs, and why."""

    vonage_type: str
    segments: int
    units: int
    non_gsm_characters: tuple[str, ...]

    @property
    def name(self) -> str:
        return "GSM-7" if self.vonage_type == "text" else "UCS-2"


def non_gsm_characters(text: str) -> tuple[str, ...]:
    """Characters that force UCS-2, in order of first appearance."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in _BASIC and char not in _EXTENDED:
            seen.setdefault(char, None)
    return tuple(seen)


def encode(text: str) -> Encoding:
    """Encoding, length in units and segment count of `text`."""
    outside = non_gsm_characters(text)
    if outside:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
        vonage_type = "unicode"
    else:
        units = sum(2 if char in _EXTENDED else 1 for char in text)
        single, multi = 160, 153
        vonage_type = "text"
    segments = 1 if units <= single else -(-units // multi)
    return Encoding(vonage_type, segments, units, outside)
