"""HTTP layer: live wallets (``/api/v1/wallets...``) against the in-memory backend, which
keeps keys with the real custody code (records, vault, backoff)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from solders.keypair import Keypair

from valux.api.testing import FakeBackend, api_client, sign_in

Client = TestClient[web.Request, web.Application]
PASS = "a long passphrase"


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[Client]:
    async with api_client(fake) as c:
        yield c


async def create(client: Client, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/wallets", json={"chain": "solana", "passphrase": PASS, **body})
    assert r.status == 201, await r.text()
    answer: dict[str, Any] = await r.json()
    assert r.headers["Location"] == f"/api/v1/wallets/{answer['id']}"
    return answer


async def test_create_answers_address_and_locked_and_never_the_key(client: Client) -> None:
    keypair = Keypair()
    wallet = await create(client, secret=str(keypair))
    assert wallet["address"] == str(keypair.pubkey())
    assert wallet["locked"] is True and wallet["chain"] == "solana"
    text = json.dumps(wallet) + json.dumps(await (await client.get("/api/v1/wallets")).json())
    assert str(keypair) not in text and bytes(keypair).hex() not in text
    again = await client.post(
        "/api/v1/wallets", json={"chain": "solana", "passphrase": PASS, "secret": str(keypair)}
    )
    assert again.status == 409  # one wallet per address


async def test_bad_inputs_are_400_naming_the_field(client: Client) -> None:
    r = await client.post("/api/v1/wallets", json={"chain": "solana", "passphrase": "short"})
    assert r.status == 400 and "passphrase" in await r.text()
    r = await client.post(
        "/api/v1/wallets", json={"chain": "solana", "passphrase": PASS, "secret": "not-a-key"}
    )
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "INVALID_SECRET"
    r = await client.post("/api/v1/wallets", json={"chain": "bitcoin", "passphrase": PASS})
    assert r.status == 400


async def test_wrong_passphrase_is_403_then_backoff_is_429_with_retry_after(
    client: Client,
) -> None:
    wallet = await create(client)
    url = f"/api/v1/wallets/{wallet['id']}/unlock"
    codes = []
    for _ in range(4):
        r = await client.post(url, json={"passphrase": "wrong passphrase"})
        codes.append((r.status, (await r.json())["error"]["code"]))
    assert codes[0] == (403, "WRONG_PASSPHRASE")
    assert codes[-1] == (429, "UNLOCK_BACKOFF")
    assert int(r.headers["Retry-After"]) >= 1


async def test_unlock_lock_policy_export_delete(client: Client) -> None:
    keypair = Keypair()
    wallet = await create(client, secret=str(keypair))
    base = f"/api/v1/wallets/{wallet['id']}"
    r = await client.post(base + "/unlock", json={"passphrase": PASS, "ttl_s": 60})
    assert r.status == 200 and (await r.json())["key"]["state"] == "unlocked"
    r = await client.post(base + "/lock")
    assert r.status == 200 and (await r.json())["key"]["state"] == "locked"
    r = await client.put(base + "/policy", json={"max_per_order": "1", "max_per_day": None})
    assert r.status == 200 and (await r.json())["policy"]["max_per_order"] == "1"
    r = await client.put(base + "/policy", json={"max_per_order": "-1", "max_per_day": None})
    assert r.status == 400
    r = await client.post(base + "/export", json={"passphrase": PASS})
    assert r.status == 400  # confirm is required
    r = await client.post(base + "/export", json={"passphrase": PASS, "confirm": True})
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert Keypair.from_base58_string((await r.json())["secret"]) == keypair
    assert (await client.delete(base)).status == 200
    assert (await client.get(base)).status == 404


async def test_another_users_wallet_is_404(client: Client, fake: FakeBackend) -> None:
    wallet = await create(client)
    _, headers = await sign_in(fake, "other@example.com")
    base = f"/api/v1/wallets/{wallet['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("POST", base + "/unlock", {"passphrase": PASS}),
        ("POST", base + "/export", {"passphrase": PASS, "confirm": True}),
        ("DELETE", base, None),
    ]:
        r = await client.request(method, path, json=body, headers=headers)
        assert r.status == 404, (method, path, r.status)
    listed = await client.get("/api/v1/wallets", headers=headers)
    assert await listed.json() == []


async def test_a_live_agent_needs_its_wallet_and_no_paper_balance(
    client: Client, fake: FakeBackend
) -> None:
    r = await client.post("/api/v1/agents", json={"name": "x", "venue": "jupiter"})
    assert r.status == 400
    r = await client.post(
        "/api/v1/agents",
        json={"name": "x", "venue": "jupiter", "wallet_id": "w-1", "balance": "5"},
    )
    assert r.status == 400
    r = await client.post(
        "/api/v1/agents", json={"name": "x", "venue": "jupiter", "wallet_id": "w-1"}
    )
    assert r.status == 201
    _, kwargs = fake.calls[-1]
    assert (kwargs["venue"], kwargs["wallet_id"]) == ("jupiter", "w-1")
