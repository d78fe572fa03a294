"""Every route is scoped to its user: user B against user A's resources, over the HTTP layer.

The requests come from :func:`valux.api.testing.cross_user_plan`, generated from the route
table: a route the plan cannot aim at another user's resource fails the test, so a new
route cannot escape it. Over :class:`~valux.api.testing.FakeBackend` (owners modelled as the
real backend does); ``tests/integration/test_users_scoping.py`` runs the same plan against
the real system.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from valux.api.app import ROUTES
from valux.api.routes import Access, Reply, Route
from valux.api.testing import (
    PARTY_PASSPHRASE,
    FakeBackend,
    Party,
    api_client,
    cross_user_plan,
    leaks,
    sign_in,
)
from valux.api.ws import HUB

Client = TestClient[web.Request, web.Application]


async def _party(client: Client, fake: FakeBackend, name: str) -> Party:
    """A user with one agent, one open position, one signal, an API key and a webhook."""
    tag = uuid.uuid4().hex[:8]
    email = f"{name}-{tag}@example.com"
    user, headers = await sign_in(fake, f"u_{name}_{tag}", email=email)
    agent_id, agent_name = f"{name}-agent-{tag}", f"{name}-name-{tag}"
    r = await client.post(
        "/api/v1/agents",
        json={"id": agent_id, "name": agent_name, "balance": "5"},
        headers=headers,
    )
    assert r.status == 201, await r.text()
    signal_id = f"{name}-signal-{tag}"
    r = await client.post(
        "/api/v1/signals",
        json={"id": signal_id, "token": "TKN", "strength": 3, "type": "t"},
        headers=headers,
    )
    (outcome,) = (await r.json())["outcomes"]
    assert outcome["status"] == "bought", outcome
    key = await (
        await client.post(
            "/api/v1/keys", json={"name": f"{name}-key-{tag}", "scopes": ["read"]}, headers=headers
        )
    ).json()
    hook = await (
        await client.post("/api/v1/webhooks", json={"name": f"{name}-hook-{tag}"}, headers=headers)
    ).json()
    wallet = await (
        await client.post(
            "/api/v1/wallets",
            json={"chain": "solana", "passphrase": PARTY_PASSPHRASE},
            headers=headers,
        )
    ).json()
    return Party(
        wallet_id=wallet["id"],
        wallet_address=wallet["address"],
        user_id=user.id,
        headers=headers,
        email=email,
        agent_id=agent_id,
        agent_name=agent_name,
        position_id=outcome["position_id"],
        signal_id=signal_id,
        key_id=key["id"],
        key_name=key["name"],
        webhook_id=hook["id"],
        webhook_name=hook["name"],
        webhook_secret=hook["secret"],
    )


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Client, FakeBackend, Party, Party]]:
    fake = FakeBackend()
    async with api_client(fake, user=None) as client:
        alice = await _party(client, fake, "alice")
        bob = await _party(client, fake, "bob")
        yield client, fake, alice, bob


async def _snapshot(client: Client, party: Party) -> dict[str, Any]:
    h = party.headers
    return {
        "agent": await (await client.get(f"/api/v1/agents/{party.agent_id}", headers=h)).json(),
        "position": await (
            await client.get(f"/api/v1/positions/{party.position_id}", headers=h)
        ).json(),
        "positions": await (await client.get("/api/v1/positions", headers=h)).json(),
        "signal": await (await client.get(f"/api/v1/signals/{party.signal_id}", headers=h)).json(),
        "keys": await (await client.get("/api/v1/keys", headers=h)).json(),
        "webhooks": await (await client.get("/api/v1/webhooks", headers=h)).json(),
        "wallet": await (
            await client.get(f"/api/v1/agents/{party.agent_id}/wallet", headers=h)
        ).json(),
    }


async def test_user_b_gets_404_or_403_for_every_route_on_user_a_resources(
    setup: tuple[Client, FakeBackend, Party, Party],
) -> None:
    """For every route of the table, Bob's request naming Alice's agent, position, signal,
    API key or webhook is 404 (403 on admin routes, 401 on her webhook), an id-less route
    never shows Alice's content, and afterwards all of Alice's resources are unchanged."""
    client, _, alice, bob = setup
    before = await _snapshot(client, alice)
    probes = cross_user_plan(ROUTES, alice, bob)
    assert {p.route.operation_id for p in probes} == {
        r.operation_id for r in ROUTES if not (r.access is Access.PUBLIC and r.method == "GET")
    }
    problems: list[str] = []
    for probe in probes:
        if probe.websocket:
            continue  # below
        kwargs: dict[str, Any] = {"headers": probe.headers}
        if isinstance(probe.body, bytes):
            kwargs["data"] = probe.body
        elif probe.body is not None:
            kwargs["json"] = probe.body
        r = await client.request(probe.method, probe.path, **kwargs)
        text = await r.text()
        where = f"{probe.method} {probe.path} -> {r.status}"
        if r.status >= 500:
            problems.append(f"{where}: server error {text[:200]}")
        if probe.allowed is not None and r.status not in probe.allowed:
            problems.append(f"{where}: expected {sorted(probe.allowed)}: {text[:200]}")
        leaked = leaks(probe, text, alice)
        if leaked:
            problems.append(f"{where}: shows Alice's {leaked}")
    assert problems == []
    after = await _snapshot(client, alice)
    assert after == before


async def test_websocket_streams_only_the_owners_agent_events(
    setup: tuple[Client, FakeBackend, Party, Party],
) -> None:
    """Bob subscribed to Alice's agent by name receives none of its events; Alice does, and
    Bob still gets his own and the prices (which belong to no one)."""
    client, _, alice, bob = setup
    hub = client.app[HUB]  # type: ignore[index]
    async with (
        client.ws_connect("/ws", headers=alice.headers) as a,
        client.ws_connect("/ws", headers=bob.headers) as b,
    ):
        for ws, agents in ((a, None), (b, [alice.agent_id, bob.agent_id])):
            await ws.send_json({"op": "subscribe", "agents": agents})
            assert (await ws.receive_json(timeout=3))["type"] == "subscribed"
        hub.dispatch("valux:positions", f'{{"agent_id": "{alice.agent_id}", "token": "TKN"}}')
        hub.dispatch("valux:positions", f'{{"agent_id": "{bob.agent_id}", "token": "TKN"}}')
        hub.dispatch("valux:prices", '{"ticks": [{"token": "TKN", "price": 1, "ts": 1}]}')
        got_a = [await a.receive_json(timeout=3) for _ in range(2)]
        got_b = [await b.receive_json(timeout=3) for _ in range(2)]
        with pytest.raises(asyncio.TimeoutError):
            await b.receive_json(timeout=0.3)
    assert {m.get("agent_id") for m in got_a if m["type"] == "position"} == {alice.agent_id}
    assert {m.get("agent_id") for m in got_b if m["type"] == "position"} == {bob.agent_id}
    assert all(alice.agent_id not in str(m) for m in got_b)


async def test_a_route_the_plan_cannot_aim_fails_the_plan() -> None:
    """A new route with a path parameter, or a body, the plan does not know is an error
    (so nobody adds a route the cross-user test silently skips)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()

    party = Party("u", {}, "e", "a", "n", "p", "s", "k", "kn", "w", "wn", "sec")
    new_param = Route("GET", "/api/v1/gadgets/{id}", handler, "getGadget", "s", "t",
                      {200: Reply("x")})  # fmt: skip
    with pytest.raises(LookupError, match="RESOURCE_OF_PATH"):
        cross_user_plan([new_param], party, party)
    from valux.api.models import StateIn

    new_body = Route("POST", "/api/v1/gadgets", handler, "makeGadget", "s", "t",
                     {200: Reply("x")}, body=StateIn)  # fmt: skip
    with pytest.raises(LookupError, match="example body"):
        cross_user_plan([new_body], party, party)


