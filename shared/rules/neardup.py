"""Near-duplicate texts for the raid same-text signal: spelling cannot make a raider new.

An exact fingerprint (`abuse.fingerprint`) is dodged by rotating the slogan, spacing or
punctuating its letters, leetspeak or a random word appended. Here a text is reduced to
its `skeleton` (letters only, look-alikes and leetspeak mapped, repeats collapsed), cut
into character shingles, and summarised by MinHash; the signature is cut into bands and
each band hashed to a short key. Two texts that share one key are near-duplicates: the
probability is 1 - (1 - J^ROWS)^BANDS for shingle sets of Jaccard similarity J.

Parameters (measured on the four 2017 slogans, their obfuscations and the ordinary
grammar of workers/replay/scenarios.py; see tests/rules/test_neardup.py):
- SHINGLE = 4 letters. 3-letter shingles are shared by unrelated French ("que", "ous");
  5-letter ones make a dropped word cost too many shingles in a short slogan.
- BANDS × ROWS = 16 × 4 = 64 hashes: threshold (1/16)^(1/4) = 0.50. A slogan with a word
  dropped or two words appended keeps J ≥ 0.59 (shared with probability ≥ 0.87, ≥ 0.99
  from J = 0.7); the slogans among themselves have J ≤ 0.28 (probability ≤ 0.09) and
  ordinary texts J ≤ 0.03 against them (≈ 10^-5). Sixteen keys a message is what the
  database stores (table text_bands); more bands would sharpen the curve at that cost.
- MIN_LETTERS = 12: shorter skeletons ("salut", "coucou ça va") are too short to compare
  and have no key, as `abuse.fingerprint` is "" for them.

Hashes: each shingle is hashed once with SHAKE-128 (fixed prefix), whose 256-byte digest is
read as the 64 independent 32-bit values; the minimum per position is taken in C
(`map(min, zip(*rows))`). No built-in `hash`: keys are the same in every process and
Python version.
"""

from __future__ import annotations

import hashlib
import re
import struct
from functools import cache, lru_cache
from importlib import resources

from shared.rules.skeleton import fold

SHINGLE = 4
BANDS, ROWS = 16, 4
MIN_LETTERS = 12

# Leetspeak, applied after `fold` and lower case: 0→o 1→i 3→e 4→a 5→s 7→t 8→b 9→g @→a $→s
# €→e £→l |→l. Left out: "!" (it ends French sentences: every plain text would gain an
# "i"), "2" and "6" (read as "de", "to" or nothing), "(" and "+" (smileys, sums).
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                      "9": "g", "@": "a", "$": "s", "€": "e", "£": "l", "|": "l"})

_NOT_LETTER = re.compile(r"[^a-z]+")
_REPEATED = re.compile(r"(.)\1+")
_SEED = b"anti-relous/neardup/1:"
_SIGNATURE = struct.Struct(f"<{BANDS * ROWS}I")
_BAND = struct.Struct(f"<{ROWS}I")


# "!" is an "i" only inside a word ("R4!d"): at the end of one it ends a sentence.
_INNER_BANG = re.compile(r"(?<=[^\W_])!(?=[^\W_])")


def unleet(text: str) -> str:
    """`fold`, lower case, then leetspeak read as letters (`LEET`, and "!" inside a word)."""
    return _INNER_BANG.sub("i", fold(text).lower()).translate(LEET)


@lru_cache(maxsize=4096)  # a message's skeleton serves its band keys and the greeting test
def skeleton(text: str) -> str:
    """What is left once spelling is undone: `fold` (invisibles, accents, look-alikes),
    lower case, `LEET` mapped to letters, letters only, each run of a letter kept once.
    "s p a m", "s.p.a.m", "SP4M", "ѕраm" and "spaaam" all give "spam"."""
    letters = _NOT_LETTER.sub("", unleet(text))
    return _REPEATED.sub(r"\1", letters)


@lru_cache(maxsize=4096)
def band_keys(text: str) -> tuple[str, ...]:
    """The MinHash LSH band keys of `text` ("band:8 hex digits"); () when its skeleton is
    shorter than MIN_LETTERS. Texts that share a key are near-duplicates."""
    letters = skeleton(text)
    if len(letters) < MIN_LETTERS:
        return ()
    shingles = {letters[start:start + SHINGLE] for start in range(len(letters) - SHINGLE + 1)}
    rows = [_SIGNATURE.unpack(hashlib.shake_128(_SEED + shingle.encode()).digest(
        _SIGNATURE.size)) for shingle in shingles]
    signature = list(map(min, zip(*rows, strict=True)))
    return tuple(
        f"{band}:" + hashlib.blake2b(_BAND.pack(*signature[band * ROWS:(band + 1) * ROWS]),
                                     digest_size=4).hexdigest()
        for band in range(BANDS))


# The longest lexicon term, in letters, that `joined_pieces` must be able to rebuild.
MAX_TERM_LETTERS = 40


@lru_cache(maxsize=4096)
def joined_pieces(text: str) -> frozenset[str]:
    """Every run of consecutive pieces of `text`, joined, as skeletons: fold, lower case,
    `LEET`, letters only, repeats collapsed. A piece is a run of letters, so a mark, a
    space or a stray digit inside a word ("spa.mmez", "s p a m", "spa2mmez") only cuts it
    in pieces that join back ("spamez"), while a lexicon term still has to start and end
    where the text's words do ("disputer" does not contain "pute")."""
    pieces = _NOT_LETTER.split(unleet(text))
    pieces = [piece for piece in pieces if piece]
    found = set()
    for start in range(len(pieces)):
        joined = ""
        for piece in pieces[start:]:
            joined += piece
            if len(joined) > 2 * MAX_TERM_LETTERS:
                break
            found.add(_REPEATED.sub(r"\1", joined))
    return frozenset(found)


