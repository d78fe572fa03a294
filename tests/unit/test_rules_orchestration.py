"""One position, one tick (ORCH-3/ORCH-4), the quirk switch (§14) and the book summary."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal as D
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from valux.rules import orchestration
from valux.rules.armed import ExitParams, exit_reason
from valux.rules.config import AgentConfig, DcaLevel, load_agent_config
from valux.rules.dca import DcaDecision, apply_dca, track_lowest_price
from valux.rules.orchestration import (
    STEPS,
    Action,
    DcaBuy,
    RecordLowestPrice,
    SellAll,
    Step,
    StoreMoonBag,
    TakeProfitSell,
    arm_params,
    armed_position,
    decide,
    idempotency_key,
    next_action,
    reference_quirks,
    stop_loss_params,
    tracks_position,
)
from valux.rules.position import PositionState, open_position
from valux.rules.stop_loss import StopLossParams, target_percentage
from valux.rules.take_profit import (
    TakeProfitDecision,
    apply_moon_bag_activation,
    apply_take_profit,
    tp_levels_count,
)

HOUR = 3600.0


def config(**sections: Any) -> AgentConfig:
    return load_agent_config(sections)


ALL = config(
    takeProfit={"enabled": True},
    dca={"enabled": True, "mode": "aggressive"},
    staleTrade={
        "enabled": True,
        "minHoldTimeMinutes": 60,
        "minProfitPercent": 1,
        "maxProfitPercent": 10,
    },
)


def position(price: str = "1", amount: str = "1000", **kw: Any) -> PositionState:
    base = open_position(
        purchase_price=D(price), amount=D(amount), total_invested=D(price) * D(amount), created_at=0
    )
    return replace(base, **kw)


def steps(actions: list[Action]) -> list[Step]:
    return [a.step for a in actions]


# -- ORCH-3 --------------------------------------------------------------------------------


def test_stop_trigger_sells_all_and_nothing_else() -> None:
    """ORCH-3 step 1: a stop trigger gives only SellAll(stop_loss) even when take profit,
    stale and DCA would act; nothing follows it."""
    state = position()
    assert decide(state, ALL, 5.0, 10 * HOUR, stop_triggered=True) == [SellAll("stop_loss")]
    assert next_action(state, ALL, 5.0, 0.0, True, after="stop_loss") is None


def test_take_profit_runs_before_stale_and_stale_still_runs_after_it() -> None:
    """ORCH-3 steps 2-3 / ST-2: a price in both the TP ladder and the stale band sells the
    TP levels first, then the stale rule (whatever the TP state) sells the rest."""
    cfg = config(
        takeProfit={
            "enabled": True,
            "mode": "custom",
            "levels": [{"targetPercent": 5, "sellPercent": 50}],
            "moonBag": {"enabled": False},
        },
        staleTrade={"enabled": True, "minProfitPercent": 1, "maxProfitPercent": 10},
    )
    plan = decide(position(), cfg, 1.06, HOUR, stop_triggered=False)
    assert steps(plan) == ["take_profit", "stale_trade"]
    assert isinstance(plan[0], TakeProfitSell) and plan[0].decision.sell_amount == D(500)


def test_stale_close_skips_dca() -> None:
    """ORCH-3 step 3 / DCA-11: a stale close (negative band) ends the tick although the
    DCA level is reached."""
    cfg = config(
        dca={"enabled": True, "mode": "aggressive"},
        staleTrade={"enabled": True, "minProfitPercent": -50, "maxProfitPercent": -1},
    )
    assert decide(position(), cfg, 0.85, HOUR, stop_triggered=False) == [SellAll("stale_trade")]
    assert next_action(position(), cfg, 0.85, HOUR, False, after="stale_trade") is None
    young = decide(position(), cfg, 0.85, HOUR - 1, stop_triggered=False)
    assert steps(young) == ["dca", "lowest_price"]


def test_st3_failed_stale_sale_ends_the_tick() -> None:
    """ST-3: after a stale-trade attempt (failed or not) next_action returns nothing, so
    DCA is not reached."""
    cfg = config(
        dca={"enabled": True, "mode": "aggressive"},
        staleTrade={"enabled": True, "minProfitPercent": -50, "maxProfitPercent": -1},
    )
    assert next_action(position(), cfg, 0.85, HOUR, False, after="stale_trade") is None


def test_failed_take_profit_continues_with_the_next_steps() -> None:
    """TP-16: a failed take-profit sale does not stop the tick: with the state unchanged,
    next_action after the TP step goes on to stale trade."""
    cfg = config(
        takeProfit={"enabled": True, "mode": "custom",
                    "levels": [{"targetPercent": 5, "sellPercent": 50}],
                    "moonBag": {"enabled": False}},
        staleTrade={"enabled": True},
    )  # fmt: skip
    state = position()
    first = next_action(state, cfg, 1.06, HOUR, False)
    assert isinstance(first, TakeProfitSell)
    assert next_action(state, cfg, 1.06, HOUR, False, after=first.step) == SellAll("stale_trade")


def test_take_profit_close_ends_the_tick_q3() -> None:
    """TP-11 / Q-3: a planned TP sale that closes the position ends the plan: no stale, no
    DCA, no lowest price (valux never evaluates a closed position)."""
    cfg = config(
        takeProfit={"enabled": True, "mode": "custom",
                    "levels": [{"targetPercent": 5, "sellPercent": 100}],
                    "moonBag": {"enabled": False}},
        staleTrade={"enabled": True},
    )  # fmt: skip
    plan = decide(position(), cfg, 1.06, HOUR, stop_triggered=False)
    assert steps(plan) == ["take_profit"]
    state, closed = apply_take_profit(
        position(),
        plan[0].decision,
        D(1000),
        D(1060),
        HOUR,
        "tx",  # type: ignore[union-attr]
    )
    assert closed and state.holding == 0


def test_dca_uses_the_re_read_position_and_skips_moon_bag_only() -> None:
    """ORCH-3 step 4 / DCA-3: DCA reads the state as left by the TP step; a moon-bag-only
    position is skipped (only lowest-price tracking remains)."""
    cfg = config(dca={"enabled": True, "mode": "aggressive"})
    moon = position(moon_bag_activated=True, moon_bag_amount=D(100), remaining_amount=D(100))
    assert steps(decide(moon, cfg, 0.5, 0.0, stop_triggered=False)) == ["lowest_price"]
    plan = decide(position(), cfg, 0.5, 0.0, stop_triggered=False)
    assert steps(plan) == ["dca", "lowest_price"]
    assert isinstance(plan[0], DcaBuy) and plan[0].decision.buy_amount == D(500)


def test_lowest_price_is_the_last_step() -> None:
    """ORCH-3 step 5 / DCA-12: a new low is recorded after everything else; no action
    otherwise."""
    cfg = config()
    assert decide(position(), cfg, 0.9, 0.0, stop_triggered=False) == [RecordLowestPrice(0.9)]
    assert decide(position(), cfg, 1.1, 0.0, stop_triggered=False) == []


def test_orch4_position_exists_only_with_stop_or_take_profit() -> None:
    """ORCH-4: no position record (no rules) when both stop loss and take profit are off."""
    assert tracks_position(config())
    assert tracks_position(config(stopLoss={"enabled": False}, takeProfit={"enabled": True}))
    assert not tracks_position(config(stopLoss={"enabled": False}))


@st.composite
def outcome_st(draw: st.DrawFn) -> list[bool]:
    return draw(st.lists(st.booleans(), min_size=6, max_size=6))


def _execute(
    state: PositionState, action: Action, ok: bool, now: float, cfg: AgentConfig
) -> tuple[PositionState, bool]:
    """A fake agent: apply the action's result when it succeeded; report a close."""
    if not ok:
        return state, False
    if isinstance(action, SellAll):
        return state, True
    if isinstance(action, TakeProfitSell):
        d = action.decision
        return apply_take_profit(state, d, d.sell_amount, d.sell_amount, now, "tp")
    if isinstance(action, StoreMoonBag):
        return apply_moon_bag_activation(state, action.decision), False
    if isinstance(action, DcaBuy):
        tokens = action.decision.buy_amount / D(repr(1.0)) + D(1)
        after = apply_dca(
            state,
            spent=action.decision.buy_amount,
            tokens=tokens,
            ts=now,
            tx_id="d",
            tp_levels_count=tp_levels_count(cfg.take_profit, quirks=reference_quirks(cfg)),
            stop=stop_loss_params(cfg),
            quirks=reference_quirks(cfg),
        )
        return after, False
    return track_lowest_price(state, action.price), False


