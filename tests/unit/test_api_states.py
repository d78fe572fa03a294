"""HTTP layer: trading-state routes, and answers a client can act on while actors restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from ray.exceptions import ActorUnavailableError

from valux.api.models import SignalIn
from valux.api.testing import TEST_ADMIN, FakeBackend, api_client

Client = TestClient[web.Request, web.Application]
SIGNAL = {"id": "sig-1", "token": "BONK", "strength": 3, "type": "Velocity"}


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[Client]:
    async with api_client(fake) as c:
        await c.post("/api/v1/agents", json={"name": "a", "id": "a1", "balance": "10"})
        yield c


async def test_agent_state_route_sets_the_state(client: Client, fake: FakeBackend) -> None:
    r = await client.post("/api/v1/agents/a1/state", json={"state": "HALTED", "reason": "x"})
    assert r.status == 200 and (await r.json())["trading_state"] == "HALTED"
    assert fake.calls[-1] == ("set_agent_state", {"agent_id": "a1", "state": "HALTED",
                                                  "reason": "x", "owner": TEST_ADMIN})  # fmt: skip


async def test_an_unknown_state_is_a_400_naming_the_field(client: Client) -> None:
    r = await client.post("/api/v1/agents/a1/state", json={"state": "PAUSED"})
    assert r.status == 400
    assert (await r.json())["error"]["errors"][0]["field"] == "state"


async def test_global_state_round_trip(client: Client) -> None:
    r = await client.post("/api/v1/risk/state", json={"state": "HALTED", "reason": "kill"})
    assert r.status == 200 and (await r.json())["state"] == "HALTED"
    got = await (await client.get("/api/v1/risk/state")).json()
    assert got == {"state": "HALTED", "reason": "kill"}


async def test_state_change_on_get_is_not_allowed(client: Client) -> None:
    """No state change on GET: the state routes are POST only."""
    r = await client.get("/api/v1/agents/a1/state")
    assert r.status == 405


def _answer(fake: FakeBackend, outcomes: list[dict[str, Any]]) -> None:
    async def post_signal(signal: SignalIn, *, owner: str | None = None) -> dict[str, Any]:
        return {"signal_id": signal.id, "duplicate": False, "outcomes": outcomes}

    fake.post_signal = post_signal  # type: ignore[method-assign]


async def test_an_agent_that_could_not_decide_makes_a_503_with_retry_after(
    client: Client, fake: FakeBackend
) -> None:
    """``refused`` (an actor restarting): 503, ``Retry-After``, the reason, and the outcomes
    so far; never a bare 500."""
    _answer(fake, [{"agent_id": "a1", "status": "bought", "final": True},
                   {"agent_id": "b1", "status": "refused", "final": False,
                    "reason": "entry refused: agent host 1 unavailable"}])  # fmt: skip
    r = await client.post("/api/v1/signals", json=SIGNAL)
    assert r.status == 503 and r.headers["Retry-After"] == "2"
    body = await r.json()
    assert "agent host 1 unavailable" in body["error"]["message"]
    assert len(body["outcomes"]) == 2


async def test_a_buy_in_flight_makes_a_202_pointing_at_the_signal(
    client: Client, fake: FakeBackend
) -> None:
    _answer(fake, [{"agent_id": "a1", "status": "pending", "final": False}])
    r = await client.post("/api/v1/signals", json=SIGNAL)
    assert r.status == 202 and r.headers["Location"] == "/api/v1/signals/sig-1"


async def test_an_actor_restarting_anywhere_is_a_503_with_retry_after(
    client: Client, fake: FakeBackend
) -> None:
    """ActorUnavailableError escaping a backend call is a 503 the client can act on."""
    fake.fail["list_agents"] = ActorUnavailableError("restarting", b"\x00" * 16)
    r = await client.get("/api/v1/agents")
    assert r.status == 503 and r.headers["Retry-After"] == "2"
    assert "restarting" in (await r.json())["error"]["message"]
