"""What the adversarial scenarios send, and from which numbers (workers/replay/data/).

Raiders who respell the 2017 slogans so that no two messages are the same text; what real
people type when a number is mentioned on TV; the varied insults of a SIM farm; and the
numbers of SMS pumping (premium-rate and foreign ranges) and of SIM farms (consecutive
numbers of a few blocks). Everything draws from the `random.Random` it is given, so a
scenario is the same for the same seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.rules.phones import destination_verdict

# Invisible characters (Unicode category Cf): a word with one inside is a new word to a
# naive comparison, and looks the same on a phone.
INVISIBLES = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
# Cyrillic and Greek letters whose Unicode TS #39 prototype is the Latin letter (checked by
# tests/workers/test_scenarios.py through shared.rules.skeleton.fold).
LOOK_ALIKES = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "j": "\u0458",
    "o": "\u043e\u03bf", "p": "\u0440", "s": "\u0455", "u": "\u03c5", "v": "\u03bd",
    "x": "\u0445", "y": "\u0443", "A": "\u0410\u0391", "B": "\u0412\u0392",
    "C": "\u0421", "E": "\u0415\u0395", "H": "\u041d\u0397", "K": "\u041a\u039a",
    "M": "\u041c\u039c", "O": "\u041e\u039f", "P": "\u0420\u03a1", "T": "\u0422\u03a4",
    "X": "\u0425\u03a7",
}
LEET = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7", "b": "8", "g": "9"}
MARKS = ".-_*/'"
# Rotating slogans: the same call to raid, reworded so that it is a new text each time.
ROTATIONS = (
    "Raid sur ce numero bidon, on le spamme tous ensemble",
    "Spammez tous ce faux numero les khey",
    "Le forum debarque, on vous spam jusqu'a la faillite",
    "On va vous ruiner bande de feministes, spam general",
    "Tous sur ce faux numero, faut qu'ils payent chaque SMS",
    "Balance ton numero de merde qu'on le spamme",
    "JVC represente, spam ce numero jusqu'a ce qu'il ferme",
    "18-25 en force, envoyez tous des SMS sur ce numero",
    "Ce numero de feministes va couter cher, spammez",
    "On spam ce numero toute la nuit, ruinez les",
    "Raid JVC : un SMS chacun, ils payent chaque reponse",
    "Allez les khey, tous sur ce numero de merde",
)
RANDOM_WORDS = ("lol", "mdr", "ptdr", "wesh", "frero", "go", "allez", "vite", "haha",
                "gros", "nul", "bouffon", "relou", "jpp", "trop", "grave", "xptdr",
                "kikoo", "osef", "aled", "sah", "banane", "voiture", "soleil", "qsdf",
                "azerty", "yolo", "bref", "genre", "tkt")
# The kinds of respelling, in the order they are applied when a message combines two.
KINDS = ("rotation", "leet", "look-alike", "spacing", "punctuation", "zero-width",
         "appended")
# Respellings that Unicode folding plus the removal of spaces and punctuation undo.
FOLDABLE = frozenset({"look-alike", "spacing", "punctuation", "zero-width"})


@dataclass(frozen=True)
class Variant:
    kinds: tuple[str, ...]
    text: str


def obfuscate(slogan: str, rng: random.Random, combine: float = 0.35) -> Variant:
    """`slogan` respelled one way, or two ways with probability `combine`: never the
    slogan itself."""
    kinds = {rng.choice(KINDS)}
    if rng.random() < combine:
        kinds.add(rng.choice([kind for kind in KINDS if kind not in kinds]))
    text = slogan
    ordered = tuple(kind for kind in KINDS if kind in kinds)
    for kind in ordered:
        text = RESPELL[kind](text, rng)
    return Variant(ordered, text)


def _rotation(text: str, rng: random.Random) -> str:
    return rng.choice(ROTATIONS)


def _some(rng: random.Random, positions: list[int], share: float) -> set[int]:
    """A random share of `positions`, at least one (none if there are none)."""
    chosen = {position for position in positions if rng.random() < share}
    return chosen or ({rng.choice(positions)} if positions else set())


def _leet(text: str, rng: random.Random) -> str:
    chosen = _some(rng, [i for i, char in enumerate(text) if char.lower() in LEET], 0.5)
    return "".join(rng.choice(LEET[char.lower()]) if i in chosen else char
                   for i, char in enumerate(text))


def _look_alike(text: str, rng: random.Random) -> str:
    chosen = _some(rng, [i for i, char in enumerate(text) if char in LOOK_ALIKES], 0.5)
    return "".join(rng.choice(LOOK_ALIKES[char]) if i in chosen else char
                   for i, char in enumerate(text))


def _between_letters(text: str, rng: random.Random, mark: str) -> str:
    """`mark` between the letters of one to three words of three letters or more."""
    words = text.split(" ")
    long = [i for i, word in enumerate(words) if sum(char.isalpha() for char in word) >= 3]
    for i in rng.sample(long, min(len(long), rng.randint(1, 3))) if long else ():
        words[i] = mark.join(words[i])
    return " ".join(words)


def _spacing(text: str, rng: random.Random) -> str:
    return _between_letters(text, rng, rng.choice((" ", "  ")))


def _punctuation(text: str, rng: random.Random) -> str:
    return _between_letters(text, rng, rng.choice(MARKS))


def _zero_width(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(2, 8)):
        chars.insert(rng.randrange(1, len(chars)), rng.choice(INVISIBLES))
    return "".join(chars)


def _appended(text: str, rng: random.Random) -> str:
    return " ".join([text, *rng.choices(RANDOM_WORDS, k=rng.randint(1, 3))])


RESPELL = {"rotation": _rotation, "leet": _leet, "look-alike": _look_alike,
           "spacing": _spacing, "punctuation": _punctuation, "zero-width": _zero_width,
           "appended": _appended}

# What people type when a number was shown on TV: short openers, the same ones by the
# thousand (the trap for a same-text signal).
SURGE_GREETINGS = ("salut", "Salut", "coucou", "Coucou ça va ?", "coucou ça va ?",
                   "bonsoir", "Bonsoir", "c'est qui ?", "C'est qui ?", "cest qui",
                   "Salut c'est qui ?", "Bonsoir, c'est qui ?", "bonjour", "Bonjour !",
                   "hello", "Allô ?", "slt", "cc", "cc ça va", "Qui est-ce ?",
                   "Bonsoir, je vous ai vu à la télé", "Salut ! C'est bien ce numéro ?",
                   "coucou c'est qui ?", "Bonsoir ça marche vraiment ?", "hey")
SURGE_TAILS = ("", "", "", " 😊", " 😂", "?", " !", "...")


def greeting(rng: random.Random) -> str:
    """A common greeting, as typed (sometimes with an emoji or more punctuation)."""
    return rng.choice(SURGE_GREETINGS) + rng.choice(SURGE_TAILS)


INSULTS = ("salope", "connasse", "pute", "pétasse", "chienne", "grosse vache", "conne",
           "sale folle", "bouffonne", "cassos", "mal baisée", "feminazie", "grognasse",
           "thon", "idiote")
INSULT_OPENERS = ("", "t'es qu'une ", "sale ", "espèce de ", "réponds ", "hé ", "alors ",
                  "ferme-la ")
INSULT_TAILS = ("", " !", " !!", " lol", " mdr", ", réponds", " on sait où t'habites",
                " tu vas voir", " ?", " de merde")


def insult(rng: random.Random) -> str:
    """A varied insult: hundreds of distinct texts, few of them repeated."""
    return rng.choice(INSULT_OPENERS) + rng.choice(INSULTS) + rng.choice(INSULT_TAILS)


# Ranges an SMS pumping (IRSF) operation answers from: premium rate and shared cost in
# France, premium in the UK and Germany, and foreign mobiles and satellite ranges with
# high termination rates. (prefix, random digits after it.)
PUMPING_RANGES = (("33899", 6), ("33897", 6), ("33810", 6), ("44871", 7), ("49900", 7),
                  ("3712", 7), ("3706", 7), ("535", 7), ("447", 9), ("2162", 7),
                  ("22462", 7), ("25261", 7), ("88216", 8), ("99890", 7))


def pumping_number(rng: random.Random, used: set[str], campaign: str) -> str:
    """A valid number from a pumping range that the destination gate refuses for
    `campaign` (its default reply countries), distinct from `used`."""
    while True:
        prefix, digits = rng.choice(PUMPING_RANGES)
        number = prefix + "".join(rng.choice("0123456789") for _ in range(digits))
        verdict = destination_verdict(number, campaign)
        if number not in used and verdict and not verdict.endswith("invalid number"):
            used.add(number)
            return number


BLOCK_DIGITS = 4  # a block is every number sharing all but the last four digits


def block_prefixes(rng: random.Random, count: int) -> list[str]:
    """`count` distinct French mobile blocks of 10,000 numbers (e.g. 336123 4 + 0000-9999),
    each valid end to end for the destination gate (a farm buys answerable SIMs)."""
    prefixes: list[str] = []
    while len(prefixes) < count:
        prefix = f"336{rng.randrange(10_000):04d}"
        ends = (prefix + "0" * BLOCK_DIGITS, prefix + "9" * BLOCK_DIGITS)
        if prefix not in prefixes and all(destination_verdict(end, end) is None
                                           for end in ends):
            prefixes.append(prefix)
    return prefixes


def block_number(rng: random.Random, used: set[str], prefixes: list[str]) -> str:
    """A number of one of the blocks, distinct from `used`."""
    while True:
        number = rng.choice(prefixes) + f"{rng.randrange(10 ** BLOCK_DIGITS):0{BLOCK_DIGITS}d}"
        if number not in used:
            used.add(number)
            return number
