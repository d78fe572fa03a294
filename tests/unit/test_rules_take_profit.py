"""Take-profit ladder rules (agent-rules §6, TP-1..TP-17), PNL-2/PNL-3 interplay, Q-1 and Q-4."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valux.rules.config import (
    MoonBag,
    TakeProfitConfig,
    TakeProfitLevel,
    load_agent_config,
    moon_bag_template,
    tp_template,
)
from valux.rules.dca import apply_dca
from valux.rules.pnl import full_close_pnl, take_profit_close_pnl, unrealised_pnl
from valux.rules.position import PositionState, open_position
from valux.rules.stop_loss import StopLossParams
from valux.rules.take_profit import (
    TakeProfitDecision,
    apply_moon_bag_activation,
    apply_take_profit,
    evaluate_take_profit,
    gain_percent,
    is_moon_bag_only,
    js_number,
    js_to_fixed,
    project_take_profit,
    take_profit_levels,
    take_profit_progress,
    tp_levels_count,
    trigger_band,
)

FIXED = StopLossParams(True, -32.0, "fixed")


def lv(*pairs: tuple[float, float]) -> tuple[TakeProfitLevel, ...]:
    return tuple(TakeProfitLevel(target_percent=t, sell_percent=s) for t, s in pairs)


def tp_config(
    *pairs: tuple[float, float],
    mode: str = "custom",
    moon: MoonBag | None = None,
    enabled: bool = True,
) -> TakeProfitConfig:
    return TakeProfitConfig.model_validate(
        {
            "enabled": enabled,
            "mode": mode,
            "levels": lv(*pairs) if pairs else TakeProfitConfig().levels,
            "moon_bag": moon or MoonBag(enabled=mode != "custom"),
        }
    )


MODERATE = tp_config(mode="moderate")  # the CFG-1 levels 50/25, 150/25, 300/25, 400/15


def position(amount: str = "1000", price: str = "1", **kw: object) -> PositionState:
    base = open_position(
        purchase_price=D(price),
        amount=D(amount),
        total_invested=D(price) * D(amount),
        created_at=0.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


# -- number rendering (§0) ------------------------------------------------------------


def test_js_to_fixed_rounds_exact_ties_up_unlike_python() -> None:
    """§0: toFixed(2) rounds an exact tie up (in magnitude); Python's format rounds to even;
    a double just below a written tie (1.005) rounds down in both."""
    assert js_to_fixed(0.125) == "0.13" and format(0.125, ".2f") == "0.12"
    assert js_to_fixed(3.125) == "3.13"
    assert js_to_fixed(-3.125) == "-3.13"
    assert js_to_fixed(1.005) == "1.00"
    assert js_to_fixed(-0.001) == "-0.00" and js_to_fixed(-0.0) == "0.00"
    assert js_to_fixed(30.0) == "30.00"
    assert js_to_fixed(math.nan) == "NaN" and js_to_fixed(1e21) == "1e+21"


def test_js_number_renders_like_string_of_a_js_number() -> None:
    """JS String(x): integers without ``.0``, plain notation in [1e-6, 1e21), else exponent."""
    assert [js_number(x) for x in (50.0, 12.5, -10.0, 0.0, 1e-6, 1e-7, 1e21, 1.5e300)] == [
        "50",
        "12.5",
        "-10",
        "0",
        "0.000001",
        "1e-7",
        "1e+21",
        "1.5e+300",
    ]
    assert js_number(123456789012345680000.0) == "123456789012345680000"
    assert js_number(math.inf) == "Infinity"


# -- TP-1 / TP-2 / TP-15 / Q-1 ----------------------------------------------------------


def test_tp1_templates_and_unknown_mode() -> None:
    """TP-1: the three templates and their moon bags; custom has no levels and the
    enabled/300/10 moon bag; an unknown mode maps to moderate."""
    assert tp_template("aggressive") == lv((25, 25), (50, 25), (100, 25), (150, 15))
    assert tp_template("moderate") == lv((50, 25), (150, 25), (300, 25), (400, 15))
    assert tp_template("conservative") == lv((100, 20), (200, 20), (400, 25), (600, 20))
    assert tp_template("custom") == ()
    assert tp_template("nope") == tp_template("moderate")
    bags = {m: moon_bag_template(m) for m in ("aggressive", "conservative", "custom")}
    assert (bags["aggressive"].trigger_percent, bags["aggressive"].retain_percent) == (100, 10)
    assert (bags["conservative"].trigger_percent, bags["conservative"].retain_percent) == (400, 15)
    assert (bags["custom"].trigger_percent, bags["custom"].retain_percent) == (300, 10)


def test_q1_preset_mode_uses_template_levels_by_default_and_stored_with_quirks() -> None:
    """Q-1 both ways: an aggressive-mode config whose stored levels are the defaults
    (moderate) sells at the aggressive targets in valux, at the stored moderate targets
    with reference quirks (TP-2); custom always uses the stored levels."""
    aggressive = tp_config(mode="aggressive")
    assert take_profit_levels(aggressive) == tp_template("aggressive")
    assert take_profit_levels(aggressive, quirks=True) == tp_template("moderate")
    state = position()
    fixed = evaluate_take_profit(state, aggressive, 1.3)
    assert fixed.should_execute and [x.target_percent for x in fixed.levels] == [25.0]
    ref = evaluate_take_profit(state, aggressive, 1.3, quirks=True)
    assert not ref.should_execute
    assert ref.reason == "Current gain 30.00% below next level 50%"
    custom = tp_config((20, 10), (60, 20))
    assert take_profit_levels(custom) == take_profit_levels(custom, quirks=True) == custom.levels


def test_tp15_levels_sorted_ascending_without_mutating_the_config() -> None:
    """TP-15: evaluation uses the levels sorted by target; the config keeps its order."""
    stored = TakeProfitConfig.model_validate(
        {"enabled": True, "mode": "moderate", "levels": lv((300, 10), (50, 20), (150, 30))}
    )
    assert [x.target_percent for x in take_profit_levels(stored, quirks=True)] == [50, 150, 300]
    assert [x.target_percent for x in stored.levels] == [300, 50, 150]
    assert tp_levels_count(stored, quirks=True) == 3 and tp_levels_count(stored) == 4


# -- TP-3 / TP-4 -------------------------------------------------------------------------


def test_tp3_gain_and_invalid_purchase_price() -> None:
    """TP-3: gain from the averaged price as doubles; the pure calculator gives 0 for a
    purchase price ≤ 0 and the evaluation answers "Invalid purchase price"."""
    assert gain_percent(1.0, 1.5) == 50.0
    assert gain_percent(0.0, 1.5) == 0.0
    decision = evaluate_take_profit(position(price="0"), MODERATE, 1.0)
    assert not decision.should_execute and decision.reason == "Invalid purchase price"


def test_tp4_disabled_and_exhausted() -> None:
    """TP-4: disabled → no action; levels hit ≥ the effective total (stored total, else the
    level count) → exhausted."""
    assert evaluate_take_profit(position(), tp_config(enabled=False), 9.0).reason == (
        "Take-profit disabled"
    )
    done = evaluate_take_profit(position(tp_levels_hit=4), MODERATE, 9.0)
    assert not done.should_execute and done.reason == "All take-profit levels exhausted (4/4)"
    extended = position(tp_levels_hit=4, total_tp_levels=8, tp_batch_start_level=4)
    assert evaluate_take_profit(extended, MODERATE, 9.0).should_execute


# -- TP-5 / TP-6 -------------------------------------------------------------------------


def test_tp5_several_levels_fire_in_one_tick_inclusive() -> None:
    """TP-5: a jump to exactly +150 % fires the 50 % and 150 % levels (gain ≥ target,
    inclusive) and stops at the first level not reached."""
    decision = evaluate_take_profit(position(), MODERATE, 2.5)
    assert decision.gain_percent == 150.0
    assert [x.target_percent for x in decision.levels] == [50.0, 150.0]
    assert decision.sell_amount == D(500) and decision.new_remaining == D(500)


def test_tp5_walk_starts_at_the_batch_index() -> None:
    """TP-5: the walk starts at levels hit − batch start."""
    state = position(tp_levels_hit=1, remaining_amount=D(750))
    decision = evaluate_take_profit(state, MODERATE, 2.5)
    assert [x.target_percent for x in decision.levels] == [150.0]
    batch = position(tp_levels_hit=5, tp_batch_start_level=4, total_tp_levels=8)
    decision = evaluate_take_profit(batch, MODERATE, 2.6)
    assert [x.target_percent for x in decision.levels] == [150.0]


def test_tp6_reasons_when_nothing_triggers() -> None:
    """TP-6: "Current gain X.XX% below next level T%" with toFixed(2) (an exact tie 3.125
    renders 3.13), or "No more levels in current batch" past the batch's end."""
    decision = evaluate_take_profit(position(), MODERATE, 1.03125)
    assert decision.reason == "Current gain 3.13% below next level 50%"
    assert decision.levels == () and not decision.activate_moon_bag
    past = position(tp_levels_hit=4, total_tp_levels=6)
    assert evaluate_take_profit(past, MODERATE, 9.0).reason == "No more levels in current batch"


