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
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg
import structlog

from valux.actors.entity import Entity
from valux.config.settings import Settings
from valux.observability.logging import configure_logging
from valux.observability.metrics import ACTOR_RESTARTS, collect_families
from valux.observability.publisher import RedisPublisher
from valux.persistence.journal import Commit, Journal, load_streams

E = TypeVar("E", bound=Entity)


class StaleEntity(RuntimeError):
    """A commit from a logical actor's incarnation that a restart has replaced."""


class Host(Generic[E]):
    """Base class of AgentHost and WalletHost: mailboxes, journal, recovery."""

    kind: ClassVar[str]
    entity_type: ClassVar[type[Entity]]

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self, slot: int, settings: Settings, database_url: str, redis_url: str | None
    ) -> None:
        self.slot = slot
        self.settings = settings
        self.incarnation = uuid.uuid4().hex
        self.started_at = time.time()
        self.safe_state: str | None = None  # set by the root: no new entries, exits run
        configure_logging(
            settings.logging.level, settings.logging.format, process=f"{self.kind}-host-{slot}"
        )
        self.log = structlog.get_logger(f"valux.{self.kind}_host").bind(slot=slot)
        self.entities: dict[str, E] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._faults: dict[str, int] = {}
        self._failures: dict[str, deque[float]] = {}
        self.last_errors: dict[str, str] = {}
        self.pool: asyncpg.Pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=max(1, settings.database.pool_max_size),
            timeout=settings.database.connect_timeout_s,
            command_timeout=10,
        )
        self.journal = Journal(self.pool, window_ms=settings.journal.group_commit_window_ms)
        self.publisher = RedisPublisher(redis_url)
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
        streams = await load_streams(self.pool, [f"{prefix}:{i}" for i in ids])
        for entity_id in ids:
            entity = self.entity_type.recover(entity_id, streams[f"{prefix}:{entity_id}"])
            self.entities[entity_id] = entity  # type: ignore[assignment]

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
        Returns True when it was quarantined now.
        """
        now = time.monotonic()
        window = self._failures.setdefault(entity_id, deque())
        window.append(now)
        while window and now - window[0] > self.settings.supervision.restart_period_s:
            window.popleft()
        error = f"{type(exc).__name__}: {exc}"
        self.last_errors[entity_id] = error
        self.log.error("logical_actor_failed", entity=entity_id, error=error, recent=len(window))
        ACTOR_RESTARTS.labels(f"{self.kind}-logical").inc()
        stream = f"{self.entity_type.stream_prefix}:{entity_id}"
        async with self.mailbox(entity_id):
            streams = await load_streams(self.pool, [stream])
            fresh: E = self.entity_type.recover(entity_id, streams[stream])  # type: ignore[assignment]
            self.entities[entity_id] = fresh
            if len(window) > self.settings.supervision.restart_intensity:
                await self.quarantine(fresh, error)
                return True
        return False

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
            await self.journal.commit(commit, deferrable=deferrable)
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
        await self.journal.commit(commit)
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
            "slot": self.slot,
            "incarnation": self.incarnation,
            "entities": len(self.entities),
            "started_at": self.started_at,
            "recovery_seconds": self.recovery_seconds,
            "journal_deferred": self.journal.deferred,
            "journal_error": self.journal.last_error,
        }

    async def metrics(self) -> list[Any]:
        return collect_families()

    async def shutdown(self) -> dict[str, Any]:
        """Final snapshots; the caller then kills the actor."""
        taken = await self.snapshot_all()
        await self.journal.close()
        await self.publisher.close()
        await self.pool.close()
        self.log.info("host_stopped", snapshots=taken)
        return {"snapshots": taken}
