"""AgentHost: hosts the Agent logical actors of one slot (a Ray actor).

Contract (in addition to :class:`~valux.hosting.host.Host`):
- ``on_signal`` is called once per host per signal; every targeted agent of the
  host handles it concurrently in its own mailbox (:mod:`valux.trading.entries`).
  Calls to wallet hosts and evaluators are micro-batched (one Ray call per remote
  actor per loop turn, :mod:`valux.trading.links`).
- A buy is acknowledged only after its fill is journaled *and* the position is
  armed at its token's evaluator.
- ``on_exits`` closes positions exactly once (:mod:`valux.trading.exits`); take
  profit, stale trade and DCA run the scalar rules (:mod:`valux.trading.position_rules`).
- After a restart, buys and exits left in flight are resolved with the wallet by
  intent id before the host serves (:mod:`valux.trading.reconciliation`).
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any, TypeVar

from valux.actors.wallet_host import WalletHost
from valux.config.settings import Settings
from valux.custody.wallet import Wallet
from valux.errors import Conflict, InvalidRequest, NotFound
from valux.hosting.host import Host, rebase_forked
from valux.hosting.naming import shard_of
from valux.hosting.peers import Peers
from valux.observability.metrics import OPEN_POSITIONS, UNPROTECTED_LOCKED
from valux.persistence.journal import Collect, Commit
from valux.persistence.store import Query, Store
from valux.risk.states import TradingState
from valux.rules.config import load_agent_config, merge_config_patch
from valux.rules.exit_rules import without_entries
from valux.schema.messages import ExitRequest, Signal
from valux.trading.agent import Agent
from valux.trading.controls import Controls
from valux.trading.entries import Entries
from valux.trading.exits import Exits
from valux.trading.links import EvaluatorLink, WalletLink
from valux.trading.position_rules import PositionRules
from valux.trading.reconciliation import Reconciler, in_flight_ids

_ARM_ATTEMPTS = 3
WALLET_METHODS = frozenset(
    {
        "create_wallet",
        "deposit",
        "describe",
        "balances",
        "audit",
        "unlock",
        "lock",
        "custody_status",
        "set_policy",
        "key_record",
        "record_export",
        "delete_wallet",
        "link_agent",
        "chain_balances",
    }
)
T = TypeVar("T")


async def _construct(cls: type[T], *args: Any, **kwargs: Any) -> T:
    """A host class whose ``__init__`` is async, built inside this process."""
    obj = cls.__new__(cls)
    await obj.__init__(*args, **kwargs)  # type: ignore[misc]
    return obj


GLOBAL_STATE = Query(
    "global_state",
    "SELECT state, reason, extract(epoch FROM updated_at) AS ts FROM risk_states"
    " WHERE scope = 'global'",
)
AGENT_IDS = Query("agent_ids", "SELECT id FROM agents WHERE host_slot = $1 AND status <> 'deleted'")


class AgentHost(Host[Agent]):
    """Many agents in one process; see the module docstring for the contract."""

    kind = "agent"
    entity_type = Agent

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self,
        slot: int,
        settings: Settings,
        database_url: str | None,
        redis_url: str | None,
        *,
        store: Store | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.rng = random.Random()
        self.entries = Entries(self)
        self._wallets_started = False  # the wallet host starts inside this one's recovery
        self.exits = Exits(self)
        self.rules = PositionRules(self)
        self.reconciler = Reconciler(self)
        self.controls = Controls(self)
        await super().__init__(slot, settings, database_url, redis_url, store=store, peers=peers)

    def connect_peers(self) -> None:
        self.wallets = WalletLink(self.peers, self.slot)
        self.evaluators = EvaluatorLink(self.peers)

    async def before_recovery(self) -> None:
        """Start this host's wallets in this process, on this host's journal, before the
        agents recover: their reconciliation asks the wallets about intents in flight."""
        self.wallet_host = await _construct(
            WalletHost,
            self.slot,
            self.settings,
            None,
            None,
            store=self.store,
            peers=self.peers,
            inner=True,
        )
        self.peers.host_locally("wallet", self.slot, self.wallet_host)
        self._wallets_started = True

    async def _stream_forked(self, stream_id: str, collect: Collect) -> Commit | None:
        """The journal is shared: a wallet stream's fork is the wallet host's to rebase (or,
        found in the spool before the wallets started, rebased for their recovery)."""
        if not stream_id.startswith(f"{Wallet.stream_prefix}:"):
            return await super()._stream_forked(stream_id, collect)
        if self._wallets_started:
            return await self.wallet_host._stream_forked(stream_id, collect)
        recovered = (await self.store.load_streams([stream_id]))[stream_id]
        _, commit = rebase_forked(Wallet, stream_id, recovered, collect(), self.log)
        return commit

    def after_reload(self, entity: Agent) -> None:
        """Positions that PostgreSQL holds and the agent's memory did not (a buy whose
        ``position_opened`` was refused in doubt and committed) were never armed: the
        reconciler's next round arms every open position again (arming is idempotent)."""
        for position_id in entity.positions:
            self.reconciler.arm_failed(entity.id, position_id)

    async def wallet_call(self, method: str, *args: Any) -> Any:
        """Remote entry point to this host's wallets (the API's create, describe and
        deposit; chaos checks), one of :data:`WALLET_METHODS`."""
        if method not in WALLET_METHODS:
            raise InvalidRequest(f"unknown wallet method {method!r}")
        return await getattr(self.wallet_host, method)(*args)

    async def entity_ids(self) -> list[str]:
        rows = await self.store.fetch(AGENT_IDS, self.slot)
        return [r["id"] for r in rows]

    async def after_recovery(self) -> None:
        OPEN_POSITIONS.set(sum(len(a.positions) for a in self.entities.values()))
        for row in await self.store.fetch(GLOBAL_STATE):  # the root re-sends it each round too
            self.controls.global_state = {"state": row["state"], "reason": row["reason"],
                                          "ts": float(row["ts"])}  # fmt: skip
        self.controls.update_gauges()
        await self.reconciler.after_recovery()

    async def stop_background(self) -> None:
        await self.reconciler.stop()
        await self.wallet_host.stop_background()
        await super().stop_background()

    async def shutdown(self) -> dict[str, Any]:
        """Final snapshots of the wallets, then of the agents (the store closes last)."""
        wallets = await self.wallet_host.snapshot_all()
        await self.wallet_host.stop_background()
        report = await super().shutdown()
        return {**report, "wallet_snapshots": wallets}

    async def metrics(self) -> list[Any]:
        self.controls.refresh_gauges()
        return await super().metrics()

    # -- remote entry points -----

    async def on_signal(self, signal: Signal) -> list[dict[str, Any]]:
        """Run ``signal`` through every targeted agent of this host, concurrently."""
        return await self.entries.on_signal(signal)

    async def on_exits(self, exits: list[ExitRequest]) -> list[dict[str, Any]]:
        """Close each position once; answers per request (closed / ignored / failed)."""
        return await self.exits.on_exits(exits)

    async def close_position(self, agent_id: str, position_id: str) -> dict[str, Any]:
        return await self.exits.close_position(agent_id, position_id)

    # -- positions at the evaluators -----

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
        rules = position["exit_rules"]
        if not self.controls.effective(agent).state.allows_entries:
            rules = without_entries(rules)  # REDUCING / HALTED: no DCA buy is armed
        spec = {
            "position_id": position["id"],
            "agent_id": agent.id,
            "host": self.slot,
            "token": position["token"],
            "purchase_price": float(position["purchase_price"]),
            "exit_rules": rules,
            "peak": None if stop is None else stop[1],
            "stop_pct": None if stop is None else stop[0],
            "release": release,
        }
        for _attempt in range(_ARM_ATTEMPTS):
            try:
                armed: bool = await self.evaluators.arm(shard, spec)
                return armed
            except Exception as exc:  # evaluator restarting: it re-arms from PostgreSQL anyway
                self.log.warning("arm_failed", position_id=position["id"], error=str(exc))
        self.reconciler.arm_failed(agent.id, position["id"])  # and the next round retries
        return False

    async def disarm_position(self, token: str, position_id: str, closed: bool) -> None:
        """``closed`` → forget it; otherwise release it so the next tick can trigger again."""
        shard = shard_of(token, self.settings.hosting.evaluators)
        try:
            await self.evaluators.settle(shard, position_id, closed)
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
        capital: Decimal = Decimal(0),
    ) -> dict[str, Any]:
        """Create an agent (idempotently). A deleted id may be used again: its stream goes
        on with a new ``agent_created`` that starts the agent afresh, so nothing of the
        deleted incarnation is replayed into the new one."""
        config = load_agent_config(config_doc)  # raises InvalidRequest naming every field
        async with self.mailbox(agent_id):
            existing = self.entities.get(agent_id)
            if existing is not None and existing.status != "deleted":
                return self.view(existing)
            agent = existing or await self._load_stream(agent_id)
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
                            "capital": capital,
                            "ts": time.time(),
                        },
                    )
                ],
            )
            self.entities[agent_id] = agent
            self.controls.update_gauges()
            return self.view(agent)

    async def _load_stream(self, agent_id: str) -> Agent:
        """The agent of ``agent_id``'s stream as journaled (a new, empty one if none): a
        deleted agent another host incarnation left behind continues its stream here."""
        stream = f"{Agent.stream_prefix}:{agent_id}"
        recovered = (await self.store.load_streams([stream]))[stream]
        return Agent.recover(agent_id, recovered)

    def view(self, agent: Agent) -> dict[str, Any]:
        """The agent's JSON, with the trading state that applies to it now."""
        effective = self.controls.effective(agent)
        return {
            **agent.view(),
            "effective_state": effective.state.value,
            "effective_state_reason": effective.reason,
        }

    async def describe(self, agent_ids: list[str] | None = None) -> list[dict[str, Any]]:
        ids = list(self.entities) if agent_ids is None else agent_ids
        return [
            self.view(a)
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
            return self.view(agent)

    async def set_status(self, agent_id: str, status: str) -> dict[str, Any]:
        """pause | resume | delete: ``pause`` is REDUCING, ``resume`` ACTIVE (and lifts a
        quarantine). Deleting requires no open positions."""
        if status == "pause":
            return await self.set_trading_state(agent_id, "REDUCING", "paused")
        if status == "resume":
            return await self.set_trading_state(agent_id, "ACTIVE", "resumed")
        async with self.mailbox(agent_id):
            agent = self._get(agent_id)
            if agent.positions:
                raise Conflict(
                    f"agent {agent_id} has {len(agent.positions)} open position(s); "
                    "close them before deleting the agent"
                )
            await self.persist(agent, [("status_changed", {"status": "deleted"})])
            self.controls.update_gauges()
            return agent.view()

    async def set_trading_state(
        self, agent_id: str, state: str, reason: str | None, source: str = "user"
    ) -> dict[str, Any]:
        """Set an agent's own trading state (ACTIVE also lifts a quarantine)."""
        target = TradingState.parse(state)
        async with self.mailbox(agent_id):
            agent = self._get(agent_id)
            if target is TradingState.ACTIVE and agent.status == "quarantined":
                await self.persist(agent, [("status_changed", {"status": "active"})])
            if agent.state is not target or agent.trading_state["reason"] != reason:
                await self.controls.set_state(agent, target, reason, source)
            return self.view(agent)

    async def set_global_state(self, state: str, reason: str | None, ts: float) -> int:
        """The root supervisor's global state (journaled by it); returns how many agents'
        effective state changed."""
        return await self.controls.set_global(TradingState.parse(state), reason, ts)

    # -- in-flight work and queries -----

    async def reconcile_all(self) -> int:
        """Retry resolution of every in-flight intent (the reconcile loop calls it)."""
        return await self.reconciler.reconcile_all()

    async def ping(self) -> dict[str, Any]:
        info = await super().ping()
        info["global_state_ts"] = self.controls.global_state["ts"]  # the root re-sends if stale
        info["reconciler_running"] = self.reconciler.report()["running"]
        return info

    async def health(self) -> dict[str, Any]:
        """What readiness needs from this host: reconciliation findings, positions left
        unprotected by a HALTED state, agents whose journal cannot be read; and, for
        operators and chaos runs, every intent still awaiting its outcome, by agent."""
        in_flight = {a.id: ids for a in self.entities.values() if (ids := in_flight_ids(a))}
        return {
            "slot": self.slot,
            "in_flight": in_flight,
            "reconciliation": self.reconciler.report(),
            "halted_positions": self.controls.halted_positions(),
            "locked_positions": self._locked_positions(),
            "unreadable": dict(self.unreadable),
            "global_state": self.controls.global_state,
        }

    def _locked_positions(self) -> list[dict[str, Any]]:
        """Open positions of live wallets whose key is locked (a forced lock, or a restart
        of this host: keys are never stored in clear): their exits cannot be signed until
        the owner unlocks. Counted in a gauge and logged as an alert."""
        wallets = self.wallet_host
        found = []
        for agent in self.entities.values():
            status = wallets.key_state(agent.wallet_id) if agent.positions else None
            if status is None or status["state"] != "locked":
                continue
            found += [
                {"position_id": pid, "agent_id": agent.id, "wallet_id": agent.wallet_id,
                 "reason": status["reason"] or "key locked"}
                for pid in agent.positions
            ]  # fmt: skip
        UNPROTECTED_LOCKED.set(len(found))
        if found:
            self.log.error("alert_unprotected_locked_key", positions=len(found),
                           wallets=sorted({p["wallet_id"] for p in found}))  # fmt: skip
        return found

    async def open_positions(self) -> list[dict[str, Any]]:
        """Every open position with its agent id (for state comparisons in tests and chaos)."""
        return [
            {"agent_id": a.id, **p} for a in self.entities.values() for p in a.positions.values()
        ]

    async def quarantine(self, entity: Agent, error: str) -> None:
        """An agent that keeps failing stops taking entries (exits still run) until resumed."""
        await super().quarantine(entity, error)
        if entity.status == "active":
            await self.persist(
                entity, [("status_changed", {"status": "quarantined", "error": error})]
            )

    async def inject_agent_fault(self, agent_id: str, count: int = 1) -> int:
        """Remote entry point of :meth:`Host.inject_fault` (tests, chaos)."""
        return self.inject_fault(agent_id, count)

    def validate_slot(self, agent_id: str) -> None:
        if agent_id not in self.entities:
            raise InvalidRequest(f"agent {agent_id} is not hosted on slot {self.slot}")
