"""HTTP layer: signals, positions, trades, prices and the manual feed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from valux.api.models import SignalIn
from valux.api.testing import TEST_ADMIN, FakeBackend, api_client
from valux.errors import Unavailable
from valux.feeds.ticks import Tick

Client = TestClient[web.Request, web.Application]

SIGNAL = {"id": "sig-1", "token": "BONK", "strength": 3, "type": "Velocity"}


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[Client]:
    async with api_client(fake) as c:
        await c.post("/api/v1/agents", json={"name": "a", "id": "a1", "balance": "10"})
        await c.post("/api/v1/agents", json={"name": "b", "id": "b1", "balance": "10"})
        yield c


def fields(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in body["error"]["errors"]}


async def test_signal_first_time_201_then_duplicate_200(client: Client) -> None:
    """A new signal id is 201; the same id again is 200 with ``duplicate: true`` and the
    first result."""
    r1 = await client.post("/api/v1/signals", json=SIGNAL)
    assert r1.status == 201
    first = await r1.json()
    assert first["duplicate"] is False
    assert {o["status"] for o in first["outcomes"]} == {"bought"}

    r2 = await client.post("/api/v1/signals", json=SIGNAL)
    assert r2.status == 200
    second = await r2.json()
    assert second["duplicate"] is True
    assert second["outcomes"] == first["outcomes"]


async def test_signal_reaches_backend_as_typed_model(client: Client, fake: FakeBackend) -> None:
    """The backend receives a frozen SignalIn with Decimal size/metrics and the agent filter."""
    body = {
        **SIGNAL,
        "size": 0.25,
        "metrics": {"market_cap": "1000000.5", "liquidity": 5000, "holder_count": 42},
        "agents": ["a1"],
        "user": "u1",
    }
    r = await client.post("/api/v1/signals", json=body)
    assert r.status == 201
    signal = fake.calls[-1][1]["signal"]
    assert isinstance(signal, SignalIn)
    assert signal.size == Decimal("0.25")
    assert signal.metrics is not None
    assert signal.metrics.market_cap == Decimal("1000000.5")
    assert signal.metrics.holder_count == 42
    assert signal.agents == ["a1"] and signal.user == "u1"
    assert [o["agent_id"] for o in (await r.json())["outcomes"]] == ["a1"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "a/b"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"token": ""}, "token"),
        ({"token": "x" * 65}, "token"),
        ({"strength": 0}, "strength"),
        ({"strength": 6}, "strength"),
        ({"strength": "3"}, "strength"),
        ({"strength": 3.5}, "strength"),
        ({"type": ""}, "type"),
        ({"type": "t" * 51}, "type"),
        ({"size": "0"}, "size"),
        ({"size": "-1"}, "size"),
        ({"metrics": {"market_cap": "-1"}}, "metrics.market_cap"),
        ({"metrics": {"holder_count": 1.5}}, "metrics.holder_count"),
        ({"metrics": {"volume": 1}}, "metrics.volume"),
        ({"agents": []}, "agents"),
        ({"agents": ["ok", "not ok"]}, "agents[1]"),
        ({"user": ""}, "user"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_signal_validation_names_the_field(
    client: Client, patch: dict[str, Any], field: str
) -> None:
    """Every SignalIn rule (id alphabet/length, token 1–64, strength int 1–5, type 1–50,
    size > 0, metrics, agents, user, no unknown fields) gives 400 naming the field."""
    body = {k: v for k, v in {**SIGNAL, **patch}.items() if v is not None}
    r = await client.post("/api/v1/signals", json=body)
    assert r.status == 400, await r.text()
    assert field in fields(await r.json())


async def test_signal_missing_fields_are_all_reported(client: Client) -> None:
    """An empty signal names every required field at once."""
    r = await client.post("/api/v1/signals", json={})
    assert r.status == 400
    assert set(fields(await r.json())) == {"id", "token", "strength", "type"}


async def test_get_signal(client: Client) -> None:
    """GET /signals/{id} returns the stored result; an unknown id is 404."""
    await client.post("/api/v1/signals", json=SIGNAL)
    r = await client.get("/api/v1/signals/sig-1")
    assert r.status == 200 and (await r.json())["signal_id"] == "sig-1"
    assert (await client.get("/api/v1/signals/other")).status == 404


async def test_list_positions_with_filters(client: Client, fake: FakeBackend) -> None:
    """GET /positions passes agent/status/limit/offset (typed) to the backend."""
    await client.post("/api/v1/signals", json=SIGNAL)
    r = await client.get("/api/v1/positions")
    assert r.status == 200 and len(await r.json()) == 2
    assert fake.calls[-1][1] == {"agent_id": None, "status": None, "limit": 100, "offset": 0,
                                 "owner": TEST_ADMIN}  # fmt: skip

    r = await client.get("/api/v1/positions?agent=a1&status=open&limit=5&offset=0")
    assert r.status == 200
    rows = await r.json()
    assert [p["agent_id"] for p in rows] == ["a1"]
    assert fake.calls[-1][1] == {"agent_id": "a1", "status": "open", "limit": 5, "offset": 0,
                                 "owner": TEST_ADMIN}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=pending", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("agent=bad%20id", "agent"),
        ("agent=a&agent=b", "agent"),
        ("sort=asc", "sort"),
    ],
)
async def test_list_positions_query_validation(client: Client, query: str, field: str) -> None:
    """Bad, repeated or unknown query parameters give 400 naming the parameter."""
    r = await client.get(f"/api/v1/positions?{query}")
    assert r.status == 400
    assert field in fields(await r.json())


async def test_get_and_close_position(client: Client) -> None:
    """GET a position, close it (200), close again (409 CONFLICT), unknown id (404)."""
    result = await (await client.post("/api/v1/signals", json=SIGNAL)).json()
    pid = result["outcomes"][0]["position_id"]
    r = await client.get(f"/api/v1/positions/{pid}")
    assert r.status == 200 and (await r.json())["status"] == "open"
    r = await client.post(f"/api/v1/positions/{pid}/close")
    assert r.status == 200 and (await r.json())["status"] == "closed"
    r = await client.post(f"/api/v1/positions/{pid}/close")
    assert r.status == 409 and (await r.json())["error"]["code"] == "CONFLICT"
    assert (await client.get("/api/v1/positions/nope")).status == 404
    assert (await client.post("/api/v1/positions/nope/close")).status == 404


async def test_list_trades(client: Client, fake: FakeBackend) -> None:
    """GET /trades filters by agent with limit/offset; bad limit is 400."""
    await client.post("/api/v1/signals", json=SIGNAL)
    r = await client.get("/api/v1/trades?agent=b1&limit=10&offset=0")
    assert r.status == 200
    assert [t["agent_id"] for t in await r.json()] == ["b1"]
    assert fake.calls[-1][1] == {"agent_id": "b1", "limit": 10, "offset": 0, "owner": TEST_ADMIN}
    r = await client.get("/api/v1/trades?limit=-3")
    assert r.status == 400 and "limit" in fields(await r.json())


async def test_prices(client: Client) -> None:
    """GET /prices returns the backend's latest prices."""
    r = await client.get("/api/v1/prices")
    assert r.status == 200 and await r.json() == {"prices": {}}


