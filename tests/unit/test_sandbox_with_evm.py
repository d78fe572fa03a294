"""``valux sandbox`` with its EVM half: the manifest and valux's settings gain the chain,
and the control endpoints fund 0x accounts and move Uniswap pools (real anvil, real
Uniswap V3 bytecode)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account

from valux.config.settings import load_settings
from valux.sandbox.runtime import Sandbox, SandboxConfig


@pytest.fixture(scope="module")
async def both(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    config = SandboxConfig(
        data_dir=tmp_path_factory.mktemp("sb"), slot_ms=None, write_manifest=False, evm=True
    )
    async with Sandbox(config) as sandbox:
        yield sandbox


async def post(sandbox: Sandbox, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sandbox.service.url}/control/{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def test_the_manifest_points_valux_at_both_chains(both: Sandbox) -> None:
    manifest = both.manifest()
    for key in ("evm_rpc_url", "chain_id", "evm_tokens", "router", "quoter"):
        assert key in manifest, key
    assert manifest["chain_id"] == 42161 and "WETH" in manifest["evm_tokens"]
    settings = load_settings(env=manifest["env"])
    assert settings.evm.rpc_url == manifest["evm_rpc_url"]
    assert settings.evm.router.lower() == manifest["router"].lower()
    assert settings.evm.weth.lower() == manifest["evm_tokens"]["WETH"].lower()
    assert settings.solana.rpc_url == manifest["solana_rpc_url"]


async def test_fund_and_price_serve_evm_accounts_and_pools(both: Sandbox) -> None:
    account = Account.create().address
    status, answer = await post(both, "fund", {"address": account, "amount": "2.5"})
    assert status == 200 and answer["token"] == "ETH", answer
    assert await both.evm.balance(account) == Decimal("2.5")
    status, answer = await post(both, "fund", {"address": account, "amount": 100, "token": "ARB"})
    assert status == 200 and Decimal(answer["balance"]) == 100, answer
    status, answer = await post(both, "price", {"token": "ARB", "price": "0.0003"})
    assert status == 200, answer
    assert abs(Decimal(answer["price"]) / Decimal("0.0003") - 1) < Decimal("0.001")
    status, answer = await post(both, "fund", {"address": account, "amount": 1, "token": "NOPE"})
    assert status == 404
    # Solana addresses and tokens keep working beside it
    status, _ = await post(both, "price", {"token": "BONK", "price": "0.00003"})
    assert status == 200


async def test_a_sandbox_without_evm_says_so(tmp_path: Path) -> None:
    config = SandboxConfig(data_dir=tmp_path, slot_ms=None, write_manifest=False)
    async with Sandbox(config) as sandbox:
        status, answer = await post(
            sandbox, "fund", {"address": Account.create().address, "amount": 1}
        )
    assert status == 400 and answer["errorCode"] == "EVM_NOT_RUNNING"
