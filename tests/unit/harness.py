"""A small valux system in one process: an agent host (running its agents' wallet host),
the paper exchange and a fake evaluator, wired with
:class:`~valux.hosting.peers.LocalPeers` over a :class:`MemoryStore`.

The hosts and the exchange are the production classes; only PostgreSQL (the memory
store; the exchange keeps its accounts in memory) and the evaluator (which records arms
and answers prices) are stand-ins. The wallet host is reached through the peers as in
production (``peers.down`` can make it unreachable from the agents).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.unit.fakes import FakeEvaluator, MemoryStore, construct
from valux.actors.agent_host import AgentHost
from valux.actors.exchange import PaperExchangeHost
from valux.actors.wallet_host import WalletHost
from valux.config.settings import Settings, load_settings
from valux.hosting.peers import LocalPeers
from valux.schema.messages import ExitRequest, Signal

TOKEN = "TKN"


def unit_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "hosting.evaluators": 1,
        "logging.level": "error",
        "venue.paper.fee_bps": 0,
        "venue.paper.slippage_bps_per_unit": 0.0,
        "venue.paper.network_fee": "0",
    }
    base.update(overrides)
    return load_settings(env={}, overrides=base)


STOP_ONLY: dict[str, Any] = {
    "stopLoss": {"enabled": True, "defaultPercentage": -10, "mode": "fixed"},
    "staleTrade": {"enabled": False},
    "positionCalculator": {"randomization": {"enabled": False}},
}


@dataclass
class System:
    settings: Settings
    store: MemoryStore
    peers: LocalPeers
    evaluator: FakeEvaluator
    agents: AgentHost
    exchange: PaperExchangeHost

    @property
    def wallets(self) -> WalletHost:
        """The wallet host running inside the agent host."""
        return self.agents.wallet_host

    async def restart_agents(self) -> AgentHost:
        """A new incarnation of the agent host and its wallets (same store), as after a
        crash of its process."""
        await self.agents.stop_background()
        self.agents = await construct(
            AgentHost, 0, self.settings, None, None, store=self.store, peers=self.peers
        )
        self.peers.register("agent", 0, self.agents)
        return self.agents

    async def add_agent(
        self, agent_id: str, balance: str = "10", config: dict[str, Any] | None = None
    ) -> None:
        wallet_id = f"w-{agent_id}"
        await self.wallets.create_wallet(wallet_id, agent_id, Decimal(balance), "SOL")
        number = len(self.agents.entities)
        await self.agents.create_agent(
            agent_id, agent_id, config or STOP_ONLY, wallet_id, 0, number
        )

    def price(self, token: str, price: float) -> None:
        self.evaluator.prices[token] = (price, time.time())

    async def signal(
        self, signal_id: str, token: str = TOKEN, size: str = "1", **extra: Any
    ) -> list[dict[str, Any]]:
        message = Signal(
            id=signal_id,
            token=token,
            strength=5,
            type="test",
            size=Decimal(size),
            received_at=time.time(),
            **extra,
        )
        return await self.agents.on_signal(message)

    async def exit(self, agent_id: str, position_id: str, price: float) -> dict[str, Any]:
        request = ExitRequest(agent_id, position_id, TOKEN, "stop_loss", price, time.time())
        return (await self.agents.on_exits([request]))[0]


async def small_system(**overrides: Any) -> System:
    settings = unit_settings(**overrides)
    store = MemoryStore()
    peers = LocalPeers()
    evaluator = FakeEvaluator()
    peers.register("evaluator", 0, evaluator)
    exchange = await construct(PaperExchangeHost, "paper", settings, None, peers=peers)
    peers.register("exchange", "paper", exchange)
    agents = await construct(AgentHost, 0, settings, None, None, store=store, peers=peers)
    peers.register("agent", 0, agents)
    system = System(settings, store, peers, evaluator, agents, exchange)
    system.price(TOKEN, 1.0)
    return system


#: Reconciliation settings that make its rounds, resolution and audits immediate.
FAST_RECONCILE: dict[str, Any] = {"reconcile.interval_s": 0.02, "reconcile.pending_after_s": 0.0,
                                  "reconcile.audit_every_s": 0.02}  # fmt: skip


async def until(predicate: Any, within: float = 3.0) -> None:
    """Poll ``predicate()`` until it holds; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