async def test_manual_ticks_accepted_202(client: Client, fake: FakeBackend) -> None:
    """POST manual ticks → 202 {"accepted": n}; the backend gets Tick objects, ts defaulted
    to now, and a ts far in the past clamped to now − 5 s (the skew allowed)."""
    r = await client.post(
        "/api/v1/feeds/manual/ticks",
        json={
            "ticks": [{"token": "BONK", "price": "0.000021"}, {"token": "X", "price": 2, "ts": 5}]
        },
    )
    assert r.status == 202
    assert await r.json() == {"accepted": 2}
    ticks = fake.calls[-1][1]["ticks"]
    assert all(isinstance(t, Tick) for t in ticks)
    assert ticks[0].price == 0.000021 and ticks[0].ts > 1e9
    assert (ticks[1].token, ticks[1].price) == ("X", 2.0)
    assert abs(ticks[1].ts - (ticks[0].ts - 5.0)) < 1.0


async def test_manual_tick_timestamps_are_clamped_to_now_plus_minus_the_skew(
    client: Client, fake: FakeBackend
) -> None:
    """A caller cannot move the rules' clock: a ts an hour ahead or behind lands at now ± 5 s,
    one inside the skew is kept as sent."""
    now = time.time()
    r = await client.post(
        "/api/v1/feeds/manual/ticks",
        json={"ticks": [{"token": "A", "price": 1, "ts": now + 3600},
                        {"token": "B", "price": 1, "ts": now - 3600},
                        {"token": "C", "price": 1, "ts": now - 2}]},
    )  # fmt: skip
    assert r.status == 202
    a, b, c = fake.calls[-1][1]["ticks"]
    assert now + 4 < a.ts <= now + 6
    assert now - 6 <= b.ts < now - 4
    assert c.ts == now - 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "ticks"),
        ({"ticks": []}, "ticks"),
        ({"ticks": [{"price": 1}]}, "ticks[0].token"),
        ({"ticks": [{"token": "A", "price": 0}]}, "ticks[0].price"),
        ({"ticks": [{"token": "A", "price": 1}, {"token": "B", "price": "x"}]}, "ticks[1].price"),
        ({"ticks": [{"token": "A", "price": 1, "ts": -1}]}, "ticks[0].ts"),
        ({"ticks": [{"token": "A", "price": 1, "ts": 1.7e12}]}, "ticks[0].ts"),
    ],
)
async def test_manual_ticks_validation(client: Client, body: dict[str, Any], field: str) -> None:
    """Bad ticks give 400 naming ``ticks[i].field`` (milliseconds timestamps included)."""
    r = await client.post("/api/v1/feeds/manual/ticks", json=body)
    assert r.status == 400
    assert field in fields(await r.json())


async def test_manual_ticks_disabled_is_404_with_how_to_enable(fake: FakeBackend) -> None:
    """With the manual feed disabled the route answers 404 saying which setting enables it."""
    fake.manual_feed_enabled = False
    async with api_client(fake) as client:
        r = await client.post(
            "/api/v1/feeds/manual/ticks", json={"ticks": [{"token": "A", "price": 1}]}
        )
        assert r.status == 404
        error = (await r.json())["error"]
        assert error["code"] == "MANUAL_FEED_DISABLED"
        assert "feeds.manual.enabled" in error["message"]
        assert "VALUX_FEEDS__MANUAL__ENABLED=true" in error["message"]
    assert not [c for c in fake.calls if c[0] == "push_manual_ticks"]


async def test_backend_unavailable_is_503(client: Client, fake: FakeBackend) -> None:
    """The backend's Unavailable (e.g. an agent host down) becomes 503 UNAVAILABLE."""
    fake.fail["post_signal"] = Unavailable("agent host 3 is restarting")
    r = await client.post("/api/v1/signals", json=SIGNAL)
    assert r.status == 503
    error = (await r.json())["error"]
    assert error == {
        "code": "UNAVAILABLE",
        "message": "agent host 3 is restarting",
        "request_id": r.headers["X-Request-Id"],
    }
