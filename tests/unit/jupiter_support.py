"""Helpers for the Jupiter venue tests: the sandbox behind recording proxies, a journal,
a slot-driven clock, and venues built the way a wallet host builds them.

Nothing here mocks the chain: the proxies forward every request to the real sandbox
(LiteSVM behind its JSON-RPC server, the Jupiter-shaped service) and only *record* the
requests in order, or — when a test installs a hook — answer one themselves (a 503, a
429) or act before forwarding (move a pool's price between quote and swap).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from tests.unit.sandbox_support import SandboxEnv, control, sandbox_env
from valux.sandbox.spl import TOKEN_PROGRAM_ID, parse_token_account
from valux.venues.base import OrderIntent, Side
from valux.venues.jupiter import (
    Attempt,
    BeforeSign,
    JupiterClient,
    JupiterConfig,
    JupiterVenue,
    SenderSettings,
    SolanaRpc,
    SolanaSender,
)

SOL = 10**9


@dataclass
class Call:
    """One request a proxy saw."""

    method: str
    path: str
    body: Any
    rpc_method: str | None = None
    signature: str | None = None
    """For ``sendTransaction``: the signature of the transaction sent."""


Hook = Callable[[Call], Awaitable[web.Response | None]]


class Proxy:
    """A loopback HTTP proxy in front of ``target`` that records every request in order
    and lets hooks answer or act before a request is forwarded."""

    def __init__(self, target: str, events: list[tuple[str, str]] | None = None) -> None:
        self.target = target.rstrip("/")
        self.calls: list[Call] = []
        self.hooks: list[Hook] = []
        self.events = events if events is not None else []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=1 << 22)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def rpc_calls(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.rpc_method == method]

    def sent_signatures(self) -> list[str]:
        return [c.signature for c in self.rpc_calls("sendTransaction") if c.signature]

    def paths(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path.split("?")[0] == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(request.method, request.path_qs, body)
        if isinstance(body, dict) and isinstance(body.get("method"), str):
            call.rpc_method = body["method"]
            if call.rpc_method == "sendTransaction":
                tx = VersionedTransaction.from_bytes(base64.b64decode(body["params"][0]))
                call.signature = str(tx.signatures[0])
                self.events.append(("send", call.signature))
        self.calls.append(call)
        for hook in list(self.hooks):
            answer = await hook(call)
            if answer is not None:
                return answer
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("x-api-key", "content-type")
        }
        async with self._session.request(
            request.method, self.target + request.path_qs, data=raw, headers=headers
        ) as upstream:
            payload = await upstream.read()
            return web.Response(
                body=payload,
                status=upstream.status,
                content_type=upstream.content_type,
            )


class SlotClock:
    """Time for the venue under test: each ``sleep`` advances a fake clock by the asked
    seconds and the sandbox ledger by ``slots_per_sleep`` slots, so a poll is a slot and
    a 300-slot wait takes milliseconds. ``freeze`` turns ``sleep`` into a crash point."""

    def __init__(self, env: SandboxEnv, slots_per_sleep: int = 1) -> None:
        self.env = env
        self.now = 1_700_000_000.0
        self.slots_per_sleep = slots_per_sleep
        self.sleeps = 0
        self.crash_after: int | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.crash_after is not None and self.sleeps > self.crash_after:
            raise Crash("the wallet host process died here")
        self.now += seconds
        self.env.ledger.advance(self.slots_per_sleep)
        await asyncio.sleep(0)


class SleepLog:
    """A ``sleep`` that returns at once and records what it was asked (backoff waits)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Crash(BaseException):
    """A process death, simulated: not an Exception, so nothing in the venue catches it."""


@dataclass
class Journal:
    """The wallet's journal of attempts, as the wallet host would keep it."""

    events: list[tuple[str, str]]
    rows: list[tuple[str, str, str, int, dict[str, Any]]] = field(default_factory=list)
    on_journal: Callable[[int, str], None] | None = None
    """Called with (attempt number, signature) right after a row is written."""
    fail_after_write: bool = False
    """Raise Crash after writing the row (a death between journal and send)."""

    async def on_attempt(
        self,
        intent_id: str,
        signature: str,
        blockhash: str,
        last_valid_block_height: int,
        raw_fields: dict[str, Any],
    ) -> None:
        # the fields must be what a msgpack/JSON journal can hold
        stored = json.loads(json.dumps(raw_fields))
        self.rows.append((intent_id, signature, blockhash, last_valid_block_height, stored))
        self.events.append(("journal", signature))
        if self.on_journal is not None:
            self.on_journal(int(raw_fields["number"]), signature)
        if self.fail_after_write:
            raise Crash("died right after the journal commit")

    def attempts(self) -> list[Attempt]:
        return [Attempt.from_journal(*row) for row in self.rows]

    def signatures(self) -> list[str]:
        return [row[1] for row in self.rows]


