"""Jupiter Price API v3: USD prices of Solana mints, turned into quote-per-token prices.

Contract (on top of :mod:`valux.feeds.http_source`):

- Follows mints given as ``{valux token name: mint}`` (or a list of mints, each
  its own name).
- Requests: ``GET {base_url}/price/v3?ids=<mint>,<mint>,…`` with at most 50
  ids: the followed mints in runs of 49, each with the quote mint added (wrapped
  SOL by default), so every answer prices the quote at the same moment. Rounds
  start ``interval_s`` apart (2 s by default: the keyless tier allows about 60
  requests a minute). With ``api_key``, every request carries it as the
  ``x-api-key`` header (``api.jup.ag`` wants one); the key is never logged,
  reported or put in a URL.
- Answer: a JSON object keyed by mint, each ``{"usdPrice": <number>, …}``.
  Jupiter omits mints it has no reliable price for; an omitted mint, a ``null``
  entry or a ``usdPrice`` that is not a number > 0 is just not ticked (and the
  token goes stale if that lasts).
- Price = ``usdPrice(token) / usdPrice(quote mint)`` from the same answer,
  Decimal arithmetic (:func:`~valux.feeds.http_source.usd_to_quote`); an answer
  without the quote's price ticks nothing. A followed quote mint ticks at
  exactly 1. Ticks are stamped with the clock when the answer arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
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
    quote_tick,
    to_decimal,
    token_map,
    usd_to_quote,
)
from valux.feeds.ticks import Tick

__all__ = ["DEFAULT_BASE_URL", "MAX_IDS_PER_REQUEST", "SOL_MINT", "JupiterPriceSource"]

DEFAULT_BASE_URL: Final = "https://api.jup.ag"
"""Keyed host; ``https://lite-api.jup.ag`` serves the same path without a key."""

MAX_IDS_PER_REQUEST: Final = 50
SOL_MINT: Final = "So11111111111111111111111111111111111111112"


def _usd_price(entry: object) -> Decimal | None:
    if not isinstance(entry, Mapping):
        return None
    price = to_decimal(entry.get("usdPrice"))
    return price if price is not None and price > 0 else None


class JupiterPriceSource(PollingSource):
    """Quote-per-token prices from Jupiter Price API v3 (module docstring)."""

    name = "jupiter"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: Mapping[str, str] | Sequence[str],
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        quote_mint: str = SOL_MINT,
        interval_s: float = 2.0,
        backoff: Backoff | None = None,
        request_timeout_s: float = 10.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_error: Callable[[FeedError], None] | None = None,
    ) -> None:
        follow = token_map(tokens)
        errors: list[FieldError] = []
        if msg := address_problem(quote_mint, "solana"):
            errors.append(FieldError("quote_mint", msg))
        check_tokens(errors, follow, lambda mint: address_problem(mint, "solana"))
        check_common(
            errors, base_url=base_url, request_timeout_s=request_timeout_s, interval_s=interval_s
        )
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            errors.append(FieldError("api_key", "must be a non-empty string or None"))
        if errors:
            raise InvalidRequest("invalid Jupiter price source settings", errors)
        headers = {"Accept": "application/json"}
        if api_key is not None:
            headers["x-api-key"] = api_key.strip()
        super().__init__(
            session,
            follow,
            interval_s=interval_s,
            base_url=base_url,
            headers=headers,
            backoff=backoff or Backoff(),
            request_timeout_s=request_timeout_s,
            clock=clock,
            sleep=sleep,
            on_error=on_error,
        )
        self.quote_mint = quote_mint
        self._mint = dict(follow)
        quote_names = [n for n, m in follow.items() if m == quote_mint]
        others = [n for n in follow if n not in quote_names]
        runs = chunked(others, MAX_IDS_PER_REQUEST - 1) or [[]]
        runs[0] = quote_names + runs[0]
        for run in runs:
            mints = [follow[n] for n in run if n not in quote_names] + [quote_mint]
            # validated base58 mints need no escaping
            url = f"{self.base_url}/price/v3?ids={','.join(mints)}"
            self._requests.append(PollRequest(run, url))

    def _read(self, names: Sequence[str], data: Mapping[str, Any], now: float) -> list[Tick]:
        quote_usd = _usd_price(data.get(self.quote_mint))
        ticks: list[Tick] = []
        for name in names:
            mint = self._mint[name]
            if mint == self.quote_mint:
                price: Decimal | None = Decimal(1) if quote_usd is not None else None
            else:
                usd = _usd_price(data.get(mint))
                if usd is None or quote_usd is None:
                    if data.get(mint) is not None:  # present but unusable (not merely omitted)
                        self.skipped += 1
                    continue
                price = usd_to_quote(usd, quote_usd)
            if (tick := quote_tick(name, price, now)) is not None:
                ticks.append(tick)
            else:
                self.skipped += 1
        return ticks

    async def _poll(self, request: PollRequest) -> list[Tick]:
        data = await self._get(request.url)
        now = self.clock()
        if not isinstance(data, Mapping):
            raise FeedResponseError(
                f"{self.name}: expected a JSON object: {request.url}", self.name, request.url
            )
        return self._read(request.names, data, now)
