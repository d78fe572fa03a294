"""Stop-loss rules, scalar reference implementation (agent-rules §5, SL-1..SL-14).

This module is the *definition* of valux's stop-loss behaviour: every function
reproduces the reference engine (Nexgent) bit for bit, and the vectorised
evaluator in :mod:`valux.evaluation.book` is tested against it.

Contracts
---------
- Numbers are IEEE-754 doubles (Python ``float``), exactly as the reference's
  JS ``number`` (§0). The one exception is :func:`peak_change_percent` (SL-2),
  which the reference computes with decimal.js: 20 significant digits,
  ROUND_HALF_UP, each operand seeded from its shortest decimal string (JS
  ``String(x)`` == Python ``repr(x)``), then converted back to the nearest
  double. Python's :mod:`decimal` is correctly rounded like decimal.js, so the
  results agree bit for bit.
- :func:`target_percentage` is the SL-4/SL-5 dispatcher over the four modes
  (SL-6 fixed, SL-7 exponential, SL-8 zones, SL-9 custom). It reproduces the
  §15 table exactly. ``math.exp`` (glibc, correctly rounded in practice) stands
  in for V8's ``Math.exp``; ``Math.pow(y, 2)`` is computed as ``y * y``.
- :func:`evaluate_stop` is one stop-loss evaluation of one position at one
  price (SL-2, SL-3, SL-10, SL-11, SL-12, SL-14). It is pure: it returns what
  the reference would persist (``updated``, ``peak``, ``stop_pct``) and leaves
  writing it to the caller.
- Q-6 (exponential uses ``≤ 20``, fixed and zones ``< 20``) and Q-2 (SL-16:
  DCA does not reset the peak) are reproduced, not fixed: they are properties
  of the stored state the caller passes in, and changing them belongs to the
  agent, not to these rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

__all__ = [
    "MIN_PURCHASE_PRICE",
    "MODES",
    "PEAK_PERSIST_THRESHOLD",
    "TRAILING_THRESHOLD",
    "ZONE_BOUNDS",
    "StopDecision",
    "StopLossParams",
    "decimal_operand",
    "evaluate_stop",
    "initial_stop",
    "peak_change_percent",
    "peak_change_percents",
    "peak_change_percents_of",
    "stop_price",
    "target_percentage",
    "trailing_value",
]

MODES = ("fixed", "exponential", "zones", "custom", "trailing")
"""The four reference modes (SL-5) and valux's ``trailing`` (:func:`trailing_value`). An
empty mode means ``fixed``; any other string is unknown and yields the default
percentage."""

MIN_PURCHASE_PRICE = 1e-15
"""SL-3: a purchase price of 0 or below this is not evaluated."""

PEAK_PERSIST_THRESHOLD = 0.0001
"""SL-12: a new peak alone is persisted only if it moved by more than this
(absolute, in quote currency)."""

TRAILING_THRESHOLD = 20.0
"""SL-6/7/8: below (fixed, zones) or at-or-below (exponential, Q-6) this peak
change the default percentage applies."""

ZONE_BOUNDS: tuple[tuple[float, float], ...] = (
    (25.0, 0.50),
    (50.0, 0.60),
    (100.0, 0.70),
    (200.0, 0.80),
)
"""SL-8: (inclusive upper bound of peak change, keep fraction); 0.85 above 200."""

ZONE_TOP_KEEP = 0.85

# SL-2: decimal.js defaults (precision 20, ROUND_HALF_UP). No traps, so that
# inf - inf gives NaN like decimal.js instead of raising; SL-3 then guards it.
_DECIMAL = Context(prec=20, rounding=ROUND_HALF_UP, traps=[])
_HUNDRED = Decimal(100)

# SL-7 constants, written as the reference writes them.
_EXP_SCALE = 100 / 3.2  # == 31.25 exactly
_PULLBACK_CENTER = 55.0
_PULLBACK_WIDTH = 8.0
_PULLBACK_DEPTH = 0.12
_KEEP_CAP = 0.90
_ACCEL_START = 65.0
_ACCEL_SCALE = 80.0
_ACCEL_DEPTH = 0.30


@dataclass(frozen=True, slots=True)
class StopLossParams:
    """The stop-loss section of an agent config (§1 ``stopLoss``).

    ``trailing_levels`` are ``(change, stop_loss)`` pairs in any order (SL-9).
    The integrator builds this from the validated agent config; nothing here
    re-validates VAL-3, so the rules stay total on any input.
    """

    enabled: bool
    default_percentage: float
    mode: str
    trailing_levels: tuple[tuple[float, float], ...] = ()
    trailing_percentage: float = 0.0
    """``trailing`` mode: the stop's distance below the peak, in % of the peak."""
    activation_percentage: float = 0.0
    """``trailing`` mode: the peak gain (%) from which the stop trails (0: from entry)."""

    @property
    def trail_keep(self) -> float:
        """``1 − trailing_percentage / 100``: the share of the peak the trailing stop keeps."""
        return 1.0 - self.trailing_percentage / 100.0