async def test_user_state_route_touches_only_the_callers_agents(
    setup: tuple[Client, FakeBackend, Party, Party],
) -> None:
    """POST /api/v1/risk/user-state HALTs every agent of the caller and none of another's."""
    client, fake, alice, bob = setup
    r = await client.post(
        "/api/v1/risk/user-state", json={"state": "HALTED", "reason": "me"}, headers=bob.headers
    )
    assert r.status == 200
    body = await r.json()
    assert body["agents"] == [bob.agent_id] and body["failed"] == []
    assert fake.agents[bob.agent_id]["trading_state"] == "HALTED"
    assert "trading_state" not in fake.agents[alice.agent_id]


async def test_signal_ids_are_per_user(setup: tuple[Client, FakeBackend, Party, Party]) -> None:
    """Bob may use the id Alice used: his signal is his own (not a duplicate of hers), and
    reading it back shows only his outcome."""
    client, _, alice, bob = setup
    r = await client.post(
        "/api/v1/signals",
        json={"id": alice.signal_id, "token": "TKN", "strength": 3, "type": "t"},
        headers=bob.headers,
    )
    assert r.status == 201
    body = await r.json()
    assert body["duplicate"] is False
    assert [o["agent_id"] for o in body["outcomes"]] == [bob.agent_id]
