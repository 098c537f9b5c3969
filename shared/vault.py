"""Sealing what holds a sender's number (evidence, parked messages) with
RELOUS_EVIDENCE_KEY (Fernet: AES with an HMAC, so a tampered value does not open)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class CannotOpen(ValueError):
    """The value was sealed with another key, or tampered with."""


def seal(text: str, key: str) -> str:
    return Fernet(key).encrypt(text.encode()).decode()


def unseal(token: str, key: str) -> str:
    try:
        return Fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CannotOpen("RELOUS_EVIDENCE_KEY does not open this value") from None
