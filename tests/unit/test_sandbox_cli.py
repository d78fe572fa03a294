"""`python -m valux.sandbox` and its manifest: the documented keys, written while it runs,
removed on a clean stop; the process stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.unit.sandbox_support import raw_rpc
from valux.config.settings import load_settings
from valux.sandbox.cli import parse_args
from valux.sandbox.runtime import Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_KEYS = {
    "solana_rpc_url",
    "jupiter_url",
    "control_url",
    "dexscreener_url",
    "pyth_url",
    "jupiter_api_key",
    "tokens",
    "sol_mint",
    "pyth_feeds",
    "seed",
    "pid",
    "started_at",
    "env",
}
ENV_KEYS = {
    "VALUX_SOLANA__RPC_URL",
    "VALUX_JUPITER__URL",
    "VALUX_JUPITER__API_KEY",
    "VALUX_JUPITER__PRICE_URL",
    "VALUX_FEEDS__JUPITER__ENABLED",
    "VALUX_FEEDS__DEXSCREENER__URL",
    "VALUX_FEEDS__PYTH__URL",
}


async def test_manifest_has_the_documented_keys_and_goes_away_on_stop(tmp_path: Path) -> None:
    """sandbox.json is written on start (owner-only), names the URLs, the tokens and the
    VALUX_* environment, points at live servers, and is removed on stop."""
    config = SandboxConfig(data_dir=tmp_path, slot_ms=None, seed=5)
    async with Sandbox(config) as sandbox:
        path = tmp_path / "sandbox.json"
        manifest = json.loads(path.read_text())
        assert set(manifest) == MANIFEST_KEYS
        assert set(manifest["env"]) == ENV_KEYS
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert set(manifest["tokens"]) == {"BONK", "WIF", "POPCAT"}
        assert manifest["env"]["VALUX_SOLANA__RPC_URL"] == manifest["solana_rpc_url"]
        assert manifest["env"]["VALUX_JUPITER__API_KEY"] == manifest["jupiter_api_key"]
        settings = load_settings(env=manifest["env"])  # every key is a valux setting
        assert settings.feeds.jupiter.enabled
        assert settings.solana.rpc_url == manifest["solana_rpc_url"]
        assert manifest["control_url"] == manifest["jupiter_url"] + "/control"
        assert manifest["solana_rpc_url"].startswith("http://127.0.0.1:")
        assert (await raw_rpc(manifest["solana_rpc_url"], "getHealth"))["result"] == "ok"
        async with (
            aiohttp.ClientSession() as http,
            http.get(manifest["control_url"] + "/state") as resp,
        ):
            assert resp.status == 200
        assert manifest == sandbox.manifest() | {"started_at": manifest["started_at"]}
    assert not path.exists()


async def test_same_seed_same_mints_and_key() -> None:
    """Two sandboxes with one seed create the same mints and API key; another seed differs."""
    async with Sandbox(SandboxConfig(slot_ms=None, write_manifest=False, seed=1)) as a:
        first = a.manifest()
    async with Sandbox(SandboxConfig(slot_ms=None, write_manifest=False, seed=1)) as b:
        second = b.manifest()
    async with Sandbox(SandboxConfig(slot_ms=None, write_manifest=False, seed=2)) as c:
        third = c.manifest()
    assert first["tokens"] == second["tokens"] != third["tokens"]
    assert first["jupiter_api_key"] == second["jupiter_api_key"] != third["jupiter_api_key"]


def test_cli_arguments_map_to_the_config(tmp_path: Path) -> None:
    """The command line's options land in SandboxConfig; bad values exit with status 2."""
    config = parse_args(
        ["--data-dir", str(tmp_path), "--seed", "3", "--slot-ms", "50", "--drop-rate", "0.2"]
    )
    assert (config.data_dir, config.seed, config.slot_ms, config.drop_rate) == (
        tmp_path,
        3,
        50.0,
        0.2,
    )
    assert parse_args(["--no-api-key"]).effective_api_key() is None
    with pytest.raises(SystemExit) as caught:
        parse_args(["--drop-rate", "2"])
    assert caught.value.code == 2


async def test_cli_serves_until_sigterm_then_stops_cleanly(tmp_path: Path) -> None:
    """`python -m valux.sandbox --data-dir DIR` prints and writes the manifest, serves the
    RPC and the Jupiter API with its key, and on SIGTERM exits 0 and removes the manifest."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "valux.sandbox",
        "--data-dir",
        str(tmp_path),
        "--slot-ms",
        "20",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    path = tmp_path / "sandbox.json"
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no manifest within 60 s"
            await asyncio.sleep(0.05)
        manifest = json.loads(path.read_text())
        assert manifest["pid"] == proc.pid
        slot = (
            await raw_rpc(manifest["solana_rpc_url"], "getSlot", [{"commitment": "processed"}])
        )["result"]
        query = {
            "inputMint": manifest["sol_mint"],
            "outputMint": manifest["tokens"]["BONK"],
            "amount": "1000000",
        }
        headers = {"x-api-key": manifest["env"]["VALUX_JUPITER__API_KEY"]}
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                manifest["jupiter_url"] + "/swap/v1/quote", params=query, headers=headers
            ) as resp,
        ):
            assert resp.status == 200
            assert int((await resp.json())["outAmount"]) > 0
        await asyncio.sleep(0.1)
        later = (
            await raw_rpc(manifest["solana_rpc_url"], "getSlot", [{"commitment": "processed"}])
        )["result"]
        assert later > slot  # the clock runs on its own
        proc.send_signal(signal.SIGTERM)
        stdout, _stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert json.loads(stdout) == manifest
        assert not path.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
