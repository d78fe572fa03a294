"""RayBackend: the API's view of the engine, over named actor handles.

Commands go to the actors (``await handle.method.remote(...)``; never
``ray.get``). History queries (positions, trades, signal outcomes) read the
read-model tables in PostgreSQL, written in the same transactions as the
journal, so they never load the actors.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar, cast

import asyncpg
from prometheus_client.metrics_core import Metric

from valux.api.models import SignalIn
from valux.config.settings import Settings
from valux.errors import Conflict, NotFound, Unavailable
from valux.feeds.ticks import Tick
from valux.persistence.journal import DATABASE_DOWN
from valux.rules.config import load_agent_config
from valux.schema.messages import Signal, TokenMetricsIn
from valux.supervisors.handles import (
    actor_handle,
    agent_host_handle,
    evaluator_handle,
    wallet_host_handle,
)
from valux.supervisors.naming import ROOT, feed_name


def jsonable(value: Any) -> Any:
    """Decimals as strings, datetimes as ISO-8601, tuples as lists."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def json_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`jsonable` for a mapping, typed as the dict it returns."""
    return cast(dict[str, Any], jsonable(value))


_POSITION_COLUMNS = (
    "p.id, p.agent_id, p.wallet_id, p.token, p.status, p.amount, p.remaining, p.purchase_price,"
    " p.invested, p.proceeds, p.realized_pnl, p.exit_reason, p.signal_id, p.opened_at,"
    " p.closed_at, s.peak, s.stop_pct"
)


