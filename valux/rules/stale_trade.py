"""Stale-trade auto-close, scalar rule (agent-rules §8, ST-1..ST-3).

ST-1: a position is closed whole, reason ``stale_trade``, when the rule is
enabled, the position is at least ``min_hold_time_minutes`` old (from its
original open time, ``created_at``), and its profit against the DCA-averaged
purchase price lies in ``[min_profit_percent, max_profit_percent]``, both
bounds inclusive. An inverted range (min > max) never fires; negative ranges
close small losers.

Numbers: profit % = (price − purchase) / purchase × 100 in doubles, with the
purchase price the reference's double (:attr:`PositionState.reference_price`),
so the reference's float notes hold: 1.01 against 1.0 is 1.0000000000000009 %
(inside [1, 10]) and 0.99 is -1.0000000000000009 % (inside [-5, -1]).

Time: the reference compares ``(now − createdAt)`` in minutes with the minimum
hold; valux (float unix seconds) states it as ``now ≥ created_at +
min_hold_time_minutes × 60`` (:func:`stale_after`), the form the vectorised
book stores, so both agree bit for bit.

ST-2 (after stop loss and take profit, whatever the moon-bag state) and ST-3
(a failed stale sale ends the tick, so DCA is not reached) are orchestration:
see :mod:`valux.rules.orchestration`.
"""

from __future__ import annotations

import math

from valux.rules.config import AgentConfig, StaleTrade
from valux.rules.position import PositionState

__all__ = ["STALE_TRADE_REASON", "stale_after", "stale_trade_due"]

STALE_TRADE_REASON = "stale_trade"


def _section(config: AgentConfig | StaleTrade) -> StaleTrade:
    return config.stale_trade if isinstance(config, AgentConfig) else config


def stale_after(state: PositionState, config: AgentConfig | StaleTrade) -> float:
    """When the position becomes old enough (unix seconds); ``+inf`` when the rule can
    never fire (disabled, or an inverted profit range)."""
    stale = _section(config)
    if not stale.enabled or stale.min_profit_percent > stale.max_profit_percent:
        return math.inf
    return state.created_at + stale.min_hold_time_minutes * 60


def stale_trade_due(
    state: PositionState, config: AgentConfig | StaleTrade, price: float, now: float
) -> bool:
    """ST-1: whether the whole position should be sold now with reason ``stale_trade``.

    A purchase price ≤ 0 (never stored) gives an infinite or NaN profit in the
    reference, which no finite range contains: false.
    """
    stale = _section(config)
    if not stale.enabled or not now >= state.created_at + stale.min_hold_time_minutes * 60:
        return False
    purchase = state.reference_price
    if not purchase > 0:
        return False
    profit = (price - purchase) / purchase * 100
    return stale.min_profit_percent <= profit <= stale.max_profit_percent
