"""Fixtures of the worker tests that need a broker of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import broker
from shared.settings import Settings
from tests.faults.stack import fresh_vhost
from tests.helpers import broker_url

LIMIT = 2


@pytest.fixture
def limited_vhost(monkeypatch) -> Iterator[Settings]:
    """A vhost of its own whose pipeline queues give up after LIMIT returns (the queues'
    delivery limit, read when they are declared)."""
    monkeypatch.setattr(broker, "DELIVERY_LIMIT", LIMIT)
    with fresh_vhost() as vhost:
        yield Settings.from_env().with_overrides(broker_url=broker_url(vhost))
