"""AgentHost: hosts the Agent logical actors of one slot.

Contract (in addition to :class:`~valux.supervisors.host.Host`):
- ``on_signal`` is called once per host per signal; every targeted agent of the
  host handles it concurrently in its own mailbox. Calls to wallet hosts and
  evaluators are micro-batched (one Ray call per remote actor per loop turn).
- A buy is acknowledged only after its fill is journaled *and* the position is
  armed at its token's evaluator.
- ``on_exits`` closes positions exactly once: an exit for a position that is
  already closed or exiting is ignored; the sale's intent id derives from the
  position id, so a retried sale is answered by the wallet from its record.
- After a restart, buys and exits left in flight are resolved with the wallet by
  intent id before the host serves.
"""

from __future__ import annotations

import asyncio
import random
import time
from decimal import ROUND_DOWN, Decimal
from typing import Any

import asyncpg
from ray.exceptions import RayError

from valux.actors.agent import Agent
from valux.actors.exit_rules import exit_rules
from valux.config.settings import Settings
from valux.errors import Conflict, InvalidRequest, NotFound, ValuxError
from valux.observability.metrics import OPEN_POSITIONS, SIGNAL_TO_FILL_SECONDS, SIGNALS
from valux.observability.publisher import CHANNEL_POSITIONS, CHANNEL_TRADES
from valux.rules.config import load_agent_config, merge_config_patch
from valux.rules.eligibility import TokenMetrics, ineligibility_reason
from valux.rules.position import open_position
from valux.rules.sizing import SizingError, size_with_price_impact
from valux.rules.validation import TradeRejected, validate_trade
from valux.schema.messages import ExitRequest, OrderRequest, OrderResult, Signal, intent_id_for
from valux.supervisors.batching import CallBatcher
from valux.supervisors.handles import evaluator_handle, wallet_host_handle
from valux.supervisors.host import Host
from valux.supervisors.naming import shard_of
from valux.supervisors.position_rules import RULE_REASONS, PositionRules
from valux.venues.base import VenueError

_ARM_ATTEMPTS = 3
_RECONCILE_INTERVAL_S = 1.0
LAMPORT = Decimal("0.000000001")


