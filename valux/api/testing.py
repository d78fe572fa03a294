"""An in-memory :class:`~valux.api.backend.Backend` for testing the HTTP layer.

:class:`FakeBackend` keeps agents, wallets, signals, positions and trades in
dicts and follows the protocol's contract (JSON-safe results, money as decimal
strings, ``valux.errors`` on failure, every resource scoped to its ``owner``)
closely enough to exercise every route. Its users live in a
:class:`~valux.api.users.MemoryUserStore`; its :class:`AuthConfig` has a random
key and the cheapest argon2. It is *not* the engine: there are no rules, no
journal and no actors. The integrator's tests run the same routes against the
real backend.

:func:`api_client` serves an app over a backend on a local port for a test,
signed in as a user of its own (an admin by default): every request carries that
user's bearer token unless the test passes ``Authorization`` itself or asks for
``user=None``. :func:`sign_in` makes further users and their tokens.

Tests inject failures with :attr:`FakeBackend.fail`, e.g.
``fake.fail["get_agent"] = Unavailable("agent host down")``.

:func:`cross_user_plan` turns the route table into the requests a second user
makes against a first user's resources (the cross-user test, for the fake and
for the real system alike), so a new route cannot escape it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.metrics_core import GaugeMetricFamily

from valux.api.app import create_app
from valux.api.backend import Backend, SignalIn, Tick
from valux.api.routes import Access, Route
from valux.api.security import AuthConfig
from valux.api.testing_wallets import FakeLiveWallets
from valux.api.users import MemoryUserStore, User, UserStore
from valux.auth.tokens import Role, issue_access_token
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


class FakeBackend(FakeLiveWallets):
    """In-memory backend. Buying: every active, targeted agent buys ``size``
    (default 0.1) of the token if its SOL balance covers it."""

    def __init__(
        self, *, manual_feed_enabled: bool = True, auth_config: AuthConfig | None = None
    ) -> None:
        super().__init__()
        self.manual_feed_enabled = manual_feed_enabled
        self.users: UserStore = MemoryUserStore()
        self.auth_config = auth_config or AuthConfig.for_tests()
        self.agents: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, str] = {}
        """Agent id → owner; kept after a delete (an id stays with its owner)."""
        self.balances: dict[str, dict[str, Decimal]] = {}
        self.signals: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.ticks: list[Tick] = []
        self.ready: tuple[bool, list[str]] = (True, [])
        self.global_state: dict[str, Any] = {"state": "ACTIVE", "reason": None}
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

    @staticmethod
    def _who(owner: str | None) -> str:
        if owner is None:
            raise AssertionError("the API must pass owner= to every resource method")
        return owner

    def _mine(self, agent_id: str, owner: str | None) -> bool:
        return owner is None or self.owners.get(agent_id) == owner

    def _agent(self, agent_id: str, owner: str | None = None) -> dict[str, Any]:
        agent = self.agents.get(agent_id)
        if agent is None or not self._mine(agent_id, owner):
            raise NotFound(f"agent {agent_id} not found")
        return agent

    def _position(self, position_id: str, owner: str | None) -> dict[str, Any]:
        position = self.positions.get(position_id)
        if position is None or not self._mine(position["agent_id"], owner):
            raise NotFound(f"position {position_id} not found")
        return position

    async def agent_owner(self, agent_id: str) -> str | None:
        self._enter("agent_owner", agent_id=agent_id)
        return self.owners.get(agent_id)

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
        owner: str | None = None,
        venue: str = "paper",
        wallet_id: str | None = None,
    ) -> dict[str, Any]:
        self._enter(
            "create_agent",
            venue=venue,
            wallet_id=wallet_id,
            name=name,
            config=config,
            balance=balance,
            agent_id=agent_id,
            owner=owner,
        )
        who = self._who(owner)
        agent_id = agent_id or f"agent-{next(self._ids)}"
        if agent_id in self.agents or self.owners.get(agent_id, who) != who:
            raise Conflict(f"agent {agent_id} already exists")
        self.owners[agent_id] = who
        self.agents[agent_id] = {
            "id": agent_id,
            "name": name,
            "config": _jsonable(config or {}),
            "paused": False,
        }
        self.balances[agent_id] = {"SOL": balance}
        return dict(self.agents[agent_id])

    async def list_agents(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        self._enter("list_agents", owner=owner)
        who = self._who(owner)
        return [dict(a) for a in self.agents.values() if self.owners.get(a["id"]) == who]

    async def get_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("get_agent", agent_id=agent_id, owner=owner)
        return dict(self._agent(agent_id, self._who(owner)))

    async def update_agent(
        self,
        agent_id: str,
        *,
        name: str | None,
        config_patch: Mapping[str, Any] | None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        self._enter(
            "update_agent", agent_id=agent_id, name=name, config_patch=config_patch, owner=owner
        )
        agent = self._agent(agent_id, self._who(owner))
        if name is not None:
            agent["name"] = name
        if config_patch is not None:
            agent["config"] = _merge(agent["config"], _jsonable(config_patch))
        return dict(agent)

    async def delete_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("delete_agent", agent_id=agent_id, owner=owner)
        agent = self._agent(agent_id, self._who(owner))
        mine = [p for p in self.positions.values() if p["agent_id"] == agent_id]
        if any(p["status"] == "open" for p in mine):
            raise Conflict(f"agent {agent_id} has open positions; close them first")
        del self.agents[agent_id]
        return {**agent, "deleted": True}

    async def pause_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("pause_agent", agent_id=agent_id, owner=owner)
        agent = self._agent(agent_id, self._who(owner))
        agent["paused"] = True
        return dict(agent)

    async def resume_agent(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("resume_agent", agent_id=agent_id, owner=owner)
        agent = self._agent(agent_id, self._who(owner))
        agent["paused"] = False
        return dict(agent)

    async def set_agent_state(
        self, agent_id: str, *, state: str, reason: str | None, owner: str | None = None
    ) -> dict[str, Any]:
        self._enter("set_agent_state", agent_id=agent_id, state=state, reason=reason, owner=owner)
        agent = self._agent(agent_id, self._who(owner))
        agent["paused"] = state != "ACTIVE"
        agent["trading_state"] = state
        return dict(agent)

    async def set_user_state(self, *, owner: str, state: str, reason: str | None) -> dict[str, Any]:
        self._enter("set_user_state", owner=owner, state=state, reason=reason)
        mine = sorted(a for a in self.agents if self.owners.get(a) == owner)
        for agent_id in mine:
            self.agents[agent_id]["paused"] = state != "ACTIVE"
            self.agents[agent_id]["trading_state"] = state
        return {"state": state, "reason": reason, "agents": mine, "failed": []}

    # risk ----------------------------------------------------------------------
    async def get_global_state(self) -> dict[str, Any]:
        self._enter("get_global_state")
        return dict(self.global_state)

    async def set_global_state(self, *, state: str, reason: str | None) -> dict[str, Any]:
        self._enter("set_global_state", state=state, reason=reason)
        self.global_state = {"state": state, "reason": reason}
        return {**self.global_state, "hosts": 0, "latency_ms": 0.0}

    # wallets -------------------------------------------------------------------
    async def get_wallet(self, agent_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("get_wallet", agent_id=agent_id, owner=owner)
        self._agent(agent_id, self._who(owner))
        return self._wallet(agent_id)

    async def deposit(
        self, agent_id: str, *, asset: str, amount: Decimal, owner: str | None = None
    ) -> dict[str, Any]:
        self._enter("deposit", agent_id=agent_id, asset=asset, amount=amount, owner=owner)
        self._agent(agent_id, self._who(owner))
        balances = self.balances[agent_id]
        balances[asset] = balances.get(asset, Decimal(0)) + amount
        return self._wallet(agent_id)

    # signals -------------------------------------------------------------------
    async def post_signal(self, signal: SignalIn, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("post_signal", signal=signal, owner=owner)
        who = self._who(owner)
        key = f"{who}/{signal.id}"
        if key in self.signals:
            return {**self.signals[key], "duplicate": True}
        size = signal.size or DEFAULT_SIZE
        mine = [a for a in self.agents if self.owners.get(a) == who]
        targets = signal.agents if signal.agents is not None else mine
        outcomes: list[dict[str, Any]] = []
        for agent_id in targets:
            agent = self.agents.get(agent_id) if agent_id in mine else None
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
        self.signals[key] = result
        return result

    async def get_signal(self, signal_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("get_signal", signal_id=signal_id, owner=owner)
        try:
            return self.signals[f"{self._who(owner)}/{signal_id}"]
        except KeyError:
            raise NotFound(f"signal {signal_id} not found") from None

    # positions and trades ------------------------------------------------------
    async def list_positions(
        self,
        *,
        agent_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        self._enter(
            "list_positions",
            agent_id=agent_id,
            status=status,
            limit=limit,
            offset=offset,
            owner=owner,
        )
        who = self._who(owner)
        rows = [
            p
            for p in reversed(self.positions.values())
            if (agent_id is None or p["agent_id"] == agent_id)
            and (status is None or p["status"] == status)
            and self.owners.get(p["agent_id"]) == who
        ]
        return [dict(p) for p in rows[offset : offset + limit]]

    async def get_position(self, position_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("get_position", position_id=position_id, owner=owner)
        return dict(self._position(position_id, self._who(owner)))

    async def close_position(self, position_id: str, *, owner: str | None = None) -> dict[str, Any]:
        self._enter("close_position", position_id=position_id, owner=owner)
        position = self._position(position_id, self._who(owner))
        if position["status"] != "open":
            raise Conflict(f"position {position_id} is already closed")
        position["status"] = "closed"
        return dict(position)

    async def list_trades(
        self, *, agent_id: str | None, limit: int, offset: int, owner: str | None = None
    ) -> list[dict[str, Any]]:
        self._enter("list_trades", agent_id=agent_id, limit=limit, offset=offset, owner=owner)
        who = self._who(owner)
        rows = [
            t
            for t in reversed(self.trades)
            if (agent_id is None or t["agent_id"] == agent_id)
            and self.owners.get(t["agent_id"]) == who
        ]
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


TEST_ADMIN = "u_test_admin"
"""The user :func:`api_client` signs in as by default (an admin)."""


async def sign_in(
    backend: Backend,
    user_id: str | None = None,
    *,
    role: Role = Role.USER,
    email: str | None = None,
) -> tuple[User, dict[str, str]]:
    """A user of ``backend`` (created in its :class:`MemoryUserStore` if new) and the
    ``Authorization`` header of a fresh access token for them."""
    store = backend.users
    user = await store.get_user(user_id) if user_id is not None else None
    if user is None:
        if not isinstance(store, MemoryUserStore):
            raise TypeError("sign_in creates users only in a MemoryUserStore")
        from datetime import UTC, datetime

        from valux.api.users import new_user_id

        user = User(user_id or new_user_id(), email, role, datetime.now(UTC))
        store.users[user.id] = user
    token = issue_access_token(
        backend.auth_config.signing_key, subject=user.id, role=user.role
    ).token
    return user, {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def api_client(
    backend: Backend,
    *,
    redis_url: str | None = None,
    user: str | None = TEST_ADMIN,
    role: Role = Role.ADMIN,
    **options: Any,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A test client of ``create_app(backend, redis_url=..., **options)`` on a free port,
    sending ``user``'s bearer token (created with ``role`` if new) on every request;
    ``user=None``: no credentials."""
    app = create_app(backend, redis_url=redis_url, **options)
    headers: dict[str, str] = {}
    if user is not None:
        _, headers = await sign_in(backend, user, role=role)
    async with TestClient(TestServer(app), headers=headers) as client:
        yield client


