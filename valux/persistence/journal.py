"""The journal: group-committed appends of events, read-model rows and snapshots.

Contract (DESIGN.md, "Persistence"): a logical actor hands a :class:`Commit` to
:meth:`Journal.commit` and waits; the call returns only after PostgreSQL has
committed it with ``synchronous_commit = on``. Only then does the actor apply
the events to memory and answer. Commits that arrive while a flush is in
flight are folded into the next transaction (group commit), so a host with many
agents pays one round trip for all of them. If a group transaction fails, each
commit is retried in a transaction of its own, so one bad commit (for example a
duplicate ``(stream_id, seq)`` from a second writer) fails alone.

Read-model rows are full-row upserts keyed by their primary key: within one
transaction the last write of a key wins and the order between different keys
does not matter, which is what lets rows from many actors be batched with
``executemany``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from valux.errors import Unavailable
from valux.observability.logging import get_logger
from valux.observability.metrics import JOURNAL_COMMIT_SECONDS, JOURNAL_EVENTS
from valux.persistence.codec import decode, encode

_INSERT_EVENT = "INSERT INTO journal (stream_id, seq, event_type, payload) VALUES ($1, $2, $3, $4)"
_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (stream_id, seq, state, created_at) VALUES ($1, $2, $3, now()) "
    "ON CONFLICT (stream_id) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state, "
    "created_at = now() WHERE snapshots.seq < EXCLUDED.seq"
)


@dataclass(frozen=True, slots=True)
class Event:
    """One journal row: the ``seq``-th event of ``stream_id``."""

    stream_id: str
    seq: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowWrite:
    """A read-model upsert; ``key`` identifies the row (table and primary key)."""

    sql: str
    key: tuple[Any, ...]
    args: tuple[Any, ...]


@dataclass(slots=True)
class Commit:
    """Everything one logical actor wants made durable at once."""

    events: list[Event] = field(default_factory=list)
    rows: list[RowWrite] = field(default_factory=list)
    snapshots: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.rows or self.snapshots)


@dataclass(slots=True)
class _Pending:
    commit: Commit
    done: asyncio.Future[None]


DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,  # refused / reset / unreachable (ConnectionError is an OSError)
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
"""Errors that mean "PostgreSQL cannot be reached", as opposed to a bad statement."""


class JournalUnavailable(Unavailable):
    """PostgreSQL is unreachable and this commit may not wait: the decision is refused."""


class Journal:
    """Group-committing writer over an asyncpg pool (one per host process).

    **Outage mode.** When PostgreSQL cannot be reached, a commit marked ``deferrable``
    (exits: an exit must fire even while the database is away) is kept, in order, in a
    bounded in-memory buffer and the caller proceeds; every other commit (entries) is
    refused with :class:`JournalUnavailable`. While the buffer is not empty nothing
    bypasses it, so each stream's events reach PostgreSQL in order, and a background
    task writes the buffer out as soon as the database answers again. A commit that timed
    out but had in fact been written is recognised on the retry (its ``(stream_id, seq)``
    already exists) and not written twice. What is buffered is lost if this process dies
    before the database returns (the README says so).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        window_ms: float = 0.0,
        max_deferred: int = 10_000,
        write_timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._max_deferred = max_deferred
        self._write_timeout_s = write_timeout_s
        self._deferred: list[Commit] = []
        self._drainer: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self._window_s = max(0.0, window_ms) / 1000.0
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._busy = False
        self.commits = 0
        self.transactions = 0

    @property
    def deferred(self) -> int:
        """Commits held in memory while PostgreSQL is unreachable."""
        return len(self._deferred)

    async def commit(self, commit: Commit, *, deferrable: bool = False) -> None:
        """Make ``commit`` durable (or, if ``deferrable`` and the database is down, buffer it).

        Raises :class:`JournalUnavailable` when the database is unreachable and the commit
        cannot be deferred; other database errors propagate as they are.
        """
        if not commit:
            return
        if self._deferred:
            self._defer_or_refuse(commit, deferrable, self.last_error or "database unreachable")
            return
        loop = asyncio.get_running_loop()
        item = _Pending(commit, loop.create_future())
        self._pending.append(item)
        self._wakeup.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        try:
            await item.done
        except DATABASE_DOWN as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._defer_or_refuse(commit, deferrable, self.last_error)

    def _defer_or_refuse(self, commit: Commit, deferrable: bool, why: str) -> None:
        if not deferrable or len(self._deferred) >= self._max_deferred:
            raise JournalUnavailable(
                f"journal unavailable ({why}); entry refused"
                f" ({len(self._deferred)} exit commit(s) buffered until PostgreSQL returns)"
            )
        self._deferred.append(commit)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write buffered commits in order, one transaction each, once PostgreSQL answers."""
        delay = 0.2
        while self._deferred:
            commit = self._deferred[0]
            try:
                await self._write([commit])
            except asyncpg.UniqueViolationError:
                pass  # an earlier attempt did commit before its answer was lost
            except Exception as exc:  # down, or anything else: never drop, retry with backoff
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, DATABASE_DOWN):
                    get_logger("valux.journal").error("journal_drain_error", error=self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._deferred.pop(0)
            delay = 0.2
        self.last_error = None

    async def close(self) -> None:
        """Flush what is pending and stop the flusher."""
        while self._pending or self._busy:  # noqa: ASYNC110 - a short drain at shutdown
            await asyncio.sleep(0.001)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._window_s:
                await asyncio.sleep(self._window_s)
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                self._busy = True
                try:
                    await self._flush(batch)
                finally:
                    self._busy = False

    async def _flush(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            await self._write([item.commit for item in batch])
        except Exception as exc:  # the group failed: retry one by one to isolate the culprit
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            for item in batch:
                try:
                    await self._write([item.commit])
                except Exception as single_exc:
                    _settle(item, single_exc)
                else:
                    _settle(item, None)
            return
        finally:
            JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        for item in batch:
            _settle(item, None)

    async def _write(self, commits: Sequence[Commit]) -> None:
        events = [(e.stream_id, e.seq, e.type, encode(e.data)) for c in commits for e in c.events]
        snapshots = [(s, seq, encode(state)) for c in commits for s, seq, state in c.snapshots]
        grouped = _group_rows(row for c in commits for row in c.rows)
        async with (
            self._pool.acquire(timeout=self._write_timeout_s) as conn,
            conn.transaction(),
        ):
            if events:
                await conn.executemany(_INSERT_EVENT, events)
            for sql, args in grouped:
                await conn.executemany(sql, args)
            if snapshots:
                await conn.executemany(_UPSERT_SNAPSHOT, snapshots)
        self.commits += len(commits)
        self.transactions += 1
        JOURNAL_EVENTS.inc(len(events))


def _settle(item: _Pending, exc: BaseException | None) -> None:
    if item.done.done():
        return
    if exc is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(exc)


def _group_rows(rows: Iterable[RowWrite]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Deduplicate by key (last wins), then group by statement for ``executemany``."""
    latest: dict[tuple[Any, ...], RowWrite] = {}
    for row in rows:
        latest.pop(row.key, None)
        latest[row.key] = row
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in latest.values():
        groups.setdefault(row.sql, []).append(row.args)
    return list(groups.items())


