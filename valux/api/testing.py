"""An in-memory :class:`~valux.api.backend.Backend` for testing the HTTP layer.

:class:`FakeBackend` keeps agents, wallets, signals, positions and trades in
dicts and follows the protocol's contract (JSON-safe results, money as decimal
strings, ``valux.errors`` on failure) closely enough to exercise every route.
It is *not* the engine: there are no rules, no journal and no actors. The
integrator's tests run the same routes against the real backend.

:func:`api_client` serves an app over a backend on a local port for a test.

Tests inject failures with :attr:`FakeBackend.fail`, e.g.
``fake.fail["get_agent"] = Unavailable("agent host down")``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.metrics_core import GaugeMetricFamily

from valux.api.app import create_app
from valux.api.backend import Backend, SignalIn, Tick
from valux.errors import Conflict, NotFound

DEFAULT_SIZE = Decimal("0.1")


def _merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class FakeBackend:
    """In-memory backend. Buying: every active, targeted agent buys ``size``
    (default 0.1) of the token if its SOL balance covers it."""

    def __init__(self, *, manual_feed_enabled: bool = True) -> None:
        self.manual_feed_enabled = manual_feed_enabled
        self.agents: dict[str, dict[str, Any]] = {}
        self.balances: dict[str, dict[str, Decimal]] = {}
        self.signals: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.ticks: list[Tick] = []
        self.ready: tuple[bool, list[str]] = (True, [])
        self.metric_families: list[Any] = [
            GaugeMetricFamily("valux_fake_actor_up", "Fake actor liveness", value=1)
        ]
        self.fail: dict[str, BaseException] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)

    def _enter(self, method: str, **kwargs: Any) -> None:
        self.calls.append((method, kwargs))
        exc = self.fail.get(method)
        if exc is not None:
            raise exc

    def _agent(self, agent_id: str) -> dict[str, Any]:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise NotFound(f"agent {agent_id} not found") from None

    def _wallet(self, agent_id: str) -> dict[str, Any]:
        self._agent(agent_id)
        return {
            "agent_id": agent_id,
            "venue": "paper",
            "balances": {k: format(v, "f") for k, v in self.balances[agent_id].items()},
        }

    # agents --------------------------------------------------------------------
    async def create_agent(
        self,
        *,
        name: str,
        config: Mapping[str, Any] | None,
        balance: Decimal,
        agent_id: str | None,
    ) -> dict[str, Any]:
        self._enter("create_agent", name=name, config=config, balance=balance, agent_id=agent_id)
        agent_id = agent_id or f"agent-{next(self._ids)}"
        if agent_id in self.agents:
            raise Conflict(f"agent {agent_id} already exists")
        self.agents[agent_id] = {
            "id": agent_id,
            "name": name,
            "config": _jsonable(config or {}),
            "paused": False,
        }
        self.balances[agent_id] = {"SOL": balance}
        return dict(self.agents[agent_id])

    async def list_agents(self) -> list[dict[str, Any]]:
        self._enter("list_agents")
        return [dict(a) for a in self.agents.values()]

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        self._enter("get_agent", agent_id=agent_id)
        return dict(self._agent(agent_id))

    async def update_agent(
        self, agent_id: str, *, name: str | None, config_patch: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        self._enter("update_agent", agent_id=agent_id, name=name, config_patch=config_patch)
        agent = self._agent(agent_id)
        if name is not None:
            agent["name"] = name
        if config_patch is not None:
            agent["config"] = _merge(agent["config"], _jsonable(config_patch))
        return dict(agent)

    async def delete_agent(self, agent_id: str) -> dict[str, Any]:
        self._enter("delete_agent", agent_id=agent_id)
        agent = self._agent(agent_id)
        mine = [p for p in self.positions.values() if p["agent_id"] == agent_id]
        if any(p["status"] == "open" for p in mine):
            raise Conflict(f"agent {agent_id} has open positions; close them first")
        del self.agents[agent_id]
        return {**agent, "deleted": True}

    async def pause_agent(self, agent_id: str) -> dict[str, Any]:
        self._enter("pause_agent", agent_id=agent_id)
        agent = self._agent(agent_id)
        agent["paused"] = True
        return dict(agent)

    async def resume_agent(self, agent_id: str) -> dict[str, Any]:
        self._enter("resume_agent", agent_id=agent_id)
        agent = self._agent(agent_id)
        agent["paused"] = False
        return dict(agent)

    # wallets -------------------------------------------------------------------
    async def get_wallet(self, agent_id: str) -> dict[str, Any]:
        self._enter("get_wallet", agent_id=agent_id)
        return self._wallet(agent_id)

    async def deposit(self, agent_id: str, *, asset: str, amount: Decimal) -> dict[str, Any]:
        self._enter("deposit", agent_id=agent_id, asset=asset, amount=amount)
        self._agent(agent_id)
        balances = self.balances[agent_id]
        balances[asset] = balances.get(asset, Decimal(0)) + amount
        return self._wallet(agent_id)

    # signals -------------------------------------------------------------------
    async def post_signal(self, signal: SignalIn) -> dict[str, Any]:
        self._enter("post_signal", signal=signal)
        if signal.id in self.signals:
            return {**self.signals[signal.id], "duplicate": True}
        size = signal.size or DEFAULT_SIZE
        targets = signal.agents if signal.agents is not None else list(self.agents)
        outcomes: list[dict[str, Any]] = []
        for agent_id in targets:
            agent = self.agents.get(agent_id)
            outcome: dict[str, Any] = {"agent_id": agent_id, "reason": None, "position_id": None}
            if agent is None:
                outcome.update(status="failed", reason="AGENT_NOT_FOUND")
            elif agent["paused"]:
                outcome.update(status="ineligible", reason="PAUSED")
            elif self.balances[agent_id].get("SOL", Decimal(0)) < size:
                outcome.update(status="ineligible", reason="INSUFFICIENT_BALANCE")
            else:
                self.balances[agent_id]["SOL"] -= size
                position_id = f"pos-{next(self._ids)}"
                self.positions[position_id] = {
                    "id": position_id,
                    "agent_id": agent_id,
                    "token": signal.token,
                    "status": "open",
                    "invested": format(size, "f"),
                    "signal_id": signal.id,
                }
                self.trades.append(
                    {
                        "id": f"trade-{next(self._ids)}",
                        "agent_id": agent_id,
                        "position_id": position_id,
                        "side": "buy",
                        "token": signal.token,
                        "amount": format(size, "f"),
                    }
                )
                outcome.update(status="bought", position_id=position_id)
            outcomes.append(outcome)
        result = {"signal_id": signal.id, "duplicate": False, "outcomes": outcomes}
        self.signals[signal.id] = result
        return result

    async def get_signal(self, signal_id: str) -> dict[str, Any]:
        self._enter("get_signal", signal_id=signal_id)
        try:
            return self.signals[signal_id]
        except KeyError:
            raise NotFound(f"signal {signal_id} not found") from None

    # positions and trades ------------------------------------------------------
    async def list_positions(
        self, *, agent_id: str | None, status: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        self._enter("list_positions", agent_id=agent_id, status=status, limit=limit, offset=offset)
        rows = [
            p
            for p in reversed(self.positions.values())
            if (agent_id is None or p["agent_id"] == agent_id)
            and (status is None or p["status"] == status)
        ]
        return [dict(p) for p in rows[offset : offset + limit]]

    async def get_position(self, position_id: str) -> dict[str, Any]:
        self._enter("get_position", position_id=position_id)
        try:
            return dict(self.positions[position_id])
        except KeyError:
            raise NotFound(f"position {position_id} not found") from None

    async def close_position(self, position_id: str) -> dict[str, Any]:
        self._enter("close_position", position_id=position_id)
        position = self.positions.get(position_id)
        if position is None:
            raise NotFound(f"position {position_id} not found")
        if position["status"] != "open":
            raise Conflict(f"position {position_id} is already closed")
        position["status"] = "closed"
        return dict(position)

    async def list_trades(
        self, *, agent_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        self._enter("list_trades", agent_id=agent_id, limit=limit, offset=offset)
        rows = [t for t in reversed(self.trades) if agent_id is None or t["agent_id"] == agent_id]
        return [dict(t) for t in rows[offset : offset + limit]]

    # prices and feeds ----------------------------------------------------------
    async def prices(self) -> dict[str, Any]:
        self._enter("prices")
        latest: dict[str, Any] = {}
        for tick in self.ticks:
            latest[tick.token] = {"price": tick.price, "ts": tick.ts, "source": "manual"}
        return {"prices": latest}

    async def push_manual_ticks(self, ticks: list[Tick]) -> int:
        self._enter("push_manual_ticks", ticks=ticks)
        self.ticks.extend(ticks)
        return len(ticks)

    # health and observability --------------------------------------------------
    async def health_ready(self) -> tuple[bool, list[str]]:
        self._enter("health_ready")
        return self.ready

    async def health_status(self) -> dict[str, Any]:
        self._enter("health_status")
        return {"state": "RUNNING" if self.ready[0] else "DEGRADED", "agents": len(self.agents)}

    async def supervisors(self) -> dict[str, Any]:
        self._enter("supervisors")
        return {"root": {"state": "RUNNING", "children": [], "restarts": 0}}

    async def actor_metrics(self) -> list[Any]:
        self._enter("actor_metrics")
        return list(self.metric_families)


@asynccontextmanager
async def api_client(
    backend: Backend, *, redis_url: str | None = None, **options: Any
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A test client of ``create_app(backend, redis_url=..., **options)`` on a free port."""
    app = create_app(backend, redis_url=redis_url, **options)
    async with TestClient(TestServer(app)) as client:
        yield client


if TYPE_CHECKING:
    _static_check: Backend = FakeBackend()  # mypy proves the fake satisfies the protocol
