"""One position at one price and time: what the agent must do (ORCH-3, ORCH-4), and quirks.

ORCH-3 runs, for one open position and one price, in this order:

1. **stop loss** — on a trigger the whole position is sold (``stop_loss``) and
   nothing else runs;
2. **take profit** — a partial sale (TP-3..TP-12); the position is then
   re-read;
3. **stale trade** — a whole sale (``stale_trade``); if it closes the
   position, or fails (ST-3), nothing else runs;
4. **DCA** — on the freshly re-read position (DCA-3..DCA-9; skipped for a
   moon-bag-only position);
5. **lowest-price tracking** (DCA-12, analytics).

Take profit and DCA change the position, so a tick is a loop, not a list:
the agent asks :func:`next_action`, executes the action, applies its result to
the state (``apply_take_profit``, ``apply_dca``, ...), and asks again with
``after=`` the step just done, until it gets ``None``::

    step = None
    while (action := next_action(state, config, price, now, stop_triggered, after=step)):
        ...execute; on success apply the result to ``state``...
        if the position closed: break      # SellAll, or TP-11
        step = action.step

``next_action`` only looks at steps strictly after ``after`` and returns
``None`` after a :class:`SellAll` (closed, or failed: ST-3 / a failed stop
sale is retried by the evaluator), so each step acts at most once per tick,
in ORCH-3 order, and the loop ends after at most four actions, whatever the
executions did. A failed take-profit sale or DCA buy (TP-16, DCA-11) simply
continues with the next step on the unchanged state. :func:`decide` is the
same loop planned in advance, assuming every action succeeds exactly as
decided.

ORCH-2 (paused agents) and ORCH-5 (per-position locks, idempotency keys:
:func:`idempotency_key`) belong to the agent; ORCH-4 is
:func:`tracks_position`. :func:`arm_params` summarises the state for the
vectorised book (:class:`valux.evaluation.book.ExitParams`): at any price and
``ts``, :func:`valux.evaluation.book.exit_reason` of those parameters is the
step of the first action :func:`next_action` returns with no stop trigger
(lowest-price tracking aside), so the book hands the agent exactly the ticks
at which it has something to do.

Quirks (agent-rules §14)
------------------------
valux fixes the reference's quirks by default; ``engine.reference_quirks:
true`` in the agent config restores the reference behaviour.

=====  ==============================  ====================================  ==================
Quirk  Reference                       valux default                         reference_quirks
=====  ==============================  ====================================  ==================
Q-1    a preset take-profit mode       the preset's template levels (TP-1);  stored levels
       evaluates the *stored* levels   custom mode: the stored levels; the
       (TP-2)                          moon bag is the stored one either way
Q-2    a DCA buy leaves peak and stop  SL-1 again after every DCA buy:       untouched
       alone (SL-16: a phantom gain    stop = default %, peak = the new
       against the new average)        average (``apply_dca``)
Q-3    after a TP close, the tick      does not apply (see below)            —
       tries stale on a stale object
       and fails
Q-4    a moon-bag activation with      persisted: :class:`StoreMoonBag`      dropped
       nothing to sell is dropped      (``store_moon_bag`` on the decision)
       (TP-9)
Q-5    DCA's new average counts the    average cost of the tokens held:      (TI + spent) /
       tokens TP already sold          (TI − TP cost + spent) /              (bought + tokens)
       (DCA-8)                         (holding + tokens), where TP cost =
                                       Σ TP net proceeds − realised profit
                                       = Σ PNL-2 cost bases (PNL-6)
Q-6    exponential stop uses ``≤ 20``  kept (see below)                      kept
       where fixed and zones use
       ``< 20``
=====  ==============================  ====================================  ==================

TI is ``total_invested``; "bought" is ``purchase_amount`` (tokens ever bought).

**Q-3 does not apply to valux.** The reference re-reads the position after a
take-profit sale; when that sale closed it (TP-11) the read returns nothing,
the tick falls back to the old in-memory object, and the stale-trade step on
it fails with "position not found", which (ST-3) ends the tick. In valux the
agent owns the position: :func:`~valux.rules.take_profit.apply_take_profit`
returns ``closed``, the agent removes the position and leaves the loop, and
:func:`decide` stops there too. The outcome is the reference's (no stale
sale, no DCA on that tick) without the failed attempt.

**Q-6 is kept.** At a peak change of exactly 20 % (decimal SL-2) fixed and
zones give 10 and exponential the default. That needs the peak to be exactly
1.2 × the purchase price, a measure-zero boundary with no trading
consequence worth a divergence, while the published §15 table pins
exponential(20) = default: an agent moved from the reference must see the
same stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias

from valux.rules.armed import ArmedPosition, ExitParams
from valux.rules.config import AgentConfig
from valux.rules.dca import (
    DcaDecision,
    dca_ready_at,
    dca_trigger_drop,
    evaluate_dca,
    track_lowest_price,
)
from valux.rules.position import DUST_AMOUNT, PositionState
from valux.rules.stale_trade import stale_after, stale_trade_due
from valux.rules.stop_loss import StopLossParams
from valux.rules.take_profit import (
    TakeProfitDecision,
    apply_moon_bag_activation,
    evaluate_take_profit,
    js_number,
    project_take_profit,
    trigger_band,
)

__all__ = [
    "STEPS",
    "Action",
    "DcaBuy",
    "ExitParams",
    "RecordLowestPrice",
    "SellAll",
    "Step",
    "StoreMoonBag",
    "TakeProfitSell",
    "arm_params",
    "armed_position",
    "decide",
    "exits_can_act",
    "idempotency_key",
    "next_action",
    "reference_quirks",
    "stop_loss_params",
    "tracks_position",
]

Step: TypeAlias = Literal["stop_loss", "take_profit", "stale_trade", "dca", "lowest_price"]
STEPS: Final[tuple[Step, ...]] = ("stop_loss", "take_profit", "stale_trade", "dca", "lowest_price")
"""ORCH-3's steps, in order."""

