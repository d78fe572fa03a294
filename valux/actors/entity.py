"""The event-sourced logical actor: state folded from its journal stream.

A logical actor (one agent, one wallet) never mutates itself directly. It
*proposes* events with :meth:`Entity.stage`; the host makes them durable
(journal first) and only then calls :meth:`Entity.apply_committed`, which folds
them into memory. Recovery is the same fold over the latest snapshot plus the
events after it, so live state and recovered state cannot diverge.

Subclasses implement ``apply`` (pure state transition), ``rows`` (the
read-model upserts an event implies, computed from the state *before* the
event) and ``to_snapshot`` / ``from_snapshot``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

from valux.persistence.journal import Commit, Event, Recovered, RowWrite


class Entity(ABC):
    """Base class of every journaled logical actor."""

    stream_prefix: ClassVar[str]

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
            event = Event(self.stream_id, seq, event_type, data)
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
        if self._events_since_snapshot == 0:
            return False
        return (
            self._events_since_snapshot >= every_events
            or time.monotonic() - self._last_snapshot_at >= every_s
        )

    def stage_snapshot(self, commit: Commit) -> None:
        """Snapshot the state as it will be after ``commit``'s events are applied."""
        staged = [e for e in commit.events if e.stream_id == self.stream_id]
        if staged:
            scratch = type(self).restore(self.id, self.to_snapshot(), self.seq)
            scratch.apply_committed(staged)
            commit.snapshots.append((self.stream_id, scratch.seq, scratch.to_snapshot()))
        else:
            commit.snapshots.append((self.stream_id, self.seq, self.to_snapshot()))

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
        """Latest snapshot plus replay of the journal after it."""
        entity = cls.restore(entity_id, recovered.snapshot, recovered.snapshot_seq)
        entity.apply_committed(recovered.events)
        entity._events_since_snapshot = len(recovered.events)
        return entity
