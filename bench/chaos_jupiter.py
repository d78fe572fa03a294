"""The chaos run's Jupiter mode (``python -m bench.chaos --venue jupiter``): the same
faults and checks, with live agents trading on ``valux sandbox``'s SVM.

- :class:`SandboxProcess`: ``valux sandbox`` in a process of its own (no API key, so the
  Ray workers started before it need none in their environment), with transactions
  dropped at ``--chain-drop-rate`` and landing ``--chain-landing-delay`` slots late.
- :func:`live_settings_env`: the settings that point valux at it (Jupiter price feed on,
  the simulated feed off, a cheap scrypt cost for the run's keys).
- :func:`create_live_agents`: per agent, a wallet made through the API, funded from the
  faucet, the agent created on it and the wallet unlocked.
- :class:`Operator`: what a user of live wallets does during the run: unlocks every wallet
  that a restart of its host left locked (keys are never kept in clear), and counts it.
- :class:`PriceMover`: moves the pools by a random walk through the control API, so stops
  and take-profits fire.
- :func:`chain_balances`: every wallet's on-chain SOL and tokens, the chaos checks'
  "venue" side in this mode (the chain is the books a real venue keeps).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from solana.rpc.async_api import AsyncClient

from valux.venues.jupiter import SolanaRpc, read_holdings
from valux.venues.jupiter.chain import WSOL_MINT

PASSPHRASE = "chaos run wallet passphrase"
FUNDING_SOL = 1000


class SandboxProcess:
    """``valux sandbox`` as its own process; :attr:`manifest` once started."""

    def __init__(self, data_dir: Path, *, seed: int, drop_rate: float, landing_delay: int) -> None:
        self.data_dir = data_dir / "sandbox"
        self.args = ["--data-dir", str(self.data_dir), "--no-api-key", "--no-evm",
                     "--seed", str(seed), "--slot-ms", "200", "--drop-rate", str(drop_rate),
                     "--landing-delay", str(landing_delay)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.manifest: dict[str, Any] = {}

    def start(self, within: float = 60.0) -> dict[str, Any]:
        path = self.data_dir / "sandbox.json"
        log = open(self.data_dir.parent / "sandbox.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "valux.main", "sandbox", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + within
        while not path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"valux sandbox did not start (see {log.name})")
            time.sleep(0.1)
        self.manifest = json.loads(path.read_text())
        return self.manifest

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def tokens(self) -> list[str]:
        return sorted(self.manifest["tokens"].values())

    async def control(
        self, session: aiohttp.ClientSession, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        async with session.post(f"{self.manifest['control_url']}/{path}", json=body) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"sandbox control {path}: {resp.status} {answer}")
            return answer


def live_settings_env(manifest: dict[str, Any]) -> dict[str, str]:
    return {
        "VALUX_SOLANA__RPC_URL": manifest["solana_rpc_url"],
        "VALUX_JUPITER__URL": manifest["jupiter_url"],
        "VALUX_FEEDS__SIMULATED__ENABLED": "false",
        "VALUX_FEEDS__JUPITER__ENABLED": "true",
        "VALUX_FEEDS__JUPITER__INTERVAL_S": "0.5",
        "VALUX_FEEDS__JUPITER__REFRESH_S": "1.0",
        "VALUX_CUSTODY__SCRYPT_N": str(2**12),
        "VALUX_CUSTODY__CHAIN_AUDIT_EVERY_S": "5",
    }


async def create_live_agents(
    session: aiohttp.ClientSession,
    api_url: str,
    sandbox: SandboxProcess,
    count: int,
    configs: list[dict[str, Any]],
) -> list[str]:
    """``count`` live agents, each on a funded, unlocked wallet of its own."""
    agents = []
    for i in range(count):
        made = {"chain": "solana", "passphrase": PASSPHRASE}
        async with session.post(api_url + "/api/v1/wallets", json=made) as resp:
            wallet = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"wallet not created: {resp.status} {wallet}")
        await sandbox.control(session, "fund", {"address": wallet["address"],
                                                "amount": FUNDING_SOL})  # fmt: skip
        body: dict[str, Any] = {"name": f"chaos-{i}", "venue": "jupiter", "wallet_id": wallet["id"],
                "config": configs[i % len(configs)]}  # fmt: skip
        async with session.post(api_url + "/api/v1/agents", json=body) as resp:
            agent = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"agent not created: {resp.status} {agent}")
        agents.append(agent["id"])
        await _unlock(session, api_url, wallet["id"])
    return agents


async def _unlock(session: aiohttp.ClientSession, api_url: str, wallet_id: str) -> bool:
    body = {"passphrase": PASSPHRASE, "ttl_s": 86_400}
    try:
        async with session.post(f"{api_url}/api/v1/wallets/{wallet_id}/unlock", json=body,
                                timeout=aiohttp.ClientTimeout(total=30)) as resp:  # fmt: skip
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class Operator:
    """Unlocks every live wallet a restart left locked, as its owner would, until stopped
    (after the checks). A wallet whose host is restarting is listed without its key state
    (``unavailable``) and asked again on the next round; while the list fails (the API
    restarting), each wallet it listed before is asked on its own."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str) -> None:
        self.session, self.api_url = session, api_url
        self.unlocks: Counter[str] = Counter()
        self.failed_unlocks = 0
        self.known: set[str] = set()

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            for wallet in await self._wallets():
                if not wallet.get("locked"):
                    continue
                if await _unlock(self.session, self.api_url, wallet["id"]):
                    self.unlocks[wallet["id"]] += 1
                else:
                    self.failed_unlocks += 1

    async def _wallets(self) -> list[dict[str, Any]]:
        listed = await self._get("/api/v1/wallets")
        if isinstance(listed, list):
            self.known.update(w["id"] for w in listed)
            return listed
        each = [await self._get(f"/api/v1/wallets/{i}") for i in sorted(self.known)]
        return [w for w in each if isinstance(w, dict)]

    async def _get(self, path: str) -> Any:
        try:
            async with self.session.get(
                self.api_url + path, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    @property
    def total(self) -> int:
        return sum(self.unlocks.values())


class PriceMover:
    """A random walk of each sandbox pool's USD price (σ per step in log terms)."""

    def __init__(self, sandbox: SandboxProcess, rng: random.Random, sigma: float = 0.04) -> None:
        self.sandbox, self.rng, self.sigma = sandbox, rng, sigma
        self.moves = 0

    async def loop(self, session: aiohttp.ClientSession, stop_at: float) -> None:
        symbols = sorted(self.sandbox.manifest["tokens"])
        prices = await self._usd(session)
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.5)
            symbol = self.rng.choice(symbols)
            mint = self.sandbox.manifest["tokens"][symbol]
            step = math.exp(self.rng.gauss(0.0, self.sigma))
            prices[mint] = max(prices[mint] * Decimal(str(step)), Decimal("1e-9"))
            try:
                body = {"token": symbol, "price": str(prices[mint])}
                await self.sandbox.control(session, "price", body)
                self.moves += 1
            except (aiohttp.ClientError, RuntimeError):
                pass

    async def _usd(self, session: aiohttp.ClientSession) -> dict[str, Decimal]:
        mints = ",".join(self.sandbox.tokens)
        url = f"{self.sandbox.manifest['jupiter_url']}/price/v3?ids={mints}"
        async with session.get(url) as resp:
            data = await resp.json(content_type=None)
        return {m: Decimal(str(data[m]["usdPrice"])) for m in self.sandbox.tokens}


async def chain_balances(pool: asyncpg.Pool, rpc_url: str) -> dict[str, dict[str, Decimal]]:
    """wallet id → its on-chain balances as the journal keeps them (SOL with wrapped SOL,
    tokens by mint), for every live wallet."""
    rows = await pool.fetch("SELECT id, address FROM wallets WHERE chain = 'solana'")
    out: dict[str, dict[str, Decimal]] = {}
    async with AsyncClient(rpc_url) as client:
        rpc = SolanaRpc(client)
        for row in rows:
            held = await read_holdings(rpc, row["address"])
            balances = {m: h.amount for m, h in held.tokens.items() if h.units and m != WSOL_MINT}
            balances["SOL"] = held.sol_with_wrapped
            out[row["id"]] = balances
    return out
