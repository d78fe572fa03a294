"""The EVM sandbox: anvil from npm, the Uniswap deployment, and its controls."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.unit.evm_support import chain
from valux.sandbox import npm
from valux.sandbox.evm import EvmSandbox, EvmSandboxConfig, EvmSandboxError, PoolSpec, TokenSpec

_META_ABI = [
    {
        "type": "function",
        "name": name,
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": kind}],
    }
    for name, kind in (("decimals", "uint8"), ("symbol", "string"), ("name", "string"))
]


async def test_the_description_names_a_42161_node_with_the_deployed_contracts() -> None:
    """sandbox.json's EVM keys: the RPC URL of a node answering chain id 42161, every token
    by symbol (WETH included) with its on-chain symbol and decimals (USDC has 6), and the
    router and quoter, which hold code."""
    async with chain() as sandbox:
        description = sandbox.description()
        for key in ("evm_rpc_url", "chain_id", "evm_tokens", "router", "quoter"):
            assert key in description
        assert description["chain_id"] == 42161
        w3 = AsyncWeb3(AsyncHTTPProvider(description["evm_rpc_url"]))
        try:
            assert await w3.eth.chain_id == 42161
            tokens = description["evm_tokens"]
            assert set(tokens) == {"WETH", "USDC", "ARB", "LINK", "GMX"}
            for symbol, address in tokens.items():
                token = w3.eth.contract(address=address, abi=_META_ABI)
                assert await token.functions.symbol().call() == symbol
                expected = 6 if symbol == "USDC" else 18
                assert await token.functions.decimals().call() == expected
            for contract in (description["router"], description["quoter"]):
                assert len(await w3.eth.get_code(contract)) > 5_000
            assert set(description["evm_pools"]) == {p.key for p in sandbox.config.pools}
            assert "key" not in str(description).lower()  # an address, never the faucet's key
        finally:
            await w3.provider.disconnect()


async def test_fund_gives_eth_and_every_kind_of_token() -> None:
    """fund sets ETH by anvil_setBalance, transfers WETH and USDC, mints a test ERC-20: the
    balances read back exactly."""
    async with chain() as sandbox:
        who = Account.create().address
        await sandbox.fund(who, Decimal("1.25"))
        await sandbox.fund(who, Decimal("1.25"))
        await sandbox.fund(who, Decimal("2.5"), "WETH")
        await sandbox.fund(who, Decimal("1234.567891"), "USDC")
        await sandbox.fund(who, Decimal("42"), sandbox.token("ARB"))
        assert await sandbox.balance(who) == Decimal("2.5")
        assert await sandbox.balance(who, "WETH") == Decimal("2.5")
        assert await sandbox.balance(who, "USDC") == Decimal("1234.567891")
        assert await sandbox.balance(who, "ARB") == 42
        with pytest.raises(EvmSandboxError):
            await sandbox.fund(who, Decimal(1), "DOGE")


async def test_set_price_moves_every_pool_of_the_pair_by_swapping() -> None:
    """set_price swaps each pool of the pair to the target (both ARB/WETH tiers; the
    WETH/USDC pools with 6-decimal USDC) and the slot0 price reads it back."""
    async with chain() as sandbox:
        assert await sandbox.price("ARB") == pytest.approx(Decimal("0.0002"), rel=Decimal("1e-12"))
        block = await sandbox.block_number()
        moved = await sandbox.set_price("ARB", Decimal("0.00031"))
        assert set(moved) == {"ARB/WETH/500", "ARB/WETH/3000"}
        for price in moved.values():
            assert price == pytest.approx(Decimal("0.00031"), rel=Decimal("1e-12"))
        assert await sandbox.block_number() > block  # real transactions moved it
        down = await sandbox.set_price("WETH", Decimal(2500), quote="USDC")
        assert all(p == pytest.approx(Decimal(2500), rel=Decimal("1e-9")) for p in down.values())
        assert await sandbox.price("USDC", "WETH") == pytest.approx(
            Decimal(1) / 2500, rel=Decimal("1e-9")
        )
        with pytest.raises(EvmSandboxError):
            await sandbox.set_price("ARB", Decimal(0))


async def test_snapshot_and_revert_restore_the_chain() -> None:
    """Everything after a snapshot (balances, prices) is gone after the revert."""
    async with chain() as sandbox:
        who = Account.create().address
        snapshot = await sandbox.snapshot()
        await sandbox.fund(who, Decimal(3), "WETH")
        await sandbox.set_price("LINK", Decimal("0.007"))
        await sandbox.revert(snapshot)
        assert await sandbox.balance(who, "WETH") == 0
        assert await sandbox.price("LINK") == pytest.approx(Decimal("0.005"), rel=Decimal("1e-12"))


async def test_a_private_sandbox_starts_small_and_stops_cleanly() -> None:
    """A sandbox with one token and one pool starts on its own port and its anvil process
    ends on stop (twice is harmless); a config off loopback or naming an unknown token is
    refused."""
    config = EvmSandboxConfig(
        tokens=(TokenSpec("TKN", "Token"),),
        pools=(PoolSpec("TKN", "WETH", 3000, Decimal("0.5"), Decimal(10)),),
    )
    started = time.monotonic()
    async with EvmSandbox(config) as sandbox:
        assert time.monotonic() - started < 15
        assert sandbox.running and set(sandbox.tokens) == {"WETH", "TKN"}
        assert await sandbox.price("TKN") == pytest.approx(Decimal("0.5"), rel=Decimal("1e-12"))
        process = sandbox._process
        assert process is not None
    assert process.poll() is not None and not sandbox.running
    await sandbox.stop()
    with pytest.raises(ValueError, match="loopback"):
        EvmSandboxConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="unknown token"):
        EvmSandboxConfig(pools=(PoolSpec("NOPE", "WETH", 3000, Decimal(1), Decimal(1)),))
    with pytest.raises(ValueError, match="fee"):
        EvmSandboxConfig(pools=(PoolSpec("ARB", "WETH", 123, Decimal(1), Decimal(1)),))


def test_installed_node_modules_need_no_install() -> None:
    """After the session's npm ci, the tree is complete and newer than the lockfile."""
    assert not npm.needs_install()
    assert npm.anvil_binary().is_file() and os.access(npm.anvil_binary(), os.X_OK)