@dataclass(slots=True)
class Recovered:
    """What a stream recovers from: its latest snapshot and the events after it."""

    snapshot_seq: int = 0
    snapshot: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)


async def load_streams(pool: asyncpg.Pool, stream_ids: Sequence[str]) -> dict[str, Recovered]:
    """Latest snapshot plus journal tail for many streams, in two queries."""
    result = {sid: Recovered() for sid in stream_ids}
    if not stream_ids:
        return result
    async with pool.acquire() as conn:
        for row in await conn.fetch(
            "SELECT stream_id, seq, state FROM snapshots WHERE stream_id = ANY($1::text[])",
            list(stream_ids),
        ):
            rec = result[row["stream_id"]]
            rec.snapshot_seq = row["seq"]
            rec.snapshot = decode(row["state"])
        rows = await conn.fetch(
            "SELECT j.stream_id, j.seq, j.event_type, j.payload FROM journal j "
            "LEFT JOIN snapshots s ON s.stream_id = j.stream_id "
            "WHERE j.stream_id = ANY($1::text[]) AND j.seq > COALESCE(s.seq, 0) "
            "ORDER BY j.stream_id, j.seq",
            list(stream_ids),
        )
    for row in rows:
        result[row["stream_id"]].events.append(
            Event(row["stream_id"], row["seq"], row["event_type"], decode(row["payload"]))
        )
    return result
