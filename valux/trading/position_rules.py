"""The scalar half of the per-tick rules: what an agent does when its evaluator says
one of its positions crossed a take-profit, stale-trade or DCA threshold.

The evaluator's vectorised pass only finds the positions whose threshold is crossed
(:mod:`valux.evaluation.book`); this module runs ORCH-3 for each of them with the
reference's scalar rules (:func:`valux.rules.orchestration.next_action`), executes
the sales and buys through the agent's wallet, journals every step, and re-arms the
position with the parameters that follow.

Journal first, exactly once:

- ``order_intended`` (with the rule state *before* the order and what the order is
  for) is committed before the wallet hears of a take-profit sale or DCA buy. Its
  intent id derives from ORCH-5's idempotency key (``take-profit:{pos}:{levels
  hit}``, ``dca:{pos}:{count}:{drop}``), so the same decision retried is the same
  order, answered by the wallet from its record.
- The fill is applied to that stored state (``apply_take_profit`` /
  ``apply_dca``) and committed as ``position_updated`` (or ``position_closed`` when
  the ladder sells the last tokens, TP-11). A crash in between leaves the intent on
  the position; the host's reconcile asks the wallet and applies it once.
- A failed order (TP-16, DCA-11) is journaled as ``order_failed`` and the tick goes
  on with the next step on the unchanged state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from valux.rules.config import AgentConfig, TakeProfitLevel
from valux.rules.dca import apply_dca, track_lowest_price
from valux.rules.exit_rules import exit_rules, position_state
from valux.rules.orchestration import (
    DcaBuy,
    RecordLowestPrice,
    SellAll,
    Step,
    StoreMoonBag,
    TakeProfitSell,
    idempotency_key,
    next_action,
    stop_loss_params,
)
from valux.rules.position import PositionState
from valux.rules.take_profit import (
    TakeProfitDecision,
    apply_moon_bag_activation,
    apply_take_profit,
    tp_levels_count,
)
from valux.schema.messages import ExitRequest, OrderRequest, OrderResult, intent_id_for

if TYPE_CHECKING:
    from valux.trading.agent import Agent
    from valux.trading.context import TradingHost

LAMPORT = Decimal("0.000000001")

RULE_REASONS = frozenset({"take_profit", "stale_trade", "dca"})
"""Evaluator trigger reasons that this module handles (stop loss sells outright)."""


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of one take-profit sale or DCA buy for the rest of the tick."""

    state: PositionState
    closed: dict[str, Any] | None = None  # the close answer when TP-11 closed it
    stop: tuple[float, float] | None = None  # (stop_pct, peak) a DCA buy re-initialised


def order_plan(action: TakeProfitSell | DcaBuy) -> dict[str, Any]:
    """What the order is for, journaled with the intent (enough to apply its fill)."""
    if isinstance(action, DcaBuy):
        return {"kind": "dca"}
    d = action.decision
    return {
        "kind": "take_profit",
        "levels": [[lv.target_percent, lv.sell_percent] for lv in d.levels],
        "gain_percent": d.gain_percent,
        "sell_amount": d.sell_amount,
        "new_remaining": d.new_remaining,
        "activate_moon_bag": d.activate_moon_bag,
        "moon_bag_amount": d.moon_bag_amount,
    }


def take_profit_decision(plan: dict[str, Any]) -> TakeProfitDecision:
    """The decision an ``order_plan`` was made from (for applying its fill)."""
    return TakeProfitDecision(
        should_execute=True,
        reason="take profit",
        gain_percent=float(plan["gain_percent"]),
        levels=tuple(
            TakeProfitLevel.model_validate({"target_percent": t, "sell_percent": s})
            for t, s in plan["levels"]
        ),
        sell_amount=plan["sell_amount"],
        new_remaining=plan["new_remaining"],
        activate_moon_bag=bool(plan["activate_moon_bag"]),
        moon_bag_amount=plan["moon_bag_amount"],
    )


