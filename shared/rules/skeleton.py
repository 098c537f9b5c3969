"""Invisible and look-alike characters folded away before any text comparison.

A raid defeats the lexicon and the same-text counts with a U+200B or U+00AD inside a word
or a Cyrillic е/о/с in a Latin one. `fold` strips format characters (category Cf, the
invisible ones) and marks, and maps every non-ASCII character to its Unicode TS #39
prototype (confusables.txt, as shipped by `confusable-homoglyphs`).

Why not a ready-made skeleton: `confusable-homoglyphs` ships the TS #39 data but no
skeleton function, and stores each confusables.txt line both ways (source→prototype and
prototype→source). The direction is recovered from the data itself: a source has exactly
one line, so a non-ASCII character whose only homoglyph is ASCII is a source mapped to that
prototype (the ASCII characters that are sources, m I 0 1, map to ASCII; a test checks it).
ASCII stays as it is: folding 1→l or 0→O would turn the digits the fingerprint drops into
letters.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from confusable_homoglyphs import confusables

_BIDI_MARKS = "\u200e\u200f"  # confusables.json wraps right-to-left characters in them
_HANGUL_FILLERS = "\u115f\u1160\u3164\uffa0"  # Default_Ignorable letters (not Cf): blank


def _strip(text: str) -> str:
    """`text` decomposed (NFKD) without format characters, marks or blank fillers."""
    return "".join(char for char in unicodedata.normalize("NFKD", text)
                   if unicodedata.category(char) not in _DROPPED_CATEGORIES
                   and char not in _HANGUL_FILLERS)


_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Mc", "Me"})


@cache
def prototypes() -> dict[int, str]:
    """Non-ASCII character -> its ASCII TS #39 prototype (for `str.translate`)."""
    data: dict[str, list[dict[str, str]]] = confusables.confusables_data
    table: dict[int, str] = {}
    for key, homoglyphs in data.items():
        char = key.strip(_BIDI_MARKS)
        if len(char) != 1 or char.isascii() or len(homoglyphs) != 1:
            continue
        target = _strip(homoglyphs[0]["c"].strip(_BIDI_MARKS))
        if target and target.isascii():
            # TS #39 folds capital I into l; read case-insensitively, a capital is an I.
            table[ord(char)] = "I" if target == "l" and char.isupper() else target
    return table


def fold(text: str) -> str:
    """`text` with invisibles and marks removed and look-alikes mapped to their prototype.
    ASCII is already folded (no format character, mark or look-alike to map)."""
    if text.isascii():
        return text
    return _strip(_strip(text).translate(prototypes()))