def _fake_tree(root: Path, *, complete: bool) -> None:
    (root / "package-lock.json").write_text("{}")
    modules = root / "node_modules"
    modules.mkdir()
    (modules / ".package-lock.json").write_text("{}")
    if complete:
        for relative in npm.REQUIRED_FILES:
            path = modules / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")


def test_needs_install_when_missing_incomplete_or_older_than_the_lockfile(tmp_path: Path) -> None:
    """No node_modules, a required file absent, or a lockfile edited after the install
    each call for npm ci."""
    assert npm.needs_install(tmp_path)
    complete = tmp_path / "complete"
    complete.mkdir()
    _fake_tree(complete, complete=True)
    marker = complete / "node_modules" / ".package-lock.json"
    os.utime(complete / "package-lock.json", (1_000, 1_000))
    assert not npm.needs_install(complete)
    os.utime(complete / "package-lock.json", (marker.stat().st_mtime + 10,) * 2)
    assert npm.needs_install(complete)
    partial = tmp_path / "partial"
    partial.mkdir()
    _fake_tree(partial, complete=False)
    assert npm.needs_install(partial)


def test_missing_node_tools_fail_with_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without npm on the PATH, ensure_node_modules says which tool is missing and how to
    get it; without a lockfile it says so."""
    (tmp_path / "package-lock.json").write_text("{}")
    monkeypatch.setattr(npm.shutil, "which", lambda tool: None if tool == "npm" else "/bin/x")
    with pytest.raises(npm.NodeToolsMissing, match="npm not found") as missing:
        npm.ensure_node_modules(tmp_path)
    assert "npm ci" in missing.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(npm.NpmInstallFailed, match=r"no package-lock\.json"):
        npm.ensure_node_modules(empty)
    with pytest.raises(npm.NpmInstallFailed, match="missing"):
        npm.artifact_path("nothing/here.json", tmp_path)