def _position(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    purchase = out["purchase_price"]
    stop_pct = out.get("stop_pct")
    out["stop_price"] = (
        None
        if stop_pct is None or out["status"] != "open"
        else str(Decimal(str(float(purchase) * (1 + stop_pct / 100))))
    )
    return json_dict(out)


P = ParamSpec("P")
R = TypeVar("R")


def db_guard(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """PostgreSQL unreachable → 503 ``Unavailable`` saying so, instead of a 500."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except DATABASE_DOWN as exc:
            raise Unavailable(f"database unreachable ({type(exc).__name__}: {exc})") from None

    return guarded


class RayBackend:
    """Implements :class:`valux.api.backend.Backend` over the running actor system."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.ns = settings.ray.namespace
        self.manual_feed_enabled = settings.feeds.manual.enabled
        self.started_at = time.time()
        self._locations: dict[str, asyncpg.Record] = {}

    # -- helpers -----

    async def _root(self) -> Any:
        try:
            return await actor_handle(ROOT, self.ns)
        except ValueError:
            raise Unavailable("the valux actor system is not running") from None

    @db_guard
    async def _location(self, agent_id: str) -> asyncpg.Record:
        loc = self._locations.get(agent_id)
        if loc is None:
            loc = await self.pool.fetchrow(
                "SELECT host_slot, wallet_slot, wallet_id, status FROM agents WHERE id = $1",
                agent_id,
            )
            if loc is None or loc["status"] == "deleted":
                raise NotFound(f"agent {agent_id} not found")
            self._locations[agent_id] = loc
        return loc

    async def _agent_host(self, agent_id: str) -> Any:
        return await agent_host_handle((await self._location(agent_id))["host_slot"], self.ns)

    # -- agents -----

    @db_guard
    async def create_agent(
        self,
        *,
        name: str,
        config: Mapping[str, Any] | None,
        balance: Decimal,
        agent_id: str | None,
    ) -> dict[str, Any]:
        load_agent_config(config)  # fail fast with every field error, before any state
        agent_id = agent_id or uuid.uuid4().hex
        existing = await self.pool.fetchval("SELECT status FROM agents WHERE id = $1", agent_id)
        if existing is not None and existing != "deleted":
            raise Conflict(f"agent {agent_id} already exists")
        number: int = await self.pool.fetchval("SELECT nextval('agent_seq')")
        hosting = self.settings.hosting
        host_slot = number // hosting.agents_per_host
        wallet_slot = number // hosting.wallets_per_host
        wallet_id = f"w-{agent_id}"
        root = await self._root()
        await root.ensure.remote("wallets", wallet_slot)
        await root.ensure.remote("agents", host_slot)
        wallets = await wallet_host_handle(wallet_slot, self.ns)
        await wallets.create_wallet.remote(
            wallet_id, agent_id, balance, self.settings.venue.quote_asset
        )
        agents = await agent_host_handle(host_slot, self.ns)
        view = await agents.create_agent.remote(
            agent_id, name, _plain(config), wallet_id, wallet_slot, number
        )
        self._locations.pop(agent_id, None)
        return json_dict(view)

    @db_guard
    async def list_agents(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, name, status, host_slot, wallet_id, last_error, created_at, updated_at,"
            " (SELECT count(*) FROM positions p WHERE p.agent_id = a.id AND p.status = 'open')"
            " AS open_positions FROM agents a WHERE status <> 'deleted' ORDER BY seq"
        )
        return [jsonable(dict(r)) for r in rows]

    @db_guard
    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        host = await self._agent_host(agent_id)
        views = await host.describe.remote([agent_id])
        if not views:
            raise NotFound(f"agent {agent_id} not found")
        return json_dict(views[0])

    @db_guard
    async def update_agent(
        self, agent_id: str, *, name: str | None, config_patch: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        host = await self._agent_host(agent_id)
        view = await host.update_agent.remote(agent_id, name, _plain(config_patch))
        return json_dict(view)

    @db_guard
    async def _status(self, agent_id: str, action: str) -> dict[str, Any]:
        host = await self._agent_host(agent_id)
        view = await host.set_status.remote(agent_id, action)
        if action == "delete":
            self._locations.pop(agent_id, None)
        return json_dict(view)

    @db_guard
    async def delete_agent(self, agent_id: str) -> dict[str, Any]:
        return await self._status(agent_id, "delete")

    @db_guard
    async def pause_agent(self, agent_id: str) -> dict[str, Any]:
        return await self._status(agent_id, "pause")

    @db_guard
    async def resume_agent(self, agent_id: str) -> dict[str, Any]:
        return await self._status(agent_id, "resume")

    # -- wallets -----

    @db_guard
    async def get_wallet(self, agent_id: str) -> dict[str, Any]:
        loc = await self._location(agent_id)
        wallets = await wallet_host_handle(loc["wallet_slot"], self.ns)
        views = await wallets.describe.remote([loc["wallet_id"]])
        if not views or views[0] is None:
            raise NotFound(f"wallet of agent {agent_id} not found")
        return json_dict(views[0])

    @db_guard
    async def deposit(self, agent_id: str, *, asset: str, amount: Decimal) -> dict[str, Any]:
        loc = await self._location(agent_id)
        wallets = await wallet_host_handle(loc["wallet_slot"], self.ns)
        view = await wallets.deposit.remote(loc["wallet_id"], asset, amount)
        return json_dict(view)

    # -- signals -----

    @db_guard
    async def post_signal(self, signal: SignalIn) -> dict[str, Any]:
        body = signal.model_dump(mode="json")
        inserted = await self.pool.fetchval(
            "INSERT INTO signals (id, body) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO NOTHING"
            " RETURNING id",
            signal.id,
            json.dumps(body),
        )
        message = Signal(
            id=signal.id,
            token=signal.token,
            strength=signal.strength,
            type=signal.type,
            size=signal.size,
            metrics=None
            if signal.metrics is None
            else TokenMetricsIn(
                market_cap=_float(signal.metrics.market_cap),
                liquidity=_float(signal.metrics.liquidity),
                holder_count=signal.metrics.holder_count,
            ),
            agents=None if signal.agents is None else tuple(signal.agents),
            received_at=time.time(),
        )
        if signal.agents is not None:
            rows = await self.pool.fetch(
                "SELECT DISTINCT host_slot FROM agents WHERE id = ANY($1::text[])"
                " AND status <> 'deleted'",
                list(signal.agents),
            )
        else:
            rows = await self.pool.fetch(
                "SELECT DISTINCT host_slot FROM agents WHERE status <> 'deleted'"
            )
        slots = [r["host_slot"] for r in rows]
        hosts = [await agent_host_handle(slot, self.ns) for slot in slots]
        results = await asyncio.gather(*(h.on_signal.remote(message) for h in hosts))
        outcomes = [jsonable(o) for batch in results for o in batch]
        return {"signal_id": signal.id, "duplicate": inserted is None, "outcomes": outcomes}

    @db_guard
    async def get_signal(self, signal_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT body, received_at FROM signals WHERE id = $1", signal_id
        )
        if row is None:
            raise NotFound(f"signal {signal_id} not found")
        outcomes = await self.pool.fetch(
            "SELECT agent_id, status, reason, position_id, created_at FROM signal_outcomes"
            " WHERE signal_id = $1 ORDER BY agent_id",
            signal_id,
        )
        return json_dict(
            {
                "signal_id": signal_id,
                "signal": json.loads(row["body"]),
                "received_at": row["received_at"],
                "outcomes": [dict(o) for o in outcomes],
            }
        )

    # -- positions and trades -----

    @db_guard
    async def list_positions(
        self, *, agent_id: str | None, status: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_POSITION_COLUMNS} FROM positions p"
            " LEFT JOIN position_stops s ON s.position_id = p.id"
            " WHERE ($1::text IS NULL OR p.agent_id = $1)"
            " AND ($2::text IS NULL OR p.status = $2)"
            " ORDER BY p.opened_at DESC, p.id LIMIT $3 OFFSET $4",
            agent_id,
            status,
            limit,
            offset,
        )
        return [_position(r) for r in rows]

    @db_guard
    async def get_position(self, position_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_POSITION_COLUMNS} FROM positions p"
            " LEFT JOIN position_stops s ON s.position_id = p.id WHERE p.id = $1",
            position_id,
        )
        if row is None:
            raise NotFound(f"position {position_id} not found")
        return _position(row)

    @db_guard
    async def close_position(self, position_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT agent_id, status FROM positions WHERE id = $1", position_id
        )
        if row is None:
            raise NotFound(f"position {position_id} not found")
        if row["status"] != "open":
            raise Conflict(f"position {position_id} is already {row['status']}")
        host = await self._agent_host(row["agent_id"])
        result = await host.close_position.remote(row["agent_id"], position_id)
        return json_dict(result)

    @db_guard
    async def list_trades(
        self, *, agent_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT intent_id, agent_id, wallet_id, position_id, side, token, base_amount,"
            " quote_amount, price, fee, network_fee, reason, ts FROM trades"
            " WHERE ($1::text IS NULL OR agent_id = $1) ORDER BY ts DESC, intent_id"
            " LIMIT $2 OFFSET $3",
            agent_id,
            limit,
            offset,
        )
        return [jsonable(dict(r)) for r in rows]

    # -- prices and feeds -----

    async def prices(self) -> dict[str, Any]:
        evaluators = [
            await evaluator_handle(shard, self.ns)
            for shard in range(self.settings.hosting.evaluators)
        ]
        now = time.time()
        merged: dict[str, Any] = {}
        for latest in await asyncio.gather(*(e.latest_prices.remote() for e in evaluators)):
            for token, (price, ts) in latest.items():
                merged[token] = {"price": price, "ts": ts, "age_s": round(now - ts, 3)}
        return {"prices": dict(sorted(merged.items()))}

    async def push_manual_ticks(self, ticks: list[Tick]) -> int:
        try:
            feed = await actor_handle(feed_name("manual"), self.ns)
        except ValueError:
            raise Unavailable("the manual feed is not running") from None
        accepted: int = await feed.push.remote(ticks)
        return accepted

    # -- health and observability -----

    async def health_ready(self) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2)
        except Exception as exc:
            reasons.append(f"database unreachable: {type(exc).__name__}: {exc}")
        try:
            root = await self._root()
            _, system_reasons, _ = await asyncio.wait_for(root.ready.remote(), 15)
            reasons.extend(system_reasons)
        except Unavailable as exc:
            reasons.append(exc.message)
        except Exception as exc:
            reasons.append(f"root supervisor unreachable: {type(exc).__name__}: {exc}")
        return not reasons, reasons

    async def supervisors(self) -> dict[str, Any]:
        root = await self._root()
        tree: dict[str, Any] = await asyncio.wait_for(root.tree.remote(), 10)
        return json_dict(tree)

    async def health_status(self) -> dict[str, Any]:
        tree = await self.supervisors()
        counts = {
            group: {
                "state": status["state"],
                "children": len(status["children"]),
                "restarts": sum(c["restarts"] for c in status["children"]),
            }
            for group, status in tree["supervisors"].items()
        }
        return {
            "api": {
                "uptime_s": round(time.time() - self.started_at, 1),
                "db_pool": {
                    "size": self.pool.get_size(),
                    "idle": self.pool.get_idle_size(),
                    "max": self.pool.get_max_size(),
                },
            },
            "actors": counts,
            "tree": tree,
        }

    async def actor_metrics(self) -> list[Any]:
        from valux.supervisors.naming import supervisor_name
        from valux.supervisors.root import GROUPS

        merged: dict[str, Metric] = {}
        for group in GROUPS:
            try:
                sup = await actor_handle(supervisor_name(group), self.ns)
                per_process = await asyncio.wait_for(sup.children_metrics.remote(), 10)
            except Exception:
                continue
            for process, families in per_process:
                for family in families:
                    out = merged.get(family.name)
                    if out is None:
                        out = merged[family.name] = Metric(
                            family.name, family.documentation, family.type
                        )
                    for sample in family.samples:
                        out.samples.append(
                            sample._replace(labels={**sample.labels, "process": process})
                        )
        return list(merged.values())


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    """JSON numbers parsed as Decimal become doubles, as in the reference engine (§0)."""
    if isinstance(value, Decimal):
        return (
            int(value)
            if value == value.to_integral_value() and "." not in str(value)
            else float(value)
        )
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