# -- TP-7 / TP-8 / TP-9 ------------------------------------------------------------------


def test_tp7_moon_bag_activates_at_trigger_from_purchase_amount() -> None:
    """TP-7: at gain ≥ trigger (300) the moon bag activates with purchase_amount ×
    retain / 100, DCA tokens included; TP-8: it is the reserve of that sale."""
    state = position(amount="1200", tp_levels_hit=2, remaining_amount=D(600))
    decision = evaluate_take_profit(state, MODERATE, 4.0)
    assert decision.activate_moon_bag and decision.moon_bag_amount == D(120)
    assert [x.target_percent for x in decision.levels] == [300.0]
    assert decision.sell_amount == D(300) and decision.new_remaining == D(300)


def test_tp7_final_level_activates_even_below_trigger() -> None:
    """TP-7: reaching the final level activates the moon bag although gain < trigger."""
    config = TakeProfitConfig.model_validate(  # stored levels of a preset mode: no VAL-6 check
        {"enabled": True, "mode": "moderate", "levels": lv((10, 50), (20, 40))}
    )
    state = position(tp_levels_hit=1, remaining_amount=D(500))
    decision = evaluate_take_profit(state, config, 1.25, quirks=True)
    assert decision.gain_percent < config.moon_bag.trigger_percent and decision.activate_moon_bag
    assert decision.moon_bag_amount == D(100) and decision.sell_amount == D(400)