class PositionRules:
    """Runs ORCH-3 for triggered positions on behalf of an agent host."""

    def __init__(self, host: TradingHost) -> None:
        self.host = host

    async def on_trigger(self, agent: Agent, request: ExitRequest) -> dict[str, Any]:
        """One evaluator trigger (caller holds the agent's mailbox)."""
        pid = request.position_id
        position = agent.positions.get(pid)
        if position is None:
            return {"position_id": pid, "status": "ignored", "reason": "closed"}
        if position.get("exit_intent") or position.get("order_intent"):
            return {"position_id": pid, "status": "pending", "reason": "an order is in flight"}
        allows_entries = self.host.controls.effective(agent).state.allows_entries
        config = agent.config
        price = float(request.price) if request.price is not None else 0.0
        now = request.ts or time.time()
        stored = position_state(position)
        state = stored
        stop: tuple[float, float] | None = None
        step: Step | None = None
        while (action := next_action(state, config, price, now, False, after=step)) is not None:
            if isinstance(action, DcaBuy) and not allows_entries:
                break  # REDUCING: no DCA buy (the re-arm below arms none)
            if isinstance(action, SellAll):  # stale trade: the whole position, as a stop does
                await self._save(agent, position, state, stored)
                return await self.host.exits.sell_all(
                    agent, position, replace(request, reason=action.reason)
                )
            if isinstance(action, RecordLowestPrice):
                state = track_lowest_price(state, price)
            elif isinstance(action, StoreMoonBag):
                state = apply_moon_bag_activation(state, action.decision)
            else:
                await self._save(agent, position, state, stored)
                stored = state
                applied = await self._order(agent, position, state, action, price, now)
                if applied is None:  # outcome unknown: reconcile finishes it and re-arms
                    return {"position_id": pid, "status": "pending", "reason": "order in flight"}
                if applied.closed is not None:
                    return applied.closed
                state = stored = applied.state
                stop = applied.stop or stop
            step = action.step
        await self._save(agent, position, state, stored)
        await self.host.arm_position(agent, position, release=True, stop=stop)
        return {"position_id": pid, "status": "updated", "reason": request.reason}

    async def _save(
        self, agent: Agent, position: dict[str, Any], state: PositionState, stored: PositionState
    ) -> None:
        """Journal state-only changes (moon bag stored, lowest price) not yet journaled."""
        if state != stored:
            await self.host.persist(
                agent, [("position_updated", self._update(agent, position, state))]
            )

    def _update(
        self,
        agent: Agent,
        position: dict[str, Any],
        state: PositionState,
        *,
        intent_id: str | None = None,
        proceeds: Decimal = Decimal(0),
    ) -> dict[str, Any]:
        return {
            "position_id": position["id"],
            "intent_id": intent_id,
            "state": state.to_dict(),
            "proceeds": proceeds,
            "exit_rules": exit_rules(agent.config, state),
        }

    async def _order(
        self,
        agent: Agent,
        position: dict[str, Any],
        state: PositionState,
        action: TakeProfitSell | DcaBuy,
        price: float,
        now: float,
    ) -> Applied | None:
        """Journal the intent, execute it, apply the result (None: still unknown)."""
        key = idempotency_key(action, position["id"], state)
        parts = [key or f"{action.step}:{position['id']}:{now}"]
        if failures := position.get("order_failures", 0):  # after a failure: a new decision
            parts.append(f"retry-{failures}")
        intent_id = intent_id_for("rule", *parts)
        plan = order_plan(action)
        is_dca = isinstance(action, DcaBuy)
        if isinstance(action, DcaBuy):  # whole lamports, as every entry (PS-9)
            amount = action.decision.buy_amount.quantize(LAMPORT, rounding=ROUND_DOWN)
        else:
            amount = action.decision.sell_amount
        intent = {
            "intent_id": intent_id,
            "position_id": position["id"],
            "side": "buy" if is_dca else "sell",
            "amount": amount,
            "plan": plan,
            "state": state.to_dict(),
            "price": price,
            "ts": now,
        }
        await self.host.persist(agent, [("order_intended", intent)], deferrable=not is_dca)
        order = order_request(agent, position, intent)
        try:
            result = await self.host.wallets.execute(order)
        except Exception as exc:  # wallet unreachable: resolved later by intent id
            self.host.log.warning("rule_order_error", intent_id=intent_id, error=str(exc))
            self.host.reconciler.ensure()
            return None
        return await self.apply_result(agent, position, intent, result)

    async def apply_result(
        self, agent: Agent, position: dict[str, Any], intent: dict[str, Any], result: OrderResult
    ) -> Applied | None:
        """Apply a take-profit sale's or DCA buy's outcome exactly once (caller holds the
        mailbox); None while the outcome is still unknown."""
        before = PositionState.from_dict(intent["state"])
        deferrable = intent["side"] == "sell"
        if result.state == "failed":  # TP-16 / DCA-11: the tick goes on, state unchanged
            event = {"intent_id": result.intent_id, "position_id": position["id"]}
            await self.host.persist(agent, [("order_failed", event)], deferrable=deferrable)
            return Applied(before)
        if result.state != "filled":
            self.host.reconciler.ensure()
            return None
        config = agent.config
        tx_id = result.intent_id
        if intent["plan"]["kind"] == "take_profit":
            decision = take_profit_decision(intent["plan"])
            after, closed = apply_take_profit(
                before, decision, result.base_amount, result.quote_amount, result.ts, tx_id
            )
            if closed:  # TP-11: the ladder sold the last tokens
                answer = await self.host.exits.close_filled(agent, position, result, "take_profit")
                return Applied(after, closed=answer)
            update = self._update(
                agent, position, after, intent_id=tx_id, proceeds=result.quote_amount
            )
            await self.host.persist(agent, [("position_updated", update)], deferrable=True)
            self.host.exits.published_trade(agent, position, result, "sell")
            return Applied(after)
        after = _apply_dca_fill(before, config, result)
        update = self._update(agent, position, after, intent_id=tx_id)
        await self.host.persist(agent, [("position_updated", update)])
        self.host.exits.published_trade(agent, position, result, "buy")
        stop = None  # Q-2 fixed: apply_dca ran SL-1 again; the evaluator must take it
        if not config.engine.reference_quirks and after.stop_pct is not None and after.peak:
            stop = (after.stop_pct, after.peak)
        return Applied(after, stop=stop)


def _apply_dca_fill(
    state: PositionState, config: AgentConfig, result: OrderResult
) -> PositionState:
    quirks = config.engine.reference_quirks
    return apply_dca(
        state,
        spent=result.quote_amount,
        tokens=result.base_amount,
        ts=result.ts,
        tx_id=result.intent_id,
        tp_levels_count=tp_levels_count(config, quirks=quirks),
        stop=stop_loss_params(config),
        quirks=quirks,
    )


def order_request(agent: Agent, position: dict[str, Any], intent: dict[str, Any]) -> OrderRequest:
    """The wallet order of a journaled take-profit sale or DCA buy (sent again, same id,
    when the wallet has not seen it)."""
    return OrderRequest(
        intent_id=intent["intent_id"],
        wallet_id=agent.wallet_id,
        agent_id=agent.id,
        position_id=position["id"],
        side=intent["side"],
        token=position["token"],
        amount=intent["amount"],
        reason=intent["plan"]["kind"],
        reference_price=intent.get("price"),
        reference_ts=intent.get("ts"),
    )
