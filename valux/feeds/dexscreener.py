"""DexScreener: prices and pair metrics from ``GET /latest/dex/tokens/{a,b,…}``.

Contract (on top of :mod:`valux.feeds.http_source`):

- Follows tokens on one chain, ``solana`` or ``arbitrum``, given as
  ``{valux token name: token address}`` (or a list of addresses, each its own
  name). EVM addresses are matched case-insensitively, base58 exactly.
- Requests: DexScreener takes at most 30 addresses per request, so the followed
  addresses go in runs of 29, each with the quote asset's address added (every
  answer then prices the quote asset itself, at the same moment). A round sends
  every request once; rounds start ``interval_s`` apart (1 s by default;
  DexScreener allows about 300 requests a minute, so a 1 s round stays under
  it up to 5 requests — 145 tokens).
- Pair choice, per token and per answer: the answer's pairs on the configured
  chain whose *base* token is the token, most liquid first (``liquidity.usd``;
  a pair without it ranks last; ties keep the answer's order); the first of
  them that yields a valid price wins. Pairs where the token is the *quote*
  token are ignored: their prices describe the other token.
- Price, quote per token (SOL on Solana, WETH on Arbitrum, or the configured
  ``quote_address``), with Decimal arithmetic:

  - the pair is quoted in the quote asset → ``priceNative`` as is;
  - otherwise → ``priceUsd / quote_usd`` (:func:`~valux.feeds.http_source.usd_to_quote`),
    where ``quote_usd`` is, from the same answer, ``priceUsd`` of the quote
    asset's most liquid pair on the chain, or failing that the USD price
    implied by the most liquid pair quoted in it (``priceUsd / priceNative``).
    With no ``quote_usd`` in the answer, such pairs cannot be priced this round.

  A followed quote asset ticks at exactly 1. Ticks are stamped with the clock
  when the answer arrived. ``pairs: null``, a missing ``priceUsd``,
  ``priceNative`` or ``liquidity``, strings that are not numbers: the token is
  simply not ticked from that pair (and goes stale if no pair prices it).
- Metrics for the eligibility rules (:class:`DexTokenMetrics`): market cap,
  FDV and liquidity (USD, Decimal) of the pair the price came from (of the
  most liquid pair when none priced it); DexScreener does not report holders,
  so ``holder_count`` is ``None``. :meth:`DexScreenerSource.metrics` holds the
  latest per followed token; :meth:`DexScreenerSource.fetch_metrics` asks once
  for any addresses (the signal's token need not be followed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import aiohttp

from valux.errors import FieldError, InvalidRequest
from valux.feeds.http_source import (
    Backoff,
    Clock,
    FeedError,
    FeedResponseError,
    PollingSource,
    PollRequest,
    Sleep,
    address_problem,
    check_common,
    check_tokens,
    chunked,
    normalise_address,
    quote_tick,
    to_decimal,
    token_map,
    usd_to_quote,
)
from valux.feeds.ticks import Tick
from valux.rules.eligibility import TokenMetrics

__all__ = [
    "CHAINS",
    "DEFAULT_BASE_URL",
    "MAX_ADDRESSES_PER_REQUEST",
    "DexScreenerSource",
    "DexTokenMetrics",
]

DEFAULT_BASE_URL: Final = "https://api.dexscreener.com"
MAX_ADDRESSES_PER_REQUEST: Final = 30

CHAINS: Final[Mapping[str, str]] = {
    "solana": "So11111111111111111111111111111111111111112",  # wrapped SOL mint
    "arbitrum": "0x82aF49447D8a07e3bd95BD0d56f35241523fBab1",  # WETH on Arbitrum One
}
"""DexScreener ``chainId`` → the default quote asset's address on that chain."""


@dataclass(frozen=True, slots=True)
class DexTokenMetrics:
    """What DexScreener says about a token's market, from one pair (USD, Decimal)."""

    token: str
    address: str
    pair_address: str | None
    dex_id: str | None
    market_cap_usd: Decimal | None
    fdv_usd: Decimal | None
    liquidity_usd: Decimal | None
    observed_at: float
    holder_count: int | None = None
    """Always ``None``: DexScreener does not report holders."""

    def for_eligibility(self) -> TokenMetrics:
        """The rules' :class:`~valux.rules.eligibility.TokenMetrics` (floats, as they compare)."""
        return TokenMetrics(
            market_cap=None if self.market_cap_usd is None else float(self.market_cap_usd),
            liquidity=None if self.liquidity_usd is None else float(self.liquidity_usd),
            holder_count=self.holder_count,
        )


