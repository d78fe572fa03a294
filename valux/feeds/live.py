"""The HTTP price sources (Jupiter Price API v3, DexScreener, Pyth Hermes) as a PriceFeed
runs them: built from settings, following the tokens that need prices.

:class:`FollowingRunner` keeps one source running over the tokens it must follow — the
configured ones plus, for Jupiter and DexScreener, the mints of every open position
(``feeds.<kind>.follow_positions``), read from PostgreSQL every ``refresh_s``. When that
set changes, the running source is stopped and a new one started over the new set (a
source's request plan is fixed at construction); its ticks go to ``emit`` in batches.
A source that ends with an error (every request refused) is logged and started again at
the next refresh, so a bad token never silences the others for long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from valux.config.secrets import jupiter_api_key
from valux.config.settings import HttpFeedSettings, Settings
from valux.feeds.dexscreener import DEFAULT_BASE_URL as DEXSCREENER_URL
from valux.feeds.dexscreener import DexScreenerSource
from valux.feeds.http_source import HttpPriceSource, address_problem
from valux.feeds.jupiter_price import JupiterPriceSource
from valux.feeds.pyth import DEFAULT_BASE_URL as PYTH_URL
from valux.feeds.pyth import PythHermesSource
from valux.feeds.ticks import Tick
from valux.feeds.uniswap_pool import UniswapPoolSource
from valux.schema.evm_abi import ERC20_ABI, FACTORY_ABI, FEE_TIERS

__all__ = ["HTTP_SOURCES", "FollowingRunner", "build_source"]

HTTP_SOURCES = ("jupiter", "dexscreener", "pyth", "uniswap")
"""PriceFeed kinds backed by an HTTP price API."""

OPEN_POSITION_TOKENS = "SELECT DISTINCT token FROM positions WHERE status = 'open'"

Emit = Callable[[list[Tick]], Awaitable[None]]
TokensOf = Callable[[], Awaitable[list[str]]]


def feed_settings(settings: Settings, kind: str) -> HttpFeedSettings:
    section: HttpFeedSettings = getattr(settings.feeds, kind)
    return section


def evm_web3(settings: Settings) -> AsyncWeb3[Any]:
    evm = settings.evm
    return AsyncWeb3(AsyncHTTPProvider(evm.rpc_url, request_kwargs={"timeout": evm.timeout_s}))


def build_source(
    kind: str,
    settings: Settings,
    session: aiohttp.ClientSession,
    tokens: dict[str, str],
    w3: AsyncWeb3[Any] | None = None,
) -> HttpPriceSource:
    """The ``kind`` source over ``tokens`` (``{name: address, pool or feed id}``)."""
    cfg = feed_settings(settings, kind)
    if kind == "jupiter":
        jupiter = settings.jupiter
        url = cfg.url or jupiter.price_url or jupiter.url
        return JupiterPriceSource(
            session, tokens, base_url=url, api_key=jupiter_api_key(), interval_s=cfg.interval_s
        )
    if kind == "dexscreener":
        return DexScreenerSource(
            session,
            tokens,
            chain=getattr(cfg, "chain", "solana"),
            base_url=cfg.url or DEXSCREENER_URL,
            interval_s=cfg.interval_s,
        )
    if kind == "uniswap":
        evm = settings.evm
        return UniswapPoolSource(  # type: ignore[return-value]
            w3 or evm_web3(settings),
            tokens,
            quote_token=evm.quote_token or evm.weth,
            ws_url=cfg.url,
            interval_s=cfg.interval_s,
        )
    if kind == "pyth":
        quote_feed = getattr(cfg, "quote_feed", None)
        url = cfg.url or PYTH_URL
        return PythHermesSource(session, tokens, quote_feed=quote_feed, base_url=url)
    raise ValueError(f"unknown HTTP price source {kind!r}")


class FollowingRunner:
    """One HTTP price source kept running over the tokens it must follow (module doc)."""

    def __init__(
        self,
        kind: str,
        settings: Settings,
        emit: Emit,
        open_position_tokens: TokensOf | None,
    ) -> None:
        self.kind = kind
        self.settings = settings
        self.cfg = feed_settings(settings, kind)
        self._emit = emit
        self._positions = open_position_tokens if self.cfg.follow_positions else None
        self.source: HttpPriceSource | None = None
        self.followed: dict[str, str] = {}
        self._pools: dict[str, str | None] = {}  # uniswap: token address -> its pool
        self._w3: AsyncWeb3[Any] | None = evm_web3(settings) if kind == "uniswap" else None
        self.log = structlog.get_logger("valux.feed").bind(source=kind)

    async def wanted(self) -> dict[str, str]:
        """The configured tokens plus the open positions' mints (when followed)."""
        tokens = dict(self.cfg.tokens)
        if self._positions is not None:
            chain = "arbitrum" if self.kind == "uniswap" else getattr(self.cfg, "chain", "solana")
            try:
                for token in await self._positions():
                    if address_problem(token, chain) is not None or token in tokens:
                        continue
                    if self.kind == "uniswap":
                        pool = await self._pool_of(token)
                        if pool is not None:
                            tokens[token] = pool
                    else:
                        tokens[token] = token
            except Exception as exc:  # PostgreSQL away: keep following what we follow
                self.log.warning("positions_unreadable", error=repr(exc))
                return {**self.followed, **tokens}
        return tokens

    async def run(self) -> None:
        """Follow until cancelled."""
        async with aiohttp.ClientSession() as session:
            stop: asyncio.Event | None = None
            task: asyncio.Task[None] | None = None
            try:
                while True:
                    tokens = await self.wanted()
                    ended = task is not None and task.done()
                    if ended and task is not None and not task.cancelled():
                        self.log.warning("source_ended", error=repr(task.exception()))
                    if tokens and (tokens != self.followed or ended or task is None):
                        if stop is not None and task is not None:
                            await _stop(stop, task)
                        stop, task = asyncio.Event(), None
                        try:
                            self.source = build_source(
                                self.kind, self.settings, session, tokens, self._w3
                            )
                        except Exception as exc:  # invalid settings: say so, retry later
                            self.log.error("source_invalid", error=repr(exc))
                        else:
                            task = asyncio.create_task(self.source.run(self._emit, stop))
                            self.followed = tokens
                            self.log.info("following", tokens=len(tokens))
                    await asyncio.sleep(self.cfg.refresh_s)
            finally:
                if stop is not None and task is not None:
                    await _stop(stop, task)
                if self._w3 is not None:
                    with contextlib.suppress(Exception):
                        await self._w3.provider.disconnect()

    async def _pool_of(self, token: str) -> str | None:
        """The token's deepest pool against the quote token (most quote held), cached;
        None when it has none (its positions then get no price here: stale)."""
        if token in self._pools:
            return self._pools[token]
        evm = self.settings.evm
        if evm.factory is None:
            return None
        w3 = self._w3 or evm_web3(self.settings)
        quote = to_checksum_address(evm.quote_token or evm.weth)
        factory = w3.eth.contract(address=to_checksum_address(evm.factory), abi=FACTORY_ABI)
        quote_erc20 = w3.eth.contract(address=quote, abi=ERC20_ABI)
        best: tuple[int, str] | None = None
        for fee in FEE_TIERS:
            pool = await factory.functions.getPool(to_checksum_address(token), quote, fee).call()
            if int(pool, 16) == 0:
                continue
            depth = int(await quote_erc20.functions.balanceOf(pool).call())
            if best is None or depth > best[0]:
                best = (depth, str(pool))
        self._pools[token] = None if best is None else best[1]
        return self._pools[token]

    def status(self) -> dict[str, Any]:
        return {
            "followed": len(self.followed),
            "source": None if self.source is None else self.source.status(),
        }


async def _stop(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
