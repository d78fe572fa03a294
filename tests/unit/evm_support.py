"""Helpers shared by the EVM tests: one anvil sandbox per test session, wallets, a journal.

The sandbox (anvil + real Uniswap bytecode) starts once, on first use, and every test
runs between ``evm_snapshot`` and ``evm_revert`` (:func:`chain`), so tests see the same
freshly deployed chain. anvil is stopped when the interpreter exits (and dies with it
anyway: the sandbox asks the kernel to kill it with its parent).
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgpack
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3

from valux.sandbox.evm import EvmSandbox
from valux.venues.base import OrderIntent, Side
from valux.venues.uniswap import (
    Attempt,
    SenderSettings,
    TxSender,
    UniswapConfig,
    UniswapVenue,
)

_SANDBOX: EvmSandbox | None = None
_LOCK = asyncio.Lock()
_OPEN: list[AsyncHTTPProvider] = []


async def shared_sandbox() -> EvmSandbox:
    """The session's sandbox, started (npm ci if needed, anvil, deployment) on first call."""
    global _SANDBOX
    async with _LOCK:
        if _SANDBOX is None or not _SANDBOX.running:
            sandbox = EvmSandbox()
            await sandbox.start()
            _SANDBOX = sandbox
            atexit.register(_kill, sandbox)
    return _SANDBOX


def _kill(sandbox: EvmSandbox) -> None:
    process = sandbox._process
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except Exception:
            process.kill()


@asynccontextmanager
async def chain() -> AsyncIterator[EvmSandbox]:
    """The shared sandbox between a snapshot and a revert (automine back on after)."""
    sandbox = await shared_sandbox()
    snapshot = await sandbox.snapshot()
    try:
        yield sandbox
    finally:
        await sandbox.set_automine(True)
        await sandbox.revert(snapshot)
        while _OPEN:
            await _OPEN.pop().disconnect()


class RecordingProvider(AsyncHTTPProvider):
    """An AsyncHTTPProvider that remembers every JSON-RPC method it sent (``methods``) and
    every one the node answered (``answered``)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.methods: list[str] = []
        self.answered: list[str] = []

    async def make_request(self, method: Any, params: Any) -> Any:
        self.methods.append(str(method))
        answer = await super().make_request(method, params)
        self.answered.append(str(method))
        return answer


def web3_for(sandbox: EvmSandbox) -> tuple[AsyncWeb3[RecordingProvider], RecordingProvider]:
    """A client of the sandbox as production makes one (AsyncWeb3 over HTTP)."""
    provider = RecordingProvider(sandbox.rpc_url)
    _OPEN.append(provider)
    return AsyncWeb3(provider), provider


class CountingSigner:
    """A LocalAccount wrapper that records every transaction it was asked to sign."""

    def __init__(self, account: LocalAccount) -> None:
        self.account = account
        self.signed: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return str(self.account.address)

    def sign_transaction(self, tx: Any) -> Any:
        self.signed.append(dict(tx))
        return self.account.sign_transaction(tx)


@dataclass
class Journal:
    """What a wallet journals: every attempt, stored as msgpack (as the real journal does)."""

    rows: list[bytes] = field(default_factory=list)
    fail_after_write: bool = False
    """Commit the row, then raise (a crash between journal and send)."""
    on_write: Callable[[tuple[str, str, int, dict[str, Any]]], None] | None = None

    async def on_attempt(
        self, intent_id: str, tx_hash: str, nonce: int, raw_fields: dict[str, Any]
    ) -> None:
        row = msgpack.packb([intent_id, tx_hash, nonce, raw_fields])
        self.rows.append(row)
        if self.on_write is not None:
            self.on_write((intent_id, tx_hash, nonce, raw_fields))
        if self.fail_after_write:
            raise RuntimeError("the wallet host died right after the journal write")

    def entries(self) -> list[tuple[str, str, int, dict[str, Any]]]:
        out = []
        for row in self.rows:
            intent_id, tx_hash, nonce, fields = msgpack.unpackb(row)
            out.append((intent_id, tx_hash, nonce, fields))
        return out

    def attempts(self) -> list[Attempt]:
        return [Attempt.from_journal(*entry) for entry in self.entries()]

    def of_kind(self, kind: str) -> list[Attempt]:
        return [a for a in self.attempts() if a.kind == kind]

    def swaps(self, intent_id: str) -> list[Attempt]:
        """The swap attempts of one intent, in journal order."""
        return [a for a in self.of_kind("swap") if a.intent_id == intent_id]


@dataclass
class Trader:
    """One wallet on the sandbox: its key, journal, sender and venue."""

    account: LocalAccount
    signer: CountingSigner
    journal: Journal
    sender: TxSender
    venue: UniswapVenue
    w3: AsyncWeb3[RecordingProvider]
    provider: RecordingProvider

    @property
    def address(self) -> str:
        return str(self.account.address)


async def make_trader(
    sandbox: EvmSandbox,
    *,
    quote: str = "WETH",
    eth: Decimal = Decimal(10),
    funds: Mapping[str, Decimal] | None = None,
    account: LocalAccount | None = None,
    journal: Journal | None = None,
    attempts: list[Attempt] | None = None,
    chain_id: int | None = None,
    settings: SenderSettings | None = None,
    start: bool = True,
    **config: Any,
) -> Trader:
    """A funded wallet with a started sender and a Uniswap venue."""
    account = account or Account.create()
    if eth:
        await sandbox.fund(account.address, eth)
    for token, amount in (funds or {}).items():
        await sandbox.fund(account.address, amount, token)
    w3, provider = web3_for(sandbox)
    journal = journal or Journal()
    signer = CountingSigner(account)
    sender = TxSender(
        w3,
        chain_id=chain_id or sandbox.chain_id,
        address=account.address,
        on_attempt=journal.on_attempt,
        attempts=attempts or (),
        settings=settings or SenderSettings(poll_interval_s=0.02),
    )
    if start:
        await sender.start()
    cfg = UniswapConfig.from_sandbox(sandbox.description(), quote=quote, **config)
    if chain_id is not None:
        cfg = cfg.model_copy(update={"chain_id": chain_id})
    venue = UniswapVenue(w3, cfg, sender=sender, signer=lambda side: signer)
    return Trader(account, signer, journal, sender, venue, w3, provider)


_COUNTER = 0


def intent(
    side: Side, token: str, amount: Decimal, *, quote: str = "WETH", intent_id: str | None = None
) -> OrderIntent:
    """An order intent with a fresh id unless one is given."""
    global _COUNTER
    _COUNTER += 1
    return OrderIntent(
        intent_id=intent_id or f"evm-intent-{_COUNTER}",
        wallet_id="w1",
        side=side,
        token=token,
        quote_asset=quote,
        amount=amount,
        created_at=0.0,
    )


async def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds (fails the test after ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def until_in_mempool(
    sandbox: EvmSandbox, tx_hashes: list[str], timeout_s: float = 10.0
) -> None:
    """Wait until the node knows every one of ``tx_hashes``. A swap is journaled *before*
    it is sent, so with automine off a test must see it reach the node before it mines
    the block meant to include it (on a loaded machine the send can come later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        known = [await sandbox.rpc("eth_getTransactionByHash", [h]) for h in tx_hashes]
        if all(known):
            return
        if loop.time() > deadline:
            missing = [h for h, k in zip(tx_hashes, known, strict=True) if not k]
            raise AssertionError(f"never reached the node: {missing}")
        await asyncio.sleep(0.01)


def units(amount: Decimal, decimals: int) -> int:
    """Whole units → base units (exact)."""
    return int(amount.scaleb(decimals))
