"""Hosting: many logical actors (agents or wallets) inside one Ray actor process.

There is one hosting mechanism, used by every kind (DESIGN.md, "Logical actors,
Ray hosts"). A host owns:
- a mailbox per logical actor (an ``asyncio.Lock``: FIFO, so messages to one
  agent are handled one at a time, in arrival order, while different agents
  proceed concurrently);
- one group-committing :class:`~valux.persistence.journal.Journal` for all of
  them, and the snapshot policy;
- recovery: in the (async) constructor, before any message is accepted, every
  logical actor of its slot is rebuilt from its latest snapshot plus journal
  replay, then :meth:`Host.after_recovery` resolves work left in flight.

Restart contract: a host is a named, detached Ray actor with unlimited
``max_restarts``; a restart re-runs the constructor, which restores everything
from PostgreSQL. Methods are idempotent at the logical level (intent ids,
signal ids), so a caller that saw an error may retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg
import ray
import structlog

from valux.config.secrets import with_password
from valux.config.settings import Settings
from valux.hosting.peers import NAMERS, Peers, RayPeers
from valux.observability.logging import configure_logging
from valux.observability.metrics import ACTOR_RESTARTS, collect_families
from valux.observability.publisher import RedisPublisher
from valux.persistence.entity import Entity, UnreadableStream
from valux.persistence.journal import Collect, Commit, Event, Recovered
from valux.persistence.starts import record_start
from valux.persistence.store import PgStore, Store

E = TypeVar("E", bound=Entity)


def node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray: tests, in-process runs)."""
    if not ray.is_initialized():
        return None
    node: str = ray.get_runtime_context().get_node_id()
    return node


class StaleEntity(RuntimeError):
    """A commit from a logical actor's incarnation that a restart has replaced."""


