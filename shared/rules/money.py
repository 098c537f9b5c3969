"""Amounts of money as operators read them: fixed places, never a negative zero."""

from __future__ import annotations

from decimal import Decimal


def euros(amount: Decimal | float | int | None, places: int = 4) -> str:
    """`amount` with `places` decimals; `-0.0000` (a refund rounding to nothing, or a
    float's negative zero) prints as `0.0000`, and None as `0` with those places."""
    value = Decimal(str(amount if amount is not None else 0))
    text = f"{value:.{places}f}"
    if text.startswith("-") and not text.strip("-0."):
        return text[1:]
    return text