def _token_address(pair: Mapping[str, Any], side: str) -> str | None:
    token = pair.get(side)
    if isinstance(token, Mapping) and isinstance(address := token.get("address"), str):
        return normalise_address(address)
    return None


def _liquidity_usd(pair: Mapping[str, Any]) -> Decimal | None:
    liquidity = pair.get("liquidity")
    return to_decimal(liquidity.get("usd")) if isinstance(liquidity, Mapping) else None


def _by_liquidity(pairs: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Most liquid first; no ``liquidity.usd`` last; equal keep their order (stable sort)."""
    missing = Decimal(-1)
    return sorted(
        pairs,
        key=lambda p: liquidity if (liquidity := _liquidity_usd(p)) is not None else missing,
        reverse=True,
    )


def _positive(value: object) -> Decimal | None:
    number = to_decimal(value)
    return number if number is not None and number > 0 else None


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _pairs_of(data: Any, source: str, url: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, Mapping):
        raise FeedResponseError(f"{source}: expected a JSON object: {url}", source, url)
    pairs = data.get("pairs")
    if pairs is None:  # DexScreener's "no pair for these tokens"
        return []
    if not isinstance(pairs, list):
        raise FeedResponseError(f"{source}: 'pairs' is not a list: {url}", source, url)
    return [p for p in pairs if isinstance(p, Mapping)]


class DexScreenerSource(PollingSource):
    """Prices and metrics of tokens on one chain from DexScreener (module docstring)."""

    name = "dexscreener"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: Mapping[str, str] | Sequence[str],
        *,
        chain: str = "solana",
        quote_address: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        interval_s: float = 1.0,
        backoff: Backoff | None = None,
        request_timeout_s: float = 10.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_error: Callable[[FeedError], None] | None = None,
    ) -> None:
        follow = token_map(tokens)
        errors: list[FieldError] = []
        if chain not in CHAINS:
            errors.append(FieldError("chain", f"must be one of {', '.join(sorted(CHAINS))}"))
        chain_kind = chain if chain in CHAINS else "solana"
        quote = CHAINS.get(chain, CHAINS["solana"]) if quote_address is None else quote_address
        if msg := address_problem(quote, chain_kind):
            errors.append(FieldError("quote_address", msg))
        check_tokens(errors, follow, lambda a: address_problem(a, chain_kind))
        check_common(
            errors, base_url=base_url, request_timeout_s=request_timeout_s, interval_s=interval_s
        )
        if errors:
            raise InvalidRequest("invalid DexScreener source settings", errors)
        super().__init__(
            session,
            follow,
            interval_s=interval_s,
            base_url=base_url,
            headers={"Accept": "application/json"},
            backoff=backoff or Backoff(),
            request_timeout_s=request_timeout_s,
            clock=clock,
            sleep=sleep,
            on_error=on_error,
        )
        self.chain = chain
        self.quote_address = quote
        self._quote_key = normalise_address(quote)
        self._address = {name: normalise_address(a) for name, a in follow.items()}
        self._metrics: dict[str, DexTokenMetrics] = {}
        quote_names = [n for n, a in self._address.items() if a == self._quote_key]
        others = [n for n in follow if n not in quote_names]
        runs = chunked(others, MAX_ADDRESSES_PER_REQUEST - 1) or [[]]
        runs[0] = quote_names + runs[0]
        for run in runs:
            addresses = [follow[n] for n in run if n not in quote_names] + [quote]
            self._requests.append(PollRequest(run, self._url(addresses)))

    def _url(self, addresses: Sequence[str]) -> str:
        # validated base58 / hex addresses need no escaping
        return f"{self.base_url}/latest/dex/tokens/{','.join(addresses)}"

    # -- prices ---------------------------------------------------------

    def _quote_usd(self, pairs: list[Mapping[str, Any]]) -> Decimal | None:
        """The quote asset's USD price in this answer (module docstring), or ``None``."""
        own = [p for p in pairs if _token_address(p, "baseToken") == self._quote_key]
        for pair in _by_liquidity(own):
            if (usd := _positive(pair.get("priceUsd"))) is not None:
                return usd
        quoted_in = [p for p in pairs if _token_address(p, "quoteToken") == self._quote_key]
        for pair in _by_liquidity(quoted_in):
            usd, native = _positive(pair.get("priceUsd")), _positive(pair.get("priceNative"))
            if usd is not None and native is not None:
                return usd / native  # USD per base ÷ quote per base = USD per quote
        return None

    def _pair_price(self, pair: Mapping[str, Any], quote_usd: Decimal | None) -> Decimal | None:
        """Quote per base token from one pair, or ``None`` if this pair cannot say."""
        if _token_address(pair, "quoteToken") == self._quote_key:
            return _positive(pair.get("priceNative"))
        usd = _positive(pair.get("priceUsd"))
        if usd is None or quote_usd is None:
            return None
        return usd_to_quote(usd, quote_usd)

    def _metrics_of(
        self, name: str, address: str, pair: Mapping[str, Any], now: float
    ) -> DexTokenMetrics:
        return DexTokenMetrics(
            token=name,
            address=address,
            pair_address=_string(pair.get("pairAddress")),
            dex_id=_string(pair.get("dexId")),
            market_cap_usd=to_decimal(pair.get("marketCap")),
            fdv_usd=to_decimal(pair.get("fdv")),
            liquidity_usd=_liquidity_usd(pair),
            observed_at=now,
        )

    def _read(
        self, names: Sequence[str], pairs: list[Mapping[str, Any]], now: float
    ) -> tuple[list[Tick], dict[str, DexTokenMetrics]]:
        """Ticks and metrics for ``names`` from one answer's pairs."""
        on_chain = [p for p in pairs if p.get("chainId") == self.chain]
        by_base: dict[str, list[Mapping[str, Any]]] = {}
        for pair in on_chain:
            if (base := _token_address(pair, "baseToken")) is not None:
                by_base.setdefault(base, []).append(pair)
        quote_usd = self._quote_usd(on_chain)
        ticks: list[Tick] = []
        metrics: dict[str, DexTokenMetrics] = {}
        for name in names:
            address = self._address.get(name, normalise_address(name))
            if address == self._quote_key:
                if (tick := quote_tick(name, Decimal(1), now)) is not None:
                    ticks.append(tick)
                continue
            ranked = _by_liquidity(by_base.get(address, []))
            chosen: Mapping[str, Any] | None = None
            for pair in ranked:
                tick = quote_tick(name, self._pair_price(pair, quote_usd), now)
                if tick is not None:
                    ticks.append(tick)
                    chosen = pair
                    break
            if ranked and chosen is None:
                self.skipped += 1
            source_pair = chosen if chosen is not None else (ranked[0] if ranked else None)
            if source_pair is not None:
                metrics[name] = self._metrics_of(name, address, source_pair, now)
        return ticks, metrics

    async def _poll(self, request: PollRequest) -> list[Tick]:
        data = await self._get(request.url)
        now = self.clock()
        ticks, metrics = self._read(request.names, _pairs_of(data, self.name, request.url), now)
        self._metrics.update(metrics)
        return ticks

    # -- metrics --------------------------------------------------------

    def metrics(self) -> dict[str, DexTokenMetrics]:
        """The latest metrics of every followed token that has a pair (a copy)."""
        return dict(self._metrics)

    async def fetch_metrics(self, addresses: Sequence[str]) -> dict[str, DexTokenMetrics]:
        """Metrics of any tokens on the chain, asked now (keyed by the address as given).

        Each token's metrics come from its most liquid pair on the chain. One
        request per 30 addresses, no retry: the caller (a signal's
        eligibility check) decides what an unknown market means. Addresses
        without a pair on the chain are absent from the result.

        Raises:
            InvalidRequest: an address is not one of this chain.
            FeedError: a request failed (see :func:`~valux.feeds.http_source.fetch_json`).
        """
        errors = [
            FieldError(f"addresses[{i}]", msg)
            for i, a in enumerate(addresses)
            if (msg := address_problem(a, self.chain))
        ]
        if errors:
            raise InvalidRequest("invalid token addresses", errors)
        out: dict[str, DexTokenMetrics] = {}
        unique = list(dict.fromkeys(addresses))
        for run in chunked(unique, MAX_ADDRESSES_PER_REQUEST):
            url = self._url(run)
            pairs = _pairs_of(await self._get(url), self.name, url)
            now = self.clock()
            on_chain = [p for p in pairs if p.get("chainId") == self.chain]
            for address in run:
                key = normalise_address(address)
                ranked = _by_liquidity(
                    [p for p in on_chain if _token_address(p, "baseToken") == key]
                )
                if ranked:
                    out[address] = self._metrics_of(address, key, ranked[0], now)
        return out
