"""SMS encoding and segment counting (GSM 03.38 / UCS-2).

Vonage does not detect the encoding: the sender must set `type=unicode` when any
character is outside GSM-7, and each extra segment is billed. Pure functions.

A multipart SMS splits on characters, not units: a GSM-7 escape pair (€, [, ...) never
straddles two 153-septet parts and a UCS-2 surrogate pair (emoji) never straddles two
67-unit parts, so a part may end one unit short. Counting units / 153 underestimates
the bill (152 + € + 152 is 306 septets, yet three parts); `encode` counts the real split.
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
    naive_segments: int = 0  # units / part size, what a count that ignores pairs says

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


def _units(char: str, gsm7: bool) -> int:
    if gsm7:
        return 2 if char in _EXTENDED else 1
    return 2 if ord(char) > 0xFFFF else 1


def split_parts(text: str) -> tuple[str, ...]:
    """`text` as the parts a multipart SMS carries: no pair ever straddles two parts."""
    gsm7 = not non_gsm_characters(text)
    single, multi = (160, 153) if gsm7 else (70, 67)
    if sum(_units(char, gsm7) for char in text) <= single:
        return (text,)
    parts: list[str] = []
    start = used = 0
    for index, char in enumerate(text):
        size = _units(char, gsm7)
        if used + size > multi:
            parts.append(text[start:index])
            start, used = index, 0
        used += size
    parts.append(text[start:])
    return tuple(parts)


def encode(text: str) -> Encoding:
    """Encoding, length in units and segment count of `text` (the real split)."""
    outside = non_gsm_characters(text)
    gsm7 = not outside
    units = sum(_units(char, gsm7) for char in text)
    single, multi = (160, 153) if gsm7 else (70, 67)
    naive = 1 if units <= single else -(-units // multi)
    return Encoding("text" if gsm7 else "unicode", len(split_parts(text)), units, outside,
                    naive)