@dataclass
class JupEnv:
    """A sandbox with recording proxies in front of its RPC and its Jupiter service."""

    sandbox: SandboxEnv
    rpc_proxy: Proxy
    jup_proxy: Proxy
    events: list[tuple[str, str]]
    api_key: str | None
    clients: list[AsyncClient] = field(default_factory=list)
    jupiter_clients: list[JupiterClient] = field(default_factory=list)

    @property
    def ledger(self) -> Any:
        return self.sandbox.ledger

    def mint(self, symbol: str) -> str:
        return self.sandbox.mint(symbol)

    def rpc(self) -> SolanaRpc:
        client = AsyncClient(self.rpc_proxy.url, timeout=10)
        self.clients.append(client)
        return SolanaRpc(client)

    def jupiter(self, **options: Any) -> JupiterClient:
        options.setdefault("api_key", self.api_key)
        client = JupiterClient(self.jup_proxy.url, **options)
        self.jupiter_clients.append(client)
        return client

    async def wallet(self, sol: int | str = 10) -> Keypair:
        keypair = Keypair()
        await control(self.sandbox, "fund", {"address": str(keypair.pubkey()), "amount": sol})
        return keypair

    async def fund_token(self, owner: Keypair, symbol: str, amount: int | str) -> None:
        await control(
            self.sandbox,
            "fund",
            {"address": str(owner.pubkey()), "amount": str(amount), "token": symbol},
        )

    async def set_price(self, symbol: str, usd: str) -> None:
        await control(self.sandbox, "price", {"token": symbol, "price": usd})


@asynccontextmanager
async def jupiter_env(**config: Any) -> AsyncIterator[JupEnv]:
    """An in-process sandbox (manual clock) with recording proxies and clients."""
    async with sandbox_env(**config) as sandbox:
        events: list[tuple[str, str]] = []
        rpc_proxy = Proxy(sandbox.sandbox.rpc.url, events)
        jup_proxy = Proxy(sandbox.sandbox.service.url, events)
        await rpc_proxy.start()
        await jup_proxy.start()
        env = JupEnv(
            sandbox, rpc_proxy, jup_proxy, events, sandbox.sandbox.service.settings.api_key
        )
        try:
            yield env
        finally:
            for client in env.clients:
                await client.close()
            for jupiter in env.jupiter_clients:
                await jupiter.close()
            await jup_proxy.stop()
            await rpc_proxy.stop()


TEST_SETTINGS = SenderSettings(
    poll_interval_s=0.5, rebroadcast_interval_s=2.0, confirm_timeout_s=600.0
)


def build_venue(
    env: JupEnv,
    wallet: Keypair,
    journal: Journal,
    clock: SlotClock,
    *,
    attempts: list[Attempt] | None = None,
    config: JupiterConfig | None = None,
    settings: SenderSettings = TEST_SETTINGS,
    before_sign: BeforeSign | None = None,
    client_sleeps: SleepLog | None = None,
) -> JupiterVenue:
    """A venue wired as a wallet host wires it: its own RPC and Jupiter clients, a sender
    rebuilt from journaled attempts, the wallet's keypair as signer."""
    rpc = env.rpc()
    sender = SolanaSender(
        rpc,
        address=str(wallet.pubkey()),
        on_attempt=journal.on_attempt,
        attempts=attempts or [],
        settings=settings,
        clock=clock.clock,
        sleep=clock.sleep,
    )
    return JupiterVenue(
        env.jupiter(sleep=client_sleeps or SleepLog()),
        rpc,
        config,
        sender=sender,
        signer=lambda _side: wallet,
        before_sign=before_sign,
    )


def intent(
    wallet: Keypair, side: Side, token: str, amount: str, intent_id: str = "i-1"
) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id,
        wallet_id="w-1",
        side=side,
        token=token,
        quote_asset="SOL",
        amount=Decimal(amount),
        created_at=1_700_000_000.0,
    )


async def lamports(env: JupEnv, owner: Keypair) -> int:
    return int(env.ledger.balance(owner.pubkey()))


def token_units(env: JupEnv, owner: Keypair, mint: str) -> int:
    """Base units of ``mint`` in every token account ``owner`` owns (read from the SVM)."""
    total = 0
    wanted = Pubkey.from_string(mint)
    for _address, account in env.ledger.token_accounts(TOKEN_PROGRAM_ID):
        parsed = parse_token_account(account)
        if parsed is not None and parsed.owner == owner.pubkey() and parsed.mint == wanted:
            total += parsed.amount
    return total
