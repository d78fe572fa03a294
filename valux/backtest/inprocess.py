"""One trading system in one process: the production hosts, called directly.

A backtest runs exactly the classes a live system runs as Ray actors — the agent host
(:class:`~valux.actors.agent_host.AgentHost`, with the wallet host it runs), the paper
exchange and the stop-loss evaluator — constructed in this process and wired with
:class:`~valux.hosting.peers.LocalPeers`, so a call between them is a method call, not
a Ray hop. Live and backtest share every line of trading code; only the wiring and two
settings differ:

- the hosts journal through a :class:`~valux.persistence.buffered.BufferedStore` into a
  scratch database (a commit is answered at once and written with a few thousand
  others: the journal, snapshots and read models are what a live run writes, without a
  round trip per decision);
- ``venue.paper.simulated_clock`` is on (fills carry market-data time) and the paper
  exchange keeps its books in memory.

Ticks go straight to the evaluator in large batches, each evaluated up to the first
tick that triggers an exit (:meth:`InProcessSystem.ticks`); the exits run to the end
(sale journaled, position closed, evaluator settled) before the next tick is looked at,
so whatever a caller does about them — a strategy re-entering at that tick's price —
is in the book for the very next tick, as it would be on a live venue that is fast
enough.

Contract: one system per process and per scratch database; :meth:`InProcessSystem.close`
writes everything buffered and stops the hosts' background work. Nothing here starts
Ray; a parameter sweep runs one such system per Ray task.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from valux.actors.agent_host import AgentHost
from valux.actors.evaluator import StopLossEvaluator
from valux.actors.exchange import PaperExchangeHost
from valux.actors.wallet_host import WalletHost
from valux.config.settings import Settings
from valux.hosting.peers import LocalPeers
from valux.persistence.buffered import BufferedStore
from valux.schema.messages import Signal

__all__ = ["Exit", "InProcessSystem", "TickReport", "in_process_settings"]

T = TypeVar("T")

Exit = tuple[str, str, str]
"""``(agent_id, position_id, reason)`` of an exit the evaluator triggered."""

OnExits = Callable[[list[Exit], tuple[str, float, float]], Awaitable[None]]
"""Called after the exits triggered at one tick have run, with that tick."""


async def _construct(cls: type[T], *args: Any, **kwargs: Any) -> T:
    """An actor class whose ``__init__`` is async (Ray awaits it; so does this)."""
    obj = cls.__new__(cls)
    await obj.__init__(*args, **kwargs)  # type: ignore[misc]
    return obj


def in_process_settings(base: Settings, database_url: str) -> Settings:
    """``base`` as an in-process system needs it: its database, one evaluator shard, no
    Redis, market-data time for fills, and reconciliation rounds far apart (nothing is
    ever in flight between two calls of one process)."""
    data = base.model_dump()
    data["database"]["url"] = database_url
    data["redis"]["url"] = None
    data["hosting"]["evaluators"] = 1
    data["venue"]["paper"]["simulated_clock"] = True
    data["venue"]["paper"]["database_url"] = None
    data["reconcile"]["interval_s"] = max(data["reconcile"]["interval_s"], 3600.0)
    data["reconcile"]["audit_every_s"] = max(data["reconcile"]["audit_every_s"], 3600.0)
    data["journal"]["spool"] = False
    return Settings.model_validate(data)


@dataclass
class TickReport:
    """What :meth:`InProcessSystem.ticks` did with one batch."""

    ticks: int = 0
    evaluations: int = 0
    exits: list[Exit] = field(default_factory=list)
    stops: int = 0
    """Times the batch was cut at a triggering tick."""


@dataclass
class InProcessSystem:
    """The hosts of one trading system in this process (see the module docstring)."""

    settings: Settings
    store: BufferedStore
    peers: LocalPeers
    evaluator: StopLossEvaluator
    exchange: PaperExchangeHost
    agents: AgentHost
    created: int = 0

    @property
    def wallets(self) -> WalletHost:
        """The wallet host running inside the agent host."""
        return self.agents.wallet_host

    @classmethod
    async def start(cls, settings: Settings, database_url: str) -> InProcessSystem:
        """Build the hosts on ``database_url`` (migrated, normally empty) in start order:
        evaluator, exchange, agents (with their wallets)."""
        settings = in_process_settings(settings, database_url)
        peers = LocalPeers(copy=False)
        store = await BufferedStore.open(database_url, sole_writer=True)
        evaluator = await _construct(StopLossEvaluator, 0, settings, database_url, peers=peers)
        peers.register("evaluator", 0, evaluator)
        exchange = await _construct(PaperExchangeHost, "paper", settings, None, peers=peers)
        peers.register("exchange", "paper", exchange)
        agents = await _construct(AgentHost, 0, settings, None, None, store=store, peers=peers)
        peers.register("agent", 0, agents)
        return cls(settings, store, peers, evaluator, exchange, agents)

    async def add_agent(
        self, agent_id: str, config: Mapping[str, Any] | None, balance: Decimal, name: str = ""
    ) -> dict[str, Any]:
        """Create an agent with a paper wallet holding ``balance`` of the quote asset (the
        calls the API's create-agent makes, on this process's hosts)."""
        wallet_id = f"w-{agent_id}"
        await self.wallets.create_wallet(
            wallet_id, agent_id, balance, self.settings.venue.quote_asset
        )
        view = await self.agents.create_agent(
            agent_id, name or agent_id, dict(config or {}), wallet_id, 0, self.created, balance
        )
        self.created += 1
        return view

    async def signal(self, signal: Signal) -> list[dict[str, Any]]:
        """Every targeted agent's outcome of ``signal`` (buys filled and armed on return)."""
        return await self.agents.on_signal(signal)

    async def ticks(
        self, ticks: Sequence[tuple[str, float, float]], on_exits: OnExits | None = None
    ) -> TickReport:
        """Evaluate ``ticks`` in order. At every tick that triggers exits the batch is cut:
        the exits run to the end, then ``on_exits`` (if given) hears of them with that
        tick, then the rest of the batch is evaluated."""
        report = TickReport()
        evaluator = self.evaluator
        start = 0
        total = len(ticks)
        while start < total:
            chunk = ticks[start:] if start else ticks
            answer = await evaluator.on_ticks(list(chunk), until_trigger=True)
            consumed = int(answer["consumed"])
            report.evaluations += int(answer["evaluated"])
            start += consumed
            exits: list[Exit] = answer.get("exits", [])
            if exits:
                report.stops += 1
                report.exits.extend(exits)
                await evaluator.drain()
                if on_exits is not None:
                    await on_exits(exits, tuple(chunk[consumed - 1]))  # type: ignore[arg-type]
        report.ticks = total
        return report

    async def close(self) -> None:
        """Write everything buffered (trailing stops too) and stop background work."""
        await self.evaluator.drain()
        await self.agents.stop_background()
        await self.evaluator.shutdown()
        await self.store.close()


async def timed(coro: Awaitable[T]) -> tuple[T, float]:
    """``coro``'s result and how long it took (wall seconds)."""
    started = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - started