def test_tp7_no_activation_when_disabled_or_already_active() -> None:
    """TP-7: a disabled moon bag never activates; an active one does not re-activate and
    its stored amount is the reserve (TP-8)."""
    off = tp_config(mode="moderate", moon=MoonBag(enabled=False))
    assert not evaluate_take_profit(position(), off, 5.0).activate_moon_bag
    active = position(
        tp_levels_hit=3, remaining_amount=D(250), moon_bag_activated=True, moon_bag_amount=D(100)
    )
    decision = evaluate_take_profit(active, MODERATE, 5.0)
    assert not decision.activate_moon_bag
    assert decision.sell_amount == D(150) and decision.new_remaining == D(100)


def test_tp9_sell_is_share_of_original_capped_by_available_and_floored() -> None:
    """TP-9: raw = original × Σ sell% (of the *original*); capped at holding − reserve; EX-2
    floors to 9 token decimals."""
    state = position(amount="1", price="1", tp_levels_hit=0, remaining_amount=D("0.2"))
    decision = evaluate_take_profit(state, MODERATE, 1.6)
    assert decision.sell_amount == D("0.2")  # raw 0.25 capped at the 0.2 held
    odd = position(amount="0.0000000333", price="1")
    decision = evaluate_take_profit(odd, MODERATE, 1.6)
    assert decision.sell_amount == D("0.000000008")  # 8.325e-9 floored


