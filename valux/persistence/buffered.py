"""A store for backtests: commits are answered at once and written to PostgreSQL in groups.

Contract:

- :meth:`BufferedStore.commit` keeps the commit in order and returns without waiting
  for PostgreSQL; every ``max_pending`` commits (and before any read, and at
  :meth:`close`) the buffer is written in one transaction through
  :meth:`~valux.persistence.journal.Journal.write_now`. So the journal, snapshots and
  read models a backtest leaves are exactly what a live run would write, in the same
  order, but a backtest pays one round trip per few thousand commits instead of one
  per decision.
- Reads (:meth:`fetch`, :meth:`load_streams`) flush first: a host never reads a read
  model behind its own decisions. With ``sole_writer`` (the store created its database
  empty and nothing else writes it) a query that declares its row keys
  (:attr:`~valux.persistence.store.Query.keys`) is answered empty, without a flush or a
  round trip, when none of those rows was ever written: the duplicate checks of a fresh
  signal id or intent id cost nothing, and are still exact.
- It gives up the journal's durability and outage handling on purpose: a backtest's
  scratch database dies with the run, and a write that fails fails the run (raised by
  the next commit, read or :meth:`close`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from valux.persistence.journal import Commit, Journal, Recovered
from valux.persistence.store import PgStore, Query


class BufferedStore(PgStore):
    """:class:`~valux.persistence.store.PgStore` with buffered, grouped commits."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        journal: Journal,
        *,
        max_pending: int = 2_000,
        sole_writer: bool = False,
    ) -> None:
        super().__init__(pool, journal)
        self.max_pending = max_pending
        self.sole_writer = sole_writer
        self._written: set[tuple[Any, ...]] = set()  # row keys ever written (sole writer)
        self.skipped_reads = 0
        self._buffer: list[Commit] = []
        self._order = asyncio.Lock()  # one write at a time: a later group never lands first
        self.writes = 0

    @classmethod
    async def open(
        cls, database_url: str, *, max_pending: int = 2_000, sole_writer: bool = False
    ) -> BufferedStore:
        """A buffered store on its own small pool."""
        pool: asyncpg.Pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=2, command_timeout=300
        )
        return cls(pool, Journal(pool), max_pending=max_pending, sole_writer=sole_writer)

    async def commit(self, commit: Commit, *, deferrable: bool = False) -> None:
        if not commit:
            return
        if self.sole_writer:
            self._written.update(row.key for row in commit.rows)
        self._buffer.append(commit)
        if len(self._buffer) >= self.max_pending:
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered so far (one transaction), after any write in flight."""
        async with self._order:
            while self._buffer:
                batch, self._buffer = self._buffer, []
                await self.journal.write_now(batch)
                self.writes += 1

    async def load_streams(self, stream_ids: Sequence[str]) -> dict[str, Recovered]:
        await self.flush()
        return await super().load_streams(stream_ids)

    async def fetch(self, query: Query, *args: Any) -> list[Mapping[str, Any]]:
        if self.sole_writer and query.keys is not None:
            written = self._written
            if not any(key in written for key in query.keys(*args)):
                self.skipped_reads += 1
                return []
        await self.flush()
        return await super().fetch(query, *args)

    async def close(self) -> None:
        await self.flush()
        await self.pool.close()
