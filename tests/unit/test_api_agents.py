"""HTTP layer: agents and wallets (``/api/v1/agents...``) against an in-memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from valux.api.testing import TEST_ADMIN, FakeBackend, api_client

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[Client]:
    async with api_client(fake) as c:
        yield c


def fields(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in body["error"]["errors"]}


async def test_create_agent_returns_201_with_location_and_passes_decimal_balance(
    client: Client, fake: FakeBackend
) -> None:
    """POST /agents → 201 with a Location header; the balance reaches the backend as an
    exact Decimal."""
    r = await client.post(
        "/api/v1/agents",
        json={"name": " alpha ", "balance": "10.000000001", "id": "a-1", "config": {"x": 1}},
    )
    assert r.status == 201
    assert r.headers["Location"] == "/api/v1/agents/a-1"
    body = await r.json()
    assert body["id"] == "a-1" and body["name"] == "alpha"
    _, kwargs = fake.calls[-1]
    assert kwargs["balance"] == Decimal("10.000000001")
    assert kwargs["config"] == {"x": 1}


async def test_create_agent_number_balance_is_not_rounded_through_float(
    client: Client, fake: FakeBackend
) -> None:
    """A JSON *number* balance is parsed as Decimal, so 0.1 stays exactly 0.1."""
    r = await client.post(
        "/api/v1/agents",
        data='{"name": "n", "balance": 0.10000000000000000001}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 201
    assert fake.calls[-1][1]["balance"] == Decimal("0.10000000000000000001")


async def test_create_agent_defaults(client: Client, fake: FakeBackend) -> None:
    """Balance defaults to 0, config and id to None (the backend generates the id)."""
    r = await client.post("/api/v1/agents", json={"name": "b"})
    assert r.status == 201
    kwargs = fake.calls[-1][1]
    assert kwargs == {"name": "b", "config": None, "balance": Decimal(0), "agent_id": None,
                      "owner": TEST_ADMIN, "venue": "paper", "wallet_id": None}  # fmt: skip


async def test_create_agent_passes_camelcase_config_through(
    client: Client, fake: FakeBackend
) -> None:
    """A reference-shaped camelCase config is handed to the backend untouched (it validates)."""
    config = {"stopLoss": {"enabled": True, "defaultPercentage": -32.5}, "signals": {"minScore": 2}}
    r = await client.post("/api/v1/agents", json={"name": "c", "config": config})
    assert r.status == 201
    passed = fake.calls[-1][1]["config"]
    assert passed["signals"]["minScore"] == 2
    assert passed["stopLoss"]["defaultPercentage"] == Decimal("-32.5")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "a", "balance": "-1"}, "balance"),
        ({"name": "a", "balance": "abc"}, "balance"),
        ({"name": "a", "balance": True}, "balance"),
        ({"name": "a", "balance": "NaN"}, "balance"),
        ({"name": "a", "balance": "1e400"}, "balance"),
        ({"name": "a", "config": [1]}, "config"),
        ({"name": "a", "id": "has space"}, "id"),
        ({"name": "a", "id": "x" * 129}, "id"),
        ({"name": "a", "nickname": "z"}, "nickname"),
    ],
)
async def test_create_agent_validation_names_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    """Each invalid create-agent field gives 400 INVALID_REQUEST naming that field."""
    r = await client.post("/api/v1/agents", json=body)
    assert r.status == 400
    out = await r.json()
    assert out["error"]["code"] == "INVALID_REQUEST"
    assert field in fields(out)


async def test_create_agent_body_must_be_an_object(client: Client) -> None:
    """A JSON array body is a 400 on the field ``body``."""
    r = await client.post("/api/v1/agents", json=[{"name": "a"}])
    assert r.status == 400
    assert "body" in fields(await r.json())


async def test_create_agent_conflict_is_409(client: Client) -> None:
    """The backend's Conflict (id taken) is a 409 CONFLICT."""
    assert (await client.post("/api/v1/agents", json={"name": "a", "id": "dup"})).status == 201
    r = await client.post("/api/v1/agents", json={"name": "a", "id": "dup"})
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "CONFLICT"


