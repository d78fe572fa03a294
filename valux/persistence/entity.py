"""The event-sourced logical actor: state folded from its journal stream.

A logical actor (one agent, one wallet) never mutates itself directly. It
*proposes* events with :meth:`Entity.stage`; the host makes them durable
(journal first) and only then calls :meth:`Entity.apply_committed`, which folds
them into memory. Recovery is the same fold over the latest snapshot plus the
events after it, so live state and recovered state cannot diverge.

Subclasses implement ``apply`` (pure state transition), ``rows`` (the
read-model upserts an event implies, computed from the state *before* the
event) and ``to_snapshot`` / ``from_snapshot``.

**Schema versions.** Every event and snapshot is written with its class's
``schema_version``. On recovery, what an older version wrote is upgraded first:
``upcast_event`` maps ``(type, data)`` of version *v* to version *v + 1* (a
renamed event gets its new name there), step by step up to the current one, and
``upcast_snapshot`` does the same for a snapshot. An event that is still unknown
after upgrading, or that does not decode, makes :meth:`Entity.recover` raise
:class:`UnreadableStream`: the host quarantines that one entity and starts the rest.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, ClassVar, Self

from valux.persistence.journal import Commit, Event, Recovered, RowWrite, Snapshot


class UnreadableStream(RuntimeError):
    """A stream whose events or snapshot this code cannot read (see the module docstring)."""

    def __init__(self, stream_id: str, reason: str) -> None:
        super().__init__(stream_id, reason)
        self.stream_id = stream_id
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.stream_id}: {self.reason}"


class Entity(ABC):
    """Base class of every journaled logical actor."""

    stream_prefix: ClassVar[str]
    schema_version: ClassVar[int] = 1
    """The version of the events and snapshots this class writes."""

    @classmethod
    def upcast_event(
        cls, event_type: str, data: dict[str, Any], version: int
    ) -> tuple[str, dict[str, Any]]:
        """Upgrade one event from ``version`` to ``version + 1`` (default: unchanged)."""
        return event_type, data

    @classmethod
    def upcast_snapshot(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Upgrade a snapshot from ``version`` to ``version + 1`` (default: unchanged)."""
        return state

    def __init__(self, entity_id: str) -> None:
        self.id = entity_id
        self.seq = 0
        self._events_since_snapshot = 0
        self._last_snapshot_at = time.monotonic()

    @property
    def stream_id(self) -> str:
        return f"{self.stream_prefix}:{self.id}"

    # -- subclass contract -----

    @abstractmethod
    def apply(self, event_type: str, data: dict[str, Any]) -> None:
        """Fold one committed event into memory (pure, no I/O, never fails on valid events)."""

    def rows(self, event_type: str, data: dict[str, Any]) -> list[RowWrite]:
        """Read-model upserts written in the same transaction as the event."""
        return []

    @abstractmethod
    def to_snapshot(self) -> dict[str, Any]:
        """The whole state as msgpack-able data."""

    @abstractmethod
    def load_snapshot(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`to_snapshot`."""

    # -- staging and committing -----

    def stage(self, commit: Commit, events: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        """Add events (with their read-model rows) to ``commit`` without applying them.

        Rows are computed against a state that already includes the earlier
        events of the same batch, by applying to a scratch copy only when a
        batch has more than one event.
        """
        if any(e.stream_id == self.stream_id for e in commit.events):
            raise RuntimeError(f"{self.stream_id}: stage() called twice for one commit")
        staged: list[Event] = []
        seq = self.seq
        for event_type, data in events:
            seq += 1
            event = Event(self.stream_id, seq, event_type, data, self.schema_version)
            staged.append(event)
            commit.events.append(event)
        commit.rows.extend(self._rows_for(staged))
        return staged

    def _rows_for(self, events: list[Event]) -> list[RowWrite]:
        if len(events) == 1:
            return self.rows(events[0].type, events[0].data)
        scratch = type(self).restore(self.id, self.to_snapshot(), self.seq)
        out: list[RowWrite] = []
        for event in events:
            out.extend(scratch.rows(event.type, event.data))
            scratch.apply(event.type, event.data)
        return out

    def apply_committed(self, events: list[Event]) -> None:
        """Fold events that the journal has committed."""
        for event in events:
            if event.seq != self.seq + 1:
                raise RuntimeError(
                    f"{self.stream_id}: event seq {event.seq} does not follow {self.seq}"
                )
            self.apply(event.type, event.data)
            self.seq = event.seq
            self._events_since_snapshot += 1

    def snapshot_due(self, every_events: int, every_s: float) -> bool:
        """A snapshot is due after ``every_events`` events — or, for a large state, after as
        many events as the snapshot has items (:meth:`snapshot_weight`), so that taking
        snapshots costs O(1) per event at any size and recovery replays no more events
        than the snapshot holds items — or ``every_s`` seconds after the last one."""
        if self._events_since_snapshot == 0:
            return False
        return (
            self._events_since_snapshot >= max(every_events, self.snapshot_weight())
            or time.monotonic() - self._last_snapshot_at >= every_s
        )

    def snapshot_weight(self) -> int:
        """How many items a snapshot of this state holds (subclasses with growing state
        override it)."""
        return 0

    def stage_snapshot(self, commit: Commit) -> None:
        """Snapshot the state as it will be after ``commit``'s events are applied."""
        staged = [e for e in commit.events if e.stream_id == self.stream_id]
        if staged:
            scratch = type(self).restore(self.id, self.to_snapshot(), self.seq)
            scratch.apply_committed(staged)
            snapshot = Snapshot(self.stream_id, scratch.seq, scratch.to_snapshot())
        else:
            snapshot = Snapshot(self.stream_id, self.seq, self.to_snapshot())
        commit.snapshots.append(replace(snapshot, version=self.schema_version))

    def snapshot_taken(self) -> None:
        self._events_since_snapshot = 0
        self._last_snapshot_at = time.monotonic()

    # -- recovery -----

    @classmethod
    def restore(cls, entity_id: str, snapshot: dict[str, Any] | None, seq: int) -> Self:
        entity = cls(entity_id)
        if snapshot is not None:
            entity.load_snapshot(snapshot)
        entity.seq = seq
        return entity

    @classmethod
    def recover(cls, entity_id: str, recovered: Recovered) -> Self:
        """Latest snapshot plus replay of the journal after it, each upgraded to the current
        schema first; raises :class:`UnreadableStream` for what cannot be read."""
        stream_id = f"{cls.stream_prefix}:{entity_id}"
        if recovered.error is not None:
            raise UnreadableStream(stream_id, recovered.error)
        snapshot = recovered.snapshot
        if snapshot is not None:
            for version in range(recovered.snapshot_version, cls.schema_version):
                snapshot = cls.upcast_snapshot(snapshot, version)
        events = [cls._upgraded(stream_id, e) for e in recovered.events]
        try:
            entity = cls.restore(entity_id, snapshot, recovered.snapshot_seq)
            entity.apply_committed(events)
        except UnreadableStream:
            raise
        except Exception as exc:
            raise UnreadableStream(stream_id, f"replay failed: {exc!r}") from exc
        entity._events_since_snapshot = len(events)
        return entity

    @classmethod
    def rebased(
        cls, entity_id: str, recovered: Recovered, events: list[Event]
    ) -> tuple[Self, Commit]:
        """The stream as PostgreSQL holds it with ``events`` — written for another version
        of it (a journal fork) — applied after it: the entity and the commit that writes
        them with the next seqs and their rows recomputed. Raises if the stream cannot be
        read or an event does not apply to it (nothing is changed then)."""
        entity = cls.recover(entity_id, recovered)
        commit = Commit()
        upgraded = [cls._upgraded(entity.stream_id, e) for e in events]
        staged = entity.stage(commit, [(e.type, e.data) for e in upgraded])
        entity.apply_committed(staged)
        return entity, commit

    @classmethod
    def _upgraded(cls, stream_id: str, event: Event) -> Event:
        if event.version > cls.schema_version:
            raise UnreadableStream(
                stream_id,
                f"event {event.seq} ({event.type}) was written by a newer valux"
                f" (schema {event.version} > {cls.schema_version})",
            )
        event_type, data = event.type, event.data
        for version in range(event.version, cls.schema_version):
            event_type, data = cls.upcast_event(event_type, data, version)
        return Event(event.stream_id, event.seq, event_type, data, cls.schema_version)
