"""Live wallets: the chain venue of each wallet a wallet host runs, and the custody checks
around every signature.

A wallet on a chain (``chain = "solana"``, venue ``jupiter``) trades through its own
:class:`~valux.venues.jupiter.JupiterVenue`, built by :class:`LiveVenues` the first time
the wallet host needs it, with

- the host's shared HTTP session and Solana RPC client;
- the attempts journaled for the wallet's intents still in flight, so a restarted host
  resumes them (rebroadcasting the journaled bytes, re-signing only when every attempt is
  provably expired) and never signs a second swap for one intent;
- ``on_attempt``: the host journals each signed attempt in the wallet's stream
  (``attempt_signed``) before it is sent;
- a signer from the host's :class:`~valux.custody.vault.KeyVault` — a buy needs the key
  unlocked; a sale signs while the wallet holds positions, after the unlock's TTL too,
  until someone locks with ``force`` (a :class:`~valux.custody.vault.Locked` error names
  the lock);
- ``before_sign``: the wallet's spend policy (:mod:`valux.custody.policy`) on the swap as
  built — amount, daily total, token, price impact, priority fee — before every new
  signature; a refusal raises :class:`~valux.custody.policy.SpendRefused` naming the rule.

A wallet on an EVM chain (``chain = "arbitrum"``, venue ``uniswap``) trades through its
own :class:`~valux.venues.uniswap.UniswapVenue` and :class:`~valux.venues.uniswap.TxSender`
(the wallet's nonce: one sender per wallet), built the same way — attempts journaled
(``attempt_signed``: hash, nonce, raw fields) before they are sent and handed back after a
restart, the signer from the vault — and started (the node's chain id checked, the
journal lined up with the account's nonces) before the first order. Its spend policy is
checked by :meth:`LiveVenues.refusal` before the venue is asked to sign: amounts, the
day's total, the token, the quoted price impact, and the contracts the swap calls and
approves (the router, the token).

No key ever leaves the wallet host's process: the vault decrypts it there, the venue signs
there, and nothing here logs or returns it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
from eth_utils.address import to_checksum_address
from solana.rpc.async_api import AsyncClient
from web3 import AsyncHTTPProvider, AsyncWeb3

from valux.config.secrets import jupiter_api_key
from valux.config.settings import Settings
from valux.custody.policy import SpendPolicy, SpendRefused, check, utc_day
from valux.custody.vault import KeyVault, Purpose
from valux.custody.wallet import Wallet
from valux.schema.evm_abi import ERC20_ABI
from valux.venues.base import OrderIntent, Side, Venue
from valux.venues.jupiter import (
    Attempt,
    Holdings,
    JupiterClient,
    JupiterConfig,
    JupiterVenue,
    Prepared,
    SenderSettings,
    SolanaRpc,
    SolanaSender,
)
from valux.venues.jupiter.chain import WSOL_MINT
from valux.venues.uniswap import Attempt as EvmAttempt
from valux.venues.uniswap import SenderSettings as EvmSenderSettings
from valux.venues.uniswap import TxSender, UniswapConfig, UniswapVenue

__all__ = ["LIVE_VENUES", "JournalAttempt", "LiveVenues", "policy_refusal", "spend_policy"]

LIVE_VENUES = frozenset({"jupiter", "uniswap"})
"""Venues that sign on a chain with the wallet's own key."""

JournalAttempt = Callable[[str, str, dict[str, Any]], Awaitable[None]]
"""``await journal(wallet_id, intent_id, attempt)``: commit ``attempt_signed`` first."""


def spend_policy(wallet: Wallet) -> SpendPolicy | None:
    """The wallet's spend policy (None: it has none)."""
    if wallet.policy is None:
        return None
    return SpendPolicy.model_validate({"quote_asset": wallet.quote_asset, **wallet.policy})


def policy_refusal(
    wallet: Wallet,
    intent: OrderIntent,
    *,
    price_impact: float | Decimal | None,
    priority_fee: int | None = None,
    contracts: list[str] | None = None,
) -> str | None:
    """Why the wallet's policy refuses to sign ``intent`` (``CODE: message``), or None.

    The intent was journaled (``intent_submitted`` counts a buy in today's total): the
    total before it is what the daily limit adds it to."""
    policy = spend_policy(wallet)
    if policy is None:
        return None
    spent = wallet.spent_on(utc_day(intent.created_at))
    if intent.side is Side.BUY:
        spent = max(Decimal(0), spent - intent.amount)
    found = check(
        policy,
        intent,
        spent_today=spent,
        price_impact=price_impact,
        priority_fee=priority_fee,
        contracts=contracts or (),
    )
    return None if found is None else f"{found.code}: {found.message}"