if TYPE_CHECKING:
    _static_check: Backend = FakeBackend()  # mypy proves the fake satisfies the protocol


async def admin_api_key(base_url: str, email: str, password: str, *, name: str = "bench") -> str:
    """Log in over HTTP as ``email`` and make an API key with every scope (for benchmarks and
    tools that drive a running valux: send it as ``X-API-Key``; it does not expire)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        login = {"email": email, "password": password}
        async with http.post(f"{base_url}/api/v1/auth/login", json=login) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"login as {email}: HTTP {r.status}: {body}")
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        wanted = {"name": name, "scopes": ["read", "trade", "admin"]}
        async with http.post(f"{base_url}/api/v1/keys", json=wanted, headers=headers) as r:
            key = await r.json()
            if r.status != 201:
                raise RuntimeError(f"API key for {email}: HTTP {r.status}: {key}")
        return str(key["key"])


# ------------------------------------------------------------------ cross-user plan


@dataclass(frozen=True)
class Party:
    """One user's resources for the cross-user test (ids chosen to be recognisable)."""

    user_id: str
    headers: dict[str, str]
    email: str
    agent_id: str
    agent_name: str
    position_id: str
    signal_id: str
    key_id: str
    key_name: str
    webhook_id: str
    webhook_name: str
    webhook_secret: str
    wallet_id: str = ""
    """A live wallet of the user's (made with :data:`PARTY_PASSPHRASE`)."""
    wallet_address: str = ""

    def ids(self) -> dict[str, str]:
        return {
            "wallet": self.wallet_id,
            "agent": self.agent_id,
            "position": self.position_id,
            "signal": self.signal_id,
            "api_key": self.key_id,
            "webhook": self.webhook_id,
        }

    def markers(self) -> set[str]:
        """Strings only this user's content contains."""
        return {
            self.user_id,
            self.email,
            self.agent_id,
            self.agent_name,
            self.position_id,
            self.signal_id,
            self.key_id,
            self.key_name,
            self.webhook_id,
            self.webhook_name,
            self.wallet_id,
            self.wallet_address,
        }


