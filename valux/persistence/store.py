"""Store: everything a host asks of PostgreSQL, behind one small interface.

A host journals through :meth:`Store.commit` (group-committed, with the outage
buffer of :class:`~valux.persistence.journal.Journal`), recovers through
:meth:`Store.load_streams`, and reads the read models through *named* queries
(:class:`Query`): the SQL sits next to the code that needs it, and an in-memory
store for unit tests implements the same names over its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from valux.config.settings import Settings
from valux.persistence.journal import Commit, ForkHandler, Journal, Recovered, load_streams
from valux.persistence.spool import Spool

KeysOf = Callable[..., Iterable[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class Query:
    """A named read-model query; ``sql`` uses ``$1``, ``$2``… for its arguments.

    ``keys`` (optional) maps the arguments to the read-model row keys (the ``key`` of
    :class:`~valux.persistence.journal.RowWrite`, table first) that are the only rows
    the query can return: a store that is the sole writer of its database answers such
    a query without asking PostgreSQL when it never wrote any of those rows
    (:class:`~valux.persistence.buffered.BufferedStore`)."""

    name: str
    sql: str
    keys: KeysOf | None = None


class Store(Protocol):
    """What a host needs from PostgreSQL (see the module docstring)."""

    @property
    def deferred(self) -> int:
        """Commits held in memory while the database is unreachable."""
        ...

    @property
    def last_error(self) -> str | None:
        """Why the database was last unreachable (None while it answers)."""
        ...

    async def commit(self, commit: Commit, *, deferrable: bool = False) -> None:
        """Make ``commit`` durable (see :meth:`Journal.commit`)."""
        ...

    async def write_restored(self) -> int:
        """Write the outage buffer a previous process left on disk; how many commits."""
        ...

    async def load_streams(self, stream_ids: Sequence[str]) -> dict[str, Recovered]:
        """Latest snapshot plus the journal after it, for each stream."""
        ...

    async def fetch(self, query: Query, *args: Any) -> list[Mapping[str, Any]]:
        """Rows of a named read-model query."""
        ...

    async def close(self) -> None:
        """Flush what is pending and release the connections."""
        ...

    def on_fork(self, handler: ForkHandler) -> None:
        """Ask ``handler(stream_id, events)`` for the rebase of buffered events that turned
        out to fork their stream (see :class:`~valux.persistence.journal.Journal`)."""
        ...


class PgStore:
    """:class:`Store` over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, journal: Journal) -> None:
        self.pool = pool
        self.journal = journal

    @classmethod
    async def connect(
        cls, database_url: str, settings: Settings, *, spool_name: str | None = None
    ) -> PgStore:
        """``spool_name``: mirror the journal's outage buffer on local disk under that name
        (``data_dir/spool/<namespace>/``), when ``journal.spool`` is on."""
        pool: asyncpg.Pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=max(1, settings.database.pool_max_size),
            timeout=settings.database.connect_timeout_s,
            command_timeout=10,
        )
        spool = None
        if spool_name is not None and settings.journal.spool:
            directory = settings.data_dir / "spool" / settings.ray.namespace
            spool = Spool(directory / f"{spool_name}.spool")
        journal = Journal(
            pool,
            window_ms=settings.journal.group_commit_window_ms,
            commit_timeout_s=settings.journal.commit_timeout_ms / 1000,
            spool=spool,
        )
        return cls(pool, journal)

    async def write_restored(self) -> int:
        return await self.journal.write_restored()

    def on_fork(self, handler: ForkHandler) -> None:
        self.journal.on_fork = handler

    @property
    def deferred(self) -> int:
        return self.journal.deferred

    @property
    def last_error(self) -> str | None:
        return self.journal.last_error

    async def commit(self, commit: Commit, *, deferrable: bool = False) -> None:
        await self.journal.commit(commit, deferrable=deferrable)

    async def load_streams(self, stream_ids: Sequence[str]) -> dict[str, Recovered]:
        return await load_streams(self.pool, stream_ids)

    async def fetch(self, query: Query, *args: Any) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = await self.pool.fetch(query.sql, *args)
        return rows

    async def close(self) -> None:
        await self.journal.close()
        await self.pool.close()