def test_tp9_nothing_to_sell_reports_activation_and_q4_both_ways() -> None:
    """TP-9 and Q-4: when the activating moon bag leaves nothing to sell there is no
    sale; the activation is reported; valux marks it to store (StoreMoonBag), the
    reference drops it. Stored levels summing 100 % (a preset mode, not validated)
    produce this at the final level."""
    config = TakeProfitConfig.model_validate(
        {
            "enabled": True,
            "mode": "moderate",
            "levels": lv((50, 45), (100, 45), (150, 10)),
            "moon_bag": MoonBag(trigger_percent=150, retain_percent=10),
        }
    )
    state = position(tp_levels_hit=2, remaining_amount=D(100))
    ref = evaluate_take_profit(state, config, 2.5, quirks=True)
    assert not ref.should_execute and ref.activate_moon_bag and ref.moon_bag_amount == D(100)
    assert not ref.store_moon_bag and not ref.acts
    fix = replace(ref, store_moon_bag=True)
    stored = apply_moon_bag_activation(state, fix)
    assert stored.moon_bag_activated and stored.moon_bag_amount == D(100)
    assert is_moon_bag_only(stored)
    # Fixed (quirks off), with a valid custom config reaching the same situation:
    custom = tp_config((50, 45), (100, 45), moon=MoonBag(trigger_percent=100, retain_percent=10))
    near_empty = position(tp_levels_hit=1, remaining_amount=D(100))
    decision = evaluate_take_profit(near_empty, custom, 2.0)
    assert not decision.should_execute and decision.store_moon_bag and decision.acts
    assert not evaluate_take_profit(near_empty, custom, 2.0, quirks=True).acts


def test_apply_moon_bag_activation_requires_an_activation() -> None:
    """Q-4 helper: a decision without activation cannot be stored."""
    with pytest.raises(ValueError):
        apply_moon_bag_activation(position(), TakeProfitDecision(False, "x", 0.0))


# -- TP-10 / TP-11 / TP-12, PNL-2 / PNL-3 -------------------------------------------------


def test_tp10_apply_counts_all_levels_even_when_capped() -> None:
    """TP-10: a capped sale still adds every fired level to levels hit; remaining, moon bag,
    tx id, last time and net proceeds are recorded; PNL-2 realised = net − sold / bought ×
    invested."""
    state = position(amount="1000", price="1", tp_levels_hit=0, remaining_amount=D(300))
    decision = evaluate_take_profit(state, MODERATE, 4.0)  # 50/150/300 fire: raw 750 → 300
    assert decision.levels_count == 3 and decision.activate_moon_bag
    assert decision.sell_amount == D(200)  # 300 held − 100 moon bag
    after, closed = apply_take_profit(state, decision, D(200), D(790), 10.0, "tx1")
    assert not closed
    assert after.tp_levels_hit == 3 and after.remaining_amount == D(100)
    assert after.moon_bag_activated and after.moon_bag_amount == D(100)
    assert after.realized_profit == D(790) - D(200)
    assert after.tp_transaction_ids == ("tx1",) and after.last_tp_time == 10.0
    assert after.tp_net_proceeds == (D(790),)
    assert is_moon_bag_only(after)
    assert after.purchase_amount == D(1000)  # TP sales never reduce purchase_amount


def test_tp10_rejects_bad_amounts_and_non_executing_decisions() -> None:
    """TP-10: the sold amount must be > 0 and ≤ the holding; a no-action decision cannot be
    applied."""
    state = position()
    decision = evaluate_take_profit(state, MODERATE, 1.6)
    for sold in (D(0), D(-1), D("1000.000000001")):
        with pytest.raises(ValueError):
            apply_take_profit(state, decision, sold, D(1), 1.0, "tx")
    with pytest.raises(ValueError):
        apply_take_profit(state, evaluate_take_profit(state, MODERATE, 1.1), D(1), D(1), 1.0, "t")


def test_tp11_closes_below_dust_unless_moon_bag_activates() -> None:
    """TP-11: remaining < 1e-9 without a moon bag in this sale closes the position; the
    close record is PNL-3 over the accumulated realised profit."""
    config = tp_config((50, 50), (100, 50), moon=MoonBag(enabled=False))
    state = position(amount="100", price="1")
    first = evaluate_take_profit(state, config, 1.5)
    state, closed = apply_take_profit(state, first, first.sell_amount, D(75), 1.0, "a")
    assert not closed and state.realized_profit == D(25)
    second = evaluate_take_profit(state, config, 2.0)
    state, closed = apply_take_profit(state, second, second.sell_amount, D(100), 2.0, "b")
    assert closed and state.holding == 0 and state.realized_profit == D(75)
    pnl = take_profit_close_pnl(
        purchase_price=state.purchase_price,
        purchase_amount=state.purchase_amount,
        realized_profit_sol=state.realized_profit,
        sol_usd=D(1),
    )
    assert pnl.change_percent == D(75) and pnl.effective_sale_price == D("1.75")
    full = full_close_pnl(
        total_invested_sol=state.total_invested,
        purchase_price=state.purchase_price,
        purchase_amount=state.purchase_amount,
        take_profit_net_proceeds=state.tp_net_proceeds,
        final_net_proceeds=D(0),
        sol_usd=D(1),
    )
    assert full.profit_sol == state.realized_profit  # PNL-1 and PNL-3 agree on a TP close


