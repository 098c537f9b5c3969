"""Token bucket arithmetic for the provider's send rate (messages per second).

The bucket's state lives in PostgreSQL (`rate_buckets`) so that every worker process on
every machine draws from the same one; this module only computes.
"""

from __future__ import annotations

from datetime import datetime


def refill(tokens: float, updated_at: datetime, now: datetime, rate: float,
           capacity: float) -> float:
    """Tokens available at `now`: what was left plus `rate` per second elapsed, capped."""
    elapsed = max((now - updated_at).total_seconds(), 0.0)
    return min(capacity, tokens + elapsed * rate)


def wait_for_token(available: float, rate: float) -> float:
    """Seconds until one token is available (0 when one is there now)."""
    return 0.0 if available >= 1 else (1 - available) / rate
