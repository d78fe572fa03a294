"""Live trading on Solana, end to end, as a user does it: ``valux sandbox`` (a real SVM,
Jupiter-shaped swaps and prices) in a process of its own, valux on Ray pointed at it by
settings, and every step through the public API.

Create a wallet, fund it from the faucet (the chain audit books the deposit), create a
live agent on it, see a locked wallet refuse the entry, unlock, buy (the outcome names the
landed transaction), see the books equal the chain, SIGKILL the agent host with the
position open (the key is gone: readiness names the position as unprotected), unlock
again, move the pool down and watch the stop sell it through the Jupiter price feed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.signature import Signature

from tests.integration.helpers import Api, wait_for
from tests.integration.live_support import control, own_system, sandbox_process
from tests.integration.test_users_secrets import _files_containing, _ray_log_dir
from valux.hosting.handles import agent_host_handle
from valux.system.runtime import Runtime
from valux.venues.jupiter import SolanaRpc, read_holdings

PASSPHRASE = "sandbox wallet passphrase"
STOP = {
    "stopLoss": {"enabled": True, "mode": "fixed", "defaultPercentage": -20},
    "takeProfit": {"enabled": False},
    "staleTrade": {"enabled": False},
    "positionCalculator": {"randomization": {"enabled": False}},
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``valux sandbox`` as a user starts it (no API key: the actors of this session's Ray
    instance were started before it, so none could hold one in its environment)."""
    with sandbox_process(
        tmp_path_factory.mktemp("sandbox"),
        "--slot-ms",
        "100",
        "--no-api-key",
        "--no-evm",
        "--seed",
        "11",
    ) as manifest:
        yield manifest


@pytest.fixture
async def live(
    sandbox: dict[str, Any],
    server_urls: tuple[str, str],
    redis_url: str,
    data_dir: Path,
    ray_session: str,
) -> AsyncIterator[Runtime]:
    overrides = {
        "solana.rpc_url": sandbox["solana_rpc_url"],
        "jupiter.url": sandbox["jupiter_url"],
        "feeds.manual.enabled": False,
        "feeds.jupiter.enabled": True,
        "feeds.jupiter.interval_s": 0.3,
        "feeds.jupiter.refresh_s": 0.5,
        "custody.scrypt_n": 2**12,
        "custody.chain_audit_every_s": 0.5,
        "reconcile.audit_every_s": 0.5,
    }
    async with own_system(
        server_urls, redis_url, data_dir, ray_session, "sol", **overrides
    ) as runtime:
        yield runtime


async def on_chain(sandbox: dict[str, Any], address: str) -> dict[str, Decimal]:
    async with AsyncClient(sandbox["solana_rpc_url"]) as client:
        held = await read_holdings(SolanaRpc(client), address)
    out = {m: h.amount for m, h in held.tokens.items() if h.units}
    out["SOL"] = held.sol_with_wrapped
    return out


def booked(wallet: dict[str, Any]) -> dict[str, Decimal]:
    return {a: Decimal(v) for a, v in wallet["balances"].items() if Decimal(v)}


async def kill_agent_host(namespace: str) -> None:
    handle = await agent_host_handle(0, namespace)
    old = (await handle.ping.remote())["pid"]
    os.kill(old, signal.SIGKILL)

    async def pid() -> int | None:
        try:
            return int((await asyncio.wait_for(handle.ping.remote(), 2))["pid"])
        except Exception:
            return None

    await wait_for(pid, lambda p: p is not None and p != old, 90)


async def test_a_live_agent_trades_on_the_sandbox_through_the_api(
    live: Runtime, sandbox: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    bonk = sandbox["tokens"]["BONK"]
    keypair = Keypair()  # imported, so the test knows the secret it must find in no log
    secrets = [str(keypair), bytes(keypair).hex(), bytes(keypair)[:32].hex(), PASSPHRASE]
    async with Api(live.port) as api:
        wallet = await api.post(
            "/api/v1/wallets",
            {"chain": "solana", "passphrase": PASSPHRASE, "secret": str(keypair)},
            201,
        )
        assert wallet["locked"] is True
        wid, address = wallet["id"], wallet["address"]
        agent = await api.post(
            "/api/v1/agents",
            {"name": "live", "venue": "jupiter", "wallet_id": wid, "config": STOP},
            201,
        )
        await control(sandbox, "fund", {"address": address, "amount": 5})

        async def sol_booked() -> Decimal:
            view = await api.get(f"/api/v1/wallets/{wid}")
            return Decimal(view["balances"].get("SOL", "0"))

        await wait_for(sol_booked, lambda v: v == Decimal(5), 30)  # the audit booked it

        def signal_body(sid: str) -> dict[str, Any]:
            return {"id": sid, "token": bonk, "strength": 5, "type": "buy", "size": "1",
                    "agents": [agent["id"]]}  # fmt: skip

        (refused,) = (await api.post("/api/v1/signals", signal_body("locked"), 201))["outcomes"]
        assert refused["status"] == "failed" and "KEY_LOCKED" in refused["reason"], refused

        status, body = await api.request(
            "POST", f"/api/v1/wallets/{wid}/unlock", None, {"passphrase": "not the one"}
        )
        assert status == 403 and body["error"]["code"] == "WRONG_PASSPHRASE"
        await api.post(f"/api/v1/wallets/{wid}/unlock", {"passphrase": PASSPHRASE}, 200)

        (bought,) = (await api.post("/api/v1/signals", signal_body("buy-1"), 201))["outcomes"]
        assert bought["status"] == "bought", bought
        async with AsyncClient(sandbox["solana_rpc_url"]) as client:
            landed = (
                await client.get_signature_statuses([Signature.from_string(bought["signature"])])
            ).value[0]
        assert landed is not None and landed.err is None
        view = await api.get(f"/api/v1/wallets/{wid}")
        assert booked(view) == await on_chain(sandbox, address)  # to the lamport
        position_id = bought["position_id"]

        await kill_agent_host(api_namespace(live))

        async def unprotected() -> list[str]:
            _, body = await api.request("GET", "/health/ready")
            return [r for r in body.get("reasons", []) if position_id in r and "locked" in r]

        await wait_for(unprotected, bool, 60)
        position = await api.get(f"/api/v1/positions/{position_id}")
        assert position["status"] == "open"
        await api.post(f"/api/v1/wallets/{wid}/unlock", {"passphrase": PASSPHRASE}, 200)
        await wait_for(unprotected, lambda r: not r, 30)

        await control(sandbox, "price", {"token": "BONK", "price": "0.00001"})

        async def closed() -> str:
            return str((await api.get(f"/api/v1/positions/{position_id}"))["status"])

        await wait_for(closed, lambda s: s == "closed", 60)
        view = await api.get(f"/api/v1/wallets/{wid}")
        chain = await on_chain(sandbox, address)
        assert booked(view) == chain and bonk not in chain

        exported = await api.post(
            f"/api/v1/wallets/{wid}/export", {"passphrase": PASSPHRASE, "confirm": True}, 200
        )
        assert exported["secret"] == str(keypair)
        audit = await api.get("/api/v1/audit?event=key_export")
        assert any(e["detail"].get("wallet_id") == wid for e in audit), audit
    await asyncio.sleep(1.0)  # let the actors' log lines reach their files
    found = _files_containing(_ray_log_dir(), secrets)
    out, err = capfd.readouterr()
    assert found == {} and not [s[:6] for s in secrets if s in out or s in err]


def api_namespace(runtime: Runtime) -> str:
    return str(runtime.settings.ray.namespace)
