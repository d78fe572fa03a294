"""Stale-trade auto-close (agent-rules §8, ST-1..ST-3)."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal as D

import pytest

from valux.rules.config import StaleTrade
from valux.rules.dca import apply_dca
from valux.rules.position import PositionState, open_position
from valux.rules.stale_trade import stale_after, stale_trade_due
from valux.rules.stop_loss import StopLossParams

HOUR = 3600.0
DEFAULT = StaleTrade()  # enabled, 60 min, [1, 10]


def stale(low: float, high: float, minutes: float = 60.0, enabled: bool = True) -> StaleTrade:
    return StaleTrade.model_construct(
        enabled=enabled,
        min_hold_time_minutes=minutes,
        min_profit_percent=low,
        max_profit_percent=high,
    )


def position(price: str = "1", created_at: float = 0.0) -> PositionState:
    return open_position(
        purchase_price=D(price), amount=D(10), total_invested=D(price) * 10, created_at=created_at
    )


def test_st1_fires_in_band_after_min_hold() -> None:
    """ST-1: enabled, age ≥ min hold, profit within [min, max] → sell the whole position."""
    assert stale_trade_due(position(), DEFAULT, 1.05, HOUR)
    assert not stale_trade_due(position(), DEFAULT, 1.05, HOUR - 0.001)
    assert not stale_trade_due(position(), stale(1, 10, enabled=False), 1.05, 10 * HOUR)


@pytest.mark.parametrize(
    ("price", "due"),
    [(1.01, True), (1.05, True), (1.1, False), (1.0, False), (1.0099, False), (0.5, False)],
)
def test_st1_profit_band_with_float_notes(price: float, due: bool) -> None:
    """ST-1 float notes: 1.01 against 1.0 is 1.0000000000000009 % (inside [1, 10]); 1.1 is
    10.000000000000009 %, just outside [1, 10] as a double; 1.0099 is 0.99… % (below)."""
    assert stale_trade_due(position(), DEFAULT, price, HOUR) is due


def test_st1_float_notes_exact_values() -> None:
    """ST-1: the reference's doubles, bit for bit."""
    assert (1.01 - 1.0) / 1.0 * 100 == 1.0000000000000009
    assert (0.99 - 1.0) / 1.0 * 100 == -1.0000000000000009
    assert stale_trade_due(position(), stale(-5, -1), 0.99, HOUR)


def test_st1_inclusive_bounds_exactly() -> None:
    """ST-1: a profit exactly at min or max fires (purchase 100: 101 is exactly 1 %, 110
    exactly 10 %)."""
    assert (101.0 - 100.0) / 100.0 * 100 == 1.0 and (110.0 - 100.0) / 100.0 * 100 == 10.0
    state = position(price="100")
    assert stale_trade_due(state, DEFAULT, 101.0, HOUR)
    assert stale_trade_due(state, DEFAULT, 110.0, HOUR)
    assert not stale_trade_due(state, DEFAULT, math.nextafter(110.0, 200), HOUR)
    assert not stale_trade_due(state, DEFAULT, math.nextafter(101.0, 0), HOUR)


def test_st1_negative_range_closes_small_losers_and_inverted_never_fires() -> None:
    """ST-1: -5..-1 closes a position at -3 %; an inverted range (min > max) never fires
    and has no stale time."""
    state = position(price="100")
    assert stale_trade_due(state, stale(-5, -1), 97.0, HOUR)
    assert not stale_trade_due(state, stale(5, 1), 103.0, HOUR)
    assert stale_after(state, stale(5, 1)) == math.inf
    assert stale_after(state, stale(1, 5, enabled=False)) == math.inf
    assert stale_after(position(created_at=1000.0), stale(1, 5, minutes=2.5)) == 1150.0


def test_st1_age_from_original_open_time_and_averaged_price() -> None:
    """ST-1: age counts from created_at (a DCA buy does not reset it), profit from the
    DCA-averaged purchase price."""
    state = position(price="1", created_at=0.0)
    state = apply_dca(
        state,
        spent=D(5),
        tokens=D(10),
        ts=HOUR - 1,
        tx_id="d",
        tp_levels_count=0,
        stop=StopLossParams(True, -32.0, "fixed"),
        quirks=False,
    )
    assert state.purchase_price == D("0.75") and state.created_at == 0.0
    assert stale_trade_due(state, DEFAULT, 0.78, HOUR)  # +4 % against 0.75, -22 % against 1


def test_st1_invalid_purchase_price_never_fires() -> None:
    """A zero purchase price (never stored) gives an infinite profit in the reference: false."""
    assert not stale_trade_due(replace(position(), purchase_price=D(0)), stale(-1e9, 1e9), 1, HOUR)