@dataclass(frozen=True, slots=True)
class StopDecision:
    """The result of one evaluation (the reference's StopLossEvaluationResult).

    - ``triggered``: sell the whole position now (SL-11).
    - ``stop_pct``: the ratcheted percentage (SL-10); on an SL-3 guard, the
      stored one; ``None`` when disabled (SL-14).
    - ``stop_price``: purchase × (1 + stop_pct/100), ``None`` on a guard or
      when disabled.
    - ``peak``: the peak this evaluation used (SL-2); on a guard, the stored
      peak; ``None`` when disabled.
    - ``updated``: the SL-12 persistence condition; when true the caller stores
      ``stop_pct`` and ``peak``.
    """

    triggered: bool
    stop_pct: float | None
    stop_price: float | None
    peak: float | None
    updated: bool


_DISABLED = StopDecision(triggered=False, stop_pct=None, stop_price=None, peak=None, updated=False)


def peak_change_percent(purchase_price: float, peak: float) -> float:
    """SL-2: (peak − purchase) / purchase × 100 in decimal.js arithmetic.

    Each operand is seeded from its shortest decimal string, every operation
    is rounded to 20 significant digits half-up, and the result is converted
    to the nearest double. The caller guards ``purchase_price`` (SL-3); a
    non-finite operand yields a non-finite result.
    """
    q = Decimal(repr(purchase_price))
    d = _DECIMAL.subtract(Decimal(repr(peak)), q)
    return float(_DECIMAL.multiply(_DECIMAL.divide(d, q), _HUNDRED))


def peak_change_percents(purchase_prices: Iterable[float], peak: float) -> list[float]:
    """SL-2 for many purchase prices against one peak (a tick's price).

    Exactly :func:`peak_change_percent` element by element; the peak's decimal
    is parsed once. Used by the evaluator when many positions' peaks rise to
    the same tick price.
    """
    return peak_change_percents_of([decimal_operand(q) for q in purchase_prices], peak)


def decimal_operand(value: float) -> Decimal:
    """A double as SL-2 seeds it: the decimal of its shortest round-trip string."""
    return Decimal(repr(value))


def peak_change_percents_of(purchase_decimals: Iterable[Decimal], peak: float) -> list[float]:
    """:func:`peak_change_percents` with the purchase prices already seeded by
    :func:`decimal_operand` (the evaluator keeps them per position: a purchase
    price never changes, and seeding is half the cost)."""
    k = Decimal(repr(peak))
    sub, div, mul = _DECIMAL.subtract, _DECIMAL.divide, _DECIMAL.multiply
    hundred = _HUNDRED
    return [float(mul(div(sub(k, q), q), hundred)) for q in purchase_decimals]


def _fixed(change: float, default: float) -> float:
    """SL-6: default below 20, else max(0, change − 10)."""
    if change < TRAILING_THRESHOLD:
        return default
    return max(0.0, change - 10.0)


def _exponential(change: float, default: float) -> float:
    """SL-7, the reference formula operation for operation."""
    if change <= TRAILING_THRESHOLD:  # ≤ here, < elsewhere
        return default
    x = change - TRAILING_THRESHOLD
    base_keep = 1.0 - math.exp(-x / _EXP_SCALE)
    y = (x - _PULLBACK_CENTER) / _PULLBACK_WIDTH
    pullback = _PULLBACK_DEPTH * math.exp(-(y * y) / 2.0)
    keep = base_keep - pullback
    keep = max(0.0, min(_KEEP_CAP, keep))
    if x > _ACCEL_START:
        accel = 1.0 - math.exp(-(x - _ACCEL_START) / _ACCEL_SCALE)
        keep = min(_KEEP_CAP, keep + _ACCEL_DEPTH * accel)
    return change * keep


def _zones(change: float, default: float) -> float:
    """SL-8: change × keep, the zone upper bounds inclusive."""
    if change < TRAILING_THRESHOLD:
        return default
    for bound, keep in ZONE_BOUNDS:
        if change <= bound:
            return change * keep
    return change * ZONE_TOP_KEEP


def _custom(change: float, levels: tuple[tuple[float, float], ...]) -> float | None:
    """SL-9: the stop of the matching level with the largest change.

    Ties on ``change`` (invalid under VAL-3) resolve like the reference's
    stable descending sort: the earliest level in input order wins.
    """
    best: tuple[float, float] | None = None
    for level in levels:
        if change >= level[0] and (best is None or level[0] > best[0]):
            best = level
    return None if best is None else best[1]


