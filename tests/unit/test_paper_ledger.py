"""The paper venue remembers its orders across a restart when it has a ledger."""

from __future__ import annotations

import random
import time
from decimal import Decimal

from valux.venues.base import OrderIntent, OrderState, OrderStatus, Side
from valux.venues.paper.venue import PaperVenue


class MemoryLedger:
    def __init__(self) -> None:
        self.rows: dict[str, OrderStatus] = {}

    async def load(self, intent_id: str) -> OrderStatus | None:
        return self.rows.get(intent_id)

    async def record(self, intent: OrderIntent, status: OrderStatus) -> None:
        self.rows.setdefault(status.intent_id, status)


def _venue(ledger: MemoryLedger, unknown_rate: float = 0.0) -> PaperVenue:
    async def price(token: str) -> float:
        return 2.0

    return PaperVenue(
        price,
        fee_bps=30,
        slippage_bps_per_unit=10.0,
        depth_quote=Decimal(1000),
        latency_ms=0.0,
        failure_rate=0.0,
        unknown_rate=unknown_rate,
        network_fee=Decimal("0.000005"),
        rng=random.Random(1),
        ledger=ledger,
    )


def _buy(intent_id: str) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id,
        wallet_id="w",
        side=Side.BUY,
        token="T",
        quote_asset="SOL",
        amount=Decimal(1),
        created_at=time.time(),
    )


async def test_a_restarted_venue_answers_from_its_ledger_and_never_fills_twice() -> None:
    """An order answered UNKNOWN (the answer was lost) is FILLED in the ledger; a new venue
    instance (the wallet host restarted) reports that fill on status() and returns the same
    fill for a resubmit instead of executing again."""
    ledger = MemoryLedger()
    first = await _venue(ledger, unknown_rate=1.0).submit(_buy("i-1"))
    assert first.state == OrderState.UNKNOWN
    restarted = _venue(ledger)
    status = await restarted.status("i-1")
    assert status.state == OrderState.FILLED
    again = await restarted.submit(_buy("i-1"))
    assert again == status
    assert len(ledger.rows) == 1


async def test_without_a_record_the_restarted_venue_says_not_found() -> None:
    """An intent the venue never saw is NOT_FOUND, which makes resubmitting it safe."""
    restarted = _venue(MemoryLedger())
    assert (await restarted.status("never-sent")).state == OrderState.NOT_FOUND
