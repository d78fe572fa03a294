"""The paper exchange's books on real PostgreSQL: outcomes that land together share one
transaction, each movement moves its account once, and writing a batch again (after a
lost answer) changes nothing."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import asyncpg

from tests.integration.conftest import fresh_database
from valux.persistence.migrations import apply_migrations
from valux.venues.base import OrderState, OrderStatus
from valux.venues.paper.exchange import ExchangeLedger, Record


def _fill(i: int) -> Record:
    status = OrderStatus(intent_id=f"i{i}", state=OrderState.FILLED, base_amount=Decimal(2),
                         quote_amount=Decimal(1), price=Decimal("0.5"), fee=Decimal(0),
                         network_fee=Decimal(0), ts=time.time(), tx_id=f"t{i}")  # fmt: skip
    moves = [(f"i{i}", "w", "SOL", Decimal(-1), "fill"), (f"i{i}", "w", "TKN", Decimal(2), "fill")]
    return status, moves


async def test_grouped_outcomes_move_each_account_once(server_urls: tuple[str, str]) -> None:
    with fresh_database(server_urls[0]) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
            ledger = ExchangeLedger(pool)
            records = [_fill(i) for i in range(50)]
            await asyncio.gather(*(ledger.record(s, m) for s, m in records))
            await ledger._write_once(records)  # the same batch again: nothing moves twice
            accounts = {r["asset"]: r["amount"] for r in await pool.fetch(
                "SELECT asset, amount FROM paper_accounts WHERE account = 'w'")}  # fmt: skip
            assert accounts == {"SOL": Decimal(-50), "TKN": Decimal(100)}
            assert await pool.fetchval("SELECT count(*) FROM paper_venue_orders") == 50
            assert await pool.fetchval("SELECT count(*) FROM paper_account_movements") == 100
            loaded = await ledger.load("i7")
            assert loaded is not None and loaded.state is OrderState.FILLED
        finally:
            await pool.close()
