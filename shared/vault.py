"""Sealing what holds a sender's number (evidence, parked messages) with
RELOUS_EVIDENCE_KEY (Fernet: AES with an HMAC, so a tampered value does not open).

The key comes in either of two spellings of the same 32 bytes:
- a Fernet key, url-safe base64 (what `relous keys` prints);
- exactly 64 hex characters (what a platform's `secret` generator produces, e.g. the
  Heroku button's). Its Fernet key is `base64.urlsafe_b64encode(bytes.fromhex(value))`:
  the hex digits are the key's bytes. Sealed values in the database depend on this
  derivation, so it must never change (tests/rules/test_evidence_key.py pins it).
Every Fernet built on RELOUS_EVIDENCE_KEY goes through `fernet()`.
"""

from __future__ import annotations

import base64
import re

from cryptography.fernet import Fernet, InvalidToken

_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
HEX_KEY_LENGTH = 64


class CannotOpen(ValueError):
    """The value was sealed with another key, or tampered with."""


class BadKey(ValueError):
    """The key is neither a Fernet key nor 64 hex characters; the message says which."""


# 32 random bytes hold about 30 different values; fewer than 16 is a pattern typed by
# hand ("0" * 64, "0123456789abcdef" * 4), never a drawn key.
MIN_DISTINCT_BYTES = 16


def fernet_key(key: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) that `key` stands for."""
    if _HEX_DIGITS.fullmatch(key):
        # A hex string is never a valid Fernet key (those end with "="), so the two
        # spellings cannot be confused.
        if len(key) != HEX_KEY_LENGTH:
            raise BadKey(f"has {len(key)} hex characters; a hex key has exactly "
                         f"{HEX_KEY_LENGTH} (32 bytes)")
        encoded = base64.urlsafe_b64encode(bytes.fromhex(key))
    else:
        try:
            Fernet(key)
        except ValueError:
            raise BadKey("must be a Fernet key (32 bytes in url-safe base64) or exactly "
                         f"{HEX_KEY_LENGTH} hex characters") from None
        encoded = key.encode()
    if len(set(base64.urlsafe_b64decode(encoded))) < MIN_DISTINCT_BYTES:
        raise BadKey("is too regular to be a random key (a repeated pattern such as "
                     "000…)")
    return encoded


def fernet(key: str) -> Fernet:
    """The Fernet for RELOUS_EVIDENCE_KEY, in either spelling."""
    return Fernet(fernet_key(key))


def seal(text: str, key: str) -> str:
    return fernet(key).encrypt(text.encode()).decode()


def unseal(token: str, key: str) -> str:
    try:
        return fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CannotOpen("RELOUS_EVIDENCE_KEY does not open this value") from None
