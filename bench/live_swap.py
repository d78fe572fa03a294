"""Signal → swap confirmed on the sandbox's SVM: how long a live agent's buy takes, and
whose time it is.

One process: the production agent host (with its wallet host, the key vault and the
Jupiter venue exactly as a live wallet uses them) journaling to PostgreSQL with
``synchronous_commit`` on, and the stop-loss evaluator — no Ray hop, so what is measured
is valux's path, not Ray's. The chain is ``valux sandbox``'s LiteSVM behind its JSON-RPC
server (slots of ``slot_ms``, as mainnet's ~400 ms) and its Jupiter-shaped HTTP API,
in-process on loopback.

Per signal, sequentially (a buy, then its sale at once, so each buy is a full entry):

- **total**: ``on_signal`` called → the ``bought`` outcome (the swap confirmed and
  booked, the position journaled and armed); for the sale, ``on_exits`` → ``closed``;
- **RPC and Jupiter**: wall time inside Solana JSON-RPC calls and Jupiter HTTP calls;
- **waiting for the chain**: the sender's sleeps between polls for confirmation (the
  slot clock: what a faster node or chain would shorten);
- **valux**: the rest — eligibility, sizing, journal commits (PostgreSQL), signing,
  booking, arming.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from web3 import AsyncHTTPProvider

from bench.common import (
    BenchEnv,
    Benchmark,
    BenchResult,
    Row,
    Target,
    distribution,
    fresh_database,
)
from valux.actors.agent_host import AgentHost
from valux.actors.evaluator import StopLossEvaluator
from valux.config.secrets import JUPITER_KEY_ENV
from valux.config.settings import load_settings
from valux.custody.keys import ScryptParams, encrypt, new_secret
from valux.custody.keys import address_of as address_of_secret
from valux.hosting.peers import LocalPeers
from valux.persistence.migrations import apply_migrations
from valux.sandbox.evm import EvmSandbox
from valux.sandbox.runtime import Sandbox, SandboxConfig
from valux.schema.messages import ExitRequest, Signal
from valux.venues.jupiter import JupiterClient, SolanaRpc, SolanaSender
from valux.venues.uniswap import TxSender

PASSPHRASE = "bench passphrase"


class Clocks:
    """Wall time during which at least one external call (or one confirmation wait) was
    running: overlapping calls — a quote at three fee tiers at once, nested RPC layers —
    count once, so what is left of the total is valux's own time."""

    def __init__(self) -> None:
        self.external = 0.0
        self.waiting = 0.0
        self._active = {"external": 0, "waiting": 0}
        self._since = {"external": 0.0, "waiting": 0.0}

    def reset(self) -> None:
        self.external = self.waiting = 0.0

    def timed(self, fn: Callable[..., Awaitable[Any]], bucket: str) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._active[bucket] == 0:
                self._since[bucket] = time.perf_counter()
            self._active[bucket] += 1
            try:
                return await fn(*args, **kwargs)
            finally:
                self._active[bucket] -= 1
                if self._active[bucket] == 0:
                    elapsed = time.perf_counter() - self._since[bucket]
                    setattr(self, bucket, getattr(self, bucket) + elapsed)

        return wrapper


class Split:
    """Latencies of one kind of operation, split by whose time they are (ms)."""

    def __init__(self) -> None:
        self.total: list[float] = []
        self.external: list[float] = []
        self.waiting: list[float] = []
        self.own: list[float] = []

    def add(self, total_s: float, clocks: Clocks) -> None:
        self.total.append(total_s * 1000)
        self.external.append(clocks.external * 1000)
        self.waiting.append(clocks.waiting * 1000)
        self.own.append((total_s - clocks.external - clocks.waiting) * 1000)


