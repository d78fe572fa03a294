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
``executemany``. An *additive* row (``RowWrite.additive``) adds to its row
instead (a balance moved by an event): every one is applied, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from valux.errors import Unavailable
from valux.observability.logging import get_logger
from valux.observability.metrics import JOURNAL_COMMIT_SECONDS, JOURNAL_EVENTS
from valux.persistence.codec import decode, encode
from valux.persistence.spool import Spool

_INSERT_EVENT = (
    "INSERT INTO journal (stream_id, seq, event_type, payload, version) VALUES ($1, $2, $3, $4, $5)"
)
_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (stream_id, seq, state, version, created_at)"
    " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (stream_id) DO UPDATE SET seq = EXCLUDED.seq,"
    " state = EXCLUDED.state, version = EXCLUDED.version, created_at = now()"
    " WHERE snapshots.seq < EXCLUDED.seq"
)


@dataclass(frozen=True, slots=True)
class Event:
    """One journal row: the ``seq``-th event of ``stream_id``, written with schema ``version``."""

    stream_id: str
    seq: int
    type: str
    data: dict[str, Any]
    version: int = 1


@dataclass(frozen=True, slots=True)
class RowWrite:
    """A read-model upsert; ``key`` identifies the row (table and primary key).

    ``additive``: the statement adds its values to the row (``x = t.x + EXCLUDED.x``)
    rather than replacing it, so it is never folded into a later write of the key."""

    sql: str
    key: tuple[Any, ...]
    args: tuple[Any, ...]
    additive: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole state of ``stream_id`` after its event ``seq``, as schema ``version``."""

    stream_id: str
    seq: int
    state: dict[str, Any]
    version: int = 1


@dataclass(slots=True)
class Commit:
    """Everything one logical actor wants made durable at once."""

    events: list[Event] = field(default_factory=list)
    rows: list[RowWrite] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.rows or self.snapshots)


Collect = Callable[[], list[Event]]
ForkHandler = Callable[[str, Collect], Awaitable[Commit | None]]
"""``on_fork(stream_id, collect)``: the commit that writes the stream's buffered events —
which met another version of the stream in PostgreSQL — after what PostgreSQL holds, or
None when they cannot be applied there. The handler calls ``collect()`` once it holds the
entity (its mailbox): it answers every event of the stream buffered *then*, so a commit
that its current holder adds meanwhile is part of the rebase, not left behind it."""


async def rebase_fork(buffer: list[Commit], commit: Commit, on_fork: ForkHandler | None) -> int:
    """Replace, in ``buffer`` (in place), every commit of ``commit``'s streams that the
    handler collected by the rebase it answers, at the head; returns how many streams' events
    were dropped (the handler answered None). Raises, changing nothing, when the handler
    does. The buffer may grow while the handler runs: commits are removed by identity."""
    taken: set[int] = set()  # ids of the commits collected

    def collector(stream_id: str) -> Collect:
        def collect() -> list[Event]:
            mine = [
                c
                for c in buffer
                if id(c) not in taken and any(e.stream_id == stream_id for e in c.events)
            ]
            taken.update(id(c) for c in mine)
            return [e for c in mine for e in c.events if e.stream_id == stream_id]

        return collect

    replacements: list[Commit] = []
    dropped = 0
    for stream_id in sorted({e.stream_id for e in commit.events}):
        collect = collector(stream_id)
        rebased = await on_fork(stream_id, collect) if on_fork is not None else None
        if rebased:
            replacements.append(rebased)
        else:
            collect()  # whatever the handler did not take is dropped with the stream
            dropped += 1
    buffer[:] = replacements + [c for c in buffer if id(c) not in taken]
    return dropped


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


class JournalStalled(TimeoutError):
    """PostgreSQL did not acknowledge a commit in time (a hang, as opposed to a refusal)."""


class Journal:
    """Group-committing writer over an asyncpg pool (one per host process).

    **Outage mode.** When PostgreSQL cannot be reached, a commit marked ``deferrable``
    (exits: an exit must fire even while the database is away) is kept, in order, in a
    bounded in-memory buffer and the caller proceeds; every other commit (entries) is
    refused with :class:`JournalUnavailable`. While the buffer is not empty nothing
    bypasses it, so each stream's events reach PostgreSQL in order, and a background
    task writes the buffer out as soon as the database answers again. A commit that timed
    out but had in fact been written is recognised on the retry (its ``(stream_id, seq)``
    already exists with the same content) and not written twice. What is buffered is lost
    if this process dies before the database returns, unless a
    :class:`~valux.persistence.spool.Spool` mirrors it on local disk: then a process of
    the same host started again on this machine writes it first (:meth:`write_restored`).

    **A database that hangs** (a blackhole, not a refusal) is an outage too: an exit commit
    not acknowledged within ``commit_timeout_s`` (while PostgreSQL answers nothing else
    either) switches the journal to the outage mode at once — that commit and every commit
    still waiting behind it are buffered (exits) or refused (entries), and later commits do
    not wait at all — instead of each waiting out the driver's own timeouts in turn. An
    entry alone waits for its answer: a slow database delays it, only a dead one refuses
    it. A refused entry whose transaction was already on its way may still commit; its
    entity then finds its stream ahead of it and reloads.

    **A fork** — a buffered commit whose ``(stream_id, seq)`` exists with *other* content
    (an entry refused as in doubt did commit after all) — is never written as it stands.
    Its events, and those of the rest of that stream's buffer, are decisions already acted
    on (the sale went to the venue), so they are not dropped: ``on_fork(stream_id, collect)``
    rebases them onto what PostgreSQL holds (the host folds the stream, applies the events
    after it and answers the commit that writes them with the next seqs), and that commit
    takes their place at the head of the buffer, and of the spool, in one step. Only events
    that do not apply to the stream as PostgreSQL holds it are dropped (``on_fork`` answers
    None), with an alert; the custody audit then reports what they did.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        window_ms: float = 0.0,
        max_deferred: int = 10_000,
        write_timeout_s: float = 5.0,
        commit_timeout_s: float = 2.0,
        spool: Spool | None = None,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._commit_timeout_s = commit_timeout_s
        self.on_fork: ForkHandler | None = None
        self.forks = 0
        self._max_deferred = max_deferred
        self._write_timeout_s = write_timeout_s
        self._deferred: list[Commit] = spool.load() if spool is not None else []
        self.restored = len(self._deferred)  # left in the spool by a previous process
        self._drainer: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self._window_s = max(0.0, window_ms) / 1000.0
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._busy = False
        self._last_answer = float("-inf")  # monotonic time PostgreSQL last ended a flush
        self._flush_started = float("-inf")  # monotonic time the current flush began
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
            if deferrable:
                await self._wait_acknowledged(item)
            else:  # an entry waits for its answer (the driver's timeouts bound it)
                await asyncio.shield(item.done)
        except TimeoutError:  # a hanging database: outage mode now, not after the driver's
            self.last_error = f"PostgreSQL did not answer within {self._commit_timeout_s:g}s"
            self._stall(JournalStalled(self.last_error))
            self._defer_or_refuse(commit, deferrable, self.last_error)
        except DATABASE_DOWN as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._defer_or_refuse(commit, deferrable, self.last_error)

    async def _wait_acknowledged(self, item: _Pending) -> None:
        """Wait for ``item``'s transaction. TimeoutError only when PostgreSQL has answered
        nothing for ``commit_timeout_s``: a database that is busy (commits queued behind
        long group transactions, a starved event loop) but still answering is waited for,
        so load is never mistaken for an outage."""
        timeout = self._commit_timeout_s
        while True:
            began = time.monotonic()
            try:
                await asyncio.wait_for(asyncio.shield(item.done), timeout)
                return
            except JournalStalled:
                raise  # another commit already found the database hung
            except TimeoutError:
                now = time.monotonic()
                if now - began > 1.5 * timeout:
                    continue  # this process's loop was blocked, not the database: look again
                if now - max(self._last_answer, self._flush_started) < timeout:
                    continue  # answering, or its current transaction began just now
                raise

    def _stall(self, exc: BaseException) -> None:
        """Release every commit still waiting for a flush: each caller buffers or refuses."""
        waiting, self._pending = self._pending, []
        for item in waiting:
            _settle(item, exc)

    def _defer_or_refuse(self, commit: Commit, deferrable: bool, why: str) -> None:
        if not deferrable or len(self._deferred) >= self._max_deferred:
            raise JournalUnavailable(
                f"journal unavailable ({why}); entry refused"
                f" ({len(self._deferred)} exit commit(s) buffered until PostgreSQL returns)"
            )
        if self._spool is not None:
            self._spool.append(commit)  # on disk before the caller acts on it
        self._deferred.append(commit)
        self._start_drainer()

    def _start_drainer(self) -> None:
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
                try:
                    same = await self._already_written(commit)
                except Exception as exc:  # cannot tell yet: retry the whole step
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if not same:  # another version of this stream is in PostgreSQL
                    try:
                        await self._fork(commit)
                    except Exception as exc:  # cannot rebase yet (the database went again)
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        get_logger("valux.journal").error(
                            "journal_fork_rebase_retry", error=self.last_error
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                    continue
            except Exception as exc:  # down, or anything else: never drop, retry with backoff
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, DATABASE_DOWN):
                    get_logger("valux.journal").error("journal_drain_error", error=self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._deferred.pop(0)
            if self._spool is not None:
                self._spool.acknowledge()
            delay = 0.2
        if self._spool is not None:
            self._spool.clear()
        self.last_error = None

    async def write_restored(self) -> int:
        """Write what a previous process of this host left in the spool, before this one
        recovers its entities from PostgreSQL; returns how many commits that was."""
        restored = self.restored
        if self._deferred:
            self._start_drainer()
            assert self._drainer is not None
            await asyncio.shield(self._drainer)
        return restored

    async def _already_written(self, commit: Commit) -> bool:
        """Whether every event of ``commit`` is in the journal with this very content."""
        keys = [(e.stream_id, e.seq) for e in commit.events]
        rows = await self._pool.fetch(
            "SELECT stream_id, seq, event_type, payload FROM journal"
            " WHERE (stream_id, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        found = {(r["stream_id"], r["seq"]): (r["event_type"], bytes(r["payload"])) for r in rows}
        return all(
            found.get((e.stream_id, e.seq)) == (e.type, encode(e.data)) for e in commit.events
        )

    async def _fork(self, commit: Commit) -> None:
        """Replace ``commit`` and the rest of its streams' buffer by their rebase (see the
        class docstring and :func:`rebase_fork`)."""
        streams = sorted({e.stream_id for e in commit.events})
        dropped = await rebase_fork(self._deferred, commit, self.on_fork)
        if self._spool is not None:
            self._spool.rewrite(self._deferred)
        self.forks += 1
        log = get_logger("valux.journal")
        log.error("alert_journal_fork", streams=streams, rebased=len(streams) - dropped)
        if dropped:
            log.error("alert_journal_fork_dropped", streams=streams)

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
        self._flush_started = time.monotonic()
        try:
            await self._write([item.commit for item in batch])
        except Exception as exc:  # the group failed: retry one by one to isolate the culprit
            if len(batch) == 1 or isinstance(exc, DATABASE_DOWN):  # no one-by-one waits
                for item in batch:
                    _settle(item, exc)
                return
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
            self._last_answer = time.monotonic()  # it answered (a result or an error)
            JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        for item in batch:
            _settle(item, None)

    async def write_now(self, commits: Sequence[Commit]) -> None:
        """Write ``commits`` in one transaction, bypassing group commit and the outage
        mode (a backtest's buffered store: nothing waits on each commit, and a failure
        is the run's failure)."""
        if commits:
            await self._write(commits)

    async def _write(self, commits: Sequence[Commit]) -> None:
        events = [
            (e.stream_id, e.seq, e.type, encode(e.data), e.version)
            for c in commits
            for e in c.events
        ]
        snapshots = [
            (s.stream_id, s.seq, encode(s.state), s.version) for c in commits for s in c.snapshots
        ]
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
    """Deduplicate replacing rows by key (last wins), keep every additive row, then group
    by statement for ``executemany`` (which applies a statement's rows in order)."""
    latest: dict[tuple[Any, ...], RowWrite] = {}
    for index, row in enumerate(rows):
        key = (index, *row.key) if row.additive else row.key
        latest.pop(key, None)
        latest[key] = row
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in latest.values():
        groups.setdefault(row.sql, []).append(row.args)
    return list(groups.items())


@dataclass(slots=True)
class Recovered:
    """What a stream recovers from: its latest snapshot and the events after it.

    ``error`` says why the stream could not be read (a row that does not decode); the
    host then quarantines that one entity instead of failing to start."""

    snapshot_seq: int = 0
    snapshot: dict[str, Any] | None = None
    snapshot_version: int = 1
    events: list[Event] = field(default_factory=list)
    error: str | None = None


async def load_streams(pool: asyncpg.Pool, stream_ids: Sequence[str]) -> dict[str, Recovered]:
    """Latest snapshot plus journal tail for many streams, in two queries."""
    result = {sid: Recovered() for sid in stream_ids}
    if not stream_ids:
        return result
    async with pool.acquire() as conn:
        for row in await conn.fetch(
            "SELECT stream_id, seq, state, version FROM snapshots"
            " WHERE stream_id = ANY($1::text[])",
            list(stream_ids),
        ):
            rec = result[row["stream_id"]]
            rec.snapshot_seq = row["seq"]
            rec.snapshot_version = row["version"]
            try:
                rec.snapshot = decode(row["state"])
            except Exception as exc:
                rec.error = f"snapshot at seq {row['seq']} does not decode: {exc!r}"
        rows = await conn.fetch(
            "SELECT j.stream_id, j.seq, j.event_type, j.payload, j.version FROM journal j "
            "LEFT JOIN snapshots s ON s.stream_id = j.stream_id "
            "WHERE j.stream_id = ANY($1::text[]) AND j.seq > COALESCE(s.seq, 0) "
            "ORDER BY j.stream_id, j.seq",
            list(stream_ids),
        )
    for row in rows:
        rec = result[row["stream_id"]]
        if rec.error is not None:
            continue
        try:
            data = decode(row["payload"])
        except Exception as exc:
            rec.error = f"event {row['seq']} ({row['event_type']}) does not decode: {exc!r}"
            continue
        rec.events.append(
            Event(row["stream_id"], row["seq"], row["event_type"], data, row["version"])
        )
    return result