# -- random states and configs ------------------------------------------------------------


@st.composite
def config_st(draw: st.DrawFn) -> AgentConfig:
    tp_mode = draw(st.sampled_from(["aggressive", "moderate", "conservative", "custom"]))
    tp: dict[str, Any] = {"enabled": draw(st.booleans()), "mode": tp_mode}
    if tp_mode == "custom":
        tp["levels"] = [
            {"targetPercent": 10, "sellPercent": 40},
            {"targetPercent": 30, "sellPercent": 50},
        ]
        tp["moonBag"] = {"enabled": draw(st.booleans()), "triggerPercent": 20, "retainPercent": 10}
    elif draw(st.booleans()):
        tp["levels"] = [
            {"targetPercent": 5, "sellPercent": 60},
            {"targetPercent": 15, "sellPercent": 40},
        ]
        tp["moonBag"] = {"enabled": True, "triggerPercent": 15, "retainPercent": 10}
    low = draw(st.sampled_from([-20.0, -5.0, 1.0, 2.0]))
    return config(
        takeProfit=tp,
        dca={
            "enabled": draw(st.booleans()),
            "mode": draw(st.sampled_from(["aggressive", "moderate", "conservative"])),
            "maxDCACount": draw(st.integers(1, 4)),
            "cooldownSeconds": draw(st.sampled_from([10, 30])),
        },
        staleTrade={
            "enabled": draw(st.booleans()),
            "minHoldTimeMinutes": draw(st.sampled_from([1, 60])),
            "minProfitPercent": low,
            "maxProfitPercent": low + draw(st.sampled_from([0.0, 3.0, 10.0])),
        },
        engine={"referenceQuirks": draw(st.booleans())},
    )


