"""Phone numbers: validation, masking and keyed pseudonyms.

A sender's raw number never leaves this module in logs or tables other than the ones
CONTRACT.md allows; everywhere else it is a pseudonym or a masked form.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_E164_DIGITS = re.compile(r"^[1-9][0-9]{5,14}$")
MASK_CHAR = "\u2022"


def is_phone_number(value: str) -> bool:
    """True for E.164 digits without '+' (as Vonage sends `msisdn` and `to`)."""
    return bool(_E164_DIGITS.match(value))


def pseudonym(number: str, secret_key: str) -> str:
    """Keyed, stable pseudonym of a number (HMAC-SHA256, hex): joinable, not reversible."""
    return hmac.new(secret_key.encode(), number.encode(), hashlib.sha256).hexdigest()


def mask(number: str) -> str:
    """`33612345621` -> `336••••••21`: enough to tell numbers apart, not to call one."""
    if len(number) <= 5:
        return MASK_CHAR * len(number)
    return number[:3] + MASK_CHAR * (len(number) - 5) + number[-2:]