@dataclass(frozen=True)
class Probe:
    """One request the intruder makes against the victim; what it may answer."""

    route: Route
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    allowed: frozenset[int] | None
    """Statuses the intruder may get (None: any status below 500)."""
    sent: frozenset[str]
    """Victim ids the intruder itself put in the request (their echo is not a leak)."""
    websocket: bool = False


PARTY_PASSPHRASE = "the party's wallet passphrase"
"""The passphrase of every :class:`Party`'s wallet (the intruder knows it: only
ownership may stop it)."""

RESOURCE_OF_PATH: dict[str, str] = {
    "/api/v1/agents/{id}": "agent",
    "/api/v1/positions/{id}": "position",
    "/api/v1/signals/{id}": "signal",
    "/api/v1/keys/{id}": "api_key",
    "/api/v1/webhooks/{id}": "webhook",
    "/api/v1/wallets/{id}": "wallet",
}
"""Whose resource a path parameter names, by the path's prefix up to the parameter."""


def _signed(secret: str, body: Any) -> tuple[Any, dict[str, str]]:
    import json as _json
    import time as _time

    from valux.auth.webhooks import HEADER, sign

    raw = _json.dumps(body).encode()
    return raw, {HEADER: sign(secret, raw, int(_time.time())), "Content-Type": "application/json"}


