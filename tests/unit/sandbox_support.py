"""Helpers shared by the sandbox tests: an in-process ledger + RPC, and transaction builders.

Everything talks to the sandbox the way production code will: solana-py's ``AsyncClient``
over HTTP for the RPC, aiohttp for the HTTP services, solders for keys and signing.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Processed
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from valux.sandbox.ledger import LedgerConfig, SolanaLedger
from valux.sandbox.runtime import Sandbox, SandboxConfig
from valux.sandbox.solana_rpc import SolanaRpcServer

SOL = 10**9


@dataclass
class RpcEnv:
    """A manual-clock ledger, its RPC server and a solana-py client connected to it."""

    ledger: SolanaLedger
    rpc: SolanaRpcServer
    client: AsyncClient


@asynccontextmanager
async def rpc_env(**config: Any) -> AsyncIterator[RpcEnv]:
    """Ledger (manual clock unless ``slot_ms`` is given) + RPC server + client."""
    config.setdefault("slot_ms", None)
    ledger = SolanaLedger(LedgerConfig(**config))
    await ledger.start()
    try:
        async with SolanaRpcServer(ledger) as rpc, AsyncClient(rpc.url) as client:
            yield RpcEnv(ledger, rpc, client)
    finally:
        await ledger.stop()


def signed(
    payer: Keypair, instructions: list[Instruction], blockhash: Hash
) -> VersionedTransaction:
    """A v0 transaction of ``instructions`` paid and signed by ``payer``."""
    message = MessageV0.try_compile(payer.pubkey(), instructions, [], blockhash)
    return VersionedTransaction(message, [payer])


def transfer_tx(payer: Keypair, to: Pubkey, lamports: int, blockhash: Hash) -> VersionedTransaction:
    """A signed v0 system transfer."""
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))
    return signed(payer, [ix], blockhash)


async def funded(env: RpcEnv, lamports: int = 10 * SOL) -> Keypair:
    """A fresh keypair funded through ``requestAirdrop``."""
    keypair = Keypair()
    await env.client.request_airdrop(keypair.pubkey(), lamports)
    return keypair


async def fresh_blockhash(client: AsyncClient) -> tuple[Hash, int]:
    """The processed blockhash and its last valid block height."""
    value = (await client.get_latest_blockhash(Processed)).value
    return value.blockhash, value.last_valid_block_height


async def status_of(client: AsyncClient, signature: Signature) -> Any:
    """The single ``getSignatureStatuses`` entry of ``signature`` (``None`` if unknown)."""
    return (await client.get_signature_statuses([signature], True)).value[0]


async def raw_rpc(url: str, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    """One JSON-RPC call over plain aiohttp, answered as the decoded envelope."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        result: dict[str, Any] = await resp.json()
        return result


# ------------------------------------------------------------------ the whole sandbox


@dataclass
class SandboxEnv:
    """A started in-process sandbox, an RPC client and an HTTP session on its service."""

    sandbox: Sandbox
    client: AsyncClient
    http: aiohttp.ClientSession
    headers: dict[str, str]
    """``x-api-key`` for the Jupiter routes."""

    @property
    def ledger(self) -> SolanaLedger:
        return self.sandbox.ledger

    def mint(self, symbol: str) -> str:
        return self.sandbox.market.tokens()[symbol]


@asynccontextmanager
async def sandbox_env(**config: Any) -> AsyncIterator[SandboxEnv]:
    """An in-process sandbox (manual clock, no manifest unless asked) and clients."""
    config.setdefault("slot_ms", None)
    config.setdefault("write_manifest", False)
    async with Sandbox(SandboxConfig(**config)) as sandbox:
        key = sandbox.service.settings.api_key
        headers = {"x-api-key": key} if key else {}
        async with (
            AsyncClient(sandbox.rpc.url) as client,
            aiohttp.ClientSession(base_url=sandbox.service.url) as http,
        ):
            yield SandboxEnv(sandbox, client, http, headers)


async def control(env: SandboxEnv, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a control request; fail the test on an error answer."""
    async with env.http.post(f"/control/{path}", json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def get_quote(
    env: SandboxEnv, input_mint: str, output_mint: str, amount: int, **params: Any
) -> dict[str, Any]:
    """GET /swap/v1/quote with the API key; fail the test on an error answer."""
    query = {"inputMint": input_mint, "outputMint": output_mint, "amount": str(amount)}
    query.update({k: str(v) for k, v in params.items()})
    async with env.http.get("/swap/v1/quote", params=query, headers=env.headers) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def post_swap(
    env: SandboxEnv, quote: dict[str, Any], user: Pubkey, **options: Any
) -> tuple[int, dict[str, Any]]:
    """POST /swap/v1/swap; answers ``(status, body)``."""
    body = {"userPublicKey": str(user), "quoteResponse": quote, **options}
    async with env.http.post("/swap/v1/swap", json=body, headers=env.headers) as resp:
        return resp.status, await resp.json()


def wallet_sign(swap_transaction: str, keypair: Keypair) -> VersionedTransaction:
    """Fill the wallet's signature slot of a service-signed transaction, keep the others."""
    tx = VersionedTransaction.from_bytes(base64.b64decode(swap_transaction))
    message = tx.message
    signers = list(message.account_keys[: message.header.num_required_signatures])
    signatures = list(tx.signatures)
    signatures[signers.index(keypair.pubkey())] = keypair.sign_message(to_bytes_versioned(message))
    return VersionedTransaction.populate(message, signatures)
