"""Exits: closing a whole position exactly once (stop loss, stale trade, manual, silent feed).

An exit for a position that is already closed or already exiting is ignored. The
sale's intent id derives from the position id, and ``exit_intended`` is journaled
(deferrably: exits run during a database outage) before the wallet hears of it, so
a retried sale is answered by the wallet from its record. Take-profit, stale-trade
and DCA triggers go to :mod:`valux.trading.position_rules`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from valux.errors import Conflict, NotFound, ValuxError
from valux.hosting.peers import PEER_ERRORS
from valux.observability.metrics import OPEN_POSITIONS
from valux.observability.publisher import CHANNEL_POSITIONS, CHANNEL_TRADES
from valux.schema.messages import ExitRequest, OrderRequest, OrderResult, intent_id_for
from valux.trading.agent import Agent
from valux.trading.context import TradingHost
from valux.trading.position_rules import RULE_REASONS
from valux.trading.updates import position_message, trade_message


class Exits:
    """Whole-position exits for the agents of one host (see the module docstring)."""

    def __init__(self, host: TradingHost) -> None:
        self.host = host

    async def on_exits(self, exits: list[ExitRequest]) -> list[dict[str, Any]]:
        """Close each position once; answers per request (closed / ignored / failed)."""
        return list(await asyncio.gather(*(self._handle_exit(e) for e in exits)))

    async def close_position(self, agent_id: str, position_id: str) -> dict[str, Any]:
        agent = self.host.entities.get(agent_id)
        if agent is None or agent.status == "deleted":
            raise NotFound(f"agent {agent_id} not found")
        position = agent.positions.get(position_id)
        if position is None:
            raise Conflict(f"position {position_id} is not open")
        request = ExitRequest(agent_id, position_id, position["token"], "manual", ts=time.time())
        result = await self._handle_exit(request)
        if result["status"] == "failed":
            raise Conflict(f"could not close position {position_id}: {result['reason']}")
        return result

    async def _handle_exit(self, request: ExitRequest) -> dict[str, Any]:
        try:
            return await self._handle_exit_inner(request)
        except ValuxError:
            raise
        except (asyncpg.PostgresError, OSError) as exc:
            self.host.log.error(
                "exit_failed_journal_unavailable", position_id=request.position_id, error=str(exc)
            )
            await self.host.disarm_position(request.token, request.position_id, closed=False)
            return {"position_id": request.position_id, "status": "failed", "reason": str(exc)}
        except PEER_ERRORS as exc:  # a wallet process is restarting: the next tick retries
            self.host.log.warning("exit_deferred_actor_unavailable", error=str(exc))
            await self.host.disarm_position(request.token, request.position_id, closed=False)
            return {"position_id": request.position_id, "status": "failed", "reason": str(exc)}
        except Exception as exc:
            await self.host.entity_failed(request.agent_id, exc)
            await self.host.disarm_position(request.token, request.position_id, closed=False)
            return {"position_id": request.position_id, "status": "failed", "reason": str(exc)}

    async def _handle_exit_inner(self, request: ExitRequest) -> dict[str, Any]:
        async with self.host.mailbox(request.agent_id):
            agent = self.host.entities.get(request.agent_id)  # the current incarnation
            if agent is None:
                return {"position_id": request.position_id, "status": "ignored",
                        "reason": "no agent"}  # fmt: skip
            position = agent.positions.get(request.position_id)
            if position is None:
                return {"position_id": request.position_id, "status": "ignored", "reason": "closed"}
            effective = self.host.controls.effective(agent)
            if not effective.state.allows_exits:
                if request.reason == "manual":
                    raise Conflict(
                        f"agent {agent.id} is {effective.state.value} ({effective.reason}):"
                        " nothing runs; set it REDUCING or ACTIVE to close positions"
                    )
                # HALTED (ORCH-2, chosen explicitly): no rule runs; the position stays
                # exiting at the evaluator until the state is lifted and it is re-armed.
                return {"position_id": request.position_id, "status": "ignored",
                        "reason": f"halted: {effective.reason}"}  # fmt: skip
            if request.reason in RULE_REASONS:
                return await self.host.rules.on_trigger(agent, request)
            if position.get("order_intent"):  # a take-profit sale or DCA buy is in flight
                self.host.reconciler.ensure()
                return {"position_id": request.position_id, "status": "pending",
                        "reason": "an order of this position is in flight"}  # fmt: skip
            return await self.sell_all(agent, position, request)

    async def sell_all(
        self, agent: Agent, position: dict[str, Any], request: ExitRequest
    ) -> dict[str, Any]:
        """Sell the whole position (EX-1) for ``request.reason`` (caller holds the mailbox)."""
        if position.get("exit_intent"):
            intent_id = position["exit_intent"]
        else:
            intent_id = sale_intent_id(position)
            await self.host.persist(
                agent,
                [
                    (
                        "exit_intended",
                        {
                            "intent_id": intent_id,
                            "position_id": request.position_id,
                            "reason": request.reason,
                            "price": request.price,
                            "ts": time.time(),
                            "tick_entered_at": request.detected_at or None,
                        },
                    )
                ],
                deferrable=True,
            )
        order = exit_order(agent, position, intent_id, request.reason, request.price, request.ts)
        try:
            result = await self.host.wallets.execute(order)
        except Exception as exc:
            self.host.log.warning("exit_execute_error", intent_id=intent_id, error=str(exc))
            self.host.reconciler.ensure()
            return {"position_id": request.position_id, "status": "pending", "reason": str(exc)}
        return await self.apply_exit_result(agent, position, result)

    async def apply_exit_result(
        self, agent: Agent, position: dict[str, Any], result: OrderResult
    ) -> dict[str, Any]:
        pid = position["id"]
        if result.state == "failed":
            await self.host.persist(
                agent,
                [("exit_failed", {"intent_id": result.intent_id, "position_id": pid})],
                deferrable=True,
            )
            await self.host.disarm_position(position["token"], pid, closed=False)
            return {"position_id": pid, "status": "failed", "reason": result.reason}
        if result.state != "filled":
            self.host.reconciler.ensure()
            return {"position_id": pid, "status": "pending", "reason": result.reason}
        return await self.close_filled(agent, position, result, position["exit_reason"] or "manual")

    async def close_filled(
        self, agent: Agent, position: dict[str, Any], result: OrderResult, reason: str
    ) -> dict[str, Any]:
        """Journal the close of ``position`` by the filled sale ``result`` and disarm it."""
        pid = position["id"]
        proceeds = position["proceeds"] + result.quote_amount
        realized = proceeds - position["invested"]  # PNL-1, cash-flow method
        await self.host.persist(
            agent,
            [
                (
                    "position_closed",
                    {
                        "position_id": pid,
                        "intent_id": result.intent_id,
                        "reason": reason,
                        "proceeds": proceeds,
                        "realized_pnl": realized,
                        "exit_price": result.price,
                        "closed_at": result.ts,
                    },
                )
            ],
            deferrable=True,
        )
        OPEN_POSITIONS.dec()
        await self.host.disarm_position(position["token"], pid, closed=True)
        await self.host.controls.after_close(agent)
        closed = {**position, "status": "closed", "realized_pnl": realized, "exit_reason": reason}
        self.host.publisher.publish(CHANNEL_POSITIONS, position_message(agent, closed, "closed"))
        self.published_trade(agent, position, result, "sell")
        return {
            "position_id": pid,
            "status": "closed",
            "reason": reason,
            "realized_pnl": str(realized),
            "exit_price": str(result.price),
        }

    def published_trade(
        self, agent: Agent, position: dict[str, Any], result: OrderResult, side: str
    ) -> None:
        self.host.publisher.publish(CHANNEL_TRADES, trade_message(agent, position, result, side))


def exit_order(
    agent: Agent,
    position: dict[str, Any],
    intent_id: str,
    reason: str,
    price: float | None = None,
    ts: float | None = None,
) -> OrderRequest:
    """The wallet order of a whole-position sale (sent again, same id, when the wallet has
    not seen it)."""
    return OrderRequest(
        intent_id=intent_id,
        wallet_id=agent.wallet_id,
        agent_id=agent.id,
        position_id=position["id"],
        side="sell",
        token=position["token"],
        amount=position["remaining"],
        reason=position["exit_reason"] or reason,
        reference_price=price,
        reference_ts=ts if price is not None else None,
    )


def sale_intent_id(position: dict[str, Any]) -> str:
    """The intent id of the position's next whole sale: fixed by the position and by how
    many sales of it have failed (a retry after a failure is a new decision; a retry of
    the same decision — a resend, a repeated trigger — keeps its id)."""
    failures = position.get("exit_failures", 0)
    if not failures:
        return intent_id_for("sale", position["id"])
    return intent_id_for("sale", position["id"], f"retry-{failures}")
