"""Uniswap V3 through SwapRouter02: quote, approve, swap, book from the receipt.

Contract (on top of :mod:`valux.venues.base` and :mod:`valux.venues.uniswap.sender`):

- **Configuration** (:class:`UniswapConfig`, frozen, no unknown fields): the chain id, the
  router (SwapRouter02), the quoter (QuoterV2), WETH, and the **quote asset** — WETH or a
  stablecoin, by address, with the symbol intents name it by. ``native_eth`` (WETH quote
  only) pays buys with ETH (the router wraps ``msg.value``) and pays sells out in ETH
  (the router receives the WETH and unwraps it to the wallet in the same ``multicall``).
  :meth:`UniswapVenue.wrap` / :meth:`UniswapVenue.unwrap` convert explicitly.
- **Intents**: ``token`` is the token's address; ``quote_asset`` the configured symbol
  (or the quote token's address). A BUY spends ``amount`` of the quote asset, a SELL sells
  ``amount`` tokens; amounts are floored to the token's decimals (read on chain, cached).
- **Quote**: QuoterV2 ``quoteExactInputSingle`` (an ``eth_call``) at every fee tier
  (500, 3000, 10000 by default) concurrently; the largest output wins (a tier without a
  pool reverts and is skipped). Price impact compares the execution price (pool fee
  excluded) with the chosen pool's ``slot0`` mid price. ``network_fee`` is ``quote_gas``
  at ``eth_gasPrice``, in the quote asset.
- **Submit** (idempotent by ``intent_id``; concurrent duplicates share one execution,
  which runs shielded from a caller's cancellation):

  1. the signer for the intent's side (``signer(side)``; what it raises, e.g. a locked
     key, propagates) and the sender's readiness: a node on another chain id is refused
     here, before anything is signed;
  2. the best route, and ``amountOutMinimum`` = its output × (1 − slippage bps) — the
     bps are ``slippage_bps(intent)`` (the agent's bound) or the configured default;
     ``min_amount_out`` given to :meth:`UniswapVenue.submit` overrides it;
  3. the input balance: too little is FAILED, nothing signed;
  4. the approval: ``allowance(wallet, router)`` is read and, only when short, one
     ``approve`` (of ``MAX_UINT256`` by default, so once per token; of the exact amount
     with ``approve_max=False``, held under the token's lock until the swap is mined) is
     sent and waited for. Concurrent intents on one token wait for the same approval;
  5. ``multicall(deadline, [exactInputSingle(...)(, unwrapWETH9)])``, gas by
     ``eth_estimateGas`` × (1 + margin): a revert here (slippage, balance, allowance) is
     FAILED with the decoded reason and nothing is sent;
  6. sent through the wallet's :class:`~valux.venues.uniswap.sender.TxSender` (nonce,
     journal-before-send, replacement when stuck) and waited for;
  7. booked from the receipt: ``Transfer`` logs give what left the wallet and what
     reached it (ETH legs: the transaction's value, and the router's WETH
     ``Withdrawal``); gas = ``gasUsed × effectiveGasPrice``. A mined revert is FAILED
     with the reason from ``debug_traceTransaction`` (callTracer), or from replaying the
     call at that block when the node has no tracer.

- **Amounts** (an :class:`~valux.venues.base.OrderStatus`): ``base_amount`` and
  ``quote_amount`` are exactly what the logs show moved (the whole input of a BUY, the
  whole output of a SELL); ``fee`` is the pool fee in the quote asset; ``price`` excludes
  it. Gas is paid in ETH, *not* out of the quote amounts: ``network_fee`` is its value in
  the quote asset (exact for WETH; at the WETH/quote pool price for a stablecoin) and
  :class:`SwapResult` carries the exact ``gas_paid_wei`` — a FAILED status moves no quote
  or token, but a mined revert did pay gas, which :class:`SwapResult` reports.
- **Status and restarts**: the swap attempts come from the sender, which the wallet built
  with its journaled attempts. ``status`` looks up the receipts of every hash of the
  intent's swap nonce(s): mined → booked (FILLED or FAILED), nonce taken by another
  transaction → FAILED (dropped; nothing ran), else PENDING; NOT_FOUND when no swap was
  ever signed for the id (an approval alone moves no position: submitting again is safe).
  ``submit`` of an id with journaled swap attempts never signs a new swap: it follows
  those attempts (replacing them if stuck) to their outcome.
- **Errors**: raised only before a swap was signed (besides what the wallet's own
  ``signer`` and ``on_attempt`` callbacks raise, which propagate unchanged) —
  :class:`~valux.venues.base.OrderRejected` for an order that cannot work as given
  (unknown token, no pool, wrong quote asset, the chain id),
  :class:`~valux.venues.base.VenueUnavailable` when the node could not be asked. Once a
  swap is signed every answer is a status (UNKNOWN if following it failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, Final, Self

from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from web3 import AsyncWeb3
from web3.exceptions import BadFunctionCallOutput

from valux.feeds.uniswap_pool import POOL_ABI, sqrt_price_x96_to_price
from valux.schema.evm_abi import (
    ADDRESS_THIS,
    ERC20_ABI,
    FACTORY_ABI,
    FEE_TIERS,
    MAX_UINT256,
    QUOTER_V2_ABI,
    SWAP_ROUTER02_ABI,
    WETH9_ABI,
    ZERO_ADDRESS,
)
from valux.venues.base import (
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderStatus,
    Quote,
    Side,
    VenueUnavailable,
)
from valux.venues.uniswap.errors import (
    SendRejected,
    decode_revert,
    explain,
    revert_reason,
    unavailable,
)
from valux.venues.uniswap.fees import gas_with_margin
from valux.venues.uniswap.receipts import gas_paid_wei, token_flows
from valux.venues.uniswap.sender import (
    NODE_ERRORS,
    Attempt,
    GroupState,
    Lookup,
    TxCall,
    TxSender,
    TxSigner,
)

__all__ = ["Route", "SignerFor", "SwapResult", "UniswapConfig", "UniswapVenue"]

SignerFor = Callable[[Side], TxSigner]
"""The wallet's signer for an order side (BUY = an entry, SELL = an exit); may raise."""

