"""DCA (dollar-cost averaging), scalar rules (agent-rules §7, DCA-1..DCA-12).

- DCA-1/DCA-2 level lists: :func:`valux.rules.config.dca_levels` (templates,
  custom sorted least negative first).
- DCA-3..DCA-7: :func:`evaluate_dca` → :class:`DcaDecision`.
- DCA-8/DCA-9 (+ TP-17, and the Q-2/Q-5 fixes): :func:`apply_dca`.
- DCA-12: :func:`track_lowest_price`.
- For the vectorised book: :func:`dca_trigger_drop` and :func:`dca_ready_at`.

Time. The reference compares integer milliseconds: cooldown active iff
``now − lastDcaTime < cooldownSeconds × 1000``. valux clocks are float unix
seconds, so the rule is stated against the cooldown's end: active iff
``now < last_dca_time + cooldown_seconds`` (:func:`dca_ready_at`). Both say the
same thing on exact inputs; stating it this way makes the vectorised book,
which stores the ready time, agree with this module bit for bit.

Quirks (agent-rules §14), fixed unless ``quirks`` (``engine.reference_quirks``):

- **Q-2** (SL-16): the reference leaves the stop's peak and percentage alone
  after a DCA buy, so the old peak shows a phantom gain against the lower
  average. valux re-runs SL-1 with the new average as purchase and peak (the
  unmerged branch's fix (b)).
- **Q-5** (DCA-8): the reference's new average is
  ``(total_invested + spent) / (purchase_amount + tokens)``, which counts the
  tokens take-profit already sold (and their cost) as if still held. valux's
  new average is the average cost of the tokens actually held::

      held_cost   = PNL-6 cost of the holding
                  = total_invested − (Σ tp_net_proceeds − realized_profit)
                    (= total_invested − Σ PNL-2 cost bases of the TP sales;
                     holding / purchase_amount × total_invested without TP sales)
      new_average = (held_cost + spent) / (holding + tokens)

  Without take-profit sales the two formulas are the same. Either way
  ``purchase_amount`` (+tokens, "ever bought") and ``total_invested``
  (+spent) are updated as DCA-9 says, so PNL-1/PNL-2/PNL-6 keep their
  reference definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

from valux.rules.config import AgentConfig, DcaConfig, DcaLevel, as_decimal, dca_levels
from valux.rules.position import MOON_BAG_TOLERANCE, PositionState
from valux.rules.stop_loss import StopLossParams, initial_stop
from valux.rules.take_profit import js_number, js_to_fixed

__all__ = [
    "DcaDecision",
    "apply_dca",
    "dca_new_average",
    "dca_ready_at",
    "dca_trigger_drop",
    "evaluate_dca",
    "moon_bag_only_for_dca",
    "track_lowest_price",
]

_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)


@dataclass(frozen=True, slots=True)
class DcaDecision:
    """One DCA evaluation (DCA-3..DCA-7).

    ``level_index`` is the candidate level (``dca_count``) once the checks reach
    the price test; ``drop_percent`` the DCA-6 drop; ``buy_amount`` the quote
    amount to spend (DCA-7), 0 unless ``should_execute``.
    """

    should_execute: bool
    reason: str
    level_index: int | None = None
    level: DcaLevel | None = None
    drop_percent: float | None = None
    buy_amount: Decimal = _ZERO


def _section(config: AgentConfig | DcaConfig) -> DcaConfig:
    return config.dca if isinstance(config, AgentConfig) else config


def moon_bag_only_for_dca(state: PositionState) -> bool:
    """DCA-3 check 2: moon bag activated, its amount not null, |holding − amount| < 1e-6.

    (TP-12 requires a *truthy* amount; DCA-3 only a non-null one, so a stored
    amount of 0 with nothing held counts here and not there.)
    """
    amount = state.moon_bag_amount
    return (
        state.moon_bag_activated
        and amount is not None
        and abs(state.holding - amount) < MOON_BAG_TOLERANCE
    )


def dca_ready_at(state: PositionState, config: AgentConfig | DcaConfig) -> float:
    """DCA-5: when the cooldown ends (``last_dca_time + cooldown_seconds``), or ``-inf``
    when there is no previous DCA buy (a null ``last_dca_time`` means no cooldown)."""
    if state.last_dca_time is None:
        return -math.inf
    return state.last_dca_time + _section(config).cooldown_seconds


def evaluate_dca(
    state: PositionState, config: AgentConfig | DcaConfig, price: float, now: float
) -> DcaDecision:
    """Evaluate DCA for ``state`` at ``price`` and time ``now`` (DCA-3 check order).

    1. disabled → "DCA disabled";
    2. only the moon bag remains → skip;
    3. ``dca_count`` ≥ ``max_dca_count`` → "Max DCA count reached (n/max)";
    4. cooldown (DCA-5): ``now`` < last + cooldown → "Cooldown active (Ns remaining)",
       N = ceil(remaining seconds);
    5. no levels → "No DCA levels configured";
    6. ``dca_count`` ≥ levels → "All DCA levels exhausted (n/len)" (with 3: the cap
       is min(max_dca_count, levels), DCA-4);
    7. DCA-6: drop = (price − average) / average × 100 (doubles); the candidate
       ``levels[dca_count]`` fires iff drop ≤ its drop_percent (inclusive). A
       purchase price ≤ 0 (never stored) gives "Invalid purchase price".

    DCA-7: buy = price × holding × buy_percent / 100, in ``Decimal`` (the price's
    shortest decimal), a share of the current value of what is still held.
    """
    dca = _section(config)
    if not dca.enabled:
        return DcaDecision(False, "DCA disabled")
    if moon_bag_only_for_dca(state):
        return DcaDecision(False, "Only the moon bag remains; DCA skipped")
    count = state.dca_count
    if count >= dca.max_dca_count:
        return DcaDecision(False, f"Max DCA count reached ({count}/{dca.max_dca_count})")
    ready = dca_ready_at(state, dca)
    if now < ready:
        return DcaDecision(False, f"Cooldown active ({math.ceil(ready - now)}s remaining)")
    levels = dca_levels(dca)
    if not levels:
        return DcaDecision(False, "No DCA levels configured")
    if count >= len(levels):
        return DcaDecision(False, f"All DCA levels exhausted ({count}/{len(levels)})")
    purchase = state.reference_price
    level = levels[count]
    if not purchase > 0:
        return DcaDecision(False, "Invalid purchase price", count, level)
    drop = (price - purchase) / purchase * 100  # DCA-6
    target = level.drop_percent
    if not drop <= target:
        return DcaDecision(
            False,
            f"Drop {js_to_fixed(drop)}% has not reached DCA level {count + 1} "
            f"({js_number(target)}%)",
            count,
            level,
            drop,
        )
    buy = as_decimal(price) * state.holding * Decimal(repr(level.buy_percent)) / _HUNDRED
    return DcaDecision(
        True,
        f"DCA level {count + 1} triggered: drop {js_to_fixed(drop)}% ≤ {js_number(target)}%, "
        f"buying {js_number(level.buy_percent)}% of the holding's value",
        count,
        level,
        drop,
        buy,
    )


def dca_trigger_drop(state: PositionState, config: AgentConfig | DcaConfig) -> float:
    """The drop % at or below which :func:`evaluate_dca` buys, once the cooldown is over;
    ``-inf`` when it never does in this state (disabled, moon bag only, count capped,
    no or exhausted levels, invalid purchase price). For the vectorised book.

    Every check of :func:`evaluate_dca` but the cooldown and the price test depends
    on the state alone, so ``evaluate_dca(...).should_execute`` ⇔ ``now ≥
    dca_ready_at(...)`` and ``drop ≤ dca_trigger_drop(...)``.
    """
    dca = _section(config)
    if not dca.enabled or moon_bag_only_for_dca(state) or state.dca_count >= dca.max_dca_count:
        return -math.inf
    levels = dca_levels(dca)
    if state.dca_count >= len(levels) or not state.reference_price > 0:
        return -math.inf
    return levels[state.dca_count].drop_percent


def dca_new_average(
    state: PositionState, *, spent: Decimal, tokens: Decimal, quirks: bool
) -> Decimal:
    """DCA-8's new average: the reference formula with ``quirks``, valux's Q-5 fix
    otherwise (the average cost of the tokens held; see the module docstring)."""
    if quirks or (not state.tp_net_proceeds and state.remaining_amount is None):
        return (state.total_invested + spent) / (state.purchase_amount + tokens)
    return (state.holding_cost + spent) / (state.holding + tokens)


def apply_dca(
    state: PositionState,
    *,
    spent: Decimal,
    tokens: Decimal,
    ts: float,
    tx_id: str,
    tp_levels_count: int,
    stop: StopLossParams,
    quirks: bool,
) -> PositionState:
    """Apply an executed DCA buy (DCA-8, DCA-9, TP-17).

    - ``spent``: quote actually debited, protocol and network fees included;
      ``tokens``: tokens received (> 0).
    - ``purchase_price`` = the new average (:func:`dca_new_average`), which must be
      finite and > 0 (``ValueError`` otherwise); ``purchase_amount`` += tokens;
      ``total_invested`` += spent; ``dca_count`` += 1; ``last_dca_time`` = ``ts``;
      the transaction id is appended; ``remaining_amount`` += tokens only if it
      was not null.
    - TP-17: ``tp_batch_start_level`` = levels hit; ``total_tp_levels`` = levels hit
      + ``tp_levels_count`` (see :func:`valux.rules.take_profit.tp_levels_count`),
      even when take-profit is disabled. The moon-bag state carries over.
    - Stop loss: untouched with ``quirks`` (SL-16, Q-2); otherwise SL-1 again with
      the new average as purchase and peak (when the stop is enabled).
    """
    if not tokens > 0 or spent < 0:
        raise ValueError(f"a DCA buy needs tokens > 0 and spent ≥ 0, got {tokens}, {spent}")
    average = dca_new_average(state, spent=spent, tokens=tokens, quirks=quirks)
    if not (average.is_finite() and average > 0):
        raise ValueError(f"new average must be finite and > 0, got {average}")
    hit = state.tp_levels_hit
    stop_pct, peak = state.stop_pct, state.peak
    if not quirks and stop.enabled:
        stop_pct, peak = initial_stop(float(average), stop)  # Q-2 fix: SL-1 again
    return replace(
        state,
        purchase_price=average,
        purchase_amount=state.purchase_amount + tokens,
        total_invested=state.total_invested + spent,
        dca_count=state.dca_count + 1,
        last_dca_time=ts,
        dca_transaction_ids=(*state.dca_transaction_ids, tx_id),
        remaining_amount=None
        if state.remaining_amount is None
        else state.remaining_amount + tokens,
        tp_batch_start_level=hit,
        total_tp_levels=hit + tp_levels_count,
        stop_pct=stop_pct,
        peak=peak,
    )


def track_lowest_price(state: PositionState, price: float) -> PositionState:
    """DCA-12 (analytics only): the lowest price seen, a null stored value counting as
    +∞. Returns ``state`` itself when nothing changes."""
    lowest = math.inf if state.lowest_price is None else state.lowest_price
    if price < lowest:
        return replace(state, lowest_price=price)
    return state