_TERMINAL: Final = frozenset({"stop_loss", "stale_trade"})


@dataclass(frozen=True, slots=True)
class SellAll:
    """Sell the whole position (EX-1: the actual token balance, moon bag included)."""

    reason: Literal["stop_loss", "stale_trade"]

    @property
    def step(self) -> Step:
        return self.reason


@dataclass(frozen=True, slots=True)
class TakeProfitSell:
    """Sell ``decision.sell_amount`` tokens, then ``apply_take_profit`` (TP-10..TP-12)."""

    decision: TakeProfitDecision
    step: ClassVar[Step] = "take_profit"


@dataclass(frozen=True, slots=True)
class StoreMoonBag:
    """Q-4 fix: persist the moon-bag activation (``apply_moon_bag_activation``); no sale."""

    decision: TakeProfitDecision
    step: ClassVar[Step] = "take_profit"


@dataclass(frozen=True, slots=True)
class DcaBuy:
    """Buy for ``decision.buy_amount`` of quote (DCA-7), then ``apply_dca``."""

    decision: DcaDecision
    step: ClassVar[Step] = "dca"


@dataclass(frozen=True, slots=True)
class RecordLowestPrice:
    """DCA-12: store ``price`` as the position's lowest (``track_lowest_price``)."""

    price: float
    step: ClassVar[Step] = "lowest_price"


Action: TypeAlias = SellAll | TakeProfitSell | StoreMoonBag | DcaBuy | RecordLowestPrice


def reference_quirks(config: AgentConfig) -> bool:
    """Whether this agent reproduces the reference's quirks (module docstring)."""
    return config.engine.reference_quirks


def tracks_position(config: AgentConfig) -> bool:
    """ORCH-4: a position record, and so every automated rule, exists only if stop loss
    or take profit is enabled at buy time."""
    return config.stop_loss.enabled or config.take_profit.enabled


def stop_loss_params(config: AgentConfig) -> StopLossParams:
    """The stop-loss rules' parameters from an agent config."""
    sl = config.stop_loss
    return StopLossParams(
        enabled=sl.enabled,
        default_percentage=sl.default_percentage,
        mode=sl.mode,
        trailing_levels=tuple((level.change, level.stop_loss) for level in sl.trailing_levels),
        trailing_percentage=sl.trailing_percentage or 0.0,
        activation_percentage=sl.activation_percentage,
    )


def next_action(
    state: PositionState,
    config: AgentConfig,
    price: float,
    now: float,
    stop_triggered: bool,
    *,
    after: Step | None = None,
) -> Action | None:
    """The next thing to do for this position at ``price`` / ``now`` (ORCH-3).

    Considers only the steps strictly after ``after`` (``None``: from the start);
    returns ``None`` when none acts, and always after a ``stop_loss`` or
    ``stale_trade`` step. ``stop_triggered`` is the stop-loss decision of this
    tick (:func:`valux.rules.stop_loss.evaluate_stop` / the armed book).
    """
    if after in _TERMINAL:
        return None
    start = 0 if after is None else STEPS.index(after) + 1
    quirks = config.engine.reference_quirks
    for step in STEPS[start:]:
        if step == "stop_loss":
            if stop_triggered:
                return SellAll("stop_loss")
        elif step == "take_profit":
            tp = evaluate_take_profit(state, config.take_profit, price, quirks=quirks)
            if tp.should_execute:
                return TakeProfitSell(tp)
            if tp.store_moon_bag:
                return StoreMoonBag(tp)
        elif step == "stale_trade":
            if stale_trade_due(state, config.stale_trade, price, now):
                return SellAll("stale_trade")
        elif step == "dca":
            dca = evaluate_dca(state, config.dca, price, now)
            if dca.should_execute:
                return DcaBuy(dca)
        elif track_lowest_price(state, price) is not state:
            return RecordLowestPrice(price)
    return None