# A short text (a skeleton under MIN_LETTERS) is compared whole: "salut connasse" pasted by
# a raid is the same text to the raid signal, however it is spelt.
MIN_SHORT_LETTERS = 4


@lru_cache(maxsize=4096)
def text_keys(text: str) -> tuple[str, ...]:
    """What the same-text raid signal compares: the band keys of a long enough text and
    of its set of words (`word_band_keys`), one key of the whole skeleton for a short one
    ("short:8 hex digits"), () for a text under MIN_SHORT_LETTERS letters."""
    keys = band_keys(text)
    letters = skeleton(text)
    if keys:
        return keys + word_band_keys(text)
    if len(letters) < MIN_SHORT_LETTERS:
        return ()
    return ("short:" + hashlib.blake2b(letters.encode(), digest_size=4).hexdigest(),)


# Word-set MinHash: the slogan's words in another order, or drowned in appended words,
# are still most of its words. 8 bands × 2 rows: threshold (1/8)^(1/2) ≈ 0.35, so a
# 7-word slogan with 8 random words appended (J ≈ 0.47) shares a key with probability
# 0.86, shuffled (J = 1) always. Words of MIN_WORD_LETTERS or more, as skeletons.
WORD_BANDS, WORD_ROWS, MIN_WORD_LETTERS, MIN_WORDS = 8, 2, 3, 3
_WORD_SIGNATURE = struct.Struct(f"<{WORD_BANDS * WORD_ROWS}I")
_WORD_BAND = struct.Struct(f"<{WORD_ROWS}I")


def word_band_keys(text: str) -> tuple[str, ...]:
    """The MinHash LSH band keys of the set of `text`'s words ("w3:8 hex digits"); () for
    fewer than MIN_WORDS words."""
    words = {word for word in map(skeleton, _BETWEEN_WORDS.split(text))
             if len(word) >= MIN_WORD_LETTERS}
    if len(words) < MIN_WORDS:
        return ()
    rows = [_WORD_SIGNATURE.unpack(hashlib.shake_128(_SEED + b"w:" + word.encode()).digest(
        _WORD_SIGNATURE.size)) for word in words]
    signature = list(map(min, zip(*rows, strict=True)))
    return tuple(
        f"w{band}:" + hashlib.blake2b(
            _WORD_BAND.pack(*signature[band * WORD_ROWS:(band + 1) * WORD_ROWS]),
            digest_size=4).hexdigest()
        for band in range(WORD_BANDS))


def near_duplicates(first: str, second: str) -> bool:
    """True when the two texts share a band key."""
    return not set(band_keys(first)).isdisjoint(band_keys(second))


# --- common greetings -------------------------------------------------------------------------

MAX_EXTRA_WORDS, MAX_EXTRA_LETTERS, MAX_GREETING_LETTERS = 2, 12, 80
_BETWEEN_WORDS = re.compile(r"[\s,.;:!?'’\"()\[\]…-]+")


def _word_skeletons(text: str) -> list[str]:
    """The skeleton of each word, empty ones (emoji, punctuation) left out."""
    return [word for word in map(skeleton, _BETWEEN_WORDS.split(text)) if word]


@cache
def greetings() -> frozenset[str]:
    """The openers of shared/rules/lexicon/greetings-fr.txt, as word skeletons joined."""
    raw = (resources.files("shared.rules") / "lexicon" / "greetings-fr.txt").read_text(
        encoding="utf-8")
    entries = ("".join(_word_skeletons(line)) for line in raw.splitlines()
               if not line.startswith("#"))
    return frozenset(entry for entry in entries if entry)


@lru_cache(maxsize=4096)
def is_common_greeting(text: str) -> bool:
    """True for the short openers real senders type ("coucou ça va ?", "c'est qui ?"): a
    chain of greetings of the list, with at most MAX_EXTRA_WORDS whole words besides (a
    name, "Salut Julie, ça va ?"; an emoji has no letter) of MAX_EXTRA_LETTERS in all.
    The extra words are not read: "salut connasse" is a greeting here, and the lexicon's."""
    words = _word_skeletons(text)
    letters = "".join(words)
    if not letters or len(letters) > MAX_GREETING_LETTERS:
        return False
    word_ends: dict[int, int] = {}  # where each word starts -> where it ends
    start = 0
    for word in words:
        word_ends[start] = start + len(word)
        start += len(word)
    # Walk the letters left to right; each state is (extra words, extra letters, greeted).
    reached: dict[int, set[tuple[int, int, bool]]] = {0: {(0, 0, False)}}
    for position in range(len(letters)):
        for extra_words, extra_letters, greeted in reached.pop(position, set()):
            for greeting in greetings():
                if letters.startswith(greeting, position):
                    reached.setdefault(position + len(greeting), set()).add(
                        (extra_words, extra_letters, True))
            end = word_ends.get(position)
            if (end is not None and extra_words < MAX_EXTRA_WORDS
                    and extra_letters + end - position <= MAX_EXTRA_LETTERS):
                reached.setdefault(end, set()).add(
                    (extra_words + 1, extra_letters + end - position, greeted))
    return any(greeted for _, _, greeted in reached.get(len(letters), set()))