def _bodies(victim: Party, intruder: Party) -> dict[str, Any]:
    """A valid body per operation, naming the victim's resources where a body can."""
    signal = {"id": f"x-{intruder.user_id[-6:]}", "token": "XUSR", "strength": 3, "type": "t"}
    return {
        "register": {"email": f"new-{intruder.user_id[-8:]}@example.com",
                     "password": "a long enough passphrase 1"},
        "login": {"email": victim.email, "password": "not the victim's password"},
        "refresh": {"refresh_token": "x" * 43},
        "logout": {"everywhere": False},
        "changePassword": {"current_password": "wrong", "new_password": "another long one 2"},
        "linkWallet": {"message": "not a sign-in message", "signature": "0x00"},
        "createApiKey": {"name": f"{intruder.key_name}-2", "scopes": ["read"]},
        "createWebhook": {"name": f"{intruder.webhook_name}-2"},
        "webhookSignal": signal,
        "setUserState": {"state": "HALTED", "reason": "cross-user"},
        "createAgent": {"name": "intruder", "id": victim.agent_id, "balance": "1"},
        "updateAgent": {"name": "stolen"},
        "setAgentState": {"state": "HALTED"},
        "deposit": {"amount": "1"},
        "postSignal": {**signal, "agents": [victim.agent_id]},
        "setRiskState": {"state": "ACTIVE"},
        "pushManualTicks": {"ticks": [{"token": "XUSR", "price": "1"}]},
        "createWallet": {"chain": "solana", "passphrase": PARTY_PASSPHRASE,
                         "agent_id": victim.agent_id},
        "unlockWallet": {"passphrase": PARTY_PASSPHRASE},
        "lockWallet": {"force": True},
        "setSpendPolicy": {"max_per_order": "1", "max_per_day": None},
        "exportWallet": {"passphrase": PARTY_PASSPHRASE, "confirm": True},
    }  # fmt: skip


