"""A simulated price source: one geometric Brownian motion per token.

Contract:

- :meth:`SimulatedFeed.next_batch` returns exactly one :class:`Tick` per token,
  in the order tokens were added, all stamped ``now``.
- Each price follows the exact GBM step over the time elapsed since *that
  token's* previous tick::

      p ← p · exp((μ − σ²/2)·Δt + σ·√Δt·Z),   Z ~ N(0, 1),   Δt in years

  with μ = ``drift`` and σ = ``volatility`` (both annualised). A year is
  365.25 days of trading: crypto markets never close.
- A token's first tick is its ``start_price`` (Δt = 0). If ``now`` goes
  backwards, Δt is 0 (the price does not move) until time catches up.
- Randomness comes from ``numpy.random.Generator(PCG64(seed))``, and every
  batch draws exactly one normal per token, so a given seed, sequence of
  ``now`` values and sequence of :meth:`~SimulatedFeed.add_token` calls always
  produce the same ticks. The whole step is vectorised (no Python loop over
  prices; building the ``Tick`` objects is the only per-token work).
- ``interval_s`` is the cadence the hosting actor should call
  :meth:`~SimulatedFeed.next_batch` at; the class itself never sleeps or reads
  the clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from valux.errors import Conflict, FieldError, InvalidRequest
from valux.feeds.ticks import Tick, token_problem

__all__ = ["SECONDS_PER_YEAR", "SimTokenSpec", "SimulatedFeed"]

SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SimTokenSpec:
    """How one simulated token moves: start price and annualised GBM drift/volatility."""

    symbol: str
    start_price: float
    drift: float
    volatility: float

    def problems(self, prefix: str = "") -> list[FieldError]:
        """Every invalid field of this spec, each named ``f"{prefix}{field}"``."""
        out: list[FieldError] = []
        if msg := token_problem(self.symbol):
            out.append(FieldError(f"{prefix}symbol", msg))
        if not _finite(self.start_price) or self.start_price <= 0:
            out.append(FieldError(f"{prefix}start_price", "must be a finite number > 0"))
        if not _finite(self.drift):
            out.append(FieldError(f"{prefix}drift", "must be a finite number"))
        if not _finite(self.volatility) or self.volatility < 0:
            out.append(FieldError(f"{prefix}volatility", "must be a finite number ≥ 0"))
        return out


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class SimulatedFeed:
    """Deterministic GBM prices for a set of tokens (see the module docstring)."""

    def __init__(self, tokens: Sequence[SimTokenSpec], seed: int, interval_s: float) -> None:
        errors: list[FieldError] = []
        for i, spec in enumerate(tokens):
            errors.extend(spec.problems(f"tokens[{i}]."))
        seen: set[str] = set()
        for i, spec in enumerate(tokens):
            if spec.symbol in seen:
                errors.append(FieldError(f"tokens[{i}].symbol", f"duplicate {spec.symbol!r}"))
            seen.add(spec.symbol)
        if not _finite(interval_s) or interval_s <= 0:
            errors.append(FieldError("interval_s", "must be a finite number > 0"))
        if errors:
            raise InvalidRequest("invalid simulated feed settings", errors)

        self.interval_s = float(interval_s)
        self.seed = seed
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._prices = np.empty(0, dtype=np.float64)
        self._drift = np.empty(0, dtype=np.float64)
        self._vol = np.empty(0, dtype=np.float64)
        self._last_ts = np.empty(0, dtype=np.float64)  # NaN: not ticked yet
        self._latest: dict[str, Tick] = {}
        for spec in tokens:
            self._append(spec)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Symbols in emission order."""
        return tuple(self._symbols)

    def add_token(self, spec: SimTokenSpec) -> None:
        """Start simulating ``spec``; its first tick (next batch) is ``start_price``.

        Raises:
            InvalidRequest: a field of ``spec`` is invalid.
            Conflict: the symbol is already simulated.
        """
        if errors := spec.problems():
            raise InvalidRequest(f"invalid token spec {spec.symbol!r}", errors)
        if spec.symbol in self._index:
            raise Conflict(f"token {spec.symbol!r} is already simulated")
        self._append(spec)

    def _append(self, spec: SimTokenSpec) -> None:
        self._index[spec.symbol] = len(self._symbols)
        self._symbols.append(spec.symbol)
        self._prices = np.append(self._prices, float(spec.start_price))
        self._drift = np.append(self._drift, float(spec.drift))
        self._vol = np.append(self._vol, float(spec.volatility))
        self._last_ts = np.append(self._last_ts, np.nan)

    def next_batch(self, now: float) -> list[Tick]:
        """Advance every token to ``now`` (unix seconds) and return one tick each."""
        z = self._rng.standard_normal(len(self._symbols))
        elapsed = np.where(np.isnan(self._last_ts), 0.0, now - self._last_ts)
        dt = np.maximum(elapsed, 0.0) / SECONDS_PER_YEAR
        sigma = self._vol
        self._prices = self._prices * np.exp(
            (self._drift - 0.5 * sigma * sigma) * dt + sigma * np.sqrt(dt) * z
        )
        self._last_ts = np.fmax(self._last_ts, now)  # fmax: NaN (first tick) → now
        ts = float(now)
        batch = [
            Tick(token=symbol, price=price, ts=ts)
            for symbol, price in zip(self._symbols, self._prices.tolist(), strict=True)
        ]
        self._latest = {tick.token: tick for tick in batch}
        return batch

    def latest(self) -> dict[str, Tick]:
        """The most recent tick of every token that has ticked (a copy)."""
        return dict(self._latest)
