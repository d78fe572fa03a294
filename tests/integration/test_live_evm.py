"""Live trading on Arbitrum, end to end through the public API on Ray: ``valux sandbox``
(its process, anvil with real Uniswap V3 bytecode, chain id 42161) and valux pointed at
it by settings. Create an arbitrum wallet by importing a 0x key, fund it from the faucet
(WETH for trading, ETH for gas; the chain audit books the WETH), create a ``uniswap``
agent, unlock, buy a token by address (the outcome names the mined transaction), see the
books equal the chain, move the pool down by a real swap and watch the stop sell through
the Uniswap pool price feed; the key in no log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.integration.helpers import Api, wait_for
from tests.integration.live_support import control, own_system, sandbox_process
from tests.integration.test_users_secrets import _files_containing, _ray_log_dir
from valux.schema.evm_abi import ERC20_ABI
from valux.system.runtime import Runtime

PASSPHRASE = "arbitrum wallet passphrase"
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
        tmp_path_factory.mktemp("sandbox-evm"), "--slot-ms", "200", "--no-api-key", "--seed", "12"
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
    env = sandbox["env"]
    overrides = {
        "evm.rpc_url": env["VALUX_EVM__RPC_URL"],
        "evm.chain_id": int(env["VALUX_EVM__CHAIN_ID"]),
        "evm.router": env["VALUX_EVM__ROUTER"],
        "evm.quoter": env["VALUX_EVM__QUOTER"],
        "evm.weth": env["VALUX_EVM__WETH"],
        "evm.factory": env["VALUX_EVM__FACTORY"],
        "feeds.manual.enabled": False,
        "feeds.uniswap.enabled": True,
        "feeds.uniswap.interval_s": 0.3,
        "feeds.uniswap.refresh_s": 0.5,
        "custody.scrypt_n": 2**12,
        "custody.chain_audit_every_s": 0.5,
        "reconcile.audit_every_s": 0.5,
    }
    async with own_system(
        server_urls, redis_url, data_dir, ray_session, "evm", **overrides
    ) as runtime:
        yield runtime


async def erc20(sandbox: dict[str, Any], token: str, owner: str) -> Decimal:
    w3 = AsyncWeb3(AsyncHTTPProvider(sandbox["evm_rpc_url"]))
    contract = w3.eth.contract(address=token, abi=ERC20_ABI)
    units = await contract.functions.balanceOf(owner).call()
    decimals = await contract.functions.decimals().call()
    await w3.provider.disconnect()
    return Decimal(int(units)).scaleb(-int(decimals))


async def test_a_live_agent_trades_on_anvil_through_the_api(
    live: Runtime, sandbox: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    arb = sandbox["evm_tokens"]["ARB"]
    weth = sandbox["evm_tokens"]["WETH"]
    account = Account.create()
    secrets = [account.key.hex(), account.key.hex().removeprefix("0x"), PASSPHRASE]
    async with Api(live.port) as api:
        wallet = await api.post(
            "/api/v1/wallets",
            {"chain": "arbitrum", "passphrase": PASSPHRASE, "secret": account.key.hex()},
            201,
        )
        wid, address = wallet["id"], wallet["address"]
        assert address == account.address and wallet["locked"] is True
        agent = await api.post(
            "/api/v1/agents",
            {"name": "arb", "venue": "uniswap", "wallet_id": wid, "config": STOP},
            201,
        )
        await control(sandbox, "fund", {"address": address, "amount": 1})  # gas
        await control(sandbox, "fund", {"address": address, "amount": 2, "token": "WETH"})

        async def weth_booked() -> Decimal:
            view = await api.get(f"/api/v1/wallets/{wid}")
            return Decimal(view["balances"].get("WETH", "0"))

        await wait_for(weth_booked, lambda v: v == 2, 30)
        await api.post(f"/api/v1/wallets/{wid}/unlock", {"passphrase": PASSPHRASE}, 200)
        body = {"id": "evm-1", "token": arb, "strength": 5, "type": "buy", "size": "0.1",
                "agents": [agent["id"]]}  # fmt: skip
        (bought,) = (await api.post("/api/v1/signals", body, 201))["outcomes"]
        assert bought["status"] == "bought", bought
        assert bought["signature"].startswith("0x")
        view = await api.get(f"/api/v1/wallets/{wid}")
        assert Decimal(view["balances"][arb]) == await erc20(sandbox, arb, address)
        assert Decimal(view["balances"]["WETH"]) == await erc20(sandbox, weth, address)
        position_id = bought["position_id"]

        current = Decimal((await control(sandbox, "price", {"token": "ARB", "price": "0.0002"}))[
            "price"])  # fmt: skip
        await control(sandbox, "price", {"token": "ARB", "price": str(current / 2)})

        async def closed() -> str:
            return str((await api.get(f"/api/v1/positions/{position_id}"))["status"])

        await wait_for(closed, lambda s: s == "closed", 60)
        view = await api.get(f"/api/v1/wallets/{wid}")
        assert await erc20(sandbox, arb, address) == 0
        assert Decimal(view["balances"]["WETH"]) == await erc20(sandbox, weth, address)
    await asyncio.sleep(1.0)
    found = _files_containing(_ray_log_dir(), secrets)
    out, err = capfd.readouterr()
    assert found == {} and not [s[:6] for s in secrets if s in out or s in err]