def test_tp11_dust_boundary() -> None:
    """TP-11: 1e-9 left is not below the dust threshold (open); less is (closed)."""
    config = tp_config((50, 100), moon=MoonBag(enabled=False))
    state = position(amount="1", price="1")
    decision = evaluate_take_profit(state, config, 2.0)
    _, closed = apply_take_profit(state, decision, D("0.999999999"), D(1), 1.0, "t")
    assert not closed
    _, closed = apply_take_profit(state, decision, D("0.9999999991"), D(1), 1.0, "t")
    assert closed


def test_tp11_not_closed_when_moon_bag_activates_in_that_sale() -> None:
    """TP-11: the sale that activates the moon bag never closes the position."""
    config = tp_config((10, 90), moon=MoonBag(trigger_percent=10, retain_percent=10))
    fresh = position(amount="100")
    decision = evaluate_take_profit(fresh, config, 1.2)
    assert decision.activate_moon_bag and decision.sell_amount == D(90)
    after, closed = apply_take_profit(fresh, decision, D(90), D(100), 1.0, "t")
    assert not closed and after.remaining_amount == D(10)


def test_tp12_moon_bag_only_tolerance() -> None:
    """TP-12: activated, truthy amount and |remaining − amount| < 1e-6."""
    base = position(moon_bag_activated=True, moon_bag_amount=D(100))
    assert is_moon_bag_only(replace(base, remaining_amount=D("100.0000009")))
    assert not is_moon_bag_only(replace(base, remaining_amount=D("100.000001")))
    assert not is_moon_bag_only(replace(base, remaining_amount=D(0), moon_bag_amount=D(0)))
    assert not is_moon_bag_only(replace(base, moon_bag_activated=False, remaining_amount=D(100)))


def test_tp13_progress() -> None:
    """TP-13: totals (stored, else configured count, else 0), percent, sold and the moon bag
    only when activated."""
    state = position(tp_levels_hit=2, remaining_amount=D(500))
    progress = take_profit_progress(state, MODERATE)
    assert (progress.total_levels, progress.percent_complete) == (4, 50.0)
    assert progress.sold_amount == D(500) and progress.moon_bag_amount is None
    empty = TakeProfitConfig.model_validate({"enabled": True, "mode": "moderate", "levels": []})
    assert take_profit_progress(position(), empty, quirks=True).percent_complete == 0.0
    moon = replace(state, moon_bag_activated=True, moon_bag_amount=D(100), total_tp_levels=8)
    progress = take_profit_progress(moon, MODERATE)
    assert progress.moon_bag_amount == D(100) and progress.percent_complete == 25.0


def test_tp17_after_dca_ladder_restarts_on_new_average_and_amount() -> None:
    """TP-17: after a DCA buy the ladder restarts at its first level, measured against the
    new average and sized from the new purchase amount; the moon-bag state carries over."""
    state = position(amount="1000", price="1")
    first = evaluate_take_profit(state, MODERATE, 1.5)
    state, _ = apply_take_profit(state, first, first.sell_amount, D(375), 1.0, "tp1")
    state = apply_dca(
        state,
        spent=D(375),
        tokens=D(750),
        ts=2.0,
        tx_id="dca1",
        tp_levels_count=tp_levels_count(MODERATE),
        stop=FIXED,
        quirks=True,
    )
    assert (state.tp_batch_start_level, state.total_tp_levels) == (1, 5)
    assert state.purchase_amount == D(1750) and state.remaining_amount == D(1500)
    assert state.purchase_price == D(1375) / D(1750)
    avg = float(state.purchase_price)
    decision = evaluate_take_profit(state, MODERATE, avg * 1.5)
    assert [x.target_percent for x in decision.levels] == [50.0]
    assert decision.sell_amount == D("437.5")  # 25 % of the new purchase amount


