"""A price source fed by hand: tests, the API's manual price push, demos.

Contract:

- :meth:`ManualFeed.push` appends ticks (already validated, e.g. by
  :func:`~valux.feeds.ticks.parse_ticks`) to a pending buffer and returns how
  many it accepted (all of them).
- :meth:`ManualFeed.drain` returns every tick pushed since the previous drain,
  in push order, and empties the buffer. Each pushed tick is drained exactly
  once.
- The buffer is bounded by ``max_pending`` (``None``: unbounded). When full, the
  *oldest* pending ticks are dropped and counted in :attr:`ManualFeed.dropped` —
  a feed nobody drains must not grow without limit, and for prices the newest
  value is the one that matters.
- :meth:`ManualFeed.latest` is the current price per token: the tick with the
  greatest ``ts`` ever pushed (on equal ``ts``, the later push wins), so a
  late, out-of-order tick does not roll a price back. Draining does not clear it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from valux.feeds.ticks import Tick

__all__ = ["ManualFeed"]


class ManualFeed:
    """Ticks pushed by hand, handed on in batches (see the module docstring)."""

    def __init__(self, *, max_pending: int | None = 100_000) -> None:
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be ≥ 1 or None, got {max_pending!r}")
        self._pending: deque[Tick] = deque(maxlen=max_pending)
        self._latest: dict[str, Tick] = {}
        self.dropped = 0
        """Ticks discarded unread because the buffer was full."""

    def push(self, ticks: Iterable[Tick]) -> int:
        """Queue ``ticks`` for the next :meth:`drain`; returns how many were queued."""
        count = 0
        pending, latest, limit = self._pending, self._latest, self._pending.maxlen
        for tick in ticks:
            if limit is not None and len(pending) == limit:
                self.dropped += 1  # deque(maxlen) drops the oldest on append
            pending.append(tick)
            current = latest.get(tick.token)
            if current is None or tick.ts >= current.ts:
                latest[tick.token] = tick
            count += 1
        return count

    def drain(self) -> list[Tick]:
        """Every tick pushed since the last drain, in push order."""
        out = list(self._pending)
        self._pending.clear()
        return out

    @property
    def pending(self) -> int:
        """Ticks waiting for :meth:`drain`."""
        return len(self._pending)

    def latest(self) -> dict[str, Tick]:
        """The current tick per token (a copy)."""
        return dict(self._latest)
