"""DCA rules (agent-rules §7, DCA-1..DCA-12), SL-16 and quirks Q-2 and Q-5 both ways."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valux.rules.config import DcaConfig, DcaLevel, MoonBag, TakeProfitConfig, dca_levels
from valux.rules.dca import (
    apply_dca,
    dca_new_average,
    dca_ready_at,
    dca_trigger_drop,
    evaluate_dca,
    moon_bag_only_for_dca,
    track_lowest_price,
)
from valux.rules.position import PositionState, open_position
from valux.rules.stop_loss import StopLossParams, evaluate_stop
from valux.rules.take_profit import apply_take_profit, evaluate_take_profit

FIXED = StopLossParams(True, -32.0, "fixed")


def dca(
    *levels: tuple[float, float],
    mode: str = "custom",
    max_count: int = 3,
    cooldown: float = 30.0,
    enabled: bool = True,
) -> DcaConfig:
    return DcaConfig.model_validate(
        {
            "enabled": enabled,
            "mode": mode,
            "levels": tuple(DcaLevel(drop_percent=d, buy_percent=b) for d, b in levels),
            "max_dca_count": max_count,
            "cooldown_seconds": cooldown,
        }
    )


def position(price: str = "1", amount: str = "100", **kw: object) -> PositionState:
    base = open_position(
        purchase_price=D(price), amount=D(amount), total_invested=D(price) * D(amount), created_at=0
    )
    return replace(base, **kw)  # type: ignore[arg-type]


AGGRESSIVE = dca(mode="aggressive")


# -- DCA-1 / DCA-2 / DCA-3 / DCA-4 -------------------------------------------------------


def test_dca1_dca2_level_lists() -> None:
    """DCA-1 templates (aggressive 3×-10/100, moderate 2×-20/75, conservative 1×-20/100);
    DCA-2: custom levels sorted least negative first whatever the input order."""
    assert [(x.drop_percent, x.buy_percent) for x in dca_levels(AGGRESSIVE)] == [(-10, 100)] * 3
    assert [(x.drop_percent, x.buy_percent) for x in dca_levels(dca(mode="moderate"))] == [
        (-20, 75)
    ] * 2
    assert len(dca_levels(dca(mode="conservative"))) == 1
    custom = DcaConfig.model_construct(
        enabled=True,
        mode="custom",
        levels=(
            DcaLevel(drop_percent=-30, buy_percent=50),
            DcaLevel(drop_percent=-5, buy_percent=20),
        ),
        max_dca_count=3,
        cooldown_seconds=30.0,
    )
    assert [x.drop_percent for x in dca_levels(custom)] == [-5, -30]
    decision = evaluate_dca(position(), custom, 0.94, 0.0)
    assert decision.should_execute and decision.level == DcaLevel(drop_percent=-5, buy_percent=20)


def test_dca3_check_order() -> None:
    """DCA-3: the first failing check decides: disabled, moon bag only, max count,
    cooldown, no levels, levels exhausted, then the price test."""
    moon = {"moon_bag_activated": True, "moon_bag_amount": D(10), "remaining_amount": D(10)}
    everything = position(dca_count=3, last_dca_time=100.0, **moon)
    assert evaluate_dca(everything, dca(enabled=False), 0.1, 101).reason == "DCA disabled"
    assert evaluate_dca(everything, AGGRESSIVE, 0.1, 101).reason == (
        "Only the moon bag remains; DCA skipped"
    )
    capped = position(dca_count=3, last_dca_time=100.0)
    assert evaluate_dca(capped, AGGRESSIVE, 0.1, 101).reason == "Max DCA count reached (3/3)"
    cooling = position(dca_count=0, last_dca_time=100.0)
    no_levels = DcaConfig.model_construct(
        enabled=True, mode="custom", levels=(), max_dca_count=3, cooldown_seconds=30.0
    )
    assert evaluate_dca(cooling, no_levels, 0.1, 101).reason == "Cooldown active (29s remaining)"
    assert evaluate_dca(position(), no_levels, 0.1, 101).reason == "No DCA levels configured"
    two = position(dca_count=2)
    moderate = dca(mode="moderate")
    assert evaluate_dca(two, moderate, 0.1, 0).reason == "All DCA levels exhausted (2/2)"
    assert evaluate_dca(position(), moderate, 0.9, 0).reason == (
        "Drop -10.00% has not reached DCA level 1 (-20%)"
    )


def test_dca4_cap_is_min_of_max_count_and_levels() -> None:
    """DCA-4: moderate has two levels although max count is 3; max count 1 caps three
    levels at one."""
    assert not evaluate_dca(position(dca_count=2), dca(mode="moderate"), 0.1, 0).should_execute
    assert evaluate_dca(position(dca_count=1), dca(mode="moderate"), 0.1, 0).should_execute
    one = dca(mode="aggressive", max_count=1)
    assert evaluate_dca(position(dca_count=1), one, 0.1, 0).reason == "Max DCA count reached (1/1)"
    assert dca_trigger_drop(position(dca_count=1), one) == -math.inf
    assert dca_trigger_drop(position(dca_count=2), dca(mode="moderate")) == -math.inf


def test_dca3_moon_bag_only_uses_not_null_and_1e6() -> None:
    """DCA-3 check 2: activated, amount not null (0 counts), |remaining − amount| < 1e-6."""
    base = position(moon_bag_activated=True, moon_bag_amount=D(10))
    assert moon_bag_only_for_dca(replace(base, remaining_amount=D("10.0000009")))
    assert not moon_bag_only_for_dca(replace(base, remaining_amount=D("10.000001")))
    assert moon_bag_only_for_dca(replace(base, moon_bag_amount=D(0), remaining_amount=D(0)))
    assert not moon_bag_only_for_dca(replace(base, moon_bag_amount=None, remaining_amount=D(10)))


# -- DCA-5 / DCA-6 / DCA-7 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (110.5, "Cooldown active (20s remaining)"),
        (100.0, "Cooldown active (30s remaining)"),
        (129.001, "Cooldown active (1s remaining)"),
        (129.0, "Cooldown active (1s remaining)"),
    ],
)
def test_dca5_cooldown_remaining_is_ceiled(now: float, reason: str) -> None:
    """DCA-5: while now < last + cooldown, skip with N = ceil(remaining seconds)."""
    state = position(last_dca_time=100.0, dca_count=1)
    assert evaluate_dca(state, AGGRESSIVE, 0.5, now).reason == reason


def test_dca5_cooldown_ends_exactly_at_last_plus_cooldown() -> None:
    """DCA-5: at exactly last + cooldown the cooldown is over; a null last time never
    cools down (ready at −inf)."""
    state = position(last_dca_time=100.0, dca_count=1)
    assert evaluate_dca(state, AGGRESSIVE, 0.5, 130.0).should_execute
    assert dca_ready_at(state, AGGRESSIVE) == 130.0
    assert dca_ready_at(position(), AGGRESSIVE) == -math.inf
    assert evaluate_dca(position(), AGGRESSIVE, 0.5, -1e12).should_execute


def test_dca6_float_note_and_inclusive_trigger() -> None:
    """DCA-6: 0.0009 against 0.001 is a drop of -10.000000000000005, so a -10 level fires;
    the trigger is inclusive (drop == level fires); 0.8 against 1 is -19.999999999999996
    and does not reach -20."""
    state = position(price="0.001")
    decision = evaluate_dca(state, AGGRESSIVE, 0.0009, 0)
    assert decision.drop_percent == -10.000000000000005 and decision.should_execute
    assert evaluate_dca(position(price="10"), AGGRESSIVE, 9.0, 0).drop_percent == -10.0
    assert evaluate_dca(position(price="10"), AGGRESSIVE, 9.0, 0).should_execute
    assert not evaluate_dca(
        position(price="10"), AGGRESSIVE, math.nextafter(9.0, 10), 0
    ).should_execute
    moderate = dca(mode="moderate")
    assert not evaluate_dca(position(), moderate, 0.8, 0).should_execute
    assert evaluate_dca(position(), moderate, 0.79, 0).should_execute


def test_dca6_uses_the_level_at_dca_count() -> None:
    """DCA-6: the candidate is levels[dca_count], one level per buy."""
    config = dca((-5, 10), (-10, 20), (-30, 40))
    state = position(price="10", dca_count=1)
    assert not evaluate_dca(state, config, 9.2, 0).should_execute
    decision = evaluate_dca(state, config, 9.0, 0)
    assert decision.should_execute and decision.level_index == 1
    assert (
        decision.reason
        == "DCA level 2 triggered: drop -10.00% ≤ -10%, buying 20% of the holding's value"
    )


def test_dca7_buy_size_is_share_of_current_value_held() -> None:
    """DCA-7: buy = price × (remaining, else purchase amount) × buy% / 100."""
    assert evaluate_dca(position(amount="100"), AGGRESSIVE, 0.5, 0).buy_amount == D(50)
    held = position(amount="100", remaining_amount=D(40))
    assert evaluate_dca(held, dca(mode="moderate"), 0.5, 0).buy_amount == D(15)
    assert evaluate_dca(position(price="0"), AGGRESSIVE, 0.5, 0).reason == "Invalid purchase price"


# -- DCA-8 / DCA-9 / TP-17 / Q-2 / Q-5 ---------------------------------------------------


def test_dca8_dca9_reference_update() -> None:
    """DCA-8/9 (reference): average = (invested + spent) / (bought + tokens); count, time,
    tx id, remaining only if not null, TP-17 batch fields (hit + configured count, even with
    TP disabled); the stop is untouched (SL-16, Q-2)."""
    state = position(price="1", amount="100", stop_pct=-32.0, peak=1.5, tp_levels_hit=0)
    after = apply_dca(
        state,
        spent=D(50),
        tokens=D(100),
        ts=7.0,
        tx_id="d1",
        tp_levels_count=4,
        stop=FIXED,
        quirks=True,
    )
    assert after.purchase_price == D("0.75") and after.purchase_amount == D(200)
    assert after.total_invested == D(150) and after.remaining_amount is None
    assert (after.dca_count, after.last_dca_time, after.dca_transaction_ids) == (1, 7.0, ("d1",))
    assert (after.tp_batch_start_level, after.total_tp_levels) == (0, 4)
    assert (after.stop_pct, after.peak) == (-32.0, 1.5)
    assert after.lowest_price == state.lowest_price
    held = replace(state, remaining_amount=D(100))
    again = apply_dca(
        held, spent=D(1), tokens=D(3), ts=1.0, tx_id="d", tp_levels_count=0, stop=FIXED, quirks=True
    )
    assert again.remaining_amount == D(103) and again.total_tp_levels == 0


def test_dca9_rejects_bad_fills() -> None:
    """DCA-9: tokens must be > 0, spent ≥ 0, and the new average finite and > 0."""
    for spent, tokens in ((D(1), D(0)), (D(-1), D(1)), (D(0), D(1))):
        with pytest.raises(ValueError):
            apply_dca(
                position(price="0", amount="1"),
                spent=spent,
                tokens=tokens,
                ts=0.0,
                tx_id="x",
                tp_levels_count=4,
                stop=FIXED,
                quirks=True,
            )


def test_sl16_phantom_gain_with_quirks_and_q2_fix() -> None:
    """SL-16 / Q-2 both ways: after a DCA to an average of 0.0000805 with the old peak
    0.0001 kept, the phantom +24.2 % ratchets a fixed stop to 14.2 % and 0.000073 sells;
    with valux's fix the stop is re-initialised (default, peak = new average) and it does
    not."""
    state = position(price="0.0001", amount="1000000", stop_pct=-32.0, peak=0.0001)
    # spend 61 for 1,000,000 tokens more → (100 + 61) / 2,000,000 = 0.0000805
    kw = {"spent": D(61), "tokens": D(1000000), "ts": 1.0, "tx_id": "d", "tp_levels_count": 4}
    ref = apply_dca(state, stop=FIXED, quirks=True, **kw)  # type: ignore[arg-type]
    fix = apply_dca(state, stop=FIXED, quirks=False, **kw)  # type: ignore[arg-type]
    assert ref.purchase_price == fix.purchase_price == D("0.0000805")
    assert (fix.stop_pct, fix.peak) == (-32.0, 0.0000805)
    out = {}
    for name, s in (("ref", ref), ("fix", fix)):
        d = evaluate_stop(
            purchase_price=s.reference_price,
            stored_peak=s.peak,
            stored_pct=s.stop_pct,
            price=0.000073,
            params=FIXED,
        )
        out[name] = d
    assert out["ref"].triggered and out["ref"].stop_pct is not None
    assert round(out["ref"].stop_pct, 6) == 14.223602
    assert not out["fix"].triggered
    disabled = apply_dca(state, stop=StopLossParams(False, -32.0, "fixed"), quirks=False, **kw)  # type: ignore[arg-type]
    assert (disabled.stop_pct, disabled.peak) == (-32.0, 0.0001)


def test_q5_average_over_held_tokens_vs_reference() -> None:
    """Q-5 both ways: after a TP sale of half the tokens (cost basis 50), a DCA of 25 for
    50 tokens averages (50 + 25) / (50 + 50) = 0.75 held-cost in valux, and (100 + 25) /
    (100 + 50) with the reference formula. Without TP sales both are the same."""
    tp = TakeProfitConfig.model_validate(
        {"enabled": True, "mode": "custom", "levels": [{"target_percent": 100, "sell_percent": 50}],
         "moon_bag": MoonBag(enabled=False)}
    )  # fmt: skip
    state = position(price="1", amount="100")
    sale = evaluate_take_profit(state, tp, 2.0)
    state, _ = apply_take_profit(state, sale, D(50), D(100), 1.0, "tp")
    assert state.tp_cost_basis == D(50) and state.holding_cost == D(50)
    kw = {"spent": D(25), "tokens": D(50), "ts": 2.0, "tx_id": "d", "tp_levels_count": 1}
    fixed = apply_dca(state, stop=FIXED, quirks=False, **kw)  # type: ignore[arg-type]
    ref = apply_dca(state, stop=FIXED, quirks=True, **kw)  # type: ignore[arg-type]
    assert fixed.purchase_price == D("0.75")
    assert ref.purchase_price == D(125) / D(150)
    for s in (fixed, ref):
        assert (s.purchase_amount, s.total_invested, s.remaining_amount) == (D(150), D(125), D(100))
    plain = position(price="1", amount="100")
    assert dca_new_average(plain, spent=D(10), tokens=D(20), quirks=False) == dca_new_average(
        plain, spent=D(10), tokens=D(20), quirks=True
    )


# -- DCA-12 ------------------------------------------------------------------------------


def test_dca12_lowest_price() -> None:
    """DCA-12: lower prices replace the lowest; a null lowest counts as +∞; no change
    returns the same object."""
    state = position()
    assert state.lowest_price == 1.0
    assert track_lowest_price(state, 1.5) is state
    assert track_lowest_price(state, 0.5).lowest_price == 0.5
    assert track_lowest_price(replace(state, lowest_price=None), 7.0).lowest_price == 7.0


# -- the book summary ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    enabled=st.booleans(),
    mode=st.sampled_from(["aggressive", "moderate", "conservative"]),
    max_count=st.integers(1, 4),
    count=st.integers(0, 4),
    last=st.one_of(st.none(), st.floats(0, 100)),
    moon=st.booleans(),
    now=st.floats(0, 200),
    ratio=st.floats(0.5, 1.2),
)
def test_trigger_drop_and_ready_time_are_exactly_the_rule(
    enabled: bool,
    mode: str,
    max_count: int,
    count: int,
    last: float | None,
    moon: bool,
    now: float,
    ratio: float,
) -> None:
    """Property: evaluate_dca executes iff now ≥ dca_ready_at and drop ≤ dca_trigger_drop
    (what the armed book tests), for random counts, caps, cooldowns and moon-bag states;
    also exactly at a level's price and one ulp either side."""
    config = dca(mode=mode, max_count=max_count, enabled=enabled)
    state = position(
        price="0.001",
        dca_count=count,
        last_dca_time=last,
        moon_bag_activated=moon,
        moon_bag_amount=D(100) if moon else None,
    )
    drop = dca_trigger_drop(state, config)
    ready = dca_ready_at(state, config)
    level_price = 0.001 * (1 + (-10 if mode == "aggressive" else -20) / 100)
    for price in (
        0.001 * ratio,
        level_price,
        math.nextafter(level_price, 0),
        math.nextafter(level_price, 1),
    ):
        decision = evaluate_dca(state, config, price, now)
        gain = (price - 0.001) / 0.001 * 100
        assert decision.should_execute == (now >= ready and gain <= drop)