_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_SWAP_KINDS: Final = frozenset({"swap", "wrap", "unwrap"})
_ZERO: Final = Decimal(0)
_WRAP_GAS_FLOOR: Final = 30_000


def _address(value: str, name: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError(f"{name} must be a 0x-prefixed 40-hex-digit address")
    return to_checksum_address(value)


class UniswapConfig(BaseModel):
    """Where the Uniswap contracts are and how the venue trades (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain_id: int = Field(default=42161, ge=1)
    router: str
    quoter: str
    weth: str
    quote_token: str
    """The quote asset's address: WETH or a stablecoin."""
    quote_symbol: str = Field(default="WETH", min_length=1)
    """The name intents use for the quote asset (``OrderIntent.quote_asset``)."""
    factory: str | None = None
    """The V3 factory (for ``slot0`` mid prices); ``None`` = ask the quoter."""
    native_eth: bool = False
    fee_tiers: tuple[int, ...] = FEE_TIERS
    slippage_bps: int = Field(default=50, ge=0, lt=10_000)
    deadline_s: int = Field(default=600, ge=1)
    approve_max: bool = True
    quote_gas: int = Field(default=150_000, ge=21_000)

    @field_validator("router", "quoter", "weth", "quote_token")
    @classmethod
    def _checksum(cls, value: str) -> str:
        return _address(value, "address")

    @field_validator("factory")
    @classmethod
    def _checksum_optional(cls, value: str | None) -> str | None:
        return None if value is None else _address(value, "factory")

    @field_validator("fee_tiers")
    @classmethod
    def _tiers(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(t <= 0 or t >= 1_000_000 for t in value):
            raise ValueError("fee tiers must be non-empty, each in (0, 1_000_000)")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _native_needs_weth(self) -> Self:
        if self.native_eth and self.quote_token != self.weth:
            raise ValueError("native_eth needs WETH as the quote token")
        return self

    @classmethod
    def from_sandbox(
        cls, description: Mapping[str, Any], *, quote: str = "WETH", **overrides: Any
    ) -> UniswapConfig:
        """A config for ``valux sandbox``'s EVM (its ``sandbox.json`` keys), quoted in
        ``quote`` (a symbol of ``evm_tokens``)."""
        tokens = description["evm_tokens"]
        values: dict[str, Any] = {
            "chain_id": description["chain_id"],
            "router": description["router"],
            "quoter": description["quoter"],
            "weth": tokens["WETH"],
            "quote_token": tokens[quote],
            "quote_symbol": quote,
            "factory": description.get("evm_factory"),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Route:
    """The best single-pool route for an exact input: its fee tier and QuoterV2's answer."""

    fee: int
    amount_out: int
    sqrt_price_after: int
    gas_estimate: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapResult:
    """What one intent did on chain, in base units (richer than an OrderStatus)."""

    intent_id: str
    state: OrderState
    side: Side | None = None
    token: str = ""
    quote_token: str = ""
    fee_tier: int = 0
    base_units: int = 0
    quote_units: int = 0
    base_decimals: int = 18
    quote_decimals: int = 18
    gas_used: int = 0
    gas_paid_wei: int = 0
    network_fee: Decimal = _ZERO
    tx_hash: str | None = None
    nonce: int | None = None
    block_number: int | None = None
    reason: str | None = None
    ts: float

    def status(self) -> OrderStatus:
        """The :class:`~valux.venues.base.OrderStatus` of this result."""
        if self.state is not OrderState.FILLED or self.side is None:
            return OrderStatus(
                intent_id=self.intent_id,
                state=self.state,
                reason=self.reason,
                ts=self.ts,
                tx_id=self.tx_hash,
            )
        base = Decimal(self.base_units).scaleb(-self.base_decimals)
        quote = Decimal(self.quote_units).scaleb(-self.quote_decimals)
        rate = Decimal(self.fee_tier) / Decimal(1_000_000)
        if self.side is Side.BUY:
            fee = quote * rate
            price = (quote - fee) / base if base else _ZERO
        else:
            fee = quote * rate / (1 - rate)
            price = (quote + fee) / base if base else _ZERO
        return OrderStatus(
            intent_id=self.intent_id,
            state=OrderState.FILLED,
            base_amount=base,
            quote_amount=quote,
            price=price,
            fee=fee,
            network_fee=self.network_fee,
            reason=self.reason,
            ts=self.ts,
            tx_id=self.tx_hash,
        )


class _Failed(Exception):
    """A step failed before the swap was signed: the intent is FAILED, nothing moved."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _units(amount: Decimal, decimals: int) -> int:
    with localcontext() as ctx:
        ctx.prec = 80
        return int(amount.scaleb(decimals).to_integral_value(rounding="ROUND_FLOOR"))


class UniswapVenue:
    """The Uniswap V3 venue of one wallet on one chain (module docstring).

    One instance per wallet and chain; it shares the wallet's :class:`TxSender`.
    """

    name = "uniswap"

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        config: UniswapConfig,
        *,
        sender: TxSender,
        signer: SignerFor,
        slippage_bps: Callable[[OrderIntent], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sender.chain_id != config.chain_id:
            raise ValueError(
                f"the sender signs for chain {sender.chain_id}, the venue is configured for "
                f"chain {config.chain_id}"
            )
        self.w3 = w3
        self.config = config
        self.sender = sender
        self.signer = signer
        self.slippage_bps = slippage_bps
        self.clock = clock
        self.wallet = sender.address
        self._router = w3.eth.contract(address=config.router, abi=SWAP_ROUTER02_ABI)  # type: ignore[call-overload]
        self._quoter = w3.eth.contract(address=config.quoter, abi=QUOTER_V2_ABI)  # type: ignore[call-overload]
        self._weth = w3.eth.contract(address=config.weth, abi=WETH9_ABI)  # type: ignore[call-overload]
        self._factory_address = config.factory
        self._decimals: dict[str, int] = {}
        self._pools: dict[tuple[str, str, int], str] = {}
        self._results: dict[str, SwapResult] = {}
        self._running: dict[str, asyncio.Future[SwapResult]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}

    # -- small reads -------------------------------------------------------------

    def _erc20(self, token: str) -> Any:
        return self.w3.eth.contract(address=token, abi=ERC20_ABI)  # type: ignore[call-overload]

    async def decimals(self, token: str) -> int:
        """``decimals()`` of ``token`` (cached). Raises OrderRejected for a non-token."""
        token = to_checksum_address(token)
        if token not in self._decimals:
            try:
                value = int(await self._erc20(token).functions.decimals().call())
            except NODE_ERRORS as exc:
                if isinstance(exc, BadFunctionCallOutput) or revert_reason(exc) is not None:
                    raise OrderRejected(f"{token} is not an ERC-20 token", self.name) from exc
                raise unavailable(f"decimals of {token}", exc, self.name) from exc
            self._decimals[token] = value
        return self._decimals[token]

    async def _balance(self, token: str | None) -> int:
        try:
            if token is None:
                return int(await self.w3.eth.get_balance(self.wallet))
            return int(await self._erc20(token).functions.balanceOf(self.wallet).call())
        except NODE_ERRORS as exc:
            raise unavailable("balance", exc, self.name) from exc

    def contracts(self, intent: OrderIntent) -> list[str]:
        """Every contract a swap for ``intent`` calls or approves (for the spend policy's
        ``allowed_contracts``): the router, and the input token unless it is paid in ETH."""
        called = [self.config.router]
        if intent.side is Side.SELL:
            called.append(to_checksum_address(intent.token))
        elif not self.config.native_eth:
            called.append(self.config.quote_token)
        return called

    # -- quoting -----------------------------------------------------------------

    async def _quote_tier(
        self, token_in: str, token_out: str, amount_in: int, fee: int
    ) -> Route | None:
        call = self._quoter.functions.quoteExactInputSingle(
            (token_in, token_out, amount_in, fee, 0)
        )
        try:
            out, sqrt_after, _, gas = await call.call()
        except NODE_ERRORS as exc:
            if isinstance(exc, BadFunctionCallOutput) or revert_reason(exc) is not None:
                return None  # no pool at this tier, or no liquidity for this amount
            raise unavailable(f"QuoterV2 at fee {fee}", exc, self.name) from exc
        return Route(fee, int(out), int(sqrt_after), int(gas))

    async def best_route(self, token_in: str, token_out: str, amount_in: int) -> Route | None:
        """The fee tier whose pool gives the most ``token_out`` for ``amount_in`` (base
        units of ``token_in``), or ``None`` when no tier has a pool that can fill it."""
        routes = await asyncio.gather(
            *(
                self._quote_tier(token_in, token_out, amount_in, fee)
                for fee in self.config.fee_tiers
            )
        )
        found = [r for r in routes if r is not None and r.amount_out > 0]
        if not found:
            return None
        return max(found, key=lambda r: (r.amount_out, -r.fee))

    async def _factory(self) -> str:
        if self._factory_address is None:
            try:
                self._factory_address = to_checksum_address(
                    await self._quoter.functions.factory().call()
                )
            except NODE_ERRORS as exc:
                raise unavailable("QuoterV2.factory", exc, self.name) from exc
        return self._factory_address

    async def pool_address(self, token_a: str, token_b: str, fee: int) -> str | None:
        """The V3 pool of two tokens at ``fee`` (``None`` if there is none)."""
        low, high = sorted((to_checksum_address(token_a), to_checksum_address(token_b)))
        key = (low, high, fee)
        if key not in self._pools:
            factory = self.w3.eth.contract(address=await self._factory(), abi=FACTORY_ABI)  # type: ignore[call-overload]
            try:
                found = to_checksum_address(await factory.functions.getPool(*key).call())
            except NODE_ERRORS as exc:
                raise unavailable("factory.getPool", exc, self.name) from exc
            if found == ZERO_ADDRESS:
                return None
            self._pools[key] = found
        return self._pools[key]

    async def mid_price(self, token: str, fee: int) -> Decimal | None:
        """Quote per ``token`` from ``slot0`` of its pool with the quote asset at ``fee``."""
        token = to_checksum_address(token)
        quote = self.config.quote_token
        pool = await self.pool_address(token, quote, fee)
        if pool is None:
            return None
        contract = self.w3.eth.contract(address=pool, abi=POOL_ABI)  # type: ignore[call-overload]
        try:
            sqrt_price = int((await contract.functions.slot0().call())[0])
        except NODE_ERRORS as exc:
            raise unavailable("slot0", exc, self.name) from exc
        token0 = token if int(token, 16) < int(quote, 16) else quote
        dec_token, dec_quote = await self.decimals(token), await self.decimals(quote)
        d0, d1 = (dec_token, dec_quote) if token0 == token else (dec_quote, dec_token)
        return sqrt_price_x96_to_price(sqrt_price, d0, d1, base_is_token0=token0 == token)

    async def eth_in_quote(self, wei: int) -> Decimal:
        """``wei`` of ETH in the quote asset (exact for WETH; at the best WETH→quote route's
        price otherwise; 0 when no route prices it)."""
        eth = Decimal(wei).scaleb(-18)
        quote = self.config.quote_token
        if quote == self.config.weth or wei == 0:
            return eth
        route = await self.best_route(self.config.weth, quote, 10**18)
        if route is None:
            return _ZERO
        return eth * Decimal(route.amount_out).scaleb(-(await self.decimals(quote)))

    async def quote(self, side: Side, token: str, amount: Decimal) -> Quote:
        """What an order would do now (module docstring). Raises OrderRejected for a bad
        token or amount or no pool, VenueUnavailable when the node cannot be asked."""
        side = Side(side)
        token = self._token(token)
        plan = await self._plan(side, token, amount)
        route = await self.best_route(plan.token_in, plan.token_out, plan.amount_in)
        if route is None:
            raise OrderRejected(f"no Uniswap V3 pool can fill {side} of {token}", self.name)
        mid = await self.mid_price(token, route.fee)
        rate = Decimal(route.fee) / Decimal(1_000_000)
        if side is Side.BUY:
            quote_amount = Decimal(plan.amount_in).scaleb(-plan.quote_decimals)
            base_amount = Decimal(route.amount_out).scaleb(-plan.token_decimals)
            fee = quote_amount * rate
            price = (quote_amount - fee) / base_amount
            impact = price / mid - 1 if mid else None
        else:
            base_amount = Decimal(plan.amount_in).scaleb(-plan.token_decimals)
            quote_amount = Decimal(route.amount_out).scaleb(-plan.quote_decimals)
            fee = quote_amount * rate / (1 - rate)
            price = (quote_amount + fee) / base_amount
            impact = 1 - price / mid if mid else None
        try:
            gas_price = int(await self.w3.eth.gas_price)
        except NODE_ERRORS as exc:
            raise unavailable("eth_gasPrice", exc, self.name) from exc
        return Quote(
            side=side,
            token=token,
            amount=amount,
            price=price,
            price_impact=max(0.0, float(impact)) if impact is not None else 0.0,
            fee=fee,
            network_fee=await self.eth_in_quote(self.config.quote_gas * gas_price),
            base_amount=base_amount,
            quote_amount=quote_amount,
            ts=self.clock(),
        )

    # -- planning ----------------------------------------------------------------

    def _token(self, token: str) -> str:
        if not isinstance(token, str) or not _ADDRESS.fullmatch(token):
            raise OrderRejected(
                f"token must be a 0x-prefixed 40-hex-digit address, got {token!r}", self.name
            )
        checksummed = to_checksum_address(token)
        if checksummed == self.config.quote_token:
            raise OrderRejected("the token is the quote asset itself", self.name)
        return checksummed

    async def _plan(self, side: Side, token: str, amount: Decimal) -> _Plan:
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
            raise OrderRejected(f"amount must be a finite Decimal > 0, got {amount!r}", self.name)
        quote = self.config.quote_token
        token_decimals = await self.decimals(token)
        quote_decimals = await self.decimals(quote)
        native = self.config.native_eth
        if side is Side.BUY:
            units = _units(amount, quote_decimals)
            plan = _Plan(side, token, quote, units, token_decimals, quote_decimals, native, False)
        else:
            units = _units(amount, token_decimals)
            plan = _Plan(side, token, quote, units, token_decimals, quote_decimals, False, native)
        if units <= 0:
            raise OrderRejected(f"amount {amount} is below one base unit", self.name)
        return plan

    # -- submit / status -----------------------------------------------------------

    async def submit(
        self, intent: OrderIntent, *, min_amount_out: Decimal | None = None
    ) -> OrderStatus:
        """Place ``intent``; idempotent by ``intent_id`` (module docstring)."""
        result = await self._once(intent.intent_id, lambda: self._execute(intent, min_amount_out))
        return result.status()

    async def status(self, intent_id: str) -> OrderStatus:
        """What became of ``intent_id``, from memory or the receipts of its attempts."""
        result = await self.result(intent_id)
        if result is None:
            return OrderStatus.not_found(intent_id, self.clock())
        return result.status()

    async def result(self, intent_id: str) -> SwapResult | None:
        """The :class:`SwapResult` of ``intent_id`` without waiting (``None``: no swap was
        signed for it). Raises VenueUnavailable when the node cannot be asked."""
        if intent_id in self._results:
            return self._results[intent_id]
        if intent_id in self._running:
            return SwapResult(intent_id=intent_id, state=OrderState.PENDING, ts=self.clock())
        if not self.sender.attempts_of(intent_id, _SWAP_KINDS):
            return None
        result = await self._resolve(intent_id, wait=False)
        if result.state.is_final:
            self._results.setdefault(intent_id, result)
            return self._results[intent_id]
        return result

    async def _once(self, intent_id: str, run: Callable[[], Any]) -> SwapResult:
        if intent_id in self._results:
            return self._results[intent_id]
        future = self._running.get(intent_id)
        if future is None:
            if self.sender.attempts_of(intent_id, _SWAP_KINDS):
                work = self._resolve(intent_id, wait=True)  # journaled: never sign anew
            else:
                work = run()
            future = asyncio.ensure_future(self._record(intent_id, work))
            self._running[intent_id] = future
        return await asyncio.shield(future)

    async def _record(self, intent_id: str, work: Any) -> SwapResult:
        try:
            result: SwapResult = await work
        finally:
            self._running.pop(intent_id, None)
        if result.state.is_final:
            self._results[intent_id] = result
        return result

    def _failed(self, intent_id: str, reason: str, **extra: Any) -> SwapResult:
        return SwapResult(
            intent_id=intent_id, state=OrderState.FAILED, reason=reason, ts=self.clock(), **extra
        )

    async def _execute(self, intent: OrderIntent, min_amount_out: Decimal | None) -> SwapResult:
        signer = self.signer(intent.side)
        self.sender.check_ready(signer)
        token = self._token(intent.token)
        accepted = {self.config.quote_symbol.lower(), self.config.quote_token.lower()}
        if intent.quote_asset.lower() not in accepted:
            raise OrderRejected(
                f"this venue trades against {self.config.quote_symbol}, the intent is quoted "
                f"in {intent.quote_asset}",
                self.name,
            )
        plan = await self._plan(intent.side, token, intent.amount)
        route = await self.best_route(plan.token_in, plan.token_out, plan.amount_in)
        if route is None:
            raise OrderRejected(f"no Uniswap V3 pool can fill {intent.side} of {token}", self.name)
        if min_amount_out is not None:
            out_decimals = plan.token_decimals if plan.side is Side.BUY else plan.quote_decimals
            min_out = _units(min_amount_out, out_decimals)
        else:
            bps = (
                self.config.slippage_bps if self.slippage_bps is None else self.slippage_bps(intent)
            )
            if not 0 <= bps < 10_000:
                raise OrderRejected(f"slippage bound {bps} bps is outside [0, 10000)", self.name)
            min_out = route.amount_out * (10_000 - bps) // 10_000
        try:
            return await self._swap(intent.intent_id, plan, route, min_out, signer)
        except _Failed as failed:
            return self._failed(
                intent.intent_id,
                failed.reason,
                side=plan.side,
                token=plan.token,
                quote_token=plan.quote,
            )

    async def _swap(
        self, intent_id: str, plan: _Plan, route: Route, min_out: int, signer: TxSigner
    ) -> SwapResult:
        have = await self._balance(None if plan.native_in else plan.token_in)
        if have < plan.amount_in:
            symbol = "ETH" if plan.native_in else plan.token_in
            raise _Failed(
                f"insufficient balance of {symbol}: the wallet holds {have} base units, the "
                f"order needs {plan.amount_in}"
            )
        exact = not self.config.approve_max and not plan.native_in
        async with self._held(plan.token_in) if exact else _nothing():
            if not plan.native_in:
                await self._ensure_allowance(
                    intent_id, plan.token_in, plan.amount_in, signer, exact
                )
            call = await self._swap_call(plan, route, min_out)
            pending = await self._send(
                intent_id, call, signer, "swap", plan.context(route, min_out)
            )
            return await self._follow(intent_id, pending, signer)

    @contextlib.asynccontextmanager
    async def _held(self, token: str) -> AsyncIterator[None]:
        async with self._token_locks.setdefault(token, asyncio.Lock()):
            yield

    async def _ensure_allowance(
        self, intent_id: str, token: str, amount: int, signer: TxSigner, held: bool
    ) -> None:
        async with _nothing() if held else self._held(token):
            contract = self._erc20(token)
            try:
                allowance = int(
                    await contract.functions.allowance(self.wallet, self.config.router).call()
                )
            except NODE_ERRORS as exc:
                raise unavailable("allowance", exc, self.name) from exc
            if allowance >= amount:
                return
            value = MAX_UINT256 if self.config.approve_max else amount
            data = contract.encode_abi("approve", args=[self.config.router, value])
            gas = await self._estimate(token, data, 0)
            context = {"token": token, "spender": self.config.router, "amount": str(value)}
            pending = await self._send(
                intent_id, TxCall(to=token, data=data, gas=gas), signer, "approve", context
            )
            found = await self.sender.wait(pending, signer)
            if found.state is GroupState.PENDING:
                raise VenueUnavailable(
                    f"the approval of {token} is not mined yet (tx {pending.attempts[-1].tx_hash})",
                    self.name,
                )
            if found.state is GroupState.DROPPED or found.receipt is None:
                raise _Failed(f"the approval of {token} was dropped")
            if int(found.receipt["status"]) != 1:
                assert found.attempt is not None
                reason = await self._mined_reason(found.attempt, found.receipt)
                raise _Failed(f"the approval of {token} reverted: {reason}")

    async def _estimate(self, to: str, data: str, value: int) -> int:
        tx = {"from": self.wallet, "to": to, "data": data, "value": value}
        try:
            estimate = int(await self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        except NODE_ERRORS as exc:
            reason = revert_reason(exc)
            if reason is not None:
                raise _Failed(explain(reason)) from exc
            raise unavailable("eth_estimateGas", exc, self.name) from exc
        return gas_with_margin(estimate, self.sender.settings.fees.gas_margin)

    async def _deadline(self) -> int:
        try:
            block = await self.w3.eth.get_block("latest")
        except NODE_ERRORS as exc:
            raise unavailable("latest block", exc, self.name) from exc
        return int(block["timestamp"]) + self.config.deadline_s

    async def _swap_call(self, plan: _Plan, route: Route, min_out: int) -> TxCall:
        router = self._router
        recipient = ADDRESS_THIS if plan.native_out else self.wallet
        params = (plan.token_in, plan.token_out, route.fee, recipient, plan.amount_in, min_out, 0)
        calls = [router.encode_abi("exactInputSingle", args=[params])]
        if plan.native_out:
            calls.append(router.encode_abi("unwrapWETH9", args=[min_out, self.wallet]))
        data = router.encode_abi("multicall", args=[await self._deadline(), calls])
        value = plan.amount_in if plan.native_in else 0
        gas = await self._estimate(self.config.router, data, value)
        return TxCall(to=self.config.router, data=data, value=value, gas=gas)

    async def _send(
        self, intent_id: str, call: TxCall, signer: TxSigner, kind: str, context: dict[str, Any]
    ) -> Any:
        try:
            return await self.sender.send(intent_id, call, signer, kind=kind, context=context)
        except SendRejected as exc:
            raise _Failed(exc.message) from exc

    async def _follow(self, intent_id: str, pending: Any, signer: TxSigner | None) -> SwapResult:
        """Wait for a sent swap; any trouble from here on is UNKNOWN, never a raise."""
        try:
            found = await self.sender.wait(pending, signer)
            return await self._outcome(intent_id, [found])
        except Exception as exc:  # the swap is signed: answer, don't raise
            return SwapResult(
                intent_id=intent_id,
                state=OrderState.UNKNOWN,
                reason=f"following the transaction failed: {exc}",
                ts=self.clock(),
            )

    async def _resolve(self, intent_id: str, *, wait: bool) -> SwapResult:
        """The outcome of a journaled intent from its swap nonces' receipts."""
        nonces = sorted({a.nonce for a in self.sender.attempts_of(intent_id, _SWAP_KINDS)})
        groups = [
            [a for a in self.sender.attempts_at(n) if a.intent_id == intent_id] for n in nonces
        ]
        if wait:
            side = groups[-1][-1].context.get("side")
            try:
                signer: TxSigner | None = self.signer(Side(side)) if side else None
            except Exception:
                signer = None  # no key now: follow without replacing
            try:
                found = await asyncio.gather(
                    *(self.sender.wait(self.sender.pending_of(g), signer) for g in groups)
                )
            except Exception as exc:
                return SwapResult(
                    intent_id=intent_id,
                    state=OrderState.UNKNOWN,
                    reason=f"following the transaction failed: {exc}",
                    ts=self.clock(),
                )
        else:
            found = list(await asyncio.gather(*(self.sender.lookup(g) for g in groups)))
        return await self._outcome(intent_id, list(found))

    async def _outcome(self, intent_id: str, lookups: list[Lookup]) -> SwapResult:
        for found in lookups:
            if found.state is GroupState.MINED:
                assert found.attempt is not None and found.receipt is not None
                return await self._book(found.attempt, found.receipt)
        if all(f.state is GroupState.DROPPED for f in lookups):
            return self._failed(
                intent_id,
                "dropped: the nonce was used by another transaction; this swap never ran",
            )
        return SwapResult(intent_id=intent_id, state=OrderState.PENDING, ts=self.clock())

    async def _book(self, attempt: Attempt, receipt: Mapping[str, Any]) -> SwapResult:
        ctx = attempt.context
        gas = gas_paid_wei(receipt)
        common: dict[str, Any] = {
            "intent_id": attempt.intent_id,
            "tx_hash": attempt.tx_hash,
            "nonce": attempt.nonce,
            "block_number": int(receipt["blockNumber"]),
            "gas_used": int(receipt["gasUsed"]),
            "gas_paid_wei": gas,
            "ts": self.clock(),
        }
        side = Side(ctx["side"]) if ctx.get("side") else None
        token = str(ctx.get("token", ""))
        quote = str(ctx.get("quote_token", ""))
        if attempt.kind == "cancel":
            return SwapResult(
                state=OrderState.FAILED,
                side=side,
                token=token,
                quote_token=quote,
                reason="cancelled: the nonce was filled by a zero-value transfer after a "
                "restart; this swap never ran",
                **common,
            )
        if int(receipt["status"]) != 1:
            reason = await self._mined_reason(attempt, receipt)
            return SwapResult(
                state=OrderState.FAILED,
                side=side,
                token=token,
                quote_token=quote,
                reason=f"reverted on chain: {explain(reason)} (gas paid {gas} wei)",
                **common,
            )
        flows = token_flows(receipt["logs"], self.wallet, weth=self.config.weth)
        if attempt.kind in ("wrap", "unwrap"):
            units = int(ctx["amount"])
            return SwapResult(
                state=OrderState.FILLED,
                token=self.config.weth,
                base_units=units,
                quote_units=units,
                network_fee=await self._network_fee(gas),
                **common,
            )
        if side is Side.BUY:
            quote_units = (
                int(attempt.fields["value"])
                if ctx.get("native_in")
                else flows.sent.get(to_checksum_address(quote), 0)
            )
            base_units = flows.received.get(to_checksum_address(token), 0)
        else:
            base_units = flows.sent.get(to_checksum_address(token), 0)
            quote_units = (
                flows.withdrawals.get(self.config.router, 0)
                if ctx.get("native_out")
                else flows.received.get(to_checksum_address(quote), 0)
            )
        return SwapResult(
            state=OrderState.FILLED,
            side=side,
            token=token,
            quote_token=quote,
            fee_tier=int(ctx.get("fee", 0)),
            base_units=base_units,
            quote_units=quote_units,
            base_decimals=int(ctx.get("token_decimals", 18)),
            quote_decimals=int(ctx.get("quote_decimals", 18)),
            network_fee=await self._network_fee(gas),
            **common,
        )

    async def _network_fee(self, wei: int) -> Decimal:
        try:
            return await self.eth_in_quote(wei)
        except Exception:  # a price for the fee is not worth failing a booking over
            return _ZERO

    async def _mined_reason(self, attempt: Attempt, receipt: Mapping[str, Any]) -> str:
        """Why a mined transaction reverted: the tracer's revert data, else a replay."""
        try:
            answer = await self.w3.provider.make_request(
                "debug_traceTransaction",
                [attempt.tx_hash, {"tracer": "callTracer"}],
            )
            trace = answer.get("result") if isinstance(answer, Mapping) else None
            if isinstance(trace, Mapping):
                if isinstance(trace.get("revertReason"), str) and trace["revertReason"]:
                    return str(trace["revertReason"])
                output = trace.get("output")
                if isinstance(output, str) and output not in ("", "0x"):
                    return decode_revert(output)
        except NODE_ERRORS:
            pass
        call = attempt.call
        tx = {"from": self.wallet, "to": call.to, "data": call.data, "value": call.value}
        try:
            await self.w3.eth.call(tx, int(receipt["blockNumber"]))  # type: ignore[arg-type]
        except NODE_ERRORS as exc:
            reason = revert_reason(exc)
            if reason is not None:
                return reason
        return "reverted (the node gave no reason)"

    # -- wrap / unwrap -------------------------------------------------------------

    async def wrap(self, intent_id: str, amount: Decimal) -> SwapResult:
        """Turn ``amount`` ETH into WETH (``WETH9.deposit``), idempotent by ``intent_id``."""
        return await self._once(intent_id, lambda: self._convert(intent_id, amount, True))

    async def unwrap(self, intent_id: str, amount: Decimal) -> SwapResult:
        """Turn ``amount`` WETH into ETH (``WETH9.withdraw``), idempotent by ``intent_id``."""
        return await self._once(intent_id, lambda: self._convert(intent_id, amount, False))

    async def _convert(self, intent_id: str, amount: Decimal, to_weth: bool) -> SwapResult:
        signer = self.signer(Side.BUY if to_weth else Side.SELL)
        self.sender.check_ready(signer)
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
            raise OrderRejected(f"amount must be a finite Decimal > 0, got {amount!r}", self.name)
        units = _units(amount, 18)
        if to_weth:
            data = self._weth.encode_abi("deposit", args=[])
            value = units
        else:
            data = self._weth.encode_abi("withdraw", args=[units])
            value = 0
        kind = "wrap" if to_weth else "unwrap"
        try:
            have = await self._balance(None if to_weth else self.config.weth)
            if have < units:
                raise _Failed(f"insufficient balance to {kind}: {have} < {units} base units")
            gas = max(await self._estimate(self.config.weth, data, value), _WRAP_GAS_FLOOR)
            call = TxCall(to=self.config.weth, data=data, value=value, gas=gas)
            context = {"amount": str(units), "side": (Side.BUY if to_weth else Side.SELL).value}
            pending = await self._send(intent_id, call, signer, kind, context)
        except _Failed as failed:
            return self._failed(intent_id, failed.reason)
        return await self._follow(intent_id, pending, signer)


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


@dataclass(frozen=True, slots=True)
class _Plan:
    side: Side
    token: str
    quote: str
    amount_in: int
    token_decimals: int
    quote_decimals: int
    native_in: bool
    native_out: bool

    @property
    def token_in(self) -> str:
        return self.quote if self.side is Side.BUY else self.token

    @property
    def token_out(self) -> str:
        return self.token if self.side is Side.BUY else self.quote

    def context(self, route: Route, min_out: int) -> dict[str, Any]:
        """What booking the swap needs, journaled with every attempt (strings for big ints)."""
        return {
            "side": self.side.value,
            "token": self.token,
            "quote_token": self.quote,
            "token_in": self.token_in,
            "token_out": self.token_out,
            "fee": route.fee,
            "amount_in": str(self.amount_in),
            "min_out": str(min_out),
            "quoted_out": str(route.amount_out),
            "native_in": self.native_in,
            "native_out": self.native_out,
            "token_decimals": self.token_decimals,
            "quote_decimals": self.quote_decimals,
        }