class AgentHost(Host[Agent]):
    """Many agents in one process; see the module docstring for the contract."""

    kind = "agent"
    entity_type = Agent

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self, slot: int, settings: Settings, database_url: str, redis_url: str | None
    ) -> None:
        self.rng = random.Random()
        self._wallet_exec: dict[int, CallBatcher[OrderRequest, OrderResult]] = {}
        self._wallet_balances: dict[int, CallBatcher[str, dict[str, Decimal]]] = {}
        self._wallet_resolve: dict[int, CallBatcher[tuple[str, str], OrderResult | None]] = {}
        self._wallet_impact: dict[int, CallBatcher[tuple[str, Decimal], float]] = {}
        self._arm: dict[int, CallBatcher[dict[str, Any], bool]] = {}
        self._disarm: dict[int, CallBatcher[tuple[str, bool], bool]] = {}
        self._reconciler: asyncio.Task[None] | None = None
        self.rules = PositionRules(self)
        await super().__init__(slot, settings, database_url, redis_url)

    async def entity_ids(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM agents WHERE host_slot = $1 AND status <> 'deleted'", self.slot
        )
        return [r["id"] for r in rows]

    async def after_recovery(self) -> None:
        OPEN_POSITIONS.set(sum(len(a.positions) for a in self.entities.values()))
        for agent_id in list(self.entities):
            async with self.mailbox(agent_id):
                await self._reconcile(self.entities[agent_id])
        self.ensure_reconciler()

    def ensure_reconciler(self) -> None:
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def _reconcile_loop(self) -> None:
        """While any buy or exit is in flight with an unknown outcome, ask again each second."""
        while self._in_flight():
            await asyncio.sleep(_RECONCILE_INTERVAL_S)
            try:
                await self.reconcile_all()
            except Exception as exc:  # keep trying; each intent logs its own failure
                self.log.warning("reconcile_round_failed", error=str(exc))

    def _in_flight(self) -> bool:
        return any(_has_in_flight(agent) for agent in self.entities.values())

    # -- batched remote calls -----

    def _batcher(self, table: dict[int, Any], key: int, send: Any) -> Any:
        batcher = table.get(key)
        if batcher is None:
            batcher = table[key] = CallBatcher(send)
        return batcher

    async def execute(self, agent: Agent, order: OrderRequest) -> OrderResult:
        slot = agent.wallet_slot
        ns = self.settings.ray.namespace

        async def send(items: list[OrderRequest]) -> list[OrderResult]:
            return list(await (await wallet_host_handle(slot, ns)).execute.remote(items))

        result: OrderResult = await self._batcher(self._wallet_exec, slot, send).call(order)
        return result

    async def _balance(self, agent: Agent) -> dict[str, Decimal]:
        slot = agent.wallet_slot
        ns = self.settings.ray.namespace

        async def send(items: list[str]) -> list[dict[str, Decimal]]:
            return list(await (await wallet_host_handle(slot, ns)).balances.remote(items))

        balances: dict[str, Decimal] = await self._batcher(self._wallet_balances, slot, send).call(
            agent.wallet_id
        )
        return balances

    async def _buy_impact(self, agent: Agent, token: str, amount: Decimal) -> float:
        slot = agent.wallet_slot
        ns = self.settings.ray.namespace

        async def send(items: list[tuple[str, Decimal]]) -> list[float]:
            return list(await (await wallet_host_handle(slot, ns)).buy_impacts.remote(items))

        impact: float = await self._batcher(self._wallet_impact, slot, send).call((token, amount))
        return impact

    async def _lookup(self, agent: Agent, intent_id: str) -> OrderResult | None:
        slot = agent.wallet_slot
        ns = self.settings.ray.namespace

        async def send(items: list[tuple[str, str]]) -> list[OrderResult | None]:
            return list(await (await wallet_host_handle(slot, ns)).resolve.remote(items))

        found: OrderResult | None = await self._batcher(self._wallet_resolve, slot, send).call(
            (agent.wallet_id, intent_id)
        )
        return found

    async def arm_position(
        self,
        agent: Agent,
        position: dict[str, Any],
        *,
        release: bool = False,
        stop: tuple[float, float] | None = None,
    ) -> bool:
        """Arm (or re-arm) ``position`` at its token's evaluator with its current exit
        rules; ``release`` makes a triggered position live again; ``stop`` replaces the
        evaluator's trailing state (a DCA buy re-initialised it)."""
        shard = shard_of(position["token"], self.settings.hosting.evaluators)
        ns = self.settings.ray.namespace

        async def send(items: list[dict[str, Any]]) -> list[bool]:
            return list(await (await evaluator_handle(shard, ns)).arm.remote(items))

        spec = {
            "position_id": position["id"],
            "agent_id": agent.id,
            "host": self.slot,
            "token": position["token"],
            "purchase_price": float(position["purchase_price"]),
            "exit_rules": position["exit_rules"],
            "peak": None if stop is None else stop[1],
            "stop_pct": None if stop is None else stop[0],
            "release": release,
        }
        for attempt in range(_ARM_ATTEMPTS):
            try:
                armed: bool = await self._batcher(self._arm, shard, send).call(spec)
                return armed
            except Exception as exc:  # evaluator restarting: it re-arms from PostgreSQL anyway
                self.log.warning("arm_failed", position_id=position["id"], error=str(exc))
                if attempt + 1 == _ARM_ATTEMPTS:
                    return False
        return False

    async def _disarm_position(self, token: str, position_id: str, closed: bool) -> None:
        """``closed`` → forget it; otherwise release it so the next tick can trigger again."""
        shard = shard_of(token, self.settings.hosting.evaluators)
        ns = self.settings.ray.namespace

        async def send(items: list[tuple[str, bool]]) -> list[bool]:
            return list(await (await evaluator_handle(shard, ns)).settle.remote(items))

        try:
            await self._batcher(self._disarm, shard, send).call((position_id, closed))
        except Exception as exc:  # a restarting evaluator re-arms from the read model
            self.log.warning("disarm_failed", position_id=position_id, error=str(exc))

    # -- agent lifecycle -----

    def _get(self, agent_id: str) -> Agent:
        agent = self.entities.get(agent_id)
        if agent is None or agent.status == "deleted":
            raise NotFound(f"agent {agent_id} not found")
        return agent

    async def create_agent(
        self,
        agent_id: str,
        name: str,
        config_doc: dict[str, Any] | None,
        wallet_id: str,
        wallet_slot: int,
        number: int,
    ) -> dict[str, Any]:
        config = load_agent_config(config_doc)  # raises InvalidRequest naming every field
        async with self.mailbox(agent_id):
            existing = self.entities.get(agent_id)
            if existing is not None and existing.status != "deleted":
                return existing.view()
            agent = Agent(agent_id)
            await self.persist(
                agent,
                [
                    (
                        "agent_created",
                        {
                            "name": name,
                            "config": config.to_document("snake"),
                            "wallet_id": wallet_id,
                            "wallet_slot": wallet_slot,
                            "host_slot": self.slot,
                            "number": number,
                            "ts": time.time(),
                        },
                    )
                ],
            )
            self.entities[agent_id] = agent
            return agent.view()

    async def describe(self, agent_ids: list[str] | None = None) -> list[dict[str, Any]]:
        ids = list(self.entities) if agent_ids is None else agent_ids
        return [
            a.view()
            for i in ids
            if (a := self.entities.get(i)) is not None and a.status != "deleted"
        ]

    async def update_agent(
        self, agent_id: str, name: str | None, config_patch: dict[str, Any] | None
    ) -> dict[str, Any]:
        async with self.mailbox(agent_id):
            agent = self._get(agent_id)
            events: list[tuple[str, dict[str, Any]]] = []
            if name is not None and name != agent.name:
                events.append(("renamed", {"name": name}))
            if config_patch:
                merged = merge_config_patch(agent.config, config_patch)
                events.append(("config_changed", {"config": merged.to_document("snake")}))
            if events:
                for event in events:  # one stage per commit keeps rows exact
                    await self.persist(agent, [event])
                if config_patch:
                    for position in agent.positions.values():
                        await self.arm_position(agent, position)
            return agent.view()

    async def set_status(self, agent_id: str, status: str) -> dict[str, Any]:
        """pause | resume | delete. Deleting requires no open positions."""
        target = {"pause": "paused", "resume": "active", "delete": "deleted"}[status]
        async with self.mailbox(agent_id):
            agent = self._get(agent_id)
            if target == "deleted" and agent.positions:
                raise Conflict(
                    f"agent {agent_id} has {len(agent.positions)} open position(s); "
                    "close them before deleting the agent"
                )
            if agent.status != target:
                resumed = agent.status == "paused" and target == "active"
                await self.persist(agent, [("status_changed", {"status": target})])
                if resumed:  # ORCH-2: triggers held while paused fire again
                    for position in agent.positions.values():
                        await self.arm_position(agent, position, release=True)
            return agent.view()

    # -- signals -----

    async def on_signal(self, signal: Signal) -> list[dict[str, Any]]:
        """Run ``signal`` through every targeted agent of this host, concurrently."""
        targets = [
            a
            for a in self.entities.values()
            if a.status != "deleted" and (signal.agents is None or a.id in signal.agents)
        ]
        return list(await asyncio.gather(*(self._handle_signal(a, signal) for a in targets)))

    async def _handle_signal(self, agent: Agent, signal: Signal) -> dict[str, Any]:
        try:
            return await self._handle_signal_inner(agent, signal)
        except ValuxError:
            raise
        except (asyncpg.PostgresError, OSError) as exc:  # infrastructure, not this agent
            self.log.warning("entry_refused_journal_unavailable", agent_id=agent.id, error=str(exc))
            SIGNALS.labels("failed").inc()
            return self._outcome(agent, "failed", f"entry refused: journal unavailable ({exc})")
        except RayError as exc:  # a wallet or evaluator process is restarting: not this agent
            self.log.warning("entry_refused_actor_unavailable", agent_id=agent.id, error=str(exc))
            SIGNALS.labels("failed").inc()
            return self._outcome(agent, "failed", f"entry refused: {type(exc).__name__}")
        except Exception as exc:
            await self.entity_failed(agent.id, exc)
            SIGNALS.labels("failed").inc()
            return self._outcome(agent, "failed", f"internal error, agent restarted: {exc}")

    async def _handle_signal_inner(self, agent: Agent, signal: Signal) -> dict[str, Any]:
        started = time.perf_counter()
        async with self.mailbox(agent.id):
            agent = self.entities[agent.id]  # the current incarnation, after any restart
            self.check_fault(agent.id)
            seen = agent.signals.get(signal.id)
            if seen is not None:
                return {**seen, "agent_id": agent.id, "duplicate": True}
            if any(b["signal_id"] == signal.id for b in agent.pending_buys.values()):
                return self._outcome(agent, "pending", "buy in flight; outcome being resolved")
            if self.safe_state is not None:  # not journaled: the same signal may buy later
                return self._outcome(agent, "failed", f"entry refused: {self.safe_state}")
            outcome = await self._decide_and_buy(agent, signal)
        if outcome["status"] == "bought":
            SIGNAL_TO_FILL_SECONDS.observe(time.perf_counter() - started)
        SIGNALS.labels(outcome["status"]).inc()
        return outcome

    async def _decide_and_buy(self, agent: Agent, signal: Signal) -> dict[str, Any]:
        if agent.status == "quarantined":
            return await self._record(
                agent,
                signal,
                "ineligible",
                f"agent quarantined after repeated failures: {agent.last_error}",
            )
        config = agent.config
        metrics = signal.metrics
        reason = ineligibility_reason(
            config,
            paused=not agent.accepts_entries,
            strength=signal.strength,
            signal_type=signal.type,
            token=signal.token,
            metrics=None
            if metrics is None
            else TokenMetrics(metrics.market_cap, metrics.liquidity, metrics.holder_count),
        )
        if reason is not None:
            return await self._record(agent, signal, "ineligible", reason)
        try:
            balances = await self._balance(agent)
            quote_balance = balances.get(self.settings.venue.quote_asset, Decimal(0))
            size = validate_trade(
                config=config,
                balance=quote_balance,
                open_tokens=agent.open_tokens(),
                token=signal.token,
                requested_size=signal.size,
                rng=self.rng,
            )
            size = await size_with_price_impact(  # PS-9: 100 / 90 / 80 / 70 % of the size
                size,
                config.purchase_limits.max_price_impact,
                lambda amount: self._buy_impact(agent, signal.token, amount),
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
        await self.persist(
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
            result = await self.execute(agent, order)
        except Exception as exc:  # wallet unreachable: the intent stays pending, resolved later
            self.log.warning("buy_execute_error", intent_id=intent_id, error=str(exc))
            return self._outcome(agent, "pending", f"wallet unreachable: {exc}")
        return await self._apply_buy_result(agent, agent.pending_buys[intent_id], result)

    async def _apply_buy_result(
        self, agent: Agent, intent: dict[str, Any], result: OrderResult
    ) -> dict[str, Any]:
        signal_id = intent["signal_id"]
        if result.state == "failed":
            outcome = self._outcome(agent, "failed", result.reason or "order failed")
            await self.persist(
                agent,
                [
                    (
                        "buy_failed",
                        {"intent_id": result.intent_id, "signal_id": signal_id, "outcome": outcome},
                    )
                ],
            )
            return outcome
        if result.state != "filled":
            return self._outcome(agent, "pending", "venue outcome unknown; resolving")
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
        outcome = self._outcome(
            agent,
            "bought",
            None,
            position_id=position["id"],
            amount=str(result.base_amount),
            price=str(result.price),
            spent=str(result.quote_amount),
        )
        await self.persist(
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
        armed = await self.arm_position(agent, position)
        self.publisher.publish(CHANNEL_POSITIONS, _position_message(agent, position, "opened"))
        self.publisher.publish(CHANNEL_TRADES, _trade_message(agent, position, result, "buy"))
        return {**outcome, "armed": armed}

    async def _record(
        self, agent: Agent, signal: Signal, status: str, reason: str
    ) -> dict[str, Any]:
        outcome = self._outcome(agent, status, reason)
        await self.persist(
            agent, [("signal_handled", {"signal_id": signal.id, "outcome": outcome})]
        )
        return outcome

    @staticmethod
    def _outcome(agent: Agent, status: str, reason: str | None, **extra: Any) -> dict[str, Any]:
        return {
            "agent_id": agent.id,
            "status": status,
            "reason": reason,
            "ts": time.time(),
            **extra,
        }

    # -- exits -----

    async def on_exits(self, exits: list[ExitRequest]) -> list[dict[str, Any]]:
        """Close each position once; answers per request (closed / ignored / failed)."""
        return list(await asyncio.gather(*(self._handle_exit(e) for e in exits)))

    async def close_position(self, agent_id: str, position_id: str) -> dict[str, Any]:
        agent = self._get(agent_id)
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
            self.log.error(
                "exit_failed_journal_unavailable", position_id=request.position_id, error=str(exc)
            )
            await self._disarm_position(request.token, request.position_id, closed=False)
            return {"position_id": request.position_id, "status": "failed", "reason": str(exc)}
        except RayError as exc:  # a wallet process is restarting: the next tick retries
            self.log.warning("exit_deferred_actor_unavailable", error=str(exc))
            await self._disarm_position(request.token, request.position_id, closed=False)
            return {"position_id": request.position_id, "status": "failed", "reason": str(exc)}
        except Exception as exc:
            await self.entity_failed(request.agent_id, exc)
            await self._disarm_position(request.token, request.position_id, closed=False)
            return {"position_id": request.position_id, "status": "failed", "reason": str(exc)}

    async def _handle_exit_inner(self, request: ExitRequest) -> dict[str, Any]:
        async with self.mailbox(request.agent_id):
            agent = self.entities.get(request.agent_id)  # the current incarnation
            if agent is None:
                return {"position_id": request.position_id, "status": "ignored",
                        "reason": "no agent"}  # fmt: skip
            position = agent.positions.get(request.position_id)
            if position is None:
                return {"position_id": request.position_id, "status": "ignored", "reason": "closed"}
            if request.reason in RULE_REASONS:
                return await self.rules.on_trigger(agent, request)
            if request.reason != "manual" and agent.status == "paused":
                # ORCH-2: a paused agent runs no rule; the position stays exiting at the
                # evaluator (silent) until resume re-arms it.
                return {"position_id": request.position_id, "status": "ignored", "reason": "paused"}
            if position.get("order_intent"):  # a take-profit sale or DCA buy is in flight
                self.ensure_reconciler()
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
            intent_id = intent_id_for("sale", request.position_id)
            await self.persist(
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
        order = OrderRequest(
            intent_id=intent_id,
            wallet_id=agent.wallet_id,
            agent_id=agent.id,
            position_id=request.position_id,
            side="sell",
            token=position["token"],
            amount=position["remaining"],
            reason=position["exit_reason"] or request.reason,
            reference_price=request.price,
            reference_ts=request.ts if request.price is not None else None,
        )
        try:
            result = await self.execute(agent, order)
        except Exception as exc:
            self.log.warning("exit_execute_error", intent_id=intent_id, error=str(exc))
            self.ensure_reconciler()
            return {"position_id": request.position_id, "status": "pending", "reason": str(exc)}
        return await self._apply_exit_result(agent, position, result)

    async def _apply_exit_result(
        self, agent: Agent, position: dict[str, Any], result: OrderResult
    ) -> dict[str, Any]:
        pid = position["id"]
        if result.state == "failed":
            await self.persist(
                agent,
                [("exit_failed", {"intent_id": result.intent_id, "position_id": pid})],
                deferrable=True,
            )
            await self._disarm_position(position["token"], pid, closed=False)
            return {"position_id": pid, "status": "failed", "reason": result.reason}
        if result.state != "filled":
            self.ensure_reconciler()
            return {"position_id": pid, "status": "pending", "reason": result.reason}
        return await self.close_filled(agent, position, result, position["exit_reason"] or "manual")

    async def close_filled(
        self, agent: Agent, position: dict[str, Any], result: OrderResult, reason: str
    ) -> dict[str, Any]:
        """Journal the close of ``position`` by the filled sale ``result`` and disarm it."""
        pid = position["id"]
        proceeds = position["proceeds"] + result.quote_amount
        realized = proceeds - position["invested"]  # PNL-1, cash-flow method
        await self.persist(
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
        await self._disarm_position(position["token"], pid, closed=True)
        closed = {**position, "status": "closed", "realized_pnl": realized, "exit_reason": reason}
        self.publisher.publish(CHANNEL_POSITIONS, _position_message(agent, closed, "closed"))
        self.published_trade(agent, position, result, "sell")
        return {
            "position_id": pid,
            "status": "closed",
            "reason": reason,
            "realized_pnl": str(realized),
            "exit_price": str(result.price),
        }

    # -- recovery of in-flight work ---------------------------------------------------------------

    def published_trade(
        self, agent: Agent, position: dict[str, Any], result: OrderResult, side: str
    ) -> None:
        self.publisher.publish(CHANNEL_TRADES, _trade_message(agent, position, result, side))

    async def _reconcile(self, agent: Agent) -> None:
        """Resolve buys and exits a crash left in flight (caller holds the mailbox)."""
        for intent_id, intent in list(agent.pending_buys.items()):
            try:
                result = await self._lookup(agent, intent_id)
            except Exception as exc:
                self.log.warning("reconcile_failed", intent_id=intent_id, error=str(exc))
                continue
            if result is None:  # the wallet never accepted it: nothing happened
                result = OrderResult(intent_id, "failed", reason="not received by the wallet")
            await self._apply_buy_result(agent, intent, result)
        for position in list(agent.positions.values()):
            exit_id: str | None = position.get("exit_intent")
            if not exit_id:
                continue
            try:
                result = await self._lookup(agent, exit_id)
            except Exception as exc:
                self.log.warning("reconcile_failed", intent_id=exit_id, error=str(exc))
                continue
            if result is None:
                result = OrderResult(exit_id, "failed", reason="not received by the wallet")
            await self._apply_exit_result(agent, position, result)
        for position in list(agent.positions.values()):
            order_intent: dict[str, Any] | None = position.get("order_intent")
            if not order_intent:
                continue
            intent = order_intent
            try:
                result = await self._lookup(agent, intent["intent_id"])
            except Exception as exc:
                self.log.warning("reconcile_failed", intent_id=intent["intent_id"], error=str(exc))
                continue
            if result is None:
                reason = "not received by the wallet"
                result = OrderResult(intent["intent_id"], "failed", reason=reason)
            applied = await self.rules.apply_result(agent, position, intent, result)
            if applied is not None and applied.closed is None:  # the trigger is handled
                await self.arm_position(agent, position, release=True, stop=applied.stop)

    async def reconcile_all(self) -> int:
        """Retry resolution of every in-flight intent (the reconcile loop calls it)."""
        count = 0
        for agent_id in list(self.entities):
            async with self.mailbox(agent_id):
                agent = self.entities.get(agent_id)
                if agent is None or not _has_in_flight(agent):
                    continue
                await self._reconcile(agent)
            count += 1
        return count

    async def open_positions(self) -> list[dict[str, Any]]:
        """Every open position with its agent id (for state comparisons in tests and chaos)."""
        return [
            {"agent_id": a.id, **p} for a in self.entities.values() for p in a.positions.values()
        ]

    async def quarantine(self, entity: Agent, error: str) -> None:
        """An agent that keeps failing stops taking entries (exits still run) until resumed."""
        await super().quarantine(entity, error)
        if entity.status in ("active", "paused"):
            await self.persist(
                entity, [("status_changed", {"status": "quarantined", "error": error})]
            )

    async def inject_agent_fault(self, agent_id: str, count: int = 1) -> int:
        """Remote entry point of :meth:`Host.inject_fault` (tests, chaos)."""
        return self.inject_fault(agent_id, count)

    def validate_slot(self, agent_id: str) -> None:
        if agent_id not in self.entities:
            raise InvalidRequest(f"agent {agent_id} is not hosted on slot {self.slot}")


def _has_in_flight(agent: Agent) -> bool:
    """A buy, exit, take-profit sale or DCA buy of ``agent`` awaits its outcome."""
    return bool(agent.pending_buys) or any(
        p.get("exit_intent") or p.get("order_intent") for p in agent.positions.values()
    )


def _position_message(agent: Agent, position: dict[str, Any], event: str) -> dict[str, Any]:
    return {
        "type": "position",
        "event": event,
        "agent_id": agent.id,
        "position_id": position["id"],
        "token": position["token"],
        "status": position.get("status", "open"),
        "amount": str(position["amount"]),
        "purchase_price": str(position["purchase_price"]),
        "realized_pnl": None
        if position.get("realized_pnl") is None
        else str(position["realized_pnl"]),
        "exit_reason": position.get("exit_reason"),
    }


def _trade_message(
    agent: Agent, position: dict[str, Any], result: OrderResult, side: str
) -> dict[str, Any]:
    return {
        "type": "trade",
        "agent_id": agent.id,
        "position_id": position["id"],
        "intent_id": result.intent_id,
        "token": position["token"],
        "side": side,
        "amount": str(result.base_amount),
        "price": str(result.price),
        "quote_amount": str(result.quote_amount),
        "ts": result.ts,
    }
