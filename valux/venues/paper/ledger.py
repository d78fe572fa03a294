"""PostgreSQL-backed :class:`~valux.venues.paper.venue.OrderLedger` for the paper venue.

The paper venue plays the exchange; an exchange remembers its orders across a
trader's crash. Outcomes go to ``paper_venue_orders`` (migration 0002) in a
transaction of their own before the venue answers, so a wallet host that dies
with an intent in flight finds the truth when it queries after restarting.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg

from valux.persistence.journal import DATABASE_DOWN
from valux.venues.base import OrderIntent, OrderState, OrderStatus

INSERT_OUTCOME = (
    "INSERT INTO paper_venue_orders (intent_id, state, base_amount, quote_amount, price, fee,"
    " network_fee, reason, ts, tx_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT (intent_id) DO NOTHING"
)


class PgOrderLedger:
    """Durable outcomes of the paper venue, keyed by intent id.

    The venue stands in for an exchange, which stays up when valux's PostgreSQL does
    not. So while the database is unreachable outcomes are held in memory (and served
    from there) and written as soon as it answers again.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._unsynced: dict[str, OrderStatus] = {}
        self._sync_task: asyncio.Task[None] | None = None

    async def record(self, intent: OrderIntent, status: OrderStatus) -> None:
        try:
            await self._insert(status)
        except DATABASE_DOWN:
            self._unsynced[status.intent_id] = status
            if self._sync_task is None or self._sync_task.done():
                self._sync_task = asyncio.get_running_loop().create_task(self._sync())

    async def _sync(self) -> None:
        while self._unsynced:
            intent_id, status = next(iter(self._unsynced.items()))
            try:
                await self._insert(status)
            except DATABASE_DOWN:
                await asyncio.sleep(1.0)
                continue
            self._unsynced.pop(intent_id, None)

    async def _insert(self, status: OrderStatus) -> None:
        async with self._pool.acquire() as conn:
            await self.insert(conn, status)

    @staticmethod
    async def insert(conn: asyncpg.Connection, status: OrderStatus) -> None:
        """Write one outcome (on ``conn``, inside the caller's transaction if any)."""
        await conn.execute(INSERT_OUTCOME, *PgOrderLedger.row(status))

    @staticmethod
    def row(status: OrderStatus) -> tuple[object, ...]:
        """``status`` as the arguments of the insert (for ``executemany``)."""
        return (
            status.intent_id,
            str(status.state),
            status.base_amount,
            status.quote_amount,
            status.price,
            status.fee,
            status.network_fee,
            status.reason,
            status.ts,
            status.tx_id,
        )

    async def load(self, intent_id: str) -> OrderStatus | None:
        if intent_id in self._unsynced:
            return self._unsynced[intent_id]
        row = await self._pool.fetchrow(
            "SELECT * FROM paper_venue_orders WHERE intent_id = $1", intent_id
        )
        if row is None:
            return None
        return OrderStatus(
            intent_id=row["intent_id"],
            state=OrderState(row["state"]),
            base_amount=Decimal(row["base_amount"]),
            quote_amount=Decimal(row["quote_amount"]),
            price=Decimal(row["price"]),
            fee=Decimal(row["fee"]),
            network_fee=Decimal(row["network_fee"]),
            reason=row["reason"],
            ts=row["ts"],
            tx_id=row["tx_id"],
        )
