"""Uniswap V3 pool prices from ``slot0``, following new blocks (WebSocket) or polling.

Contract (the shape of :mod:`valux.feeds.http_source`'s sources: ``run(emit, stop)``,
``poll_once()``, ``stale()``, ``last_update()``, ``status()``):

- Follows tokens given as ``{valux token name: pool address}``; every pool must hold
  ``quote_token`` (WETH or a stablecoin) as one of its two tokens. The first round reads
  each pool's ``token0``, ``token1`` and both tokens' ``decimals`` once; a pool that does
  not answer them, or does not hold the quote token, is refused for good
  (:class:`~valux.feeds.http_source.RequestRejected`) and its token goes stale.
- A round (:meth:`UniswapPoolSource.poll_once`) reads ``slot0`` of every live pool at one
  block (the latest unless a new head named one) and turns ``sqrtPriceX96`` into quote
  per token (:func:`sqrt_price_x96_to_price`, Decimal arithmetic with both tokens'
  decimals); ticks are stamped with the clock when the answers arrived.
- ``run``: with ``ws_url`` (anvil serves WebSocket on its HTTP port; most node providers
  offer ``wss://``), it subscribes to ``newHeads`` and makes a round for every new block,
  and also every ``interval_s`` while no block comes (a quiet chain must not look like a
  dead feed); when the subscription fails it falls back to polling every ``interval_s``
  and tries the WebSocket again after :meth:`~valux.feeds.http_source.Backoff.delay`.
  Without ``ws_url`` it polls every ``interval_s``. Node errors (connection, timeout, an
  RPC error) are :class:`~valux.feeds.http_source.FeedConnectionError`: retryable,
  reported to ``on_error`` and counted in :meth:`status`.
- Prices are floats only in the emitted :class:`~valux.feeds.ticks.Tick`;
  :meth:`UniswapPoolSource.prices` keeps the exact Decimal of the last round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any, Final

import aiohttp
from eth_utils.address import to_checksum_address
from web3 import AsyncWeb3, WebSocketProvider
from web3.exceptions import Web3Exception

from valux.errors import FieldError, InvalidRequest
from valux.feeds.http_source import (
    Backoff,
    Clock,
    Emit,
    FeedConnectionError,
    FeedError,
    Freshness,
    PollResult,
    RequestRejected,
    Sleep,
    address_problem,
    check_tokens,
    quote_tick,
)
from valux.feeds.ticks import Tick

__all__ = [
    "ERC20_METADATA_ABI",
    "POOL_ABI",
    "Q96",
    "PoolInfo",
    "UniswapPoolSource",
    "price_to_sqrt_price_x96",
    "sqrt_price_x96_to_price",
]

Q96: Final = 2**96
_PRECISION: Final = 80  # digits: sqrtPriceX96 is a uint160 (49 digits), squared ≈ 97 bits more

POOL_ABI: Final[list[dict[str, Any]]] = [
    {
        "type": "function",
        "name": "slot0",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [
            {"name": "sqrtPriceX96", "type": "uint160"},
            {"name": "tick", "type": "int24"},
            {"name": "observationIndex", "type": "uint16"},
            {"name": "observationCardinality", "type": "uint16"},
            {"name": "observationCardinalityNext", "type": "uint16"},
            {"name": "feeProtocol", "type": "uint8"},
            {"name": "unlocked", "type": "bool"},
        ],
    },
    {
        "type": "function",
        "name": "token0",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "address"}],
    },
    {
        "type": "function",
        "name": "token1",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "address"}],
    },
    {
        "type": "function",
        "name": "fee",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint24"}],
    },
    {
        "type": "function",
        "name": "liquidity",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint128"}],
    },
]
"""The parts of the UniswapV3Pool interface valux reads."""

ERC20_METADATA_ABI: Final[list[dict[str, Any]]] = [
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "symbol",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
]


def sqrt_price_x96_to_price(
    sqrt_price_x96: int, decimals0: int, decimals1: int, *, base_is_token0: bool
) -> Decimal:
    """Quote per base token, in whole tokens, from a pool's ``sqrtPriceX96``.

    ``(sqrtPriceX96 / 2**96)**2`` is token1 base units per token0 base unit; scaled by
    ``10**(decimals0 − decimals1)`` it is whole token1 per whole token0. When the base
    is token1, the price is its inverse. Raises ``ValueError`` for a price ≤ 0.
    """
    if sqrt_price_x96 <= 0:
        raise ValueError(f"sqrtPriceX96 must be > 0, got {sqrt_price_x96}")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        raw = Decimal(sqrt_price_x96) * Decimal(sqrt_price_x96) / Decimal(Q96 * Q96)
        one_per_zero = raw.scaleb(decimals0 - decimals1)
        price = one_per_zero if base_is_token0 else 1 / one_per_zero
    return +price  # back to the caller's context precision


def price_to_sqrt_price_x96(
    price: Decimal, decimals0: int, decimals1: int, *, base_is_token0: bool
) -> int:
    """The ``sqrtPriceX96`` at which the pool's price is ``price`` quote per base token
    (the inverse of :func:`sqrt_price_x96_to_price`, floored)."""
    if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        raise ValueError(f"price must be a finite Decimal > 0, got {price!r}")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        one_per_zero = price if base_is_token0 else 1 / price
        raw = one_per_zero.scaleb(decimals1 - decimals0)
        root = raw.sqrt() * Q96
        return int(root.to_integral_value(rounding="ROUND_FLOOR"))


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """A followed pool: its tokens and decimals, and which one is the priced (base) token."""

    pool: str
    token0: str
    token1: str
    decimals0: int
    decimals1: int
    base_is_token0: bool

    @property
    def base_token(self) -> str:
        """The token priced (the one that is not the quote)."""
        return self.token0 if self.base_is_token0 else self.token1

    def price(self, sqrt_price_x96: int) -> Decimal:
        """Quote per base token at ``sqrt_price_x96``."""
        return sqrt_price_x96_to_price(
            sqrt_price_x96, self.decimals0, self.decimals1, base_is_token0=self.base_is_token0
        )


@dataclass(slots=True)
class _Followed:
    name: str
    pool: str
    info: PoolInfo | None = None
    rejected: FeedError | None = None


def _broken(source: str, what: str, exc: BaseException, url: str) -> FeedConnectionError:
    detail = str(exc) or type(exc).__name__
    return FeedConnectionError(f"{source}: {what}: {detail}", source, url)


_NODE_ERRORS = (Web3Exception, aiohttp.ClientError, OSError, TimeoutError, ValueError)
"""What a node call can raise when the node is down, slow or answers an error."""


class UniswapPoolSource:
    """Prices of tokens from their Uniswap V3 pools' ``slot0`` (see the module docstring).

    Not thread-safe; one event loop drives a source.
    """

    name = "uniswap_pool"

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        pools: Mapping[str, str],
        *,
        quote_token: str,
        ws_url: str | None = None,
        interval_s: float = 1.0,
        backoff: Backoff | None = None,
        request_timeout_s: float = 10.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_error: Callable[[FeedError], None] | None = None,
    ) -> None:
        errors: list[FieldError] = []
        check_tokens(errors, dict(pools), lambda a: address_problem(a, "arbitrum"))
        if msg := address_problem(quote_token, "arbitrum"):
            errors.append(FieldError("quote_token", msg))
        if ws_url is not None and not ws_url.startswith(("ws://", "wss://")):
            errors.append(FieldError("ws_url", "must be a ws:// or wss:// URL"))
        for name, value in (("interval_s", interval_s), ("request_timeout_s", request_timeout_s)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                errors.append(FieldError(name, "must be a number > 0"))
        if errors:
            raise InvalidRequest("invalid Uniswap pool source settings", errors)
        self.w3 = w3
        self.quote_token = to_checksum_address(quote_token)
        self.ws_url = ws_url
        self.interval_s = float(interval_s)
        self.request_timeout_s = float(request_timeout_s)
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.sleep = sleep
        self.on_error = on_error
        self._followed = [
            _Followed(name, to_checksum_address(pool)) for name, pool in pools.items()
        ]
        self._freshness = Freshness(pools)
        self._prices: dict[str, Decimal] = {}
        self.failures = 0
        self.errors = 0
        self.ticks_emitted = 0
        self.rounds = 0
        self.heads_seen = 0
        self.last_block: int | None = None
        self.last_error: FeedError | None = None
        self.last_success_at: float | None = None
        self.mode = "idle"
        """``"ws"`` while following heads, ``"polling"`` otherwise, ``"idle"`` before ``run``."""

    # -- the PriceSource surface ---------------------------------------------

    @property
    def tokens(self) -> tuple[str, ...]:
        """Followed valux token names, in configuration order."""
        return tuple(f.name for f in self._followed)

    def stale(self, now: float, max_age_s: float) -> list[str]:
        """Tokens with no valid tick within ``max_age_s`` of ``now`` (or none ever)."""
        return self._freshness.stale(now, max_age_s)

    def last_update(self) -> dict[str, float | None]:
        """Token → ts of its last valid tick (``None``: never)."""
        return self._freshness.last_update()

    def prices(self) -> dict[str, Decimal]:
        """Token → the exact price (quote per token) of its last valid round."""
        return dict(self._prices)

    def pool_info(self, token: str) -> PoolInfo | None:
        """What the first round learnt about ``token``'s pool (``None`` before it)."""
        for followed in self._followed:
            if followed.name == token:
                return followed.info
        return None

    def status(self) -> dict[str, Any]:
        """Counters and the last error, for a health check."""
        return {
            "source": self.name,
            "mode": self.mode,
            "tokens": len(self._followed),
            "ticks": self.ticks_emitted,
            "rounds": self.rounds,
            "heads": self.heads_seen,
            "last_block": self.last_block,
            "errors": self.errors,
            "consecutive_failures": self.failures,
            "last_error": None if self.last_error is None else self.last_error.message,
            "last_success_at": self.last_success_at,
            "rejected": [
                {"token": f.name, "pool": f.pool, "error": f.rejected.message}
                for f in self._followed
                if f.rejected is not None
            ],
        }

    async def poll_once(self, block: int | None = None) -> PollResult:
        """One round at ``block`` (the latest when ``None``); never raises FeedError."""
        rejected: list[FeedError] = []
        error: FeedError | None = None
        ticks: list[Tick] = []
        live = [f for f in self._followed if f.rejected is None]
        try:
            await self._learn([f for f in live if f.info is None], rejected)
            ready = [f for f in live if f.info is not None]
            answers = await asyncio.wait_for(
                asyncio.gather(*(self._slot0(f.pool, block) for f in ready)),
                self.request_timeout_s,
            )
        except FeedError as exc:
            error = exc
        except _NODE_ERRORS as exc:
            error = _broken(self.name, "slot0", exc, self._url())
        else:
            now = self.clock()
            for followed, sqrt_price in zip(ready, answers, strict=True):
                assert followed.info is not None
                try:
                    price = followed.info.price(sqrt_price)
                except ValueError:
                    continue
                tick = quote_tick(followed.name, price, now)
                if tick is not None:
                    ticks.append(tick)
                    self._prices[followed.name] = price
        self.rounds += 1
        if error is None:
            self.failures = 0
            self.last_success_at = self.clock()
            if block is not None:
                self.last_block = block
        else:
            self.failures += 1
            self._report(error)
        for refusal in rejected:
            self._report(refusal)
        self._freshness.mark(ticks)
        self.ticks_emitted += len(ticks)
        return PollResult(ticks, error, tuple(rejected))

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        """Follow the pools and ``emit`` tick batches until ``stop`` is set."""
        if stop.is_set():
            return
        loop_task = asyncio.ensure_future(self._loop(emit, stop))
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (loop_task, stop_task):
                task.cancel()
            await asyncio.gather(loop_task, stop_task, return_exceptions=True)
            self.mode = "idle"
        if not loop_task.cancelled() and (exc := loop_task.exception()) is not None:
            raise exc

    # -- internals -------------------------------------------------------------

    def _url(self) -> str:
        return str(getattr(self.w3.provider, "endpoint_uri", "") or "")

    def _report(self, exc: FeedError) -> None:
        self.errors += 1
        self.last_error = exc
        if self.on_error is not None:
            self.on_error(exc)

    async def _slot0(self, pool: str, block: int | None) -> int:
        contract = self.w3.eth.contract(address=pool, abi=POOL_ABI)  # type: ignore[call-overload]
        answer = await contract.functions.slot0().call(
            block_identifier=block if block is not None else "latest"
        )
        return int(answer[0])

    async def _learn(self, todo: Iterable[_Followed], rejected: list[FeedError]) -> None:
        for followed in todo:
            try:
                followed.info = await asyncio.wait_for(
                    self._pool_info(followed.pool), self.request_timeout_s
                )
            except _PoolRefused as exc:
                followed.rejected = RequestRejected(
                    f"{self.name}: {followed.name}: {exc}", self.name, followed.pool
                )
                rejected.append(followed.rejected)
            except _NODE_ERRORS as exc:
                raise _broken(self.name, f"pool {followed.pool}", exc, self._url()) from exc

    async def _pool_info(self, pool: str) -> PoolInfo:
        if not await self.w3.eth.get_code(pool):  # type: ignore[arg-type]
            raise _PoolRefused(f"no contract at {pool}")
        contract = self.w3.eth.contract(address=pool, abi=POOL_ABI)  # type: ignore[call-overload]
        try:
            token0 = to_checksum_address(await contract.functions.token0().call())
            token1 = to_checksum_address(await contract.functions.token1().call())
        except Web3Exception as exc:
            raise _PoolRefused(f"{pool} is not a Uniswap V3 pool ({exc})") from exc
        if self.quote_token not in (token0, token1):
            raise _PoolRefused(f"pool {pool} does not hold the quote token {self.quote_token}")
        decimals0 = await self._decimals(token0)
        decimals1 = await self._decimals(token1)
        return PoolInfo(pool, token0, token1, decimals0, decimals1, token1 == self.quote_token)

    async def _decimals(self, token: str) -> int:
        contract = self.w3.eth.contract(address=token, abi=ERC20_METADATA_ABI)  # type: ignore[call-overload]
        return int(await contract.functions.decimals().call())

    async def _loop(self, emit: Emit, stop: asyncio.Event) -> None:
        ws_failures = 0
        while not stop.is_set():
            if self.ws_url is not None:
                try:
                    await self._follow_heads(emit, stop)
                    ws_failures = 0
                except (*_NODE_ERRORS, FeedError) as exc:
                    ws_failures += 1
                    err = (
                        exc
                        if isinstance(exc, FeedError)
                        else _broken(self.name, "newHeads subscription", exc, self.ws_url)
                    )
                    self._report(err)
                if stop.is_set():
                    return
                # fall back to polling until the next WebSocket attempt
                await self._poll_for(emit, stop, self.backoff.delay(max(ws_failures, 1)))
            else:
                await self._poll_for(emit, stop, None)

    async def _poll_for(self, emit: Emit, stop: asyncio.Event, duration_s: float | None) -> None:
        """Poll every ``interval_s`` (backing off after errors) for ``duration_s`` (forever
        when ``None``)."""
        self.mode = "polling"
        until = None if duration_s is None else self.clock() + duration_s
        while not stop.is_set():
            result = await self.poll_once()
            if result.ticks:
                await emit(result.ticks)
            if result.error is not None:
                delay = self.backoff.delay(self.failures)
            else:
                delay = self.interval_s
            if until is not None:
                left = until - self.clock()
                if left <= 0:
                    return
                delay = min(delay, left)
            await self.sleep(delay)

    async def _follow_heads(self, emit: Emit, stop: asyncio.Event) -> None:
        assert self.ws_url is not None
        heads: asyncio.Queue[int | None] = asyncio.Queue()
        provider = WebSocketProvider(
            self.ws_url,
            max_connection_retries=1,  # retries are ours: poll meanwhile, back off
            request_timeout=self.request_timeout_s,
        )
        async with AsyncWeb3(provider) as ws:
            await ws.eth.subscribe("newHeads")
            self.mode = "ws"

            async def read() -> None:
                try:
                    async for message in ws.socket.process_subscriptions():
                        result = message.get("result") if isinstance(message, Mapping) else None
                        number = result.get("number") if isinstance(result, Mapping) else None
                        found = _block_number(number)
                        heads.put_nowait(-1 if found is None else found)
                finally:
                    heads.put_nowait(None)  # the stream ended: wake the loop

            reader = asyncio.ensure_future(read())
            try:
                first = True
                while not stop.is_set():
                    block: int | None
                    if first:
                        block, first = None, False
                    else:
                        try:
                            block = await asyncio.wait_for(heads.get(), self.interval_s)
                        except TimeoutError:
                            block = None  # a quiet chain: poll anyway
                        else:
                            if block is None:
                                ended = reader.exception() if not reader.cancelled() else None
                                raise ended or ConnectionError("the WebSocket stream ended")
                            self.heads_seen += 1
                            while not heads.empty():  # coalesce a burst of heads
                                newer = heads.get_nowait()
                                if newer is None:
                                    heads.put_nowait(None)  # keep the end for the next turn
                                    break
                                self.heads_seen += 1
                                block = max(block, newer)
                            if block < 0:
                                block = None  # a head without a readable number
                    result = await self.poll_once(block)
                    if result.ticks:
                        await emit(result.ticks)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)


class _PoolRefused(Exception):
    """A followed address is not a pool valux can price (not retryable)."""


def _block_number(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.startswith("0x") else int(value)
        except ValueError:
            return None
    return None
