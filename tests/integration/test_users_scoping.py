"""Every route is scoped to its user, on the real system (Ray, PostgreSQL, Redis).

The same plan as the HTTP-layer test (:func:`valux.api.testing.cross_user_plan`, generated
from the route table) against RayBackend: user B's requests naming user A's agent,
position, signal, API key or webhook are 404 (403 on admin routes, 401 on A's webhook), no
answer shows A's content, and A's resources are unchanged afterwards. The WebSocket only
streams a user's own agents' events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp

from tests.integration.helpers import Api
from valux.api.app import ROUTES
from valux.api.routes import Access
from valux.api.testing import PARTY_PASSPHRASE, Party, cross_user_plan, leaks

HOLD = {
    "stop_loss": {"enabled": True, "default_percentage": -50, "mode": "fixed"},
    "take_profit": {"enabled": False},
    "stale_trade": {"enabled": False},
}


async def make_party(port: int, name: str, token: str) -> tuple[Party, Api]:
    """A registered user with an agent holding an open position in ``token``, a signal, an
    API key and a webhook (names recognisable in any answer)."""
    async with Api(port, login=False) as anon:
        session = await anon.register(f"{name}-{uuid.uuid4().hex[:8]}@example.com")
    api = Api(port, token=session.access_token)
    await api.__aenter__()
    me = await api.get("/api/v1/auth/me")
    tag = uuid.uuid4().hex[:8]
    agent_id, agent_name = f"{name}-agent-{tag}", f"{name}-name-{tag}"
    body = {"id": agent_id, "name": agent_name, "balance": "5", "config": HOLD}
    await api.post("/api/v1/agents", body, 201)
    signal_id = f"{name}-signal-{tag}"
    answer = await api.post(
        "/api/v1/signals",
        {"id": signal_id, "token": token, "strength": 5, "type": "buy", "size": "1",
         "agents": [agent_id]},
        201,
    )  # fmt: skip
    (outcome,) = answer["outcomes"]
    assert outcome["status"] == "bought", outcome
    key = await api.post("/api/v1/keys", {"name": f"{name}-key-{tag}", "scopes": ["read"]}, 201)
    hook = await api.post("/api/v1/webhooks", {"name": f"{name}-hook-{tag}"}, 201)
    wallet = await api.post(
        "/api/v1/wallets", {"chain": "solana", "passphrase": PARTY_PASSPHRASE}, 201
    )
    party = Party(
        wallet_id=wallet["id"],
        wallet_address=wallet["address"],
        user_id=me["id"],
        headers=api.auth_headers,
        email=me["email"],
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
    return party, api


async def snapshot(api: Api, party: Party) -> dict[str, Any]:
    position = await api.get(f"/api/v1/positions/{party.position_id}")
    agent = await api.get(f"/api/v1/agents/{party.agent_id}")
    return {
        "position": {k: position[k] for k in ("status", "remaining", "agent_id")},
        "agent": {k: agent.get(k) for k in ("name", "trading_state", "status")},
        "signal": await api.get(f"/api/v1/signals/{party.signal_id}"),
        "keys": await api.get("/api/v1/keys"),
        "webhooks": await api.get("/api/v1/webhooks"),
        "wallet": await api.get(f"/api/v1/agents/{party.agent_id}/wallet"),
    }


async def test_user_b_gets_404_or_403_for_every_route_on_user_a_resources(
    runtime: Any,
) -> None:
    """The route table's cross-user plan against RayBackend: nothing of A's is reachable or
    shown to B, and A's position, agent, signal, keys, webhooks and wallet are unchanged."""
    token = f"XU{uuid.uuid4().hex[:6]}"
    async with Api(runtime.port) as admin:
        await admin.ticks([(token, 1.0)])
    alice, alice_api = await make_party(runtime.port, "alice", token)
    bob, bob_api = await make_party(runtime.port, "bob", token)
    try:
        before = await snapshot(alice_api, alice)
        problems: list[str] = []
        async with aiohttp.ClientSession() as http:
            for probe in cross_user_plan(ROUTES, alice, bob):
                if probe.websocket:
                    continue
                kwargs: dict[str, Any] = {"headers": probe.headers}
                if isinstance(probe.body, bytes):
                    kwargs["data"] = probe.body
                elif probe.body is not None:
                    kwargs["json"] = probe.body
                async with http.request(
                    probe.method, f"http://127.0.0.1:{runtime.port}{probe.path}", **kwargs
                ) as r:
                    status, text = r.status, await r.text()
                where = f"{probe.method} {probe.path} -> {status}"
                if status >= 500:
                    problems.append(f"{where}: {text[:300]}")
                if probe.allowed is not None and status not in probe.allowed:
                    problems.append(f"{where}: expected {sorted(probe.allowed)}: {text[:300]}")
                leaked = leaks(probe, text, alice)
                if leaked:
                    problems.append(f"{where}: shows {leaked}")
        assert problems == []
        assert await snapshot(alice_api, alice) == before
        assert {r.operation_id for r in ROUTES if r.access is Access.ADMIN}  # some were probed
    finally:
        await alice_api.__aexit__(None, None, None)
        await bob_api.__aexit__(None, None, None)


async def test_websocket_streams_only_the_users_own_agents(runtime: Any) -> None:
    """Bob's socket, subscribed to Alice's agent by id, receives no event of hers while Alice's
    socket receives her buy; Bob's own buy reaches him."""
    token = f"WU{uuid.uuid4().hex[:6]}"
    fresh = f"WV{uuid.uuid4().hex[:6]}"  # make_party holds ``token``: the watched buys are here
    async with Api(runtime.port) as admin:
        await admin.ticks([(token, 1.0), (fresh, 1.0)])
    alice, alice_api = await make_party(runtime.port, "alice", token)
    bob, bob_api = await make_party(runtime.port, "bob", token)
    url = f"http://127.0.0.1:{runtime.port}/ws"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, headers=alice.headers) as a,
            http.ws_connect(
                url, protocols=("valux", "bearer." + bob.headers["Authorization"][7:])
            ) as b,
        ):
            for ws, agents in ((a, [alice.agent_id]), (b, [alice.agent_id, bob.agent_id])):
                await ws.send_json({"op": "subscribe", "agents": agents, "types": ["position"]})
                assert (await ws.receive_json(timeout=5))["type"] == "subscribed"
            await asyncio.sleep(0.3)
            for api, party in ((alice_api, alice), (bob_api, bob)):
                await api.post(
                    "/api/v1/signals",
                    {"id": f"ws-{uuid.uuid4().hex}", "token": fresh, "strength": 5,
                     "type": "buy", "size": "1", "agents": [party.agent_id]},
                    201,
                )  # fmt: skip
            seen_a = await _events(a, alice.agent_id)
            seen_b = await _events(b, bob.agent_id)
        assert alice.agent_id in seen_a
        assert seen_b == {bob.agent_id}
    finally:
        await alice_api.__aexit__(None, None, None)
        await bob_api.__aexit__(None, None, None)


async def _events(ws: aiohttp.ClientWebSocketResponse, want: str) -> set[str]:
    """Agent ids of the position events received until ``want``'s arrives (and 1 s more)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    quiet_until: float | None = None
    while time.monotonic() < (quiet_until or deadline):
        try:
            message = await ws.receive_json(timeout=0.5)
        except TimeoutError:
            continue
        if message.get("type") == "position":
            seen.add(message["agent_id"])
            if message["agent_id"] == want and quiet_until is None:
                quiet_until = time.monotonic() + 1.0
    return seen