def trailing_value(change: float, default: float, keep: float, activation: float) -> float:
    """valux's ``trailing`` mode (an extension of the reference's four, agent-rules §14):
    a stop ``trailing_percentage`` below the peak, never looser than the default.

    With peak change ``c`` (SL-2) the peak is ``purchase × (1 + c/100)``, so a stop at
    ``keep × peak`` is ``(100 + c) × keep − 100`` percent of the purchase price. Before
    the peak gain reaches ``activation`` the default applies (Freqtrade's
    ``trailing_only_offset_is_reached``); after it, the larger of the two. Unlike the
    reference modes a trailing value ≤ 0 is kept (SL-5.4 does not apply): below the
    purchase price is where a trail from entry sits. With the SL-10 ratchet the stop
    only rises, so it is ``keep × highest peak`` whatever path the price took.
    """
    if change < activation:
        return default
    value = (100.0 + change) * keep - 100.0
    return value if value > default else default


def target_percentage(change: float, params: StopLossParams) -> float:
    """SL-4/SL-5: the target stop percentage for a peak change.

    Negative change, an unknown mode, a custom mode without a matching level,
    and a computed value ≤ 0 (except in ``trailing`` mode) all give
    ``params.default_percentage``. An empty mode means ``fixed``.
    """
    default = params.default_percentage
    if change < 0:
        return default
    mode = params.mode or "fixed"
    if mode == "trailing":
        return trailing_value(change, default, params.trail_keep, params.activation_percentage)
    if mode == "fixed":
        value = _fixed(change, default)
    elif mode == "exponential":
        value = _exponential(change, default)
    elif mode == "zones":
        value = _zones(change, default)
    elif mode == "custom":
        custom = _custom(change, params.trailing_levels) if params.trailing_levels else None
        if custom is None:
            return default
        value = custom
    else:
        return default
    if value <= 0:
        return default
    return value


def stop_price(purchase_price: float, stop_pct: float) -> float:
    """SL-11: purchase × (1 + pct/100), for loss and locked-gain stops alike."""
    return purchase_price * (1 + stop_pct / 100)


def initial_stop(
    purchase_price: float, params: StopLossParams
) -> tuple[float | None, float | None]:
    """SL-1: ``(stop_pct, peak)`` written when a position opens.

    Enabled: the default percentage and the purchase price. Disabled: nothing
    is written, both stay ``None``.
    """
    if not params.enabled:
        return None, None
    return params.default_percentage, purchase_price


def evaluate_stop(
    *,
    purchase_price: float,
    stored_peak: float | None,
    stored_pct: float | None,
    price: float,
    params: StopLossParams,
) -> StopDecision:
    """One stop-loss evaluation of one position at ``price`` (SL-2..SL-14).

    - SL-14: disabled → no trigger, everything ``None``, not updated.
    - SL-2: peak = stored peak (or the purchase price), raised to ``price`` if
      ``price`` is higher; the peak change is :func:`peak_change_percent`.
    - SL-3: purchase 0 or below 1e-15, or a non-finite peak change → no
      trigger, the stored percentage, no stop price, not updated.
    - SL-4/5 target, SL-10 ratchet (the stop never loosens).
    - SL-11: trigger iff price ≤ purchase × (1 + pct/100), inclusive.
    - SL-12: ``updated`` iff the percentage differs from the stored one, or the
      stored peak is ``None``, or the peak moved by more than 0.0001. As in the
      reference, an update whose percentage or peak is not finite (or whose
      peak is ≤ 0) is refused: ``updated`` false and the stored percentage.
    """
    if not params.enabled:
        return _DISABLED
    peak = purchase_price if stored_peak is None else stored_peak
    if price > peak:  # the reference's `if (currentPrice > peakPrice)`; NaN never raises it
        peak = price
    if purchase_price == 0 or purchase_price < MIN_PURCHASE_PRICE:
        return StopDecision(False, stored_pct, None, stored_peak, False)
    change = peak_change_percent(purchase_price, peak)
    if not math.isfinite(change):
        return StopDecision(False, stored_pct, None, stored_peak, False)

    target = target_percentage(change, params) if change >= 0 else params.default_percentage
    current = params.default_percentage if stored_pct is None else stored_pct
    new_pct = target if target > current else current

    updated = (
        stored_pct is None
        or new_pct != stored_pct
        or stored_peak is None
        or abs(peak - stored_peak) > PEAK_PERSIST_THRESHOLD
    )
    price_at_stop = stop_price(purchase_price, new_pct)
    triggered = price <= price_at_stop
    if updated and not (math.isfinite(new_pct) and math.isfinite(peak) and peak > 0):
        return StopDecision(triggered, stored_pct, price_at_stop, peak, False)
    return StopDecision(triggered, new_pct, price_at_stop, peak, updated)