_QUERIES: dict[str, str] = {
    "listPositions": "?agent={agent}",
    "listTrades": "?agent={agent}",
}


def cross_user_plan(routes: Iterable[Route], victim: Party, intruder: Party) -> list[Probe]:
    """Every request ``intruder`` makes against ``victim``'s resources, one or more per route.

    Raises ``LookupError`` for a route the plan does not know how to aim at the victim (a
    new path parameter, a body without an example): a new route cannot escape the test.
    """
    bodies = _bodies(victim, intruder)
    probes: list[Probe] = []
    for route in routes:
        if route.access is Access.PUBLIC and route.method == "GET":
            continue  # health, the OpenAPI document, a nonce: nobody's resource
        path, sent = route.path, set[str]()
        for param in route.path_params:
            prefix = route.path[: route.path.index("{" + param + "}") + len(param) + 2]
            kind = RESOURCE_OF_PATH.get(prefix)
            if kind is None:
                raise LookupError(
                    f"{route.method} {route.path}: add {prefix!r} to RESOURCE_OF_PATH so the "
                    "cross-user test aims it at another user's resource"
                )
            path = path.replace("{" + param + "}", victim.ids()[kind])
            sent.add(victim.ids()[kind])
        query = _QUERIES.get(route.operation_id)
        if query is not None:
            path += query.format(**victim.ids())
            sent.add(victim.agent_id)
        body: Any = None
        headers = dict(intruder.headers)
        if route.body is not None:
            if route.operation_id not in bodies:
                raise LookupError(
                    f"{route.method} {route.path}: add an example body for "
                    f"{route.operation_id!r} to valux.api.testing._bodies"
                )
            body = bodies[route.operation_id]
            if route.operation_id in ("createAgent", "postSignal", "createWallet"):
                sent.add(victim.agent_id)
            if route.operation_id == "login":
                sent.add(victim.email)
        if route.access is Access.WEBHOOK:
            body, extra = _signed(intruder.webhook_secret, body)
            headers = extra
        allowed: frozenset[int] | None
        if route.access is Access.ADMIN:
            allowed = frozenset({403})
        elif route.access is Access.WEBHOOK:
            allowed = frozenset({401, 404})
        elif route.path_params:
            allowed = frozenset({404})
        elif route.operation_id in ("createAgent", "createWallet"):
            allowed = frozenset({409})
        else:
            allowed = None
        probes.append(
            Probe(route, route.method, path, body, headers, allowed, frozenset(sent),
                  websocket=route.long_lived)
        )  # fmt: skip
    # The intruder's logout revokes its own token: make it the last request.
    probes.sort(key=lambda p: p.route.operation_id == "logout")
    return probes


def leaks(probe: Probe, text: str, victim: Party) -> list[str]:
    """The victim's markers in an answer, except ids the intruder sent itself."""
    return sorted(m for m in victim.markers() - probe.sent if m and m in text)
