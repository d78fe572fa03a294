"""Take-profit ladder, scalar rules (agent-rules §6, TP-1..TP-17; PNL-2/PNL-3 interplay).

Pure functions over :class:`~valux.rules.position.PositionState`. Decisions
compare doubles exactly as the reference does (gain from the position's
:attr:`~valux.rules.position.PositionState.reference_price`); amounts are
``Decimal``.

- TP-1 templates: :func:`valux.rules.config.tp_template` and
  :func:`~valux.rules.config.moon_bag_template`.
- TP-2 / quirk Q-1: :func:`take_profit_levels` — the stored levels (reference)
  or, by default in valux, the template levels of a preset mode.
- TP-3..TP-9: :func:`evaluate_take_profit` → :class:`TakeProfitDecision`.
- TP-10..TP-12, PNL-2: :func:`apply_take_profit` (and
  :func:`apply_moon_bag_activation` for the Q-4 fix), :func:`is_moon_bag_only`.
- TP-13: :func:`take_profit_progress`. TP-14/TP-15: the config model.
- TP-17 (the append-levels model) is applied by :func:`valux.rules.dca.apply_dca`.
- :func:`trigger_band`: the gains at which an evaluation acts, for the
  vectorised book (:mod:`valux.evaluation.book`).

Amounts sold are floored to the token's smallest unit (EX-2; 9 decimals unless
told otherwise). Reason strings render percentages with JS ``toFixed(2)``
(:func:`js_to_fixed`: exact ties round up in magnitude) and numbers with JS
``String(x)`` (:func:`js_number`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Final

from valux.rules.config import (
    AgentConfig,
    TakeProfitConfig,
    TakeProfitLevel,
    tp_levels,
    tp_template,
)
from valux.rules.position import DUST_AMOUNT, MOON_BAG_TOLERANCE, PositionState

__all__ = [
    "TOKEN_DECIMALS",
    "TakeProfitDecision",
    "TakeProfitProgress",
    "apply_moon_bag_activation",
    "apply_take_profit",
    "evaluate_take_profit",
    "gain_percent",
    "is_moon_bag_only",
    "js_number",
    "js_to_fixed",
    "project_take_profit",
    "take_profit_levels",
    "take_profit_progress",
    "tp_levels_count",
    "trigger_band",
]

TOKEN_DECIMALS: Final = 9
"""EX-2: default token decimals to which a take-profit sell amount is floored."""

_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)
_INF: Final = math.inf


# --------------------------------------------------------------------------
# JS number rendering (§0)
# --------------------------------------------------------------------------


def js_to_fixed(x: float, digits: int = 2) -> str:
    """JS ``x.toFixed(digits)``: the exact double rounded to ``digits`` decimals, an exact
    tie going to the larger magnitude (Python's ``format`` rounds ties to even).

    ``(1.005).toFixed(2)`` is ``"1.00"`` (the double is below the tie), ``(0.125)``
    gives ``"0.13"``, ``(-0.001)`` gives ``"-0.00"``; |x| ≥ 1e21 falls back to
    ``String(x)``.
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x) or abs(x) >= 1e21:
        return js_number(x)
    sign = "-" if x < 0 else ""
    rounded = Decimal(abs(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return sign + format(rounded, "f")


def js_number(x: float) -> str:
    """JS ``String(x)`` (Number::toString): shortest round-trip digits, plain notation
    for 1e-7 < |x| < 1e21, otherwise ``1.5e+21`` / ``1e-7`` style."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    parts = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(str(d) for d in parts.digits)
    assert isinstance(parts.exponent, int)
    k = len(digits)
    n = k + parts.exponent  # value = 0.d1d2…dk × 10^n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        body = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + body


# --------------------------------------------------------------------------
# Levels (TP-2, Q-1)
# --------------------------------------------------------------------------


def take_profit_levels(
    config: AgentConfig | TakeProfitConfig, *, quirks: bool = False
) -> tuple[TakeProfitLevel, ...]:
    """The levels the engine evaluates, ascending by target (TP-15).

    - ``quirks`` (reference, TP-2/Q-1): the *stored* levels whatever the mode.
    - default (valux's Q-1 fix): a preset mode (aggressive, moderate,
      conservative) uses its TP-1 template levels; custom uses the stored levels.

    The moon bag is the stored one in both cases: the reference UI writes the
    template's moon bag when a preset is picked, so only the levels diverge.
    """
    take_profit = config.take_profit if isinstance(config, AgentConfig) else config
    if quirks or take_profit.mode == "custom":
        return tp_levels(take_profit)
    return tp_template(take_profit.mode)


def tp_levels_count(config: AgentConfig | TakeProfitConfig, *, quirks: bool = False) -> int:
    """TP-17's "number of configured TP levels": the count of :func:`take_profit_levels`."""
    return len(take_profit_levels(config, quirks=quirks))


def gain_percent(purchase_price: float, price: float) -> float:
    """TP-3 (also DCA-6's drop and ST-1's profit): (price − purchase) / purchase × 100,
    as doubles; the pure calculator's 0 when ``purchase_price`` ≤ 0."""
    if not purchase_price > 0:
        return 0.0
    return (price - purchase_price) / purchase_price * 100


# --------------------------------------------------------------------------
# Evaluation (TP-3..TP-9)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TakeProfitDecision:
    """One take-profit evaluation (TP-4..TP-9).

    - ``should_execute``: sell ``sell_amount`` tokens now (TP-9).
    - ``levels``: the levels firing now (TP-5), counted in full by TP-10 even if
      the sale is capped.
    - ``new_remaining``: the holding after the sale (``None`` when not executing).
    - ``activate_moon_bag`` / ``moon_bag_amount``: TP-7, reported whether or not
      a sale runs.
    - ``store_moon_bag``: quirk Q-4 fixed — the activation comes with nothing to
      sell and should be persisted anyway (:func:`apply_moon_bag_activation`).
      Always false with reference quirks (the reference drops it).
    """

    should_execute: bool
    reason: str
    gain_percent: float
    levels: tuple[TakeProfitLevel, ...] = ()
    sell_amount: Decimal = _ZERO
    new_remaining: Decimal | None = None
    activate_moon_bag: bool = False
    moon_bag_amount: Decimal | None = None
    store_moon_bag: bool = False

    @property
    def levels_count(self) -> int:
        """How many levels fire now (TP-10 adds this to ``tp_levels_hit``)."""
        return len(self.levels)

    @property
    def acts(self) -> bool:
        """Whether the agent has something to do: a sale, or (Q-4 fix) a moon bag to store."""
        return self.should_execute or self.store_moon_bag


def _floor_units(amount: Decimal, decimals: int) -> Decimal:
    """EX-2: floor to the token's smallest unit."""
    return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)


def evaluate_take_profit(
    state: PositionState,
    tp: TakeProfitConfig,
    price: float,
    *,
    quirks: bool = False,
    decimals: int = TOKEN_DECIMALS,
) -> TakeProfitDecision:
    """Evaluate the take-profit ladder of ``state`` at ``price`` (TP-3..TP-9).

    1. TP-4: disabled → no action; TP-3: purchase price ≤ 0 → "Invalid purchase
       price"; ``tp_levels_hit`` ≥ the effective total
       (``total_tp_levels``, or the level count) → exhausted.
    2. TP-5: from ``tp_levels_hit − tp_batch_start_level``, each consecutive level
       with gain ≥ target fires (several can fire in one tick); TP-6: none → no
       action, "Current gain X.XX% below next level T%" or "No more levels in
       current batch".
    3. TP-7: the moon bag activates when enabled, not yet activated, and gain ≥
       trigger or the hit count reaches the effective total.
    4. TP-8/TP-9: sell = min(purchase_amount × Σ sell% / 100, max(0, holding −
       reserve)), floored to ``decimals``; ≤ 0 → no action (the would-be
       activation is reported; ``store_moon_bag`` unless ``quirks``, Q-4).
    """
    purchase = state.reference_price
    if not tp.enabled:
        return TakeProfitDecision(False, "Take-profit disabled", 0.0)
    if not purchase > 0:
        return TakeProfitDecision(False, "Invalid purchase price", 0.0)
    gain = (price - purchase) / purchase * 100  # TP-3
    levels = take_profit_levels(tp, quirks=quirks)
    return _decide(state, tp, levels, gain, quirks=quirks, decimals=decimals)


def _effective_total(state: PositionState, levels: tuple[TakeProfitLevel, ...]) -> int:
    """TP-4: ``total_tp_levels``, or the number of configured levels if that is null."""
    return len(levels) if state.total_tp_levels is None else state.total_tp_levels


def _decide(
    state: PositionState,
    tp: TakeProfitConfig,
    levels: tuple[TakeProfitLevel, ...],
    gain: float,
    *,
    quirks: bool,
    decimals: int,
) -> TakeProfitDecision:
    """TP-4..TP-9 at a given gain. Every gain-dependent step is a ``gain ≥ x`` test
    against a level target or the moon-bag trigger (used by :func:`trigger_band`)."""
    hit = state.tp_levels_hit
    total = _effective_total(state, levels)
    if hit >= total:
        return TakeProfitDecision(False, f"All take-profit levels exhausted ({hit}/{total})", gain)
    # TP-5. A batch start above the hit count (never written by the rules) starts at 0.
    batch_index = max(0, hit - state.tp_batch_start_level)
    index = batch_index
    while index < len(levels) and gain >= levels[index].target_percent:
        index += 1
    firing = levels[batch_index:index]
    if not firing:  # TP-6
        if batch_index >= len(levels):
            return TakeProfitDecision(False, "No more levels in current batch", gain)
        target = levels[batch_index].target_percent
        return TakeProfitDecision(
            False,
            f"Current gain {js_to_fixed(gain)}% below next level {js_number(target)}%",
            gain,
        )

    original = state.purchase_amount
    moon = tp.moon_bag
    activate = (
        moon.enabled
        and not state.moon_bag_activated
        and (gain >= moon.trigger_percent or hit + len(firing) >= total)
    )  # TP-7
    moon_amount = original * Decimal(repr(moon.retain_percent)) / _HUNDRED if activate else None
    if moon_amount is not None:  # TP-8
        reserve = moon_amount
    elif state.moon_bag_activated and state.moon_bag_amount:
        reserve = state.moon_bag_amount
    else:
        reserve = _ZERO
    sell_percent = sum((level.sell_percent for level in firing), 0.0)  # JS reduce, doubles
    raw = original * Decimal(repr(sell_percent)) / _HUNDRED  # TP-9: share of the original
    remaining = state.holding
    available = max(_ZERO, remaining - reserve)
    sell = _floor_units(min(raw, available), decimals)
    targets = ", ".join(f"{js_number(level.target_percent)}%" for level in firing)
    if sell <= 0:
        return TakeProfitDecision(
            False,
            f"Levels {targets} reached at {js_to_fixed(gain)}% gain but nothing is "
            f"available to sell (remaining {remaining}, reserved {reserve})",
            gain,
            levels=firing,
            activate_moon_bag=activate,
            moon_bag_amount=moon_amount,
            store_moon_bag=activate and not quirks,
        )
    return TakeProfitDecision(
        True,
        f"Take-profit levels {targets} reached at {js_to_fixed(gain)}% gain: "
        f"selling {sell} of {remaining}",
        gain,
        levels=firing,
        sell_amount=sell,
        new_remaining=remaining - sell,
        activate_moon_bag=activate,
        moon_bag_amount=moon_amount,
    )


def trigger_band(
    state: PositionState,
    tp: TakeProfitConfig,
    *,
    quirks: bool = False,
    decimals: int = TOKEN_DECIMALS,
) -> tuple[float, float]:
    """The gains ``[low, high)`` at which :func:`evaluate_take_profit` acts (a sale, or a
    Q-4 moon bag to store), for the vectorised book; ``(inf, inf)`` when it never acts.

    Every gain-dependent step of the evaluation is a ``gain ≥ x`` test with ``x`` a
    level target or the moon-bag trigger, so the decision is constant between
    consecutive such breakpoints: evaluating it *at* each breakpoint gives the exact
    set of acting gains. ``low`` is the first acting breakpoint; ``high`` is the
    breakpoint after the last acting one (``inf`` if the last acts). In practice the
    set is one interval; ``high`` is finite only when an activating moon bag would
    leave nothing to sell and the reference drops the activation (Q-4 with
    ``quirks``). Were the set ever not an interval, the band is its hull.
    """
    if not tp.enabled or not state.reference_price > 0:
        return _INF, _INF
    levels = take_profit_levels(tp, quirks=quirks)
    batch_index = max(0, state.tp_levels_hit - state.tp_batch_start_level)
    points = {level.target_percent for level in levels[batch_index:]}
    if tp.moon_bag.enabled and not state.moon_bag_activated:
        points.add(tp.moon_bag.trigger_percent)
    low = high = _INF
    previous_acted = False
    for point in sorted(points):
        acts = _decide(state, tp, levels, point, quirks=quirks, decimals=decimals).acts
        if acts:
            if low == _INF:
                low = point
            high = _INF
        elif previous_acted:
            high = point
        previous_acted = acts
    return low, high


# --------------------------------------------------------------------------
# Applying a sale (TP-10..TP-12, PNL-2)
# --------------------------------------------------------------------------


def _after_sale(
    state: PositionState, decision: TakeProfitDecision, sold: Decimal, ts: float
) -> PositionState:
    """The amount and level bookkeeping of TP-10 (no P&L)."""
    if not decision.should_execute:
        raise ValueError("the decision does not execute a sale")
    holding = state.holding
    if not sold > 0 or sold > holding:
        raise ValueError(f"sell amount must be > 0 and ≤ the remaining {holding}, got {sold}")
    moon = decision.activate_moon_bag
    return replace(
        state,
        tp_levels_hit=state.tp_levels_hit + decision.levels_count,
        remaining_amount=holding - sold,
        moon_bag_activated=True if moon else state.moon_bag_activated,
        moon_bag_amount=decision.moon_bag_amount if moon else state.moon_bag_amount,
        last_tp_time=ts,
    )


def apply_take_profit(
    state: PositionState,
    decision: TakeProfitDecision,
    sold: Decimal,
    net_proceeds: Decimal,
    ts: float,
    tx_id: str,
) -> tuple[PositionState, bool]:
    """Apply an executed take-profit sale (TP-10), returning ``(state, closed)``.

    - TP-10: ``sold`` must be > 0 and ≤ the holding (``ValueError`` otherwise);
      ``tp_levels_hit`` += every level that fired (even if the sale was capped);
      ``remaining_amount`` = holding − sold (the decision's ``new_remaining`` when
      the venue sold exactly ``sell_amount``, EX-2); the moon bag is stored if it
      activated; the transaction id, ``last_tp_time`` and the net proceeds are
      recorded.
    - PNL-2: ``realized_profit`` += net proceeds − sold / purchase_amount ×
      total_invested (cost basis 0 if purchase_amount ≤ 0).
    - TP-11: ``closed`` when the new remaining is < 1e-9 and the moon bag did not
      activate in this sale; the close record is PNL-3
      (:func:`valux.rules.pnl.take_profit_close_pnl` over the returned state).
    """
    after = _after_sale(state, decision, sold, ts)
    pa = state.purchase_amount
    cost_basis = sold / pa * state.total_invested if pa > 0 else _ZERO
    after = replace(
        after,
        realized_profit=state.realized_profit + (net_proceeds - cost_basis),
        tp_transaction_ids=(*state.tp_transaction_ids, tx_id),
        tp_net_proceeds=(*state.tp_net_proceeds, net_proceeds),
    )
    remaining = after.holding
    closed = remaining < DUST_AMOUNT and not decision.activate_moon_bag
    return after, closed


def project_take_profit(
    state: PositionState, decision: TakeProfitDecision, ts: float
) -> PositionState:
    """The state after ``decision``'s sale runs exactly as evaluated, without its P&L
    (unknown until the swap): for planning the rest of a tick (ORCH-3)."""
    return _after_sale(state, decision, decision.sell_amount, ts)


def apply_moon_bag_activation(state: PositionState, decision: TakeProfitDecision) -> PositionState:
    """Quirk Q-4 fixed: persist a moon-bag activation that came with nothing to sell."""
    if not decision.activate_moon_bag or decision.moon_bag_amount is None:
        raise ValueError("the decision activates no moon bag")
    return replace(state, moon_bag_activated=True, moon_bag_amount=decision.moon_bag_amount)


def is_moon_bag_only(state: PositionState) -> bool:
    """TP-12: the moon bag is activated, its amount truthy, and |holding − amount| < 1e-6.

    Such a position stays open until stop loss or stale trade closes it; DCA skips
    it (DCA-3 checks "not null" rather than truthy: see :mod:`valux.rules.dca`).
    """
    amount = state.moon_bag_amount
    return (
        state.moon_bag_activated
        and bool(amount)
        and amount is not None
        and abs(state.holding - amount) < MOON_BAG_TOLERANCE
    )


# --------------------------------------------------------------------------
# Progress (TP-13)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TakeProfitProgress:
    """TP-13: the ladder's progress for the UI."""

    levels_hit: int
    total_levels: int
    percent_complete: float
    sold_amount: Decimal
    remaining_amount: Decimal
    moon_bag_amount: Decimal | None
    moon_bag_only: bool


def take_profit_progress(
    state: PositionState, tp: TakeProfitConfig, *, quirks: bool = False
) -> TakeProfitProgress:
    """TP-13: total = ``total_tp_levels``, or the configured level count (0 if none);
    percent = hit / total × 100 (0 without levels); sold = purchase_amount − holding;
    the moon-bag amount only when activated."""
    total = state.total_tp_levels
    if total is None:
        total = tp_levels_count(tp, quirks=quirks)
    hit = state.tp_levels_hit
    return TakeProfitProgress(
        levels_hit=hit,
        total_levels=total,
        percent_complete=hit / total * 100 if total else 0.0,
        sold_amount=state.purchase_amount - state.holding,
        remaining_amount=state.holding,
        moon_bag_amount=state.moon_bag_amount if state.moon_bag_activated else None,
        moon_bag_only=is_moon_bag_only(state),
    )
