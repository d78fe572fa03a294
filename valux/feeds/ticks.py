"""The price tick every feed emits, and validation of ticks that arrive from outside.

Contract:

- A :class:`Tick` is immutable: ``token`` (a symbol or mint/contract address,
  1–64 characters), ``price`` (quote per token, a finite ``float`` > 0 — prices
  are floats because they land in the evaluators' numpy arrays; money stays
  ``Decimal`` everywhere else) and ``ts`` (unix seconds, a finite ``float``).
- Feeds hand ticks on in *batches* (:data:`TickBatch`), never one Ray call per
  tick (DESIGN.md, "Hot paths").
- :func:`parse_ticks` validates untrusted input (a webhook body, a manual push
  through the API). It checks every item and raises one
  :class:`~valux.errors.InvalidRequest` listing *every* bad field as
  ``ticks[i].<field>``; it never returns a partially valid batch.
- The per-field checks (:func:`token_problem`, :func:`price_problem`,
  :func:`ts_problem`) are shared with the replay reader so a CSV row and a JSON
  item obey the same rules.

Timestamps are unix seconds. Values of 1e11 or more are rejected as "looks like
milliseconds" (1e11 s is the year 5138): a millisecond timestamp accepted as
seconds silently stretches a backtest over millennia.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

from valux.errors import FieldError, InvalidRequest

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MAX_TS",
    "Tick",
    "TickBatch",
    "parse_ticks",
    "price_problem",
    "token_problem",
    "ts_problem",
]

MAX_TOKEN_LENGTH = 64
"""Longest accepted token identifier (an EVM address is 42, a Solana mint ≤ 44)."""

MAX_TS = 1e11
"""Timestamps at or above this are taken to be milliseconds and rejected."""


@dataclass(frozen=True, slots=True)
class Tick:
    """One observed price: ``price`` quote per ``token`` at unix time ``ts``."""

    token: str
    price: float
    ts: float


TickBatch: TypeAlias = list[Tick]
"""The unit feeds push: all ticks of one poll/step, in order."""


def token_problem(value: object) -> str | None:
    """Why ``value`` is not a valid token identifier, or ``None`` if it is."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TOKEN_LENGTH:
        return f"must be a non-empty string of at most {MAX_TOKEN_LENGTH} characters"
    return None


def _as_float(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError):  # huge ints, Decimal('sNaN')
        return None


def price_problem(value: object) -> str | None:
    """Why ``value`` is not a valid price, or ``None`` if it is."""
    number = _as_float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        return "must be a finite number > 0"
    return None


def ts_problem(value: object) -> str | None:
    """Why ``value`` is not a valid unix-seconds timestamp, or ``None`` if it is."""
    number = _as_float(value)
    if number is None or not math.isfinite(number):
        return "must be a finite number (unix seconds)"
    if number < 0:
        return "must be ≥ 0 (unix seconds)"
    if number >= MAX_TS:
        return "looks like milliseconds; send unix seconds"
    return None


def parse_ticks(
    items: Sequence[Mapping[str, Any]],
    *,
    now: Callable[[], float] = time.time,
) -> list[Tick]:
    """Validate raw tick objects (``{"token", "price", "ts"?}``) into :class:`Tick` s.

    A missing or ``None`` ``ts`` becomes ``now()`` (one reading for the whole
    batch). Keys other than ``token``, ``price`` and ``ts`` are ignored.

    Raises:
        InvalidRequest: if any item is bad; ``errors`` holds one
            :class:`~valux.errors.FieldError` per bad field of every bad item,
            e.g. ``FieldError("ticks[3].price", "must be a finite number > 0")``.
    """
    errors: list[FieldError] = []
    ticks: list[Tick] = []
    default_ts: float | None = None
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            errors.append(FieldError(f"ticks[{i}]", "must be an object"))
            continue
        token: object = item.get("token")
        price: object = item.get("price")
        ts: object = item.get("ts")
        problems = [("token", token_problem(token)), ("price", price_problem(price))]
        if ts is not None:
            problems.append(("ts", ts_problem(ts)))
        bad = [FieldError(f"ticks[{i}].{name}", msg) for name, msg in problems if msg]
        if bad:
            errors.extend(bad)
            continue
        price_f, ts_f = _as_float(price), _as_float(ts)
        assert isinstance(token, str) and price_f is not None  # checked above
        if ts_f is None:  # absent: ts was validated when present
            if default_ts is None:
                default_ts = float(now())
            ts_f = default_ts
        ticks.append(Tick(token=token, price=price_f, ts=ts_f))
    if errors:
        bad_items = len({e.field.split(".", 1)[0] for e in errors})
        raise InvalidRequest(f"{bad_items} of {len(items)} ticks are invalid", errors)
    return ticks