class LiveVenues:
    """The chain venues of one wallet host's live wallets (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        vault: KeyVault,
        journal_attempt: JournalAttempt,
        wallet_of: Callable[[str], Wallet],
    ) -> None:
        self.settings = settings
        self.vault = vault
        self._journal_attempt = journal_attempt
        self._wallet_of = wallet_of
        self._venues: dict[str, JupiterVenue] = {}
        self._evm: dict[str, UniswapVenue] = {}
        self._started: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._rpc: SolanaRpc | None = None
        self._w3: AsyncWeb3[Any] | None = None

    def _shared(self) -> tuple[aiohttp.ClientSession, SolanaRpc]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._rpc is None:
            client = AsyncClient(
                self.settings.solana.rpc_url, timeout=self.settings.solana.timeout_s
            )
            self._rpc = SolanaRpc(client)
        return self._session, self._rpc

    async def venue(self, wallet: Wallet) -> Venue:
        """The wallet's chain venue, built once per host incarnation (an EVM wallet's
        sender started first: raises VenueUnavailable / ChainIdMismatch if it cannot)."""
        if wallet.venue == "uniswap":
            evm = self._evm.get(wallet.id)
            if evm is None:
                evm = self._evm[wallet.id] = self._build_evm(wallet)
            if wallet.id not in self._started:
                await evm.sender.start()
                self._started.add(wallet.id)
            return evm
        return self.venue_for(wallet)

    def venue_for(self, wallet: Wallet) -> JupiterVenue:
        """The wallet's Jupiter venue (built once per host incarnation)."""
        venue = self._venues.get(wallet.id)
        if venue is None:
            venue = self._venues[wallet.id] = self._build(wallet)
        return venue

    def _web3(self) -> AsyncWeb3[Any]:
        if self._w3 is None:
            evm = self.settings.evm
            provider = AsyncHTTPProvider(evm.rpc_url, request_kwargs={"timeout": evm.timeout_s})
            self._w3 = AsyncWeb3(provider)
        return self._w3

    def evm_config(self) -> UniswapConfig:
        evm = self.settings.evm
        return UniswapConfig(
            chain_id=evm.chain_id,
            router=evm.router,
            quoter=evm.quoter,
            weth=evm.weth,
            quote_token=evm.quote_token or evm.weth,
            quote_symbol=evm.quote_asset,
            factory=evm.factory,
            slippage_bps=evm.slippage_bps,
        )

    def _build_evm(self, wallet: Wallet) -> UniswapVenue:
        w3 = self._web3()
        wallet_id = wallet.id
        evm = self.settings.evm

        async def on_attempt(
            intent_id: str, tx_hash: str, nonce: int, fields: dict[str, Any]
        ) -> None:
            attempt = {"tx_hash": tx_hash, "nonce": nonce, "fields": fields}
            await self._journal_attempt(wallet_id, intent_id, attempt)

        attempts = [
            EvmAttempt.from_journal(intent_id, a["tx_hash"], a["nonce"], a["fields"])
            for intent_id, intent in wallet.pending.items()
            for a in intent.get("attempts", [])
        ]
        sender = TxSender(
            w3,
            chain_id=evm.chain_id,
            address=wallet.address,
            on_attempt=on_attempt,
            attempts=attempts,
            settings=EvmSenderSettings(
                poll_interval_s=evm.confirm_poll_s, replace_after_blocks=evm.replace_after_blocks
            ),
        )

        def signer(side: Side) -> Any:
            purpose = Purpose.ENTRY if side is Side.BUY else Purpose.EXIT
            return self.vault.signer(wallet_id, purpose)

        return UniswapVenue(w3, self.evm_config(), sender=sender, signer=signer)

    async def refusal(self, wallet: Wallet, intent: OrderIntent) -> str | None:
        """Why an EVM wallet's policy refuses ``intent`` (``CODE: message``), or None; its
        venue quotes the price impact, and the swap calls the router and approves the
        token it spends. (A Solana wallet's policy runs on the built swap, in its venue.)"""
        if wallet.policy is None or wallet.venue != "uniswap":
            return None
        venue = await self.venue(wallet)
        impact: float | None
        try:
            impact = (await venue.quote(intent.side, intent.token, intent.amount)).price_impact
        except Exception:  # no quote: a policy capping the impact refuses, naming why
            impact = None
        config = self.evm_config()
        spent = config.quote_token if intent.side is Side.BUY else intent.token
        return policy_refusal(wallet, intent, price_impact=impact,
                              contracts=[config.router, spent])  # fmt: skip

    def _build(self, wallet: Wallet) -> JupiterVenue:
        session, rpc = self._shared()
        wallet_id = wallet.id
        jupiter = self.settings.jupiter

        async def on_attempt(
            intent_id: str,
            signature: str,
            blockhash: str,
            last_valid_block_height: int,
            fields: dict[str, Any],
        ) -> None:
            attempt = {
                "signature": signature,
                "blockhash": blockhash,
                "last_valid_block_height": last_valid_block_height,
                "fields": fields,
            }
            await self._journal_attempt(wallet_id, intent_id, attempt)

        attempts = [
            Attempt.from_journal(
                intent_id,
                a["signature"],
                a["blockhash"],
                a["last_valid_block_height"],
                a["fields"],
            )
            for intent_id, intent in wallet.pending.items()
            for a in intent.get("attempts", [])
        ]
        solana = self.settings.solana
        sender = SolanaSender(
            rpc,
            address=wallet.address,
            on_attempt=on_attempt,
            attempts=attempts,
            settings=SenderSettings(
                poll_interval_s=solana.confirm_poll_s, rebroadcast_interval_s=solana.rebroadcast_s
            ),
        )

        def signer(side: Side) -> Any:
            purpose = Purpose.ENTRY if side is Side.BUY else Purpose.EXIT
            return self.vault.signer(wallet_id, purpose)

        async def before_sign(intent: OrderIntent, prepared: Prepared) -> None:
            why = policy_refusal(
                self._wallet_of(wallet_id),
                intent,
                price_impact=prepared.price_impact,
                priority_fee=prepared.priority_fee_lamports,
            )
            if why is not None:
                code, _, message = why.partition(": ")
                raise SpendRefused(message, code)

        client = JupiterClient(jupiter.url, api_key=jupiter_api_key(), session=session)
        config = JupiterConfig(
            slippage_bps=jupiter.slippage_bps,
            priority_level=jupiter.priority_level,
            max_priority_fee_lamports=jupiter.max_priority_fee_lamports,
        )
        return JupiterVenue(
            client, rpc, config, sender=sender, signer=signer, before_sign=before_sign
        )

    async def holdings(self, wallet: Wallet) -> dict[str, Decimal]:
        """The wallet's on-chain balances as the journal keeps them: the quote asset (SOL,
        wrapped SOL included; on an EVM chain the quote token) and every token (by mint;
        on an EVM chain, every token its books name)."""
        if wallet.venue == "uniswap":
            return await self._evm_holdings(wallet)
        held: Holdings = await self.venue_for(wallet).holdings()
        out = {m: h.amount for m, h in held.tokens.items() if h.units and m != WSOL_MINT}
        out[wallet.quote_asset] = held.sol_with_wrapped  # booked together, as the venue does
        return out

    async def _evm_holdings(self, wallet: Wallet) -> dict[str, Decimal]:
        """ERC-20 balances (``balanceOf`` / ``decimals``) of the quote token and of every
        token the books name; gas (ETH) is not booked, so not compared."""
        w3 = self._web3()
        config = self.evm_config()
        tokens = {wallet.quote_asset: config.quote_token}
        tokens.update({a: a for a in wallet.balances if a != wallet.quote_asset})
        out: dict[str, Decimal] = {}
        for asset, address in tokens.items():
            contract = w3.eth.contract(address=to_checksum_address(address), abi=ERC20_ABI)
            units = await contract.functions.balanceOf(wallet.address).call()
            decimals = await contract.functions.decimals().call()
            out[asset] = Decimal(int(units)).scaleb(-int(decimals))
        return out

    def forget(self, wallet_id: str) -> None:
        """Drop a wallet's venue (it was deleted)."""
        self._venues.pop(wallet_id, None)
        self._evm.pop(wallet_id, None)
        self._started.discard(wallet_id)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._rpc is not None:
            await self._rpc.client.close()
        if self._w3 is not None:
            with contextlib.suppress(Exception):
                await self._w3.provider.disconnect()