def test_project_take_profit_matches_apply_without_pnl() -> None:
    """The planning projection equals the applied state on everything but P&L fields."""
    state = position()
    decision = evaluate_take_profit(state, MODERATE, 2.5)
    projected = project_take_profit(state, decision, 5.0)
    applied, _ = apply_take_profit(state, decision, decision.sell_amount, D(1), 5.0, "t")
    assert projected == replace(
        applied, realized_profit=D(0), tp_transaction_ids=(), tp_net_proceeds=()
    )


def test_pnl6_cost_of_holding_after_tp_sales() -> None:
    """PNL-2 → PNL-6: Σ cost bases of the TP sales (Σ net − realised) leave the cost of the
    holding; the position's helper equals the PNL-6 function."""
    state = position(amount="1000", price="0.5")
    decision = evaluate_take_profit(state, MODERATE, 0.75)
    state, _ = apply_take_profit(state, decision, D(250), D("180"), 1.0, "t")
    assert state.tp_cost_basis == D(125)
    view = unrealised_pnl(
        current_price=D("0.75"),
        purchase_price=state.purchase_price,
        purchase_amount=state.purchase_amount,
        remaining_amount=state.remaining_amount,
        total_invested_sol=state.total_invested,
        take_profit_net_proceeds=state.tp_net_proceeds,
        realized_profit_sol=state.realized_profit,
    )
    assert view.cost == state.holding_cost == D(375)


# -- trigger band (for the armed book) ----------------------------------------------------


def test_trigger_band_simple_cases() -> None:
    """The acting gains: from the next level's target; never when disabled, exhausted or
    with an invalid price; after a level the next target."""
    assert trigger_band(position(), MODERATE) == (50.0, math.inf)
    assert trigger_band(position(tp_levels_hit=1, remaining_amount=D(750)), MODERATE) == (
        150.0,
        math.inf,
    )
    assert trigger_band(position(), tp_config(enabled=False)) == (math.inf, math.inf)
    assert trigger_band(position(tp_levels_hit=4), MODERATE) == (math.inf, math.inf)
    assert trigger_band(position(price="0"), MODERATE) == (math.inf, math.inf)


def test_trigger_band_has_a_ceiling_only_for_the_q4_reference_case() -> None:
    """With reference quirks, an activation that leaves nothing to sell is no action, so
    take profit acts only below the moon-bag trigger: band [next target, trigger). Fixed,
    the activation itself is an action: no ceiling."""
    config = tp_config((50, 45), (200, 45), moon=MoonBag(trigger_percent=100, retain_percent=10))
    state = position(tp_levels_hit=1, remaining_amount=D("100"))
    assert trigger_band(state, config, quirks=True) == (math.inf, math.inf)
    # remaining 100 = the moon bag: at 200 % (final level) the activation eats it all
    below = position(tp_levels_hit=0, remaining_amount=D("100"))
    assert trigger_band(below, config, quirks=True) == (50.0, 100.0)
    assert trigger_band(below, config) == (50.0, math.inf)


_LEVEL_SETS = [
    ((50, 25), (150, 25), (300, 25), (400, 15)),
    ((10, 50), (20, 40)),
    ((5, 30), (25, 30), (60, 30)),
    ((50, 45), (100, 45), (150, 10)),
    ((1, 100),),
]