@st.composite
def state_st(draw: st.DrawFn) -> PositionState:
    amount = D(draw(st.sampled_from(["1000", "1", "250"])))
    hit = draw(st.integers(0, 4))
    activated = draw(st.booleans())
    remaining = draw(st.sampled_from([None, "1", "0.1", "0.5"]))
    return position(
        price=draw(st.sampled_from(["1", "0.001", "0.0000805"])),
        amount=str(amount),
        remaining_amount=None if remaining is None else amount * D(remaining),
        tp_levels_hit=hit,
        tp_batch_start_level=draw(st.integers(0, hit)),
        total_tp_levels=draw(st.sampled_from([None, hit + 2])),
        moon_bag_activated=activated,
        moon_bag_amount=amount * D("0.1") if activated else None,
        dca_count=draw(st.integers(0, 3)),
        last_dca_time=draw(st.sampled_from([None, 0.0, 50.0])),
        lowest_price=draw(st.sampled_from([None, 0.0005, 100.0])),
    )


_GAINS = [-30, -20, -10, -5, -1, 0, 1, 2, 3, 4, 5, 10, 12, 13, 15, 20, 25, 30, 50, 100, 150]


@st.composite
def tick_st(draw: st.DrawFn, state: PositionState) -> tuple[float, float]:
    q = state.reference_price
    price = q * (1 + draw(st.sampled_from(_GAINS)) / 100)
    price = draw(st.sampled_from([price, math.nextafter(price, 0), math.nextafter(price, 9e9)]))
    if draw(st.booleans()):
        price = q * draw(st.floats(0.5, 3.0))
    now = draw(st.sampled_from([0.0, 59.0, 60.0, 60.5, 80.0, HOUR - 1, HOUR, 2 * HOUR]))
    return price, now


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_loop_terminates_in_orch_order_whatever_the_executions_do(data: st.DataObject) -> None:
    """Property (ORCH-3 termination): for random states and configs, prices and times, and
    any pattern of successful/failed executions, the next_action loop returns steps in
    strictly increasing ORCH order, nothing after a SellAll, and at most four actions; when
    every execution succeeds it returns decide's plan."""
    cfg = data.draw(config_st())
    state = data.draw(state_st())
    price, now = data.draw(tick_st(state))
    stop = data.draw(st.booleans())
    outcomes = data.draw(outcome_st())
    taken: list[Action] = []
    after: Step | None = None
    s = state
    for ok in outcomes:
        action = next_action(s, cfg, price, now, stop, after=after)
        if action is None:
            break
        taken.append(action)
        s, closed = _execute(s, action, ok, now, cfg)
        if closed:
            break
        after = action.step
    else:
        raise AssertionError("the loop did not end")
    idx = [STEPS.index(a.step) for a in taken]
    assert idx == sorted(set(idx)) and len(taken) <= 4
    assert all(not isinstance(a, SellAll) for a in taken[:-1])
    if stop:
        assert taken[:1] == [SellAll("stop_loss")] and len(taken) == 1
    if all(outcomes):
        assert taken == decide(state, cfg, price, now, stop_triggered=stop)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_arm_params_detect_exactly_the_ticks_that_act(data: st.DataObject) -> None:
    """Property (the book contract): for random states and configs and ticks on every
    threshold (±1 ulp), exit_reason(arm_params(state)) is the step of the first action
    next_action returns without a stop trigger (lowest-price tracking aside), or None
    when it returns none."""
    cfg = data.draw(config_st())
    state = data.draw(state_st())
    price, now = data.draw(tick_st(state))
    exits = arm_params(state, cfg, 0.0)
    got = exit_reason(exits, state.reference_price, price, now)
    first = next_action(state, cfg, price, now, False)
    expected = None if first is None or isinstance(first, RecordLowestPrice) else first.step
    assert got == expected, (exits, first)


