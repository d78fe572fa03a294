"""RayBackend: the API's view of the engine, over named actor handles.

Commands go to the actors (``await handle.method.remote(...)``; never
``ray.get``). History queries (positions, trades, signal outcomes) read the
read-model tables in PostgreSQL, written in the same transactions as the
journal, so they never load the actors.

Ownership lives here, not in the actors: ``agent_owners`` (written before an
agent is created, kept after it is deleted) says whose each agent is, and every
query and command joins on it when the API passes ``owner``; ``signals`` are
keyed by ``(owner_id, id)``. Another user's agent, position, trade or signal is
indistinguishable from one that does not exist. Users, sessions, keys, webhooks
and the audit log are :class:`~valux.api.users_pg.PgUserStore` over the same
pool.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import structlog
from prometheus_client.metrics_core import Metric

from valux.api.models import SignalIn
from valux.api.security import AuthConfig
from valux.api.users import SYSTEM_OWNER
from valux.api.users_pg import PgUserStore
from valux.config.settings import Settings
from valux.errors import Conflict, FieldError, InvalidRequest, NotFound, Unavailable
from valux.feeds.ticks import Tick
from valux.hosting.handles import (
    actor_handle,
    agent_host_handle,
    evaluator_handle,
)
from valux.hosting.naming import ROOT, feed_name, supervisor_name
from valux.hosting.peers import PEER_ERRORS
from valux.persistence.guard import db_guard
from valux.rules.config import load_agent_config
from valux.schema.messages import Signal, TokenMetricsIn
from valux.system.live_wallets import LiveWallets
from valux.trading.entries import recorded_outcome


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


log = structlog.get_logger("valux.system.backend")

_OWNED = (
    "({owner}::text IS NULL OR EXISTS (SELECT 1 FROM agent_owners o"
    " WHERE o.agent_id = {agent} AND o.owner_id = {owner}))"
)
"""The row's agent is the owner's (no owner: every row), as a SQL condition."""


class RayBackend:
    """Implements :class:`valux.api.backend.Backend` over the running actor system."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, *, auth_config: AuthConfig | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.ns = settings.ray.namespace
        self.manual_feed_enabled = settings.feeds.manual.enabled
        self.started_at = time.time()
        self.users = PgUserStore(pool)
        self._auth_config = auth_config
        self._locations: dict[str, asyncpg.Record] = {}
        self.live_wallets = LiveWallets(self)

    @property
    def auth_config(self) -> AuthConfig:
        """Built (and the key file read or created) the first time the API asks for it, so
        in-process tools that never serve HTTP need no key file."""
        if self._auth_config is None:
            self._auth_config = AuthConfig.from_settings(self.settings)
        return self._auth_config

    # -- helpers -----

    async def _root(self) -> Any:
        try:
            return await actor_handle(ROOT, self.ns)
        except ValueError:
            raise Unavailable("the valux actor system is not running") from None

    @db_guard
    async def _location(self, agent_id: str, owner: str | None = None) -> asyncpg.Record:
        loc = self._locations.get(agent_id)
        if loc is None:
            loc = await self.pool.fetchrow(
                "SELECT a.host_slot, a.wallet_slot, a.wallet_id, a.status, o.owner_id"
                " FROM agents a LEFT JOIN agent_owners o ON o.agent_id = a.id WHERE a.id = $1",
                agent_id,
            )
            if loc is None or loc["status"] == "deleted":
                raise NotFound(f"agent {agent_id} not found")
            self._locations[agent_id] = loc
        if owner is not None and loc["owner_id"] != owner:
            raise NotFound(f"agent {agent_id} not found")  # another user's: as if absent
        return loc

    async def _agent_host(self, agent_id: str, owner: str | None = None) -> Any:
        loc = await self._location(agent_id, owner)
        return await agent_host_handle(loc["host_slot"], self.ns)

    # -- ownership -----

    @db_guard
    async def agent_owner(self, agent_id: str) -> str | None:
        owner: str | None = await self.pool.fetchval(
            "SELECT owner_id FROM agent_owners WHERE agent_id = $1", agent_id
        )
        return owner

    async def _claim_agent_id(self, agent_id: str, owner: str) -> None:
        """Record ``owner`` as the agent id's owner before the agent exists; ``Conflict`` if
        the id is another user's (even deleted: its history stays theirs)."""
        holder = await self.pool.fetchval(
            "INSERT INTO agent_owners (agent_id, owner_id) VALUES ($1, $2)"
            " ON CONFLICT (agent_id) DO UPDATE SET owner_id = agent_owners.owner_id"
            " RETURNING owner_id",
            agent_id,
            owner,
        )
        if holder != owner:
            raise Conflict(f"agent id {agent_id} is taken; choose another")

    # -- agents -----

    @db_guard
    async def create_agent(
        self,
        *,
        name: str,
        config: Mapping[str, Any] | None,
        balance: Decimal,
        agent_id: str | None,
        owner: str | None = None,
        venue: str = "paper",
        wallet_id: str | None = None,
    ) -> dict[str, Any]:
        load_agent_config(config)  # fail fast with every field error, before any state
        if (venue == "paper") != (wallet_id is None):
            raise InvalidRequest(
                "a paper agent gets a wallet of its own; a live agent names its wallet",
                [FieldError("wallet_id", f"{'absent' if venue == 'paper' else 'required'}"
                            f" for venue {venue}")],
            )  # fmt: skip
        agent_id = agent_id or uuid.uuid4().hex
        await self._claim_agent_id(agent_id, owner or SYSTEM_OWNER)
        existing = await self.pool.fetchval("SELECT status FROM agents WHERE id = $1", agent_id)
        if existing is not None and existing != "deleted":
            raise Conflict(f"agent {agent_id} already exists")
        number: int = await self.pool.fetchval("SELECT nextval('agent_seq')")
        root = await self._root()
        if wallet_id is not None:  # a live agent lives with its wallet, on the wallet's slot
            row = await self.live_wallets.for_agent(wallet_id, agent_id, owner, venue)
            host_slot = row["host_slot"]
            await root.ensure.remote("agents", host_slot)
            agents = await agent_host_handle(host_slot, self.ns)
            (wallet,) = await agents.wallet_call.remote("describe", [wallet_id])
            balance = Decimal(wallet["balances"].get(wallet["quote_asset"], "0"))
        else:
            host_slot = number // self.settings.hosting.agents_per_host
            # A deleted id used again gets a wallet of its own: funds never mix incarnations.
            wallet_id = f"w-{agent_id}" if existing is None else f"w-{agent_id}-{number}"
            await root.ensure.remote("agents", host_slot)
            agents = await agent_host_handle(host_slot, self.ns)  # it hosts the wallet too
            await agents.wallet_call.remote(
                "create_wallet", wallet_id, agent_id, balance, self.settings.venue.quote_asset
            )
        view = await agents.create_agent.remote(
            agent_id, name, _plain(config), wallet_id, host_slot, number, balance
        )
        self._locations.pop(agent_id, None)
        return json_dict(view)

    @db_guard
    async def list_agents(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, name, status, host_slot, wallet_id, last_error, created_at, updated_at,"
            " (SELECT count(*) FROM positions p WHERE p.agent_id = a.id AND p.status = 'open')"
            " AS open_positions FROM agents a WHERE status <> 'deleted'"
            " AND ($1::text IS NULL OR EXISTS (SELECT 1 FROM agent_owners o"
            "      WHERE o.agent_id = a.id AND o.owner_id = $1))"
            " ORDER BY seq",
            owner,
        )
        return [jsonable(dict(r)) for r in rows]

    @db_guard
    async def get_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        host = await self._agent_host(agent_id, owner)
        views = await host.describe.remote([agent_id])
        if not views:
            raise NotFound(f"agent {agent_id} not found")
        return json_dict(views[0])

    @db_guard
    async def update_agent(
        self,
        agent_id: str,
        *,
        name: str | None,
        config_patch: Mapping[str, Any] | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        host = await self._agent_host(agent_id, owner)
        view = await host.update_agent.remote(agent_id, name, _plain(config_patch))
        return json_dict(view)

    @db_guard
    async def _status(self, agent_id: str, action: str, owner: str | None) -> dict[str, Any]:
        host = await self._agent_host(agent_id, owner)
        view = await host.set_status.remote(agent_id, action)
        if action == "delete":
            self._locations.pop(agent_id, None)
        return json_dict(view)

    @db_guard
    async def delete_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        return await self._status(agent_id, "delete", owner)

    @db_guard
    async def pause_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        return await self._status(agent_id, "pause", owner)

    @db_guard
    async def resume_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        return await self._status(agent_id, "resume", owner)

    @db_guard
    async def set_agent_state(
        self, agent_id: str, *, state: str, reason: str | None, owner: str | None = None
    ) -> dict[str, Any]:
        host = await self._agent_host(agent_id, owner)
        return json_dict(await host.set_trading_state.remote(agent_id, state, reason))

    @db_guard
    async def set_user_state(self, *, owner: str, state: str, reason: str | None) -> dict[str, Any]:
        """Each of ``owner``'s agents through :meth:`set_agent_state`, at most 32 at a time
        (the per-agent state path; no new actor method)."""
        rows = await self.pool.fetch(
            "SELECT a.id FROM agents a JOIN agent_owners o ON o.agent_id = a.id"
            " WHERE o.owner_id = $1 AND a.status <> 'deleted' ORDER BY a.seq",
            owner,
        )
        gate = asyncio.Semaphore(32)

        async def one(agent_id: str) -> bool:
            async with gate:
                try:
                    await self.set_agent_state(agent_id, state=state, reason=reason, owner=owner)
                except Exception as exc:  # one unreachable agent must not hide the others
                    log.warning("user_state_not_applied", agent_id=agent_id, error=repr(exc))
                    return False
                return True

        ids = [r["id"] for r in rows]
        done = await asyncio.gather(*(one(a) for a in ids))
        return {
            "state": state,
            "reason": reason,
            "agents": [a for a, ok in zip(ids, done, strict=True) if ok],
            "failed": [a for a, ok in zip(ids, done, strict=True) if not ok],
        }

    # -- risk -----

    @db_guard
    async def get_global_state(self) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT state, reason, source, updated_at FROM risk_states WHERE scope = 'global'"
        )
        if row is None:
            return {"state": "ACTIVE", "reason": None, "source": None, "updated_at": None}
        return json_dict(dict(row))

    async def set_global_state(self, *, state: str, reason: str | None) -> dict[str, Any]:
        root = await self._root()
        result: dict[str, Any] = await asyncio.wait_for(
            root.set_global_state.remote(state, reason), 30
        )
        return json_dict(result)

    # -- wallets -----

    @db_guard
    async def get_wallet(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        loc = await self._location(agent_id, owner)
        host = await agent_host_handle(loc["host_slot"], self.ns)
        views = await host.wallet_call.remote("describe", [loc["wallet_id"]])
        if not views or views[0] is None:
            raise NotFound(f"wallet of agent {agent_id} not found")
        return json_dict(views[0])

    @db_guard
    async def deposit(
        self, agent_id: str, *, asset: str, amount: Decimal, owner: str | None = None
    ) -> dict[str, Any]:
        loc = await self._location(agent_id, owner)
        host = await agent_host_handle(loc["host_slot"], self.ns)
        view = await host.wallet_call.remote("deposit", loc["wallet_id"], asset, amount)
        return json_dict(view)

    # -- live wallets (valux.system.live_wallets) -----

    @db_guard
    async def create_live_wallet(
        self,
        *,
        chain: str,
        passphrase: str,
        secret: str | None,
        agent_id: str | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        view = await self.live_wallets.create(
            chain=chain, passphrase=passphrase, secret=secret, agent_id=agent_id, owner=owner
        )
        return json_dict(view)

    @db_guard
    async def list_live_wallets(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        return [json_dict(v) for v in await self.live_wallets.list(owner)]

    @db_guard
    async def get_live_wallet(self, wallet_id: str, *, owner: str | None = None) -> dict[str, Any]:
        return json_dict(await self.live_wallets.get(wallet_id, owner))

    @db_guard
    async def unlock_wallet(
        self, wallet_id: str, *, passphrase: str, ttl_s: float | None, owner: str | None = None
    ) -> dict[str, Any]:
        return json_dict(await self.live_wallets.unlock(wallet_id, passphrase, ttl_s, owner))

    @db_guard
    async def lock_wallet(
        self, wallet_id: str, *, force: bool, owner: str | None = None
    ) -> dict[str, Any]:
        return json_dict(await self.live_wallets.lock(wallet_id, force, owner))

    @db_guard
    async def set_wallet_policy(
        self, wallet_id: str, *, policy: dict[str, Any] | None, owner: str | None = None
    ) -> dict[str, Any]:
        return json_dict(await self.live_wallets.set_policy(wallet_id, policy, owner))

    @db_guard
    async def export_wallet(
        self, wallet_id: str, *, passphrase: str, owner: str | None = None
    ) -> dict[str, Any]:
        return await self.live_wallets.export(wallet_id, passphrase, owner)

    @db_guard
    async def delete_wallet(self, wallet_id: str, *, owner: str | None = None) -> dict[str, Any]:
        return json_dict(await self.live_wallets.delete(wallet_id, owner))

    # -- signals -----

    @db_guard
    async def post_signal(self, signal: SignalIn, *, owner: str | None = None) -> dict[str, Any]:
        """Record the signal and the agents it is for, then ask only the agents that have
        not decided it yet (none, for a repeat whose agents all decided): every decided
        outcome comes from ``signal_outcomes``, exactly as it was first answered. With an
        ``owner``, only that user's agents are targets (an id of another user's agent in
        ``agents`` is ignored, as an unknown one is) and the id is that user's."""
        if signal.agents is not None:
            rows = await self.pool.fetch(
                "SELECT a.id, a.host_slot FROM agents a WHERE a.id = ANY($1::text[])"
                f" AND a.status <> 'deleted' AND {_OWNED.format(agent='a.id', owner='$2')}",
                list(signal.agents),
                owner,
            )
        elif owner is not None:
            rows = await self.pool.fetch(
                "SELECT a.id, a.host_slot FROM agent_owners o JOIN agents a ON a.id = o.agent_id"
                " WHERE o.owner_id = $1 AND a.status <> 'deleted'",
                owner,
            )
        else:
            rows = await self.pool.fetch(
                "SELECT id, host_slot FROM agents WHERE status <> 'deleted'"
            )
        slots = {r["id"]: r["host_slot"] for r in rows}
        signal_owner = owner or SYSTEM_OWNER
        inserted = await self.pool.fetchval(
            "INSERT INTO signals (owner_id, id, body, targets)"
            " VALUES ($1, $2, $3::jsonb, $4::text[])"
            " ON CONFLICT (owner_id, id) DO NOTHING RETURNING id",
            signal_owner,
            signal.id,
            json.dumps(signal.model_dump(mode="json")),
            sorted(slots),
        )
        targets = sorted(slots)
        if inserted is None:
            stored_targets = await self.pool.fetchval(
                "SELECT targets FROM signals WHERE owner_id = $1 AND id = $2",
                signal_owner,
                signal.id,
            )
            if stored_targets is not None:  # the agents it was first for (still existing)
                targets = [t for t in stored_targets if t in slots]
        decided = {
            r["agent_id"]: recorded_outcome(r)
            for r in await self.pool.fetch(
                "SELECT agent_id, status, reason, position_id, detail,"
                " extract(epoch FROM created_at) AS ts FROM signal_outcomes"
                " WHERE signal_id = $1 AND agent_id = ANY($2::text[])",
                signal.id,
                targets,
            )
        }
        outcomes = [{**decided[t], "final": True} for t in targets if t in decided]
        undecided = [t for t in targets if t not in decided]
        if undecided:
            outcomes += await self._fan_out(_message(signal, undecided), undecided, slots)
        outcomes.sort(key=lambda o: str(o.get("agent_id")))
        return {"signal_id": signal.id, "duplicate": inserted is None, "outcomes": outcomes}

    async def _fan_out(
        self, message: Signal, agent_ids: list[str], slots: dict[str, int]
    ) -> list[dict[str, Any]]:
        """One call per agent host, in parallel; a host that is restarting is asked again
        (``on_signal`` is idempotent per signal and agent) until ``api.actor_retry_s``, after
        which its agents are answered ``refused`` (the route then says 503, retry)."""
        by_slot: dict[int, list[str]] = {}
        for agent_id in agent_ids:
            by_slot.setdefault(slots[agent_id], []).append(agent_id)

        async def one(slot: int, ids: list[str]) -> list[dict[str, Any]]:
            deadline = time.monotonic() + self.settings.api.actor_retry_s
            delay = 0.1
            seen: collections.Counter[str] = collections.Counter()
            while True:
                try:
                    host = await agent_host_handle(slot, self.ns)
                    batch = await host.on_signal.remote(message)
                    return [jsonable(o) for o in batch]
                except Exception as exc:
                    if not isinstance(exc, _RESTARTING):  # restarting, or not yet named
                        raise
                    seen[type(exc).__name__] += 1
                    if time.monotonic() + delay > deadline:
                        log.warning("signal_host_unavailable", signal_id=message.id, slot=slot,
                                    agents=len(ids), errors=dict(seen), last=repr(exc))  # fmt: skip
                        reason = (
                            f"entry refused: agent host {slot} unavailable ({type(exc).__name__})"
                        )
                        now = time.time()
                        return [{"agent_id": a, "status": "refused", "reason": reason,
                                 "ts": now, "final": False} for a in ids]  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)

        batches = await asyncio.gather(*(one(slot, ids) for slot, ids in by_slot.items()))
        return [o for batch in batches for o in batch]

    @db_guard
    async def get_signal(self, signal_id: str, *, owner: str | None = None) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT body, received_at FROM signals WHERE owner_id = $1 AND id = $2",
            owner or SYSTEM_OWNER,
            signal_id,
        )
        if row is None:
            raise NotFound(f"signal {signal_id} not found")
        outcomes = await self.pool.fetch(
            "SELECT so.agent_id, so.status, so.reason, so.position_id, so.created_at"
            " FROM signal_outcomes so WHERE so.signal_id = $1"
            " AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM agent_owners o"
            "      WHERE o.agent_id = so.agent_id AND o.owner_id = $2))"
            " ORDER BY so.agent_id",
            signal_id,
            owner,
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
        self,
        *,
        agent_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_POSITION_COLUMNS} FROM positions p"
            " LEFT JOIN position_stops s ON s.position_id = p.id"
            " WHERE ($1::text IS NULL OR p.agent_id = $1)"
            " AND ($2::text IS NULL OR p.status = $2)"
            f" AND {_OWNED.format(agent='p.agent_id', owner='$5')}"
            " ORDER BY p.opened_at DESC, p.id LIMIT $3 OFFSET $4",
            agent_id,
            status,
            limit,
            offset,
            owner,
        )
        return [_position(r) for r in rows]

    @db_guard
    async def get_position(self, position_id: str, *, owner: str | None = None) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_POSITION_COLUMNS} FROM positions p"
            " LEFT JOIN position_stops s ON s.position_id = p.id WHERE p.id = $1"
            f" AND {_OWNED.format(agent='p.agent_id', owner='$2')}",
            position_id,
            owner,
        )
        if row is None:
            raise NotFound(f"position {position_id} not found")
        return _position(row)

    @db_guard
    async def close_position(self, position_id: str, *, owner: str | None = None) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT p.agent_id, p.status FROM positions p WHERE p.id = $1"
            f" AND {_OWNED.format(agent='p.agent_id', owner='$2')}",
            position_id,
            owner,
        )
        if row is None:
            raise NotFound(f"position {position_id} not found")
        if row["status"] != "open":
            raise Conflict(f"position {position_id} is already {row['status']}")
        host = await self._agent_host(row["agent_id"], owner)
        result = await host.close_position.remote(row["agent_id"], position_id)
        return json_dict(result)

    @db_guard
    async def list_trades(
        self, *, agent_id: str | None, limit: int, offset: int, owner: str | None = None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT intent_id, agent_id, wallet_id, position_id, side, token, base_amount,"
            " quote_amount, price, fee, network_fee, reason, ts FROM trades t"
            " WHERE ($1::text IS NULL OR agent_id = $1)"
            f" AND {_OWNED.format(agent='t.agent_id', owner='$4')}"
            " ORDER BY ts DESC, intent_id LIMIT $2 OFFSET $3",
            agent_id,
            limit,
            offset,
            owner,
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
        pids = {"root": tree["root"]["pid"]}
        for group, status in tree["supervisors"].items():
            pids[supervisor_name(group)] = status.get("pid")
            for child in status["children"]:
                pids[child["name"]] = (child.get("info") or {}).get("pid")
        return {
            "pids": pids,
            "api": {
                "pid": os.getpid(),
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


_RESTARTING: tuple[type[BaseException], ...] = (*PEER_ERRORS, ValueError)


def _message(signal: SignalIn, agent_ids: list[str]) -> Signal:
    """The signal as the agents get it, for ``agent_ids`` only."""
    return Signal(
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
        agents=tuple(agent_ids),
        received_at=time.time(),
    )


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
