"""Entries: a signal's way through one agent to a filled, armed position.

Per agent, in its mailbox: a signal seen before is answered from the recorded
outcome; otherwise eligibility (EL rules), trade validation and sizing (balances
and the PS-9 price-impact quote from the wallet), ``buy_intended`` journaled with
the deterministic intent id, the wallet executes, ``position_opened`` journaled,
the position armed at its evaluator, and only then the answer. A failed or
refused entry is journaled as the signal's outcome (``signal_handled`` /
``buy_failed``); an outcome that is still unknown stays a pending buy, resolved
by :mod:`valux.trading.reconciliation`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any

import asyncpg

from valux.errors import Unavailable, ValuxError
from valux.hosting.peers import PEER_ERRORS
from valux.observability.metrics import OPEN_POSITIONS, SIGNAL_TO_FILL_SECONDS, SIGNALS
from valux.observability.publisher import CHANNEL_POSITIONS, CHANNEL_TRADES
from valux.persistence.journal import DATABASE_DOWN
from valux.persistence.store import Query
from valux.rules.eligibility import TokenMetrics, ineligibility_reason
from valux.rules.exit_rules import exit_rules
from valux.rules.position import open_position
from valux.rules.sizing import SizingError, size_with_price_impact
from valux.rules.validation import TradeRejected, validate_trade
from valux.schema.messages import OrderRequest, OrderResult, Signal, intent_id_for
from valux.trading.agent import Agent
from valux.trading.context import TradingHost
from valux.trading.updates import position_message, trade_message
from valux.venues.base import VenueError

LAMPORT = Decimal("0.000000001")
DECIDED = Query(
    "signal_decided",
    "SELECT agent_id, status, reason, position_id, detail,"
    " extract(epoch FROM created_at) AS ts FROM signal_outcomes"
    " WHERE signal_id = $1 AND agent_id = ANY($2::text[])",
    keys=lambda signal_id, agent_ids: (("signal_outcomes", signal_id, a) for a in agent_ids),
)


class Entries:
    """Signal handling for the agents of one host (see the module docstring)."""

    def __init__(self, host: TradingHost) -> None:
        self.host = host

    async def on_signal(self, signal: Signal) -> list[dict[str, Any]]:
        """Run ``signal`` through every targeted agent of this host, concurrently.

        Each answer carries ``final``: True when the outcome is recorded and will not
        change (a repeat of the signal gets exactly it); False while a buy is in flight
        (``pending``) or when infrastructure refused the entry before the agent could
        decide (``refused``: the journal or the wallet is unreachable), so a retry of the
        signal decides it then."""
        entities = self.host.entities
        if signal.agents is None:
            chosen = list(entities.values())
        else:  # the agents named, not a pass over every agent of the host
            chosen = [a for a in map(entities.get, dict.fromkeys(signal.agents)) if a is not None]
        targets = [a for a in chosen if a.status != "deleted"]
        try:
            decided = await self._decided_before(signal, targets)
        except DATABASE_DOWN as exc:  # cannot prove the signal is new: decide nothing
            why = f"entry refused: database unreachable ({type(exc).__name__})"
            return [self.refused(agent, why) for agent in targets]
        answers = await asyncio.gather(
            *(self._handle_signal(a, signal, decided.get(a.id)) for a in targets)
        )
        unreadable = [
            Entries.refused_id(agent_id, f"agent unavailable: its journal cannot be read ({why})")
            for agent_id, why in self.host.unreadable.items()
            if signal.agents is None or agent_id in signal.agents
        ]
        return [*answers, *unreadable]

    async def _decided_before(
        self, signal: Signal, targets: list[Agent]
    ) -> dict[str, dict[str, Any]]:
        """The recorded outcomes of agents whose memory no longer holds this signal (one
        query for the host; none when every agent remembers it or has it in flight)."""
        unknown = [
            a.id
            for a in targets
            if signal.id not in a.signals
            and not any(b["signal_id"] == signal.id for b in a.pending_buys.values())
        ]
        if not unknown:
            return {}
        rows = await self.host.store.fetch(DECIDED, signal.id, unknown)
        return {r["agent_id"]: recorded_outcome(r) for r in rows}

    async def _handle_signal(
        self, agent: Agent, signal: Signal, decided: dict[str, Any] | None
    ) -> dict[str, Any]:
        try:
            return await self._handle_signal_inner(agent, signal, decided)
        except Unavailable as exc:  # the journal refused the entry: not decided
            self.host.log.warning("entry_refused_journal_unavailable", agent_id=agent.id,
                                  error=exc.message)  # fmt: skip
            SIGNALS.labels("refused").inc()
            return self.refused(agent, f"entry refused: {exc.message}")
        except ValuxError:
            raise
        except (asyncpg.PostgresError, OSError) as exc:  # infrastructure, not this agent
            self.host.log.warning(
                "entry_refused_journal_unavailable", agent_id=agent.id, error=str(exc)
            )
            SIGNALS.labels("refused").inc()
            return self.refused(agent, f"entry refused: journal unavailable ({exc})")
        except PEER_ERRORS as exc:  # a wallet or evaluator process is restarting
            self.host.log.warning(
                "entry_refused_actor_unavailable", agent_id=agent.id, error=str(exc)
            )
            SIGNALS.labels("refused").inc()
            return self.refused(agent, f"entry refused: wallet unreachable ({type(exc).__name__})")
        except Exception as exc:
            await self.host.entity_failed(agent.id, exc)
            SIGNALS.labels("refused").inc()
            return self.refused(agent, f"internal error, agent restarted: {exc}")

    async def _handle_signal_inner(
        self, agent: Agent, signal: Signal, decided: dict[str, Any] | None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        async with self.host.mailbox(agent.id):
            agent = self.host.entities[agent.id]  # the current incarnation, after any restart
            self.host.check_fault(agent.id)
            seen = agent.signals.get(signal.id) or decided
            if seen is not None:
                return {**seen, "agent_id": agent.id, "duplicate": True, "final": True}
            if any(b["signal_id"] == signal.id for b in agent.pending_buys.values()):
                pending = self.outcome(agent, "pending", "buy in flight; outcome being resolved")
                return {**pending, "final": False}
            effective = self.host.controls.effective(agent)
            if not effective.state.allows_entries:
                reason = f"entries refused: {effective.state.value} ({effective.reason})"
                return await self._record(agent, signal, "ineligible", reason)
            outcome = await self._decide_and_buy(agent, signal)
        if outcome["status"] == "bought":
            SIGNAL_TO_FILL_SECONDS.observe(time.perf_counter() - started)
        SIGNALS.labels(outcome["status"]).inc()
        return outcome

    async def _decide_and_buy(self, agent: Agent, signal: Signal) -> dict[str, Any]:
        config = agent.config
        metrics = signal.metrics
        reason = ineligibility_reason(
            config,
            paused=False,  # the trading state was checked (EL-1 is REDUCING / HALTED)
            strength=signal.strength,
            signal_type=signal.type,
            token=signal.token,
            metrics=None
            if metrics is None
            else TokenMetrics(metrics.market_cap, metrics.liquidity, metrics.holder_count),
        )
        if reason is not None:
            return await self._record(agent, signal, "ineligible", reason)
        wallets = self.host.wallets
        try:
            quote_balance = await wallets.quote_balance(agent.wallet_id)
            size = validate_trade(
                config=config,
                balance=quote_balance,
                open_tokens=agent.open_tokens(),
                token=signal.token,
                requested_size=signal.size,
                rng=self.host.rng,
            )
            size = await size_with_price_impact(  # PS-9: 100 / 90 / 80 / 70 % of the size
                size,
                config.purchase_limits.max_price_impact,
                lambda amount: self.host.wallets.buy_impact(agent.wallet_id, signal.token, amount),
            )
        except TradeRejected as exc:
            return await self._record(agent, signal, "failed", f"{exc.code}: {exc.message}")
        except SizingError as exc:
            return await self._record(agent, signal, "failed", f"{exc.code}: {exc}")
        except VenueError as exc:  # no quote (no price): the venue would not fill either
            return await self._record(agent, signal, "failed", f"QUOTE_FAILED: {exc}")
        size = size.quantize(LAMPORT, rounding=ROUND_DOWN)  # PS-9: floor to whole lamports
        if size <= 0:
            return await self._record(
                agent, signal, "failed", "INVALID_POSITION_SIZE: below 1 lamport"
            )
        intent_id = intent_id_for("buy", signal.id, agent.id)
        await self.host.persist(
            agent,
            [
                (
                    "buy_intended",
                    {
                        "intent_id": intent_id,
                        "signal_id": signal.id,
                        "token": signal.token,
                        "size": size,
                        "ts": time.time(),
                    },
                )
            ],
        )
        order = OrderRequest(
            intent_id=intent_id,
            wallet_id=agent.wallet_id,
            agent_id=agent.id,
            position_id=intent_id,
            side="buy",
            token=signal.token,
            amount=size,
            reason="signal",
        )
        try:
            result = await self.host.wallets.execute(order)
        except Exception as exc:  # wallet unreachable: the intent stays pending, resolved later
            self.host.log.warning("buy_execute_error", intent_id=intent_id, error=str(exc))
            return {**self.outcome(agent, "pending", f"wallet unreachable: {exc}"), "final": False}
        return await self.apply_buy_result(agent, agent.pending_buys[intent_id], result)

    async def apply_buy_result(
        self, agent: Agent, intent: dict[str, Any], result: OrderResult
    ) -> dict[str, Any]:
        signal_id = intent["signal_id"]
        if result.state == "failed":
            outcome = self.outcome(agent, "failed", result.reason or "order failed")
            await self.host.persist(
                agent,
                [
                    (
                        "buy_failed",
                        {"intent_id": result.intent_id, "signal_id": signal_id, "outcome": outcome},
                    )
                ],
            )
            return {**outcome, "final": True}
        if result.state != "filled":
            return {**self.outcome(agent, "pending", "venue outcome unknown; resolving"),
                    "final": False}  # fmt: skip
        state = open_position(
            purchase_price=result.price,
            amount=result.base_amount,
            total_invested=result.quote_amount,
            created_at=result.ts,
        )
        position = {
            "id": result.intent_id,
            "token": intent["token"],
            "amount": result.base_amount,
            "remaining": result.base_amount,
            "purchase_price": result.price,
            "invested": result.quote_amount,
            "proceeds": Decimal(0),
            "opened_at": result.ts,
            "signal_id": signal_id,
            "exit_rules": exit_rules(agent.config, state),
            "exit_intent": None,
            "exit_reason": None,
            "state": state.to_dict(),
            "order_intent": None,
        }
        outcome = self.outcome(
            agent,
            "bought",
            None,
            position_id=position["id"],
            amount=str(result.base_amount),
            price=str(result.price),
            spent=str(result.quote_amount),
            **({"signature": result.tx_id} if result.tx_id else {}),
        )
        await self.host.persist(
            agent,
            [
                (
                    "position_opened",
                    {
                        "intent_id": result.intent_id,
                        "signal_id": signal_id,
                        "position": position,
                        "outcome": outcome,
                    },
                )
            ],
        )
        OPEN_POSITIONS.inc()
        armed = await self.host.arm_position(agent, position)
        self.host.publisher.publish(CHANNEL_POSITIONS, position_message(agent, position, "opened"))
        self.host.publisher.publish(CHANNEL_TRADES, trade_message(agent, position, result, "buy"))
        return {**outcome, "armed": armed, "final": True}

    async def _record(
        self, agent: Agent, signal: Signal, status: str, reason: str
    ) -> dict[str, Any]:
        outcome = self.outcome(agent, status, reason)
        await self.host.persist(
            agent, [("signal_handled", {"signal_id": signal.id, "outcome": outcome})]
        )
        return {**outcome, "final": True}

    @staticmethod
    def outcome(agent: Agent, status: str, reason: str | None, **extra: Any) -> dict[str, Any]:
        """An outcome as it is recorded (``pending`` ones are never recorded)."""
        return {
            "agent_id": agent.id,
            "status": status,
            "reason": reason,
            "ts": time.time(),
            **extra,
        }

    @staticmethod
    def refused(agent: Agent, reason: str) -> dict[str, Any]:
        """Infrastructure refused the entry before the agent decided: not recorded, so a
        retry of the signal decides it."""
        return Entries.refused_id(agent.id, reason)

    @staticmethod
    def refused_id(agent_id: str, reason: str) -> dict[str, Any]:
        outcome = {"agent_id": agent_id, "status": "refused", "reason": reason, "ts": time.time()}
        return {**outcome, "final": False}


def recorded_outcome(row: Mapping[str, Any]) -> dict[str, Any]:
    """An outcome from ``signal_outcomes``: the first answer as stored, or (rows from
    before the ``detail`` column) rebuilt from the row's columns."""
    detail = row["detail"]
    if detail is not None:
        return dict(json.loads(detail) if isinstance(detail, str) else detail)
    return {
        "agent_id": row["agent_id"],
        "status": row["status"],
        "reason": row["reason"],
        "position_id": row["position_id"],
        "ts": float(row["ts"]),
    }
