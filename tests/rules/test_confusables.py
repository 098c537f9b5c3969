"""Invisible and look-alike characters: folded before the lexicon, the fingerprint and
the same-text counts (Unicode TS #39 prototypes), French text left as it was."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
from confusable_homoglyphs import confusables

from shared.rules.abuse import (
    REPLY,
    SUPPRESS,
    CampaignStats,
    SenderStats,
    fingerprint,
    lexicon_hits,
    load_lexicon,
    normalise,
    score_message,
)
from shared.rules.campaign import CampaignRules
from shared.rules.skeleton import fold, prototypes

LEXICON = load_lexicon()
RAID = CampaignStats(new_senders_recent=300, new_senders_baseline=2.0, same_text_senders=40,
                     prefix_new_senders=1)
CYRILLIC = {"а": "\u0430", "е": "\u0435", "о": "\u043e", "с": "\u0441", "р": "\u0440"}


def _before(text: str) -> str:
    """`normalise` as it was: the reference for text that holds no trick."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    letters = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(re.sub(r"[^a-z0-9]+", " ", letters).split())


# --- the attacks ------------------------------------------------------------------------------

@pytest.mark.parametrize("disguised", [
    "sale con\u200bnasse",                      # zero-width space splits the word
    "sale con\u00adnasse",                      # soft hyphen
    "sale con\u2060nas\ufeffse",                # word joiner, BOM
    "sale c\u043enn\u0430ss\u0435",             # Cyrillic о, а, е
    "SALE C\u041eNN\u0410SS\u0415",             # Cyrillic capitals О, А, Е
    "sale \U0001d41c\U0001d428\U0001d427\U0001d427\U0001d41a\U0001d42c\U0001d42c\U0001d41e",
    "sale co\u0578nasse",                       # Armenian vo (ո) for n
])
def test_invisible_and_look_alike_characters_no_longer_hide_an_insult(disguised):
    assert "connasse" in lexicon_hits(disguised, LEXICON)


def test_a_raid_slogan_with_tricks_shares_the_plain_slogan_s_fingerprint():
    plain = "Spammez ce faux numéro de merde"
    tricked = "Sp\u0430mm\u0435z c\u0435 f\u200baux num\u00e9r\u043e de m\u0435r\u00adde"
    assert fingerprint(tricked) == fingerprint(plain) != ""
    assert lexicon_hits(tricked, LEXICON) == lexicon_hits(plain, LEXICON)
    assert "spammez" in lexicon_hits(tricked, LEXICON)


def test_the_tricked_slogan_is_suppressed_like_the_plain_one_during_a_raid():
    sender = SenderStats(1, 1, 1, 1, True)
    hits = lexicon_hits("sp\u0430mm\u0435z c\u0435 num\u0435r\u043e", LEXICON)
    verdict = score_message(CampaignRules(), sender, RAID, hits)
    assert verdict.verdict == SUPPRESS, verdict


def test_format_characters_are_stripped_not_turned_into_spaces():
    assert normalise("ré\u200bponds\u00ad-moi") == "reponds moi"
    assert all(unicodedata.category(char) != "Cf" for char in fold("a\u200b\u200d\u2066b"))


# --- the legitimate patterns -------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Réponds-moi !!! 1", "Ça suffit, arrêtez.", "t'es où ?", "Hé, c'est quoi ce numéro ?",
    "Élodie, 0612345678, rappelle-moi", "L'IDÉE était bonne", "Noël à Besançon",
])
def test_french_text_normalises_as_before(text):
    assert normalise(text) == _before(text)


def test_accents_still_fold_to_plain_letters():
    assert normalise("Réponds à ÉLÉONORE, ça où") == "reponds a eleonore ca ou"


def test_an_insult_alone_is_still_answered_and_near_words_are_not_hits():
    assert score_message(CampaignRules(), SenderStats(1, 1, 1, 1, True),
                         CampaignStats(1, 2.0, 1, 1),
                         lexicon_hits("c\u043enn\u0430sse", LEXICON)).verdict == REPLY
    assert lexicon_hits("connaissance et puteaux", LEXICON) == ()


def test_digits_stay_digits_for_the_fingerprint():
    assert fingerprint("Réponds-moi !!! 1") == fingerprint("reponds moi 2")


# --- the data the skeleton is built from ------------------------------------------------------

def test_the_prototype_table_comes_from_the_ts39_data():
    table = prototypes()
    assert {char: table[ord(code)] for char, code in CYRILLIC.items()} == {
        "а": "a", "е": "e", "о": "o", "с": "c", "р": "p"}
    assert all(not chr(code).isascii() and value.isascii() for code, value in table.items())
    assert len(table) > 1000


def test_ascii_letters_and_digits_map_only_to_ascii_so_direction_is_recoverable():
    """The skeleton reads a non-ASCII character with one ASCII homoglyph as a source; that
    holds while no ASCII letter or digit has a non-ASCII prototype."""
    data = confusables.confusables_data
    for char in string.ascii_letters + string.digits:
        homoglyphs = data.get(char, [])
        if len(homoglyphs) == 1:
            assert homoglyphs[0]["c"].isascii(), char