@st.composite
def tp_case(draw: st.DrawFn) -> tuple[PositionState, TakeProfitConfig, bool]:
    levels = draw(st.sampled_from(_LEVEL_SETS))
    moon = MoonBag(
        enabled=draw(st.booleans()),
        trigger_percent=draw(st.sampled_from([1.0, 20.0, 100.0, 150.0, 300.0, 5000.0])),
        retain_percent=draw(st.sampled_from([1.0, 10.0, 50.0])),
    )
    config = TakeProfitConfig.model_validate(
        {
            "enabled": draw(st.sampled_from([True, True, True, False])),
            "mode": draw(st.sampled_from(["moderate", "aggressive", "custom"]))
            if sum(s for _, s in levels) + (moon.retain_percent if moon.enabled else 0) <= 100
            and (not moon.enabled or moon.trigger_percent <= levels[-1][0])
            else "moderate",
            "levels": lv(*levels),
            "moon_bag": moon,
        }
    )
    amount = D(draw(st.sampled_from(["1000", "1", "0.000000123", "55.5"])))
    remaining = draw(st.sampled_from([None, "0", "1e-10", "0.5", "1", "100", "250"]))
    hit = draw(st.integers(0, 5))
    activated = draw(st.booleans())
    state = position(
        amount=str(amount),
        price=draw(st.sampled_from(["1", "0.001", "3.3"])),
        remaining_amount=None if remaining is None else min(D(remaining), amount),
        tp_levels_hit=hit,
        tp_batch_start_level=draw(st.integers(0, hit)),
        total_tp_levels=draw(st.sampled_from([None, None, hit + 1, hit + 3])),
        moon_bag_activated=activated,
        moon_bag_amount=amount * D(draw(st.sampled_from(["0.1", "0.5", "0"])))
        if activated
        else None,
    )
    return state, config, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(tp_case(), st.floats(-50, 6000))
def test_trigger_band_is_exactly_where_the_evaluation_acts(
    case: tuple[PositionState, TakeProfitConfig, bool], gain: float
) -> None:
    """Property: for random states (levels hit, batches, remaining, moon bag) and configs,
    the evaluation acts (a sale, or a Q-4 moon bag to store) iff the gain lies in
    :func:`trigger_band` (the book's tp_target/tp_ceiling) — at random gains and exactly
    at every breakpoint."""
    state, config, quirks = case
    low, high = trigger_band(state, config, quirks=quirks)
    price = state.reference_price * (1 + gain / 100)
    points = [price] + [
        state.reference_price * (1 + t / 100)
        for t in [x.target_percent for x in config.levels] + [config.moon_bag.trigger_percent]
    ]
    for p in points:
        for q in (math.nextafter(p, 0), p, math.nextafter(p, math.inf)):
            decision = evaluate_take_profit(state, config, q, quirks=quirks)
            g = decision.gain_percent
            if decision.reason in ("Take-profit disabled", "Invalid purchase price"):
                assert low == math.inf
                continue
            assert decision.acts == (low <= g < high), (q, g, decision.reason, low, high)


def test_open_position_starts_lowest_at_purchase() -> None:
    """DCA-12 start and §1 defaults of a fresh position."""
    state = open_position(
        purchase_price=D("0.5"), amount=D(10), total_invested=D(5), created_at=1.0
    )
    assert state.lowest_price == 0.5 and state.remaining_amount is None
    assert state.holding == D(10) and state.reference_price == 0.5


def test_position_state_round_trips_through_a_dict() -> None:
    """to_dict keeps Decimals and gives lists; from_dict accepts lists and numeric strings."""
    state = position(
        remaining_amount=D("1.5"),
        tp_transaction_ids=("a", "b"),
        tp_net_proceeds=(D("0.1"), D("0.2")),
        moon_bag_amount=D("0.3"),
        total_tp_levels=4,
        stop_pct=-32.0,
        peak=1.0,
    )
    doc = state.to_dict()
    assert doc["tp_transaction_ids"] == ["a", "b"] and isinstance(doc["purchase_price"], D)
    assert PositionState.from_dict(doc) == state
    doc["purchase_price"] = "1"
    doc["realized_profit"] = 0
    doc["unknown"] = True
    assert PositionState.from_dict(doc) == state
    with pytest.raises(ValueError):
        PositionState.from_dict({**doc, "purchase_price": object()})


def test_load_agent_config_moon_bag_drives_tp() -> None:
    """The CFG-1 defaults wired end to end: TP disabled by default, enabled gives moderate."""
    assert not evaluate_take_profit(position(), load_agent_config(None).take_profit, 9.0).acts
    enabled = load_agent_config({"takeProfit": {"enabled": True}}).take_profit
    assert evaluate_take_profit(position(), enabled, 1.5).should_execute