# -- quirks through the config ------------------------------------------------------------


def test_quirk_flag_switches_q1_and_q4() -> None:
    """Q-1 and Q-4 through ``engine.reference_quirks``: an aggressive-mode agent with the
    default stored levels sells at +25 % in valux and waits for +50 % with quirks; a moon
    bag activation with nothing to sell is a StoreMoonBag action in valux only."""
    fixed = config(takeProfit={"enabled": True, "mode": "aggressive"})
    ref = config(
        takeProfit={"enabled": True, "mode": "aggressive"}, engine={"referenceQuirks": True}
    )
    assert not reference_quirks(fixed) and reference_quirks(ref)
    assert isinstance(next_action(position(), fixed, 1.3, 0.0, False), TakeProfitSell)
    assert next_action(position(), ref, 1.3, 0.0, False) is None
    tp = {
        "enabled": True,
        "mode": "custom",
        "levels": [
            {"targetPercent": 50, "sellPercent": 45},
            {"targetPercent": 100, "sellPercent": 45},
        ],
        "moonBag": {"enabled": True, "triggerPercent": 100, "retainPercent": 10},
    }
    state = position(tp_levels_hit=1, remaining_amount=D(100), lowest_price=0.5)
    action = next_action(state, config(takeProfit=tp), 2.0, 0.0, False)
    assert isinstance(action, StoreMoonBag) and action.decision.moon_bag_amount == D(100)
    assert (
        next_action(state, config(takeProfit=tp, engine={"referenceQuirks": True}), 2.0, 0, False)
        is None
    )
    assert (
        arm_params(state, config(takeProfit=tp, engine={"referenceQuirks": True}), 0).tp_target
        == math.inf
    )


def test_q6_exponential_boundary_is_kept() -> None:
    """Q-6 kept: at exactly 20 % the exponential stop gives the default, fixed gives 10."""
    assert target_percentage(20.0, StopLossParams(True, -32.0, "exponential")) == -32.0
    assert target_percentage(20.0, StopLossParams(True, -32.0, "fixed")) == 10.0


def test_quirk_table_documents_every_quirk() -> None:
    """The module docstring carries the quirk table: Q-1..Q-6, valux's default, the flag."""
    doc = orchestration.__doc__ or ""
    for quirk in ("Q-1", "Q-2", "Q-3", "Q-4", "Q-5", "Q-6", "reference_quirks"):
        assert quirk in doc


# -- arming ---------------------------------------------------------------------------------


def test_arm_params_values() -> None:
    """arm_params: next TP target, stale time (created + minutes × 60) and band, the DCA
    level's drop and the cooldown's end."""
    state = position(dca_count=1, last_dca_time=100.0, created_at=1000.0)
    exits = arm_params(state, ALL, 0.0)
    assert exits == ExitParams(
        tp_target=50.0,
        stale_after_ts=1000.0 + HOUR,
        stale_min=1.0,
        stale_max=10.0,
        dca_drop=-10.0,
        dca_ready_ts=130.0,
    )
    nothing = arm_params(position(), config(staleTrade={"enabled": False}), 0.0)
    assert nothing == ExitParams(stale_min=1.0, stale_max=10.0)


def test_armed_position_for_the_book() -> None:
    """armed_position: the double purchase price, stop params and state from the position,
    exits only when some exit rule can act."""
    state = position(price="0.0000805", stop_pct=-32.0, peak=0.0000805)
    armed = armed_position(state, ALL, position_id="p", agent_id="a", host=1, token="T", now=0)
    assert armed.purchase_price == 0.0000805 and armed.stop == StopLossParams(True, -32.0, "fixed")
    assert (armed.peak, armed.stop_pct) == (0.0000805, -32.0) and armed.exits is not None
    quiet = config(staleTrade={"enabled": False})
    bare = armed_position(state, quiet, position_id="p", agent_id="a", host=1, token="T", now=0)
    assert bare.exits is None


def test_idempotency_keys() -> None:
    """ORCH-5 keys: sale, take-profit by levels hit, DCA by count and drop percent."""
    state = position(tp_levels_hit=2, dca_count=1)
    decision = TakeProfitDecision(True, "", 0.0)
    dca = DcaDecision(True, "", 1, DcaLevel(drop_percent=-10, buy_percent=100))
    assert idempotency_key(SellAll("stale_trade"), "p", state) == "sale:p"
    assert idempotency_key(TakeProfitSell(decision), "p", state) == "take-profit:p:2"
    assert idempotency_key(DcaBuy(dca), "p", state) == "dca:p:1:-10"
    assert idempotency_key(RecordLowestPrice(1.0), "p", state) is None