async def test_list_get_patch_delete_agent(client: Client, fake: FakeBackend) -> None:
    """GET list, GET one, PATCH name+config patch, DELETE: each 200 with the backend's JSON."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1", "config": {"s": {"k": 1}}})
    r = await client.get("/api/v1/agents")
    assert r.status == 200
    assert [a["id"] for a in await r.json()] == ["a1"]

    r = await client.get("/api/v1/agents/a1")
    assert r.status == 200 and (await r.json())["name"] == "a"

    r = await client.patch("/api/v1/agents/a1", json={"name": "b", "config": {"s": {"j": 2}}})
    assert r.status == 200
    body = await r.json()
    assert body["name"] == "b" and body["config"] == {"s": {"k": 1, "j": 2}}
    assert fake.calls[-1] == (
        "update_agent",
        {"agent_id": "a1", "name": "b", "config_patch": {"s": {"j": 2}}, "owner": TEST_ADMIN},
    )

    r = await client.delete("/api/v1/agents/a1")
    assert r.status == 200
    assert (await client.get("/api/v1/agents/a1")).status == 404


async def test_patch_config_only_leaves_name_none(client: Client, fake: FakeBackend) -> None:
    """PATCH with only ``config`` passes ``name=None`` (not renamed)."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1"})
    r = await client.patch("/api/v1/agents/a1", json={"config": {"dca": {"enabled": False}}})
    assert r.status == 200
    assert fake.calls[-1][1]["name"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "body"), ({"name": ""}, "name"), ({"config": "x"}, "config"), ({"id": "z"}, "id")],
)
async def test_patch_agent_validation(client: Client, body: dict[str, Any], field: str) -> None:
    """PATCH needs at least one of name/config; bad or unknown fields are named."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1"})
    r = await client.patch("/api/v1/agents/a1", json=body)
    assert r.status == 400
    assert field in fields(await r.json())


async def test_unknown_agent_is_404(client: Client) -> None:
    """The backend's NotFound becomes 404 NOT_FOUND on every per-agent route."""
    for method, path in [
        ("GET", "/api/v1/agents/nope"),
        ("DELETE", "/api/v1/agents/nope"),
        ("POST", "/api/v1/agents/nope/pause"),
        ("POST", "/api/v1/agents/nope/resume"),
        ("GET", "/api/v1/agents/nope/wallet"),
    ]:
        r = await client.request(method, path)
        assert r.status == 404, path
        assert (await r.json())["error"]["code"] == "NOT_FOUND"


async def test_invalid_path_id_is_400(client: Client) -> None:
    """A path id outside the id alphabet is refused with 400 on field ``id``."""
    r = await client.get("/api/v1/agents/bad%20id")
    assert r.status == 400
    assert "id" in fields(await r.json())


async def test_delete_agent_with_open_positions_is_409(client: Client) -> None:
    """Deleting an agent that holds open positions is a 409 from the backend's Conflict."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1", "balance": "5"})
    await client.post("/api/v1/signals", json={"id": "s", "token": "T", "strength": 3, "type": "t"})
    r = await client.delete("/api/v1/agents/a1")
    assert r.status == 409


async def test_pause_and_resume(client: Client) -> None:
    """POST pause/resume return the agent with its paused flag flipped (no body needed)."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1"})
    r = await client.post("/api/v1/agents/a1/pause")
    assert r.status == 200 and (await r.json())["paused"] is True
    r = await client.post("/api/v1/agents/a1/resume")
    assert r.status == 200 and (await r.json())["paused"] is False


async def test_wallet_and_deposit(client: Client, fake: FakeBackend) -> None:
    """GET wallet and POST deposit: amount as string or number, asset defaulting to SOL."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1", "balance": "1"})
    r = await client.get("/api/v1/agents/a1/wallet")
    assert r.status == 200 and (await r.json())["balances"] == {"SOL": "1"}

    r = await client.post("/api/v1/agents/a1/wallet/deposit", json={"amount": "2.5"})
    assert r.status == 200 and (await r.json())["balances"] == {"SOL": "3.5"}
    assert fake.calls[-1][1] == {"agent_id": "a1", "asset": "SOL", "amount": Decimal("2.5"),
                                 "owner": TEST_ADMIN}  # fmt: skip

    r = await client.post(
        "/api/v1/agents/a1/wallet/deposit",
        data='{"amount": 0.3, "asset": "USDC"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 200
    assert fake.calls[-1][1]["amount"] == Decimal("0.3")
    assert (await r.json())["balances"]["USDC"] == "0.3"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": "ten"}, "amount"),
        ({"amount": "1", "asset": ""}, "asset"),
        ({"amount": "1", "asset": "S O L"}, "asset"),
        ({"amount": "1", "memo": "x"}, "memo"),
    ],
)
async def test_deposit_validation(client: Client, body: dict[str, Any], field: str) -> None:
    """Deposit amount must be a Decimal > 0 and asset a short symbol; errors name the field."""
    await client.post("/api/v1/agents", json={"name": "a", "id": "a1"})
    r = await client.post("/api/v1/agents/a1/wallet/deposit", json=body)
    assert r.status == 400
    assert field in fields(await r.json())