def _instrument(clocks: Clocks) -> Callable[[], None]:
    """Wrap the RPC, Jupiter and sender-sleep entry points; returns the undo."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, bucket: str) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, clocks.timed(original, bucket))

    patch(SolanaRpc, "call", "external")
    patch(JupiterClient, "_request", "external")
    patch(AsyncHTTPProvider, "make_request", "external")
    for sender in (SolanaSender, TxSender):
        original_init = sender.__init__

        def init(self: Any, *args: Any, _original: Any = original_init, **kwargs: Any) -> None:
            kwargs["sleep"] = clocks.timed(kwargs.get("sleep", asyncio.sleep), "waiting")
            _original(self, *args, **kwargs)

        saved.append((sender, "__init__", original_init))
        sender.__init__ = init  # type: ignore[method-assign]

    def undo() -> None:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)

    return undo


async def _hosts(settings_overrides: dict[str, Any], url: str) -> tuple[Any, Any]:
    """The production evaluator and agent host (with its wallet host) in this process,
    journaling to ``url`` (migrated here)."""
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    settings = load_settings(
        env={},
        overrides={
            "database.url": url,
            "redis.url": None,
            "hosting.evaluators": 1,
            "logging.level": "warning",
            "reconcile.audit_every_s": 3600.0,
            "custody.chain_audit_every_s": 0.001,
            **settings_overrides,
        },
    )
    peers = LocalPeers(copy=False)
    evaluator = await _construct(StopLossEvaluator, 0, settings, url, peers=peers)
    peers.register("evaluator", 0, evaluator)
    agents = await _construct(AgentHost, 0, settings, url, None, peers=peers)
    peers.register("agent", 0, agents)
    return evaluator, agents


async def _live_agent(agents: Any, chain: str, venue: str, quote: str, secret: Any) -> str:
    """A live wallet of ``secret`` (encrypted, unlocked after funding) and its agent."""
    address = address_of_secret(secret)
    record = encrypt(secret, PASSPHRASE, scrypt=ScryptParams(n=2**12))
    secret.wipe()
    live = {"chain": chain, "venue": venue, "address": address, "key": record.to_dict()}
    await agents.wallet_host.create_wallet("w-bench", "bench", Decimal(0), quote, live)
    config_doc = {"stopLoss": {"enabled": True, "mode": "fixed", "defaultPercentage": -50},
                  "positionCalculator": {"randomization": {"enabled": False}},
                  "purchaseLimits": {"maxPurchasePerToken": 1000}}  # fmt: skip
    await agents.create_agent("bench", "bench", config_doc, "w-bench", 0, 0)
    return address


async def _round_trips(
    agents: Any, tokens: list[str], signals: int, size: str, clocks: Clocks
) -> tuple[Split, Split]:
    """``signals`` buys, each sold again at once; their latencies, split."""
    wallets = agents.wallet_host
    await wallets.audit([("w-bench", {})])  # books the faucet's funds as a deposit
    await wallets.unlock("w-bench", PASSPHRASE, 3600)
    buys, sells = Split(), Split()
    for i in range(signals):
        token = tokens[i % len(tokens)]
        clocks.reset()
        message = Signal(id=f"s-{i}", token=token, strength=5, type="bench",
                         size=Decimal(size), received_at=time.time())  # fmt: skip
        started = time.perf_counter()
        (outcome,) = await agents.on_signal(message)
        total = time.perf_counter() - started
        if outcome["status"] != "bought":
            raise RuntimeError(f"signal {i} not bought: {outcome}")
        buys.add(total, clocks)
        clocks.reset()
        request = ExitRequest("bench", outcome["position_id"], token, "manual",
                              None, time.time())  # fmt: skip
        started = time.perf_counter()
        (closed,) = await agents.on_exits([request])
        total = time.perf_counter() - started
        if closed.get("status") != "closed":
            raise RuntimeError(f"position {i} not sold: {closed}")
        sells.add(total, clocks)
    return buys, sells


async def _solana(
    env: BenchEnv, signals: int, slot_ms: float, clocks: Clocks
) -> tuple[Split, Split]:
    config = SandboxConfig(data_dir=Path(env.data_dir) / "live_swap_sandbox", slot_ms=slot_ms,
                           seed=3, write_manifest=False)  # fmt: skip
    async with Sandbox(config) as sandbox, fresh_database(env.admin_url, "live") as url:
        os.environ[JUPITER_KEY_ENV] = sandbox.service.settings.api_key or ""
        overrides = {"solana.rpc_url": sandbox.rpc.url, "jupiter.url": sandbox.service.url}
        evaluator, agents = await _hosts(overrides, url)
        address = await _live_agent(agents, "solana", "jupiter", "SOL", new_secret("solana"))
        async with aiohttp.ClientSession() as http:
            body = {"address": address, "amount": 1000}
            async with http.post(f"{sandbox.service.url}/control/fund", json=body) as resp:
                resp.raise_for_status()
        try:
            return await _round_trips(
                agents, list(sandbox.market.tokens().values()), signals, "0.5", clocks
            )
        finally:
            await agents.stop_background()
            await agents.shutdown()  # final snapshots; closes its pool before the drop
            await evaluator.shutdown()


async def _evm(env: BenchEnv, signals: int, clocks: Clocks) -> tuple[Split, Split]:
    async with EvmSandbox() as sandbox, fresh_database(env.admin_url, "live_evm") as url:
        d = sandbox.description()
        overrides = {
            "evm.rpc_url": d["evm_rpc_url"], "evm.chain_id": d["chain_id"],
            "evm.router": d["router"], "evm.quoter": d["quoter"],
            "evm.factory": d["evm_factory"], "evm.weth": d["evm_tokens"]["WETH"],
            "venue.quote_asset": "WETH",
        }  # fmt: skip
        evaluator, agents = await _hosts(overrides, url)
        address = await _live_agent(agents, "arbitrum", "uniswap", "WETH", new_secret("arbitrum"))
        await sandbox.fund(address, Decimal(10))
        await sandbox.fund(address, Decimal(100), "WETH")
        tokens = [sandbox.token(t) for t in ("ARB", "LINK", "GMX")]
        try:
            return await _round_trips(agents, tokens, signals, "0.05", clocks)
        finally:
            await agents.stop_background()
            await agents.shutdown()  # final snapshots; closes its pool before the drop
            await evaluator.shutdown()


async def run(
    env: BenchEnv, result: BenchResult, *, signals: int, slot_ms: float,
    venues: tuple[str, ...] = ("jupiter", "uniswap"),
) -> None:  # fmt: skip
    clocks = Clocks()
    undo = _instrument(clocks)
    measured: list[tuple[str, Split, Split]] = []
    try:
        if "jupiter" in venues:
            buys, sells = await _solana(env, signals, slot_ms, clocks)
            measured.append(("Solana/Jupiter", buys, sells))
        if "uniswap" in venues:
            buys, sells = await _evm(env, signals, clocks)
            measured.append(("Arbitrum/Uniswap", buys, sells))
    finally:
        undo()
    for venue, buys, sells in measured:
        rows = ((f"{venue}: signal → buy swap confirmed and booked", buys),
                (f"{venue}: exit → sell swap confirmed and booked", sells))  # fmt: skip
        for label, split in rows:
            result.add(Row(f"{label} (total)", "ms", stats=distribution(split.total)))
            result.add(Row("  of it: node RPC (and Jupiter HTTP) calls", "ms",
                           stats=distribution(split.external)))  # fmt: skip
            result.add(Row("  of it: waiting for the chain (confirmation polls)", "ms",
                           stats=distribution(split.waiting)))  # fmt: skip
            result.add(Row("  of it: valux (rules, journal, signing, booking)", "ms",
                           stats=distribution(split.own),
                           targets=[Target("p99", "<=", 50.0)]))  # fmt: skip
    result.notes.append(
        f"{signals} sequential buys per venue, each sold again at once (the exit rows), on "
        "the sandbox's tokens in turn: Solana with "
        f"{slot_ms:g} ms slots (LiteSVM, loopback RPC and Jupiter API, 0.5 SOL buys); "
        "Arbitrum on anvil (chain id 42161, a block mined per transaction, real Uniswap V3 "
        "bytecode, 0.05 WETH buys; the first buy of each token also approves it). Agent and "
        "wallet hosts in this process journaling to PostgreSQL."
    )


async def _construct(cls: Any, *args: Any, **kwargs: Any) -> Any:
    obj = cls.__new__(cls)
    await obj.__init__(*args, **kwargs)
    return obj


SPEC = Benchmark(
    name="live_swap",
    title="signal → swap confirmed on the sandbox (Solana/Jupiter, Arbitrum/Uniswap)",
    needs_ray=False,
    quick={"signals": 5, "slot_ms": 400.0},
    full={"signals": 100, "slot_ms": 400.0},
    run=run,
)
