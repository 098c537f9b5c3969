"""The value types that cross the floors: what Vonage sent us, and what a send returned."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class InboundSms:
    """One inbound SMS (or one part of a concatenated one), as the workers receive it."""

    message_id: str
    msisdn: str
    to: str
    text: str
    type: str
    keyword: str
    message_timestamp: str | None
    concat_ref: str | None
    concat_part: int | None
    concat_total: int | None

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeliveryReceipt:
    """One delivery receipt: Vonage sends one per part of a sent reply."""

    message_id: str
    status: str
    err_code: int
    price: str | None
    client_ref: str | None
    to: str
    message_timestamp: str | None

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SentPart:
    message_id: str
    price: Decimal | None


@dataclass(frozen=True)
class SendResult:
    outcome: str
    parts: tuple[SentPart, ...] = ()
    error: str = ""
    reason: str = ""
    segments: int = 0

    @property
    def price(self) -> Decimal:
        return sum((part.price or Decimal(0) for part in self.parts), Decimal(0))

    @property
    def price_known(self) -> bool:
        """True when every part carries the provider's price; False when any lacks it (or
        there is no part): `price` is then not what was billed, settle at the estimate."""
        return bool(self.parts) and all(part.price is not None for part in self.parts)
