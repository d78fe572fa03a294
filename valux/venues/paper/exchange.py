"""The paper exchange: the paper venue as an exchange of its own, with accounts.

A real venue keeps the truth about an account — what it holds, which orders filled —
independently of the trader's books. The paper exchange does the same for paper trading,
so valux's wallets can be checked against something they did not write:

- **Accounts**: one per wallet (the wallet id), balances per asset. A deposit credits it
  once per deposit id; a fill debits and credits it; an order the account cannot pay for
  FAILS with ``insufficient funds at the venue`` — whatever the wallet's books say.
- **Durable, before answering**: an order's outcome and its account movements are written
  in one transaction (``paper_venue_orders``, ``paper_accounts``, ``paper_account_movements``)
  before the venue answers, as an exchange would. While PostgreSQL cannot be reached they
  are held in memory, in order, served from there and written when it answers again (lost
  only if the exchange process dies meanwhile — paper trading's one concession).
- Fills come from :class:`~valux.venues.paper.venue.PaperVenue` (fees, slippage, latency,
  failure and unknown-outcome injection), idempotent by intent id.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from typing import Any

import asyncpg

from valux.hosting.batching import CallBatcher
from valux.observability.logging import get_logger
from valux.persistence.journal import DATABASE_DOWN
from valux.venues.base import OrderIntent, OrderState, OrderStatus, Side
from valux.venues.paper.ledger import INSERT_OUTCOME, PgOrderLedger
from valux.venues.paper.venue import PaperVenue

_ZERO = Decimal(0)

# A movement is recorded once per key, and only a newly recorded one moves its account
# (so writing a batch again after a lost answer changes nothing).
_MOVE = (
    "WITH moved AS (INSERT INTO paper_account_movements (ref, account, asset, delta, kind)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING account, asset, delta)"
    " INSERT INTO paper_accounts (account, asset, amount) SELECT account, asset, delta FROM moved"
    " ON CONFLICT (account, asset) DO UPDATE SET amount = paper_accounts.amount + EXCLUDED.amount"
)

Movement = tuple[str, str, str, Decimal, str]  # ref, account, asset, delta, kind
Record = tuple[OrderStatus | None, list[Movement]]  # an outcome and what it moved


def fill_movements(intent: OrderIntent, status: OrderStatus) -> list[Movement]:
    """How a fill moves its account (nothing for anything but a fill)."""
    if status.state is not OrderState.FILLED:
        return []
    ref, account = intent.intent_id, intent.wallet_id
    if intent.side is Side.BUY:
        return [
            (ref, account, intent.quote_asset, -status.quote_amount, "fill"),
            (ref, account, intent.token, status.base_amount, "fill"),
        ]
    return [
        (ref, account, intent.token, -status.base_amount, "fill"),
        (ref, account, intent.quote_asset, status.quote_amount, "fill"),
    ]


class ExchangeLedger:
    """The exchange's durable record (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, write_timeout_s: float = 1.0) -> None:
        self._pool = pool
        self._orders = PgOrderLedger(pool)
        self._timeout = write_timeout_s
        # Outcomes that land in the same loop turn share one transaction (a signal fanned
        # out to a thousand agents is a thousand fills at once).
        self._group: CallBatcher[Record, None] = CallBatcher(self._write_group)
        self._unsynced: list[tuple[OrderStatus | None, list[Movement]]] = []
        self._sync_task: asyncio.Task[None] | None = None

    async def load_accounts(self) -> dict[str, dict[str, Decimal]]:
        accounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
        for row in await self._pool.fetch("SELECT account, asset, amount FROM paper_accounts"):
            accounts[row["account"]][row["asset"]] = Decimal(row["amount"])
        return accounts

    async def load(self, intent_id: str) -> OrderStatus | None:
        for status, _ in self._unsynced:
            if status is not None and status.intent_id == intent_id:
                return status
        return await asyncio.wait_for(self._orders.load(intent_id), self._timeout)

    async def deposited(self, ref: str) -> bool:
        if any(m[0] == ref for _, moves in self._unsynced for m in moves):
            return True
        found = await asyncio.wait_for(
            self._pool.fetchval("SELECT 1 FROM paper_account_movements WHERE ref = $1", ref),
            self._timeout,
        )
        return found is not None

    async def record(self, status: OrderStatus | None, movements: list[Movement]) -> None:
        """Write an outcome with its movements, or hold them while the database is away."""
        if self._unsynced:
            self._hold(status, movements)
            return
        try:
            await asyncio.wait_for(self._group.call((status, movements)), self._timeout)
        except DATABASE_DOWN:
            self._hold(status, movements)

    async def _write_group(self, records: list[Record]) -> list[None]:
        await self._write_once(records)
        return [None] * len(records)

    def _hold(self, status: OrderStatus | None, movements: list[Movement]) -> None:
        self._unsynced.append((status, movements))
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync())

    async def _sync(self) -> None:
        while self._unsynced:
            status, movements = self._unsynced[0]
            try:
                await self._write(status, movements)
            except DATABASE_DOWN:
                await asyncio.sleep(1.0)
                continue
            except Exception as exc:  # never drop; say why and keep trying
                get_logger("valux.exchange").error("exchange_sync_error", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            self._unsynced.pop(0)

    async def _write(self, status: OrderStatus | None, movements: list[Movement]) -> None:
        """One transaction, bounded: a database that hangs is down (TimeoutError), and the
        write is held and retried; the retry is idempotent (an outcome and a movement are
        written once per key), so a commit whose answer was lost is not applied twice."""
        await asyncio.wait_for(self._write_once([(status, movements)]), self._timeout)

    async def _write_once(self, records: list[Record]) -> None:
        outcomes = [PgOrderLedger.row(s) for s, _ in records if s is not None]
        moves = [m for _, movements in records for m in movements]
        async with self._pool.acquire() as conn, conn.transaction():
            if outcomes:
                await conn.executemany(INSERT_OUTCOME, outcomes)
            if moves:
                await conn.executemany(_MOVE, moves)

    @property
    def unsynced(self) -> int:
        return len(self._unsynced)


class PaperExchange:
    """Accounts and orders of the paper venue (see the module docstring)."""

    def __init__(self, venue: PaperVenue, ledger: ExchangeLedger | None) -> None:
        self.venue = venue
        self.ledger = ledger
        self.accounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
        self._inflight: dict[str, OrderIntent] = {}
        self._committed: dict[tuple[str, str], Decimal] = {}  # (account, asset) in flight
        self._deposits: set[str] = set()  # refs credited by this process (deposits are rare)
        self._lock = asyncio.Lock()  # one funds check at a time

    async def load(self) -> None:
        if self.ledger is not None:
            self.accounts = await self.ledger.load_accounts()

    def balance(self, account: str, asset: str) -> Decimal:
        return self.accounts.get(account, {}).get(asset, _ZERO)

    def balances(self, account: str) -> dict[str, Decimal]:
        return {a: v for a, v in self.accounts.get(account, {}).items() if v}

    async def deposit(self, ref: str, account: str, asset: str, amount: Decimal) -> dict[str, Any]:
        """Credit ``amount`` once per ``ref`` (a faucet, an external transfer)."""
        async with self._lock:
            if ref in self._deposits or (
                self.ledger is not None and await self.ledger.deposited(ref)
            ):
                return self.balances(account)
            self._deposits.add(ref)
            self._move([(ref, account, asset, amount, "deposit")])
            if self.ledger is not None:
                await self.ledger.record(None, [(ref, account, asset, amount, "deposit")])
        return self.balances(account)

    async def submit(self, intent: OrderIntent) -> OrderStatus:
        """Execute ``intent`` once if its account can pay for it; idempotent by intent id."""
        recorded = await self.venue.recorded_for(intent)
        owner = False
        if recorded is None and intent.intent_id not in self._inflight:
            key = (
                intent.wallet_id,
                intent.quote_asset if intent.side is Side.BUY else intent.token,
            )
            async with self._lock:
                available = self.balance(*key) - self._committed.get(key, _ZERO)
                if available < intent.amount:
                    return OrderStatus.failed(
                        intent.intent_id,
                        f"insufficient funds at the venue: {key[1]} {available} < {intent.amount}",
                    )
                self._inflight[intent.intent_id] = intent
                self._committed[key] = self._committed.get(key, _ZERO) + intent.amount
                owner = True
        try:
            return await self.venue.submit(intent)
        finally:
            if owner:  # only the call that reserved releases (a repeat shares the order)
                del self._inflight[intent.intent_id]
                self._committed[key] -= intent.amount

    def inflight(self) -> int:
        """Orders accepted and not yet answered by the venue."""
        return len(self._inflight)

    def on_outcome(self, intent: OrderIntent, status: OrderStatus) -> list[Movement]:
        """The venue recorded ``status``: move the account (called before it answers)."""
        moves = fill_movements(intent, status)
        self._move(moves)
        return moves

    def _move(self, movements: list[Movement]) -> None:
        for _ref, account, asset, delta, _kind in movements:
            balances = self.accounts.setdefault(account, {})
            balances[asset] = balances.get(asset, _ZERO) + delta