def decide(
    state: PositionState,
    config: AgentConfig,
    price: float,
    now: float,
    *,
    stop_triggered: bool,
) -> list[Action]:
    """The whole tick planned in advance: :func:`next_action` in a loop, assuming each
    take-profit sale sells exactly what was decided (state projected by
    :func:`~valux.rules.take_profit.project_take_profit`) and every action succeeds.

    It stops after a :class:`SellAll` and after a planned sale that closes the
    position (TP-11). The agent executes with :func:`next_action` and real results;
    this is the same sequence when they match the plan.
    """
    actions: list[Action] = []
    after: Step | None = None
    while True:
        action = next_action(state, config, price, now, stop_triggered, after=after)
        if action is None:
            break
        actions.append(action)
        if isinstance(action, TakeProfitSell):
            state = project_take_profit(state, action.decision, now)
            if state.holding < DUST_AMOUNT and not action.decision.activate_moon_bag:
                break  # TP-11: closed (Q-3 does not apply)
        elif isinstance(action, StoreMoonBag):
            state = apply_moon_bag_activation(state, action.decision)
        after = action.step
    return actions


def arm_params(state: PositionState, config: AgentConfig, now: float) -> ExitParams:
    """The position's take-profit / stale-trade / DCA summary for the armed book.

    - ``tp_target``/``tp_ceiling``: :func:`~valux.rules.take_profit.trigger_band`;
    - ``stale_after_ts``: :func:`~valux.rules.stale_trade.stale_after` with the
      configured profit range;
    - ``dca_drop``: :func:`~valux.rules.dca.dca_trigger_drop`; ``dca_ready_ts``: the
      cooldown's end (−inf without a previous buy).

    Every value is absolute (gain %, unix seconds), so the parameters stay valid as
    time passes and only change when the state or config does: re-arm after every
    applied action. ``now`` is accepted for the agent's convenience and not needed.
    """
    del now  # absolute times: valid at any time
    low, high = trigger_band(state, config.take_profit, quirks=config.engine.reference_quirks)
    stale = config.stale_trade
    drop = dca_trigger_drop(state, config.dca)
    return ExitParams(
        tp_target=low,
        tp_ceiling=high,
        stale_after_ts=stale_after(state, stale),
        stale_min=stale.min_profit_percent,
        stale_max=stale.max_profit_percent,
        dca_drop=drop,
        dca_ready_ts=dca_ready_at(state, config.dca) if drop > -math.inf else -math.inf,
    )


def armed_position(
    state: PositionState,
    config: AgentConfig,
    *,
    position_id: str,
    agent_id: str,
    host: int,
    token: str,
    now: float,
) -> ArmedPosition:
    """The book's view of a position: its double purchase price, stop parameters and
    stored stop state, and :func:`arm_params` (``None`` when no exit rule can act)."""
    exits = arm_params(state, config, now)
    return ArmedPosition(
        position_id=position_id,
        agent_id=agent_id,
        host=host,
        token=token,
        purchase_price=state.reference_price,
        stop=stop_loss_params(config),
        peak=state.peak,
        stop_pct=state.stop_pct,
        exits=exits if exits_can_act(exits) else None,
    )


def exits_can_act(exits: ExitParams) -> bool:
    return (
        exits.tp_target < math.inf or exits.stale_after_ts < math.inf or exits.dca_drop > -math.inf
    )


def idempotency_key(action: Action, position_id: str, state: PositionState) -> str | None:
    """ORCH-5 keys: ``sale:{pos}``, ``take-profit:{pos}:{levels hit}``,
    ``dca:{pos}:{dca count}:{drop %}``; ``None`` for state-only actions."""
    if isinstance(action, SellAll):
        return f"sale:{position_id}"
    if isinstance(action, TakeProfitSell):
        return f"take-profit:{position_id}:{state.tp_levels_hit}"
    if isinstance(action, DcaBuy) and action.decision.level is not None:
        drop = js_number(action.decision.level.drop_percent)
        return f"dca:{position_id}:{state.dca_count}:{drop}"
    return None