class Host(Generic[E]):
    """Base class of AgentHost and WalletHost: mailboxes, journal, recovery."""

    kind: ClassVar[str]
    entity_type: ClassVar[type[Entity]]

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self,
        slot: int,
        settings: Settings,
        database_url: str | None,
        redis_url: str | None,
        *,
        store: Store | None = None,
        peers: Peers | None = None,
        inner: bool = False,
    ) -> None:
        """Ray passes the first four; tests and in-process runs also pass ``store`` (instead
        of a database URL) and ``peers`` (instead of the Ray namespace's named actors).
        ``inner``: hosted inside another host's process on that host's store (a wallet host
        in its agent host), which has restored the store's spool and records the start."""
        self.slot = slot
        self.settings = settings
        self.incarnation = uuid.uuid4().hex
        self.started_at = time.time()
        self.safe_state: str | None = None  # set by the root: no new entries, exits run
        if not inner:  # an inner host logs as the process it runs in
            configure_logging(
                settings.logging.level, settings.logging.format, process=f"{self.kind}-host-{slot}"
            )
        self.log = structlog.get_logger(f"valux.{self.kind}_host").bind(slot=slot)
        self.entities: dict[str, E] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._faults: dict[str, int] = {}
        self._failures: dict[str, deque[float]] = {}
        self.last_errors: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}  # entity id -> why its stream cannot be read
        self._background: set[asyncio.Task[None]] = set()
        self.peers: Peers = peers if peers is not None else RayPeers(settings.ray.namespace)
        self.connect_peers()
        if store is None:
            if database_url is None:
                raise ValueError("a host needs a database URL or a store")
            store = await PgStore.connect(  # the password from this process's environment
                str(with_password(database_url)), settings, spool_name=NAMERS[self.kind](slot)
            )
        self.store: Store = store
        if not inner:
            store.on_fork(self._stream_forked)
            restored = await store.write_restored()  # a previous process's buffered exits
            if restored:
                self.log.warning("spooled_commits_written", commits=restored)
            try:
                await record_start(store, NAMERS[self.kind](slot), self.incarnation)
            except Exception as exc:  # the supervisor then counts restarts by ping
                self.log.warning("start_not_recorded", error=str(exc))
        self.publisher = RedisPublisher(with_password(redis_url))
        await self.before_recovery()
        recover_started = time.perf_counter()
        await self._recover()
        self.recovery_seconds = time.perf_counter() - recover_started
        await self.after_recovery()
        self.log.info(
            "host_ready",
            entities=len(self.entities),
            recovery_ms=round(self.recovery_seconds * 1000, 1),
        )

    # -- recovery -----

    async def entity_ids(self) -> list[str]:
        """Ids of the logical actors this slot hosts (from the read model)."""
        raise NotImplementedError(f"{type(self).__name__} must list its entities")

    async def _recover(self) -> None:
        ids = await self.entity_ids()
        prefix = self.entity_type.stream_prefix
        streams = await self.store.load_streams([f"{prefix}:{i}" for i in ids])
        for entity_id in ids:
            try:
                entity = self.entity_type.recover(entity_id, streams[f"{prefix}:{entity_id}"])
            except UnreadableStream as exc:  # quarantine this one; the others start
                self.unreadable[entity_id] = exc.reason
                self.log.error("alert_unreadable_stream", entity=entity_id, error=exc.reason)
                continue
            self.entities[entity_id] = entity  # type: ignore[assignment]

    def connect_peers(self) -> None:
        """Set up the links to other actors over ``self.peers`` (subclasses override)."""

    async def before_recovery(self) -> None:
        """Start what this host's recovery needs in the same process (subclasses override)."""

    async def after_recovery(self) -> None:
        """Resolve work a crash left in flight (subclasses override)."""

    # -- failure isolation -----

    def inject_fault(self, entity_id: str, count: int = 1) -> int:
        """Fault injection for tests and chaos runs: the next ``count`` messages to this
        logical actor raise inside its handler. Returns the faults now pending."""
        self._faults[entity_id] = self._faults.get(entity_id, 0) + count
        return self._faults[entity_id]

    def check_fault(self, entity_id: str) -> None:
        pending = self._faults.get(entity_id, 0)
        if pending:
            self._faults[entity_id] = pending - 1
            raise RuntimeError(f"injected fault in {self.kind} {entity_id}")

    async def entity_failed(self, entity_id: str, exc: BaseException) -> bool:
        """A handler of one logical actor raised: restart that actor alone from its journal.

        Siblings and the host process are untouched. Past ``supervision.restart_intensity``
        failures within ``restart_period_s`` the actor is quarantined (:meth:`quarantine`).
        Returns True when it was quarantined now. A :class:`StaleEntity` is not a failure
        of the actor (its memory fell behind its stream: an entry refused in doubt that
        committed): the actor is reloaded and nothing is counted.
        """
        if isinstance(exc, StaleEntity):
            await self.reload(entity_id)
            return False
        now = time.monotonic()
        window = self._failures.setdefault(entity_id, deque())
        window.append(now)
        while window and now - window[0] > self.settings.supervision.restart_period_s:
            window.popleft()
        error = f"{type(exc).__name__}: {exc}"
        self.last_errors[entity_id] = error
        self.log.error("logical_actor_failed", entity=entity_id, error=error, recent=len(window))
        ACTOR_RESTARTS.labels(f"{self.kind}-logical").inc()
        async with self.mailbox(entity_id):
            fresh = await self._rebuild(entity_id)
            if fresh is None:
                reason = self.unreadable[entity_id]
                self.log.error("alert_unreadable_stream", entity=entity_id, error=reason)
                return True
            if len(window) > self.settings.supervision.restart_intensity:
                await self.quarantine(fresh, error)
                return True
        self._rebuilt(fresh)
        return False

    async def _stream_forked(self, stream_id: str, collect: Collect) -> Commit | None:
        """The journal found this stream's buffered events forked from PostgreSQL (an entry
        refused as in doubt did commit): rebase them onto the stream as PostgreSQL holds it
        and make the hosted entity that (see :class:`~valux.persistence.journal.Journal`);
        the commit that writes them, or None when they do not apply (then the entity is
        reloaded from PostgreSQL alone, with an alert). Raises when PostgreSQL cannot be
        read: the journal asks again.

        The stream is read before the mailbox is taken (nothing writes it while its events
        wait in the buffer); the events are collected under the mailbox, so what its holder
        buffers meanwhile is rebased too."""
        entity_id = stream_id.split(":", 1)[1]
        recovered = (await self.store.load_streams([stream_id]))[stream_id]
        async with self.mailbox(entity_id):
            fresh, commit = rebase_forked(
                self.entity_type, stream_id, recovered, collect(), self.log
            )
            if entity_id not in self.entities:  # not started yet: recovery reads the result
                return commit
            if fresh is None:
                self.entities.pop(entity_id, None)
                self.unreadable[entity_id] = "journal fork: stream unreadable"
                return commit
            self.entities[entity_id] = fresh  # type: ignore[assignment]
        self.after_reload(fresh)  # type: ignore[arg-type]
        return commit

    async def reload(self, entity_id: str) -> None:
        """Rebuild one logical actor from its journal (its memory fell behind the stream);
        not a failure of the actor, so no restart is counted."""
        self.log.error("alert_entity_reloaded", entity=entity_id)
        async with self.mailbox(entity_id):
            fresh = await self._rebuild(entity_id)
        if fresh is not None:
            self._rebuilt(fresh)

    async def _rebuild(self, entity_id: str) -> E | None:
        """Replace the logical actor's memory by its journal (caller holds the mailbox);
        None, the actor taken out and the reason kept, when its stream cannot be read."""
        stream = f"{self.entity_type.stream_prefix}:{entity_id}"
        streams = await self.store.load_streams([stream])
        try:
            fresh: E = self.entity_type.recover(entity_id, streams[stream])  # type: ignore[assignment]
        except UnreadableStream as exc:
            self.entities.pop(entity_id, None)
            self.unreadable[entity_id] = exc.reason
            return None
        self.entities[entity_id] = fresh
        return fresh

    def _rebuilt(self, fresh: E) -> None:
        """After a rebuild from PostgreSQL alone: :meth:`after_reload`, unless the journal
        still buffers commits (PostgreSQL may then lack closes the memory had)."""
        if not self.store.deferred:
            self.after_reload(fresh)

    def after_reload(self, entity: E) -> None:
        """A logical actor was rebuilt from PostgreSQL, which may hold what its memory did
        not (an entry refused in doubt that committed): subclasses re-establish what lives
        outside the journal (the agent host re-arms its positions)."""

    async def quarantine(self, entity: E, error: str) -> None:
        """Take a logical actor that keeps failing out of service (subclasses decide how)."""
        self.log.error("alert_logical_actor_quarantined", entity=entity.id, error=error)

    # -- mailboxes and commits -----

    @asynccontextmanager
    async def mailbox(self, entity_id: str) -> AsyncIterator[None]:
        """Exclusive, in-order access to one logical actor."""
        lock = self._locks.get(entity_id)
        if lock is None:
            lock = self._locks[entity_id] = asyncio.Lock()
        async with lock:
            yield

    async def persist(
        self,
        entity: E,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        deferrable: bool = False,
    ) -> None:
        """Journal ``events`` (plus a snapshot when due), then apply them to ``entity``.

        ``deferrable``: an exit's events, which may be buffered while PostgreSQL is
        unreachable (see :class:`~valux.persistence.journal.Journal`); anything else is
        refused with ``JournalUnavailable`` during an outage.
        """
        current = self.entities.get(entity.id)
        if current is not None and current is not entity:
            # A handler kept an incarnation that a restart replaced; writing from it would
            # fork the stream (two events with one seq). Refuse; the caller re-reads.
            raise StaleEntity(f"{entity.id}: stale incarnation; it was restarted meanwhile")
        commit = Commit()
        staged = entity.stage(commit, list(events))
        journal = self.settings.journal
        snapshot = entity.snapshot_due(journal.snapshot_every_events, journal.snapshot_every_s)
        if snapshot:
            entity.stage_snapshot(commit)
        try:
            await self.store.commit(commit, deferrable=deferrable)
        except asyncpg.UniqueViolationError as exc:  # the stream moved on without this copy
            raise StaleEntity(f"{entity.id}: journal has seq already ({exc})") from exc
        entity.apply_committed(staged)
        if snapshot:
            entity.snapshot_taken()

    async def snapshot_all(self) -> int:
        """Snapshot every logical actor that has events since its last snapshot."""
        commit = Commit()
        taken: list[E] = []
        for entity in self.entities.values():
            if entity.snapshot_due(1, 0.0):
                entity.stage_snapshot(commit)
                taken.append(entity)
        await self.store.commit(commit)
        for entity in taken:
            entity.snapshot_taken()
        return len(taken)

    # -- supervision surface -----

    async def set_safe_state(self, reason: str | None) -> bool:
        """Enter (``reason``) or leave (``None``) the safe state; True if it changed."""
        changed = reason != self.safe_state
        if changed:
            self.log.warning("safe_state", reason=reason)
        self.safe_state = reason
        return changed

    async def ping(self) -> dict[str, Any]:
        return {
            "safe_state": self.safe_state,
            "kind": self.kind,
            "pid": os.getpid(),
            "node": node_id(),
            "slot": self.slot,
            "incarnation": self.incarnation,
            "entities": len(self.entities),
            "started_at": self.started_at,
            "recovery_seconds": self.recovery_seconds,
            "unreadable": len(self.unreadable),
            "journal_deferred": self.store.deferred,
            "journal_error": self.store.last_error,
        }

    async def metrics(self) -> list[Any]:
        return collect_families()

    async def stop_background(self) -> None:
        """Cancel this host's background work (an in-process system closing; a Ray actor
        just ends). Subclasses add their own loops."""
        tasks, self._background = self._background, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def shutdown(self) -> dict[str, Any]:
        """Final snapshots; the caller then kills the actor."""
        taken = await self.snapshot_all()
        await self.publisher.close()
        await self.store.close()
        self.log.info("host_stopped", snapshots=taken)
        return {"snapshots": taken}


def rebase_forked(
    entity_type: type[Entity],
    stream_id: str,
    recovered: Recovered,
    events: list[Event],
    log: Any,
) -> tuple[Entity | None, Commit | None]:
    """``events`` (forked from ``stream_id``) applied after the stream as PostgreSQL holds it
    (``recovered``): ``(entity, commit)``; ``(entity as PostgreSQL holds it, None)`` when
    they do not apply; ``(None, None)`` when the stream cannot be read."""
    entity_id = stream_id.split(":", 1)[1]
    kinds = [e.type for e in events]
    try:
        entity, commit = entity_type.rebased(entity_id, recovered, events)
    except Exception as exc:
        log.error("alert_fork_not_rebased", stream=stream_id, events=kinds, error=repr(exc))
        try:
            return entity_type.recover(entity_id, recovered), None
        except UnreadableStream:
            return None, None
    log.warning("journal_fork_rebased", stream=stream_id, events=kinds, seq=entity.seq)
    return entity, commit
