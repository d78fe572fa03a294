"""HTTP price sources (DexScreener, Jupiter Price v3, Pyth Hermes) against a loopback server.

The fixtures under ``fixtures/feeds/`` are the services' real response shapes; a local aiohttp
server serves them and records what each source asked. Time is a fake clock with a recording
sleep, so no test waits out a backoff.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict

from valux.errors import InvalidRequest
from valux.feeds.dexscreener import DexScreenerSource
from valux.feeds.http_source import (
    Backoff,
    FeedConnectionError,
    FeedError,
    FeedResponseError,
    FeedServerError,
    PriceSource,
    RateLimited,
    RequestRejected,
    parse_retry_after,
    should_retry,
    usd_to_quote,
)
from valux.feeds.jupiter_price import JupiterPriceSource
from valux.feeds.pyth import SOL_USD_FEED_ID, PythHermesSource, SseParser
from valux.feeds.ticks import Tick
from valux.rules.eligibility import TokenMetrics

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
T0 = 1714564800.0  # 2024-05-01T12:00:00Z

SOL = "So11111111111111111111111111111111111111112"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
WIF = "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm"
JUP = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"
FART = "9BB6NFEcjBCtnNLFko2FqVQBq8HHM13kCyYcdQbgpump"
POPCAT = "7GCihgDB8fe6KNjn2MYtkzZcRjQy3t9GHdC8uHYmW2hr"
ARB = "0x912CE59144191C1204E64559FE8253a0e49E6548"
WETH = "0x82aF49447D8a07e3bd95BD0d56f35241523fBab1"
BTC_FEED = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"
ETH_FEED = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"

SOLANA_TOKENS = {"BONK": BONK, "WIF": WIF, "JUP": JUP, "FART": FART, "POPCAT": POPCAT}
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def q(value: str) -> float:
    """The float a Decimal computation lands on (what a tick must carry)."""
    return float(Decimal(value))


def mint(i: int) -> str:
    """A distinct, valid-looking base58 mint for token number ``i``."""
    return "Tk" + _BASE58[i // 58] + _BASE58[i % 58] + "z" * 40


class FakeTime:
    """A clock that moves only when the source sleeps; every sleep is recorded."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Seen:
    """One request the loopback server received."""

    path: str
    query: MultiDict[str]
    headers: dict[str, str]


@dataclass
class Loopback:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def paths(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(*routes: web.RouteDef) -> AsyncIterator[Loopback]:
    """A real HTTP server on 127.0.0.1 with ``routes``, recording every request."""
    loopback = Loopback("")

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        loopback.seen.append(Seen(request.path, MultiDict(request.query), dict(request.headers)))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    loopback.url = str(server.make_url("")).rstrip("/")
    try:
        yield loopback
    finally:
        await server.close()


def answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return handler


def script(*handlers: Handler) -> Handler:
    """Answer the n-th call with the n-th handler (the last one repeats)."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return await handlers[min(calls, len(handlers)) - 1](request)

    return handler


def text(body: str, status: int, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=body, status=status, headers=headers)

    return handler


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def run_until(source: PriceSource, batches: int, limit_s: float = 5.0) -> list[list[Tick]]:
    """Run ``source`` until it has emitted ``batches`` batches; return them."""
    got: list[list[Tick]] = []
    stop = asyncio.Event()

    async def emit(batch: list[Tick]) -> None:
        got.append(batch)
        if len(got) >= batches:
            stop.set()

    await asyncio.wait_for(source.run(emit, stop), limit_s)
    return got


DEX_ROUTE = "/latest/dex/tokens/{ids}"


def dex(session: aiohttp.ClientSession, url: str, t: FakeTime, **kw: Any) -> DexScreenerSource:
    tokens = kw.pop("tokens", SOLANA_TOKENS)
    return DexScreenerSource(session, tokens, base_url=url, clock=t.clock, sleep=t.sleep, **kw)


# ------------------------------------------------------------------- DexScreener


async def test_dexscreener_picks_most_liquid_pair_on_chain_and_prices_in_sol(
    session: aiohttp.ClientSession,
) -> None:
    """Per token, the most liquid Solana pair that can price it wins: a SOL-quoted pair gives
    priceNative as is, a USDC- or BONK-quoted one priceUsd / SOL's USD price; a Sui pair, a pair
    without priceUsd, a pair where the token is the quote, and a token without pairs give
    nothing. Ticks keep configuration order and carry the arrival time."""
    t = FakeTime()
    async with serve(web.get(DEX_ROUTE, answer(load("dexscreener_tokens_solana.json")))) as srv:
        source = dex(session, srv.url, t)
        result = await source.poll_once()
    assert result.error is None and result.rejected == ()
    assert [(tick.token, tick.price, tick.ts) for tick in result.ticks] == [
        ("BONK", q("0.0000001650"), T0),  # raydium BONK/SOL, 5 M (Sui's 99 M ignored)
        ("WIF", float(Decimal("2.2535") / Decimal("150.25")), T0),  # meteora WIF/USDC, 3 M
        ("JUP", q("0.005555"), T0),  # the 4 M JUP/USDC pair has no priceUsd
        ("FART", float(Decimal("0.9917") / Decimal("150.25")), T0),  # quoted in BONK
    ]
    asked = srv.paths("/latest/dex/tokens/")
    assert len(asked) == 1
    assert asked[0].path.rsplit("/", 1)[1].split(",") == [BONK, WIF, JUP, FART, POPCAT, SOL]


async def test_dexscreener_metrics_for_eligibility(session: aiohttp.ClientSession) -> None:
    """Market cap and liquidity come from the pair that priced the token, as Decimal USD;
    holder count is unknown (None); ``for_eligibility`` gives the rules' TokenMetrics;
    ``fetch_metrics`` asks once for any address and omits addresses without a pair."""
    t = FakeTime()
    async with serve(web.get(DEX_ROUTE, answer(load("dexscreener_tokens_solana.json")))) as srv:
        source = dex(session, srv.url, t)
        await source.poll_once()
        fetched = await source.fetch_metrics([POPCAT, WIF])
    metrics = source.metrics()
    assert set(metrics) == {"BONK", "WIF", "JUP", "FART"}
    bonk = metrics["BONK"]
    assert bonk.market_cap_usd == Decimal("1801234567.89")
    assert bonk.liquidity_usd == Decimal("5000000.5")
    assert bonk.fdv_usd == Decimal("1912345678.12")
    assert bonk.pair_address == "Bzc9NZfMqkXR6fz1DBph7BDf9BroyEf6pnzESP7v5iiw"
    assert bonk.holder_count is None and bonk.observed_at == T0
    assert bonk.for_eligibility() == TokenMetrics(
        market_cap=1801234567.89, liquidity=5000000.5, holder_count=None
    )
    jup = metrics["JUP"]  # priced by a pair that reports neither liquidity nor market cap
    assert (jup.pair_address, jup.liquidity_usd, jup.market_cap_usd) == (
        "9wTJ9dQoKQ1ybwCUcU3LLxVXqjY3DYE7aNFRWEVZgN8s",
        None,
        None,
    )
    assert set(fetched) == {WIF}
    assert fetched[WIF].liquidity_usd == Decimal("3000000.25")
    assert fetched[WIF].market_cap_usd == Decimal(2250000000)


async def test_dexscreener_pairs_null_ticks_nothing(session: aiohttp.ClientSession) -> None:
    """``"pairs": null`` is an answer, not an error: no ticks, and every token stays stale."""
    t = FakeTime()
    async with serve(web.get(DEX_ROUTE, answer(load("dexscreener_pairs_null.json")))) as srv:
        source = dex(session, srv.url, t)
        result = await source.poll_once()
    assert result == type(result)([])
    assert source.stale(T0, 60) == list(SOLANA_TOKENS)
    assert source.metrics() == {}


async def test_dexscreener_arbitrum_filters_chain_and_ignores_address_case(
    session: aiohttp.ClientSession,
) -> None:
    """On Arbitrum the quote is WETH: a checksummed response matches a lower-case configured
    address, the bigger Ethereum pair is ignored, and a followed WETH ticks at exactly 1."""
    t = FakeTime()
    body = load("dexscreener_tokens_arbitrum.json")
    async with serve(web.get(DEX_ROUTE, answer(body))) as srv:
        source = dex(session, srv.url, t, chain="arbitrum", tokens={"ARB": ARB.lower(), "W": WETH})
        result = await source.poll_once()
    assert [(x.token, x.price) for x in result.ticks] == [("W", 1.0), ("ARB", q("0.0002451"))]
    assert source.metrics()["ARB"].pair_address == "0xC6F780497A95e246EB9449f5e4770916DCd6396A"


async def test_dexscreener_converts_usd_by_the_quote_assets_own_price(
    session: aiohttp.ClientSession,
) -> None:
    """Without a WETH-quoted pair, ARB's USDC pair is priced as priceUsd / WETH's USD price
    (WETH's own most liquid pair in the same answer)."""
    t = FakeTime()
    body = load("dexscreener_tokens_arbitrum.json")
    body["pairs"] = [
        p
        for p in body["pairs"]
        if p["dexId"] != "uniswap"
        or p["chainId"] != "arbitrum"
        or p["baseToken"]["symbol"] != "ARB"
    ]
    async with serve(web.get(DEX_ROUTE, answer(body))) as srv:
        source = dex(session, srv.url, t, chain="arbitrum", tokens={"ARB": ARB})
        result = await source.poll_once()
    assert result.ticks == [Tick("ARB", float(Decimal("0.7391") / Decimal("3012.5")), T0)]


async def test_dexscreener_implies_quote_usd_when_the_quote_has_no_own_pair(
    session: aiohttp.ClientSession,
) -> None:
    """If SOL's own pairs are missing from an answer, SOL's USD price is implied by the most
    liquid SOL-quoted pair (priceUsd / priceNative); with no SOL pair at all, USD-quoted pairs
    cannot be priced and only SOL-quoted ones tick."""
    t = FakeTime()
    body = load("dexscreener_tokens_solana.json")
    body["pairs"] = [p for p in body["pairs"] if p["baseToken"]["address"] != SOL]
    implied = Decimal("0.00002479") / Decimal("0.0000001650")  # BONK/SOL raydium, 5 M
    no_sol = {
        "schemaVersion": "1.0.0",
        "pairs": [
            p
            for p in body["pairs"]
            if p["dexId"] == "meteora" and p["quoteToken"]["symbol"] == "USDC"
        ],
    }
    async with serve(web.get(DEX_ROUTE, script(answer(body), answer(no_sol)))) as srv:
        source = dex(session, srv.url, t, tokens={"WIF": WIF})
        first = await source.poll_once()
        second = await source.poll_once()
    assert first.ticks == [Tick("WIF", float(usd_to_quote(Decimal("2.2535"), implied)), T0)]
    assert second.ticks == [] and second.error is None
    assert source.skipped == 1  # WIF had a pair, but nothing to convert its USD price by


async def test_dexscreener_batches_at_most_30_addresses(session: aiohttp.ClientSession) -> None:
    """65 tokens go out as 3 requests of at most 30 addresses, each with SOL added; every
    token is asked exactly once and ticks."""
    tokens = {f"T{i}": mint(i) for i in range(65)}

    async def synthetic(request: web.Request) -> web.StreamResponse:
        pairs = [
            {
                "chainId": "solana",
                "pairAddress": f"P{a}"[:44],
                "baseToken": {"address": a},
                "quoteToken": {"address": SOL},
                "priceNative": f"0.{int(a[2:4].encode().hex(), 16)}",
                "liquidity": {"usd": 1000},
            }
            for a in request.match_info["ids"].split(",")
            if a != SOL
        ]
        return web.json_response({"schemaVersion": "1.0.0", "pairs": pairs})

    t = FakeTime()
    async with serve(web.get(DEX_ROUTE, synthetic)) as srv:
        source = dex(session, srv.url, t, tokens=tokens)
        result = await source.poll_once()
    batches = [s.path.rsplit("/", 1)[1].split(",") for s in srv.paths("/latest/dex/tokens/")]
    assert [len(b) for b in batches] == [30, 30, 8]
    assert all(b[-1] == SOL for b in batches)
    asked = [a for b in batches for a in b if a != SOL]
    assert asked == list(tokens.values())
    assert [tick.token for tick in result.ticks] == list(tokens)


# ------------------------------------------------------------------- Jupiter


async def test_jupiter_v3_converts_usd_to_sol_and_skips_omitted_tokens(
    session: aiohttp.ClientSession,
) -> None:
    """usdPrice numbers become SOL per token by SOL's own usdPrice in the same answer; JUP
    (omitted) and FART (usdPrice 0) do not tick and stay stale; the API key travels only as
    the x-api-key header."""
    t = FakeTime()
    route = web.get("/price/v3", answer(load("jupiter_price_v3.json")))
    async with serve(route) as srv:
        tokens = {"BONK": BONK, "WIF": WIF, "JUP": JUP, "FART": FART}
        source = JupiterPriceSource(
            session, tokens, base_url=srv.url, api_key="jup-secret", clock=t.clock, sleep=t.sleep
        )
        result = await source.poll_once()
    sol = Decimal("150.25")
    assert result.ticks == [
        Tick("BONK", float(Decimal("0.00002479") / sol), T0),
        Tick("WIF", float(Decimal("2.2535") / sol), T0),
    ]
    (seen,) = srv.paths("/price/v3")
    assert seen.query["ids"].split(",") == [BONK, WIF, JUP, FART, SOL]
    assert seen.headers["x-api-key"] == "jup-secret"
    assert source.stale(T0, 5) == ["JUP", "FART"]
    assert source.skipped == 1
    assert "jup-secret" not in repr(source.status()) + "".join(source.request_urls)


async def test_jupiter_batches_at_most_50_ids(session: aiohttp.ClientSession) -> None:
    """120 mints go out as 3 requests of at most 50 ids, each with the SOL mint."""

    async def synthetic(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {i: {"usdPrice": 1.5 if i != SOL else 150} for i in request.query["ids"].split(",")}
        )

    tokens = [mint(i) for i in range(120)]
    t = FakeTime()
    async with serve(web.get("/price/v3", synthetic)) as srv:
        source = JupiterPriceSource(session, tokens, base_url=srv.url, clock=t.clock)
        result = await source.poll_once()
    batches = [s.query["ids"].split(",") for s in srv.paths("/price/v3")]
    assert [len(b) for b in batches] == [50, 50, 23]
    assert all(b[-1] == SOL for b in batches)
    assert [a for b in batches for a in b if a != SOL] == tokens
    assert {tick.price for tick in result.ticks} == {0.01}
    assert len(result.ticks) == 120
    assert "x-api-key" not in srv.seen[0].headers


async def test_jupiter_without_the_quote_price_ticks_nothing(
    session: aiohttp.ClientSession,
) -> None:
    """An answer that omits the quote mint cannot be converted: no tick at all."""
    body = load("jupiter_price_v3.json")
    del body[SOL]
    t = FakeTime()
    async with serve(web.get("/price/v3", answer(body))) as srv:
        source = JupiterPriceSource(session, {"BONK": BONK}, base_url=srv.url, clock=t.clock)
        result = await source.poll_once()
    assert result.ticks == [] and result.error is None


# ------------------------------------------------------------------- errors and backoff


async def test_rate_limit_honours_retry_after_then_recovers(
    session: aiohttp.ClientSession,
) -> None:
    """A 429 with ``Retry-After: 7`` makes the next round wait 7 s (longer than the backoff);
    the next success resets the failure count and rounds return to ``interval_s``."""
    t = FakeTime()
    reported: list[FeedError] = []
    ok = answer(load("jupiter_price_v3.json"))
    limited = answer({"error": "Too many requests"}, 429, {"Retry-After": "7"})
    async with serve(web.get("/price/v3", script(limited, ok))) as srv:
        source = JupiterPriceSource(
            session,
            {"WIF": WIF},
            base_url=srv.url,
            interval_s=2.0,
            clock=t.clock,
            sleep=t.sleep,
            on_error=reported.append,
        )
        batches = await run_until(source, 2)
    assert t.sleeps == [7.0, 2.0]
    assert [type(e) for e in reported] == [RateLimited]
    assert reported[0].retry_after_s == 7.0 and reported[0].status == 429
    assert len(batches) == 2 and source.failures == 0
    assert source.status()["errors"] == 1


async def test_server_errors_back_off_exponentially_up_to_the_cap(
    session: aiohttp.ClientSession,
) -> None:
    """5xx answers (JSON or a proxy's HTML) are retried after 0.5, 1, 2, then the 3 s cap."""
    t = FakeTime()
    failing = text("<html>502 Bad Gateway</html>", 502)
    ok = answer(load("dexscreener_tokens_solana.json"))
    handler = script(answer({"e": 1}, 500), failing, failing, answer({"e": 1}, 503), ok)
    async with serve(web.get(DEX_ROUTE, handler)) as srv:
        source = dex(session, srv.url, t, backoff=Backoff(initial_s=0.5, factor=2.0, max_s=3.0))
        await run_until(source, 1)
        assert isinstance(source.last_error, FeedServerError)
    assert t.sleeps == [0.5, 1.0, 2.0, 3.0]
    assert source.errors == 4 and source.failures == 0


def test_backoff_and_retry_after_parsing() -> None:
    """Backoff grows by ``factor`` to ``max_s``; Retry-After (seconds or an HTTP date) sets a
    floor capped at ``max_retry_after_s``; unreadable headers are ignored."""
    backoff = Backoff(initial_s=1.0, factor=3.0, max_s=20.0, max_retry_after_s=60.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 10_000)] == [1.0, 3.0, 9.0, 20.0, 20.0]
    assert backoff.delay(1, retry_after_s=5.0) == 5.0
    assert backoff.delay(4, retry_after_s=5.0) == 20.0
    assert backoff.delay(1, retry_after_s=86_400.0) == 60.0
    date = format_datetime(datetime.fromtimestamp(T0 + 12, UTC), usegmt=True)
    assert parse_retry_after(date, T0) == 12.0
    assert parse_retry_after(date, T0 + 100) == 0.0
    assert parse_retry_after(" 1.5 ", T0) == 1.5
    assert [parse_retry_after(v, T0) for v in (None, "soon", "-3", "nan")] == [None] * 4
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


async def test_connection_refused_and_non_json_bodies_are_retryable(
    session: aiohttp.ClientSession,
) -> None:
    """No server on the port → FeedConnectionError; a 200 with HTML → FeedResponseError; both
    end the round with ``error`` set and count as failures to back off from."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t = FakeTime()
    source = dex(session, f"http://127.0.0.1:{port}", t, tokens={"BONK": BONK})
    refused = await source.poll_once()
    assert isinstance(refused.error, FeedConnectionError) and should_retry(refused.error)
    async with serve(web.get(DEX_ROUTE, text("<html>maintenance</html>", 200))) as srv:
        source2 = dex(session, srv.url, t, tokens={"BONK": BONK})
        garbled = await source2.poll_once()
        assert isinstance(garbled.error, FeedResponseError) and should_retry(garbled.error)
        assert garbled.ticks == [] and source2.failures == 1


async def test_a_4xx_stops_that_request_and_is_reported(session: aiohttp.ClientSession) -> None:
    """A 400 refuses one batch for good: it is reported once, listed in ``status()``, and
    later rounds poll only the other batches; other tokens keep ticking."""
    bad = mint(99)
    tokens = {f"T{i}": mint(i) for i in range(34)} | {"BAD": bad}

    async def handler(request: web.Request) -> web.StreamResponse:
        ids = request.match_info["ids"].split(",")
        if bad in ids:
            return web.json_response({"error": f"invalid address {bad}"}, status=400)
        pairs = [
            {
                "chainId": "solana",
                "baseToken": {"address": a},
                "quoteToken": {"address": SOL},
                "priceNative": "0.25",
            }
            for a in ids
        ]
        return web.json_response({"pairs": pairs})

    t = FakeTime()
    reported: list[FeedError] = []
    async with serve(web.get(DEX_ROUTE, handler)) as srv:
        source = dex(session, srv.url, t, tokens=tokens, on_error=reported.append)
        first = await source.poll_once()
        second = await source.poll_once()
    assert len(first.rejected) == 1 and isinstance(first.rejected[0], RequestRejected)
    assert first.error is None and not should_retry(first.rejected[0])
    assert len(first.ticks) == 29 and len(second.ticks) == 29 and second.rejected == ()
    assert len(srv.paths("/latest/dex/tokens/")) == 3  # 2 + 1: the refused batch is dropped
    assert reported == list(first.rejected)
    (refused,) = source.status()["rejected"]
    assert refused["tokens"] == [f"T{i}" for i in range(29, 34)] + ["BAD"]
    assert "HTTP 400" in refused["error"] and "invalid address" in refused["error"]
    assert set(source.stale(T0, 60)) == set(refused["tokens"])


async def test_run_raises_when_every_request_is_refused(session: aiohttp.ClientSession) -> None:
    """With nothing left to poll, ``run`` raises the refusal instead of idling."""
    t = FakeTime()
    async with serve(web.get(DEX_ROUTE, text("Not Found", 404))) as srv:
        source = dex(session, srv.url, t)
        with pytest.raises(RequestRejected, match="HTTP 404"):
            await asyncio.wait_for(source.run(_never_called, asyncio.Event()), 5)
    assert t.sleeps == []


async def _never_called(batch: list[Tick]) -> None:
    raise AssertionError(f"unexpected batch {batch}")


async def test_stop_interrupts_a_long_wait(session: aiohttp.ClientSession) -> None:
    """Setting ``stop`` ends ``run`` at once, even in the middle of an hour-long interval."""
    async with serve(web.get(DEX_ROUTE, answer(load("dexscreener_tokens_solana.json")))) as srv:
        source = DexScreenerSource(session, SOLANA_TOKENS, base_url=srv.url, interval_s=3600)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await run_until(source, 1, limit_s=5)
        assert loop.time() - started < 2


def test_feed_errors_pickle_with_every_field() -> None:
    """Feed errors cross Ray pickled: class, message, url, status and Retry-After survive."""
    error = RateLimited("jupiter: rate limited", "jupiter", "http://x/price/v3", 429, 7.0)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimited
    assert (copy.message, copy.source, copy.url, copy.status, copy.retry_after_s) == (
        "jupiter: rate limited",
        "jupiter",
        "http://x/price/v3",
        429,
        7.0,
    )
    assert should_retry(copy) and not should_retry(RequestRejected("no"))
    assert not should_retry(ValueError("not a feed error"))


def test_usd_to_quote_is_decimal_division() -> None:
    """0.5 USD with SOL at 125 USD is exactly 0.004 SOL; a quote price ≤ 0 is refused."""
    assert usd_to_quote(Decimal("0.5"), Decimal("125")) == Decimal("0.004")
    with pytest.raises(ValueError, match="quote asset"):
        usd_to_quote(Decimal(1), Decimal(0))


async def test_invalid_settings_name_every_field(session: aiohttp.ClientSession) -> None:
    """Bad settings fail at construction with one InvalidRequest naming every bad field."""
    with pytest.raises(InvalidRequest) as dex_error:
        DexScreenerSource(
            session,
            {"": "not-an-address", "B": BONK, "B2": BONK},
            chain="base",
            base_url="ftp://example.com",
            interval_s=0,
        )
    assert {e.field for e in dex_error.value.errors} == {
        "chain",
        "tokens['']",
        "tokens['B2']",
        "base_url",
        "interval_s",
    }
    with pytest.raises(InvalidRequest) as jup_error:
        JupiterPriceSource(session, {}, api_key=" ", request_timeout_s=float("nan"))
    assert {e.field for e in jup_error.value.errors} == {"tokens", "api_key", "request_timeout_s"}
    with pytest.raises(InvalidRequest) as pyth_error:
        PythHermesSource(
            session, {"BTC": "0x1234", "A": BTC_FEED, "B": "0x" + BTC_FEED}, quote_feed="sol"
        )
    assert {e.field for e in pyth_error.value.errors} == {
        "feeds['BTC']",
        "feeds['B']",
        "quote_feed",
    }


# ------------------------------------------------------------------- Pyth Hermes


def pyth(session: aiohttp.ClientSession, url: str, t: FakeTime, **kw: Any) -> PythHermesSource:
    feeds = kw.pop("feeds", {"BTC": "0x" + BTC_FEED.upper(), "ETH": ETH_FEED})
    kw.setdefault("quote_feed", SOL_USD_FEED_ID)
    return PythHermesSource(session, feeds, base_url=url, clock=t.clock, sleep=t.sleep, **kw)


BTC_USD = Decimal(6500012345678).scaleb(-8)  # "6500012345678" · 10^-8
ETH_USD = Decimal(301250000).scaleb(-5)


async def test_pyth_snapshot_parses_integer_price_and_expo(session: aiohttp.ClientSession) -> None:
    """``int(price) · 10^expo`` in Decimal, over SOL/USD; ids come back without 0x and map to
    the configured names; ts is the older publish time of the two inputs; the key is sent as
    a Bearer token and all ids (quote included) travel as ``ids[]``."""
    t = FakeTime()
    async with serve(web.get("/v2/updates/price/latest", answer(load("pyth_latest.json")))) as srv:
        source = pyth(session, srv.url, t, api_key="pyth-secret")
        result = await source.poll_once()
    sol = Decimal("150.25")
    assert result.ticks == [
        Tick("BTC", float(BTC_USD / sol), 1714564799.0),
        Tick("ETH", float(ETH_USD / sol), 1714564800.0),
    ]
    assert (Decimal("65000.12345678"), Decimal("3012.50")) == (BTC_USD, ETH_USD)
    (seen,) = srv.seen
    assert seen.headers["Authorization"] == "Bearer pyth-secret"
    assert seen.query.getall("ids[]") == [BTC_FEED, ETH_FEED, SOL_USD_FEED_ID]
    assert seen.query["parsed"] == "true"
    assert "pyth-secret" not in repr(source.status()) + source.stream_url + source.latest_url


async def test_pyth_without_quote_feed_emits_usd(session: aiohttp.ClientSession) -> None:
    """``quote_feed=None`` leaves prices in USD, stamped with their own publish time."""
    t = FakeTime()
    async with serve(web.get("/v2/updates/price/latest", answer(load("pyth_latest.json")))) as srv:
        source = pyth(session, srv.url, t, quote_feed=None)
        result = await source.poll_once()
    assert result.ticks == [
        Tick("BTC", float(BTC_USD), 1714564799.0),
        Tick("ETH", float(ETH_USD), 1714564800.0),
    ]
    assert "Authorization" not in srv.seen[0].headers


async def test_pyth_ignores_older_updates_and_bad_items(session: aiohttp.ClientSession) -> None:
    """An update older than the held one never rolls a price back; malformed items, prices
    ≤ 0 and feeds not asked for are skipped."""
    later = {
        "parsed": [
            {"id": BTC_FEED, "price": {"price": "1", "expo": 0, "publish_time": 1714564000}},
            {"id": ETH_FEED, "price": {"price": "-5", "expo": 0, "publish_time": 1714564900}},
            {"id": ETH_FEED, "price": {"price": "abc", "expo": -8, "publish_time": 1714564900}},
            {"id": ETH_FEED, "price": {"price": "1", "expo": True, "publish_time": 1714564900}},
            {"id": "ab" * 32, "price": {"price": "7", "expo": 0, "publish_time": 1714564900}},
            "garbage",
        ]
    }
    t = FakeTime()
    handler = script(answer(load("pyth_latest.json")), answer(later))
    async with serve(web.get("/v2/updates/price/latest", handler)) as srv:
        source = pyth(session, srv.url, t)
        await source.poll_once()
        result = await source.poll_once()
    assert result.ticks == [] and result.error is None
    assert source.skipped == 4
    assert source.last_update() == {"BTC": 1714564799.0, "ETH": 1714564800.0}


def sse(event: Any) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


async def _until_client_leaves(request: web.Request, limit_s: float = 3.0) -> None:
    for _ in range(int(limit_s / 0.01)):
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(0.01)


async def test_pyth_stream_reconnects_after_the_server_drops_it(
    session: aiohttp.ClientSession,
) -> None:
    """Snapshot, then stream: events tick as they come (a SOL/USD update re-ticks every
    token). A clean end of stream and a connection cut mid-event both lead to a backoff and a
    new snapshot + stream; the count of failures resets only once a stream delivers."""
    events = load("pyth_stream_events.json")
    connections = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if connections == 1:
            await response.write(b": hello\n\n" + sse(events[0]) + sse(events[1]))
            return response  # the server ends the stream cleanly
        if connections == 2:
            await response.write(b'data: {"parsed": [')
            assert request.transport is not None
            request.transport.close()  # cut mid-event
            return response
        await response.write(sse(events[2]))
        await _until_client_leaves(request)
        return response

    t = FakeTime()
    reported: list[FeedError] = []
    routes = [
        web.get("/v2/updates/price/latest", answer(load("pyth_latest.json"))),
        web.get("/v2/updates/price/stream", stream),
    ]
    got: list[list[Tick]] = []
    stop = asyncio.Event()

    async def emit(batch: list[Tick]) -> None:
        got.append(batch)
        if any(tick.token == "ETH" and tick.ts == 1714564802.0 for tick in batch):
            stop.set()

    async with serve(*routes) as srv:
        source = pyth(session, srv.url, t, on_error=reported.append)
        await asyncio.wait_for(source.run(emit, stop), 5)
    sol, sol2 = Decimal("150.25"), Decimal("151")
    assert got[:3] == [
        [Tick("BTC", float(BTC_USD / sol), 1714564799.0), Tick("ETH", float(ETH_USD / sol), T0)],
        [Tick("BTC", float(Decimal(65100) / sol), T0)],
        [
            Tick("BTC", float(Decimal(65100) / sol2), 1714564801.0),
            Tick("ETH", float(ETH_USD / sol2), T0),
        ],
    ]
    assert got[-1][-1] == Tick("ETH", float(Decimal(3020) / sol2), 1714564802.0)
    btc = [tick for batch in got[3:] for tick in batch if tick.token == "BTC"]
    assert all(tick.price == float(Decimal(65100) / sol2) for tick in btc)  # no rollback
    assert t.sleeps == [0.5, 1.0]
    assert connections == 3 and len(srv.paths("/v2/updates/price/latest")) == 3
    assert [type(e) for e in reported] == [FeedConnectionError]
    assert srv.paths("/v2/updates/price/stream")[0].headers["Accept"] == "text/event-stream"
    assert source.connects == 3 and source.events == 3 and source.failures == 0


async def test_pyth_silent_stream_counts_as_dropped(session: aiohttp.ClientSession) -> None:
    """A stream that sends nothing for ``idle_timeout_s`` (a half-open connection) is dropped
    and reconnected."""
    events = load("pyth_stream_events.json")
    connections = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if connections > 1:
            await response.write(sse(events[0]))
        await _until_client_leaves(request)
        return response

    t = FakeTime()
    routes = [
        web.get("/v2/updates/price/latest", answer(load("pyth_latest.json"))),
        web.get("/v2/updates/price/stream", stream),
    ]
    async with serve(*routes) as srv:
        source = pyth(session, srv.url, t, idle_timeout_s=0.2)
        batches = await run_until(source, 3)
        assert isinstance(source.last_error, FeedConnectionError)
    assert connections == 2 and t.sleeps == [0.5]
    assert batches[2] == [Tick("BTC", float(Decimal(65100) / Decimal("150.25")), T0)]


async def test_pyth_rate_limit_waits_for_an_http_date_retry_after(
    session: aiohttp.ClientSession,
) -> None:
    """A 429 whose Retry-After is an HTTP date 12 s ahead waits 12 s before reconnecting."""
    date = format_datetime(datetime.fromtimestamp(T0 + 12, UTC), usegmt=True)
    limited = answer({"message": "rate limited"}, 429, {"Retry-After": date})
    t = FakeTime()
    async with serve(
        web.get("/v2/updates/price/latest", script(limited, answer(load("pyth_latest.json"))))
    ) as srv:
        source = pyth(session, srv.url, t)
        await run_until(source, 1)
    assert t.sleeps == [12.0]


async def test_pyth_refused_stream_stops_run(session: aiohttp.ClientSession) -> None:
    """A 404 on the stream (unknown feed id) is reported and ends ``run`` with
    RequestRejected quoting the server's reason; nothing is retried."""
    t = FakeTime()
    reported: list[FeedError] = []
    routes = [
        web.get("/v2/updates/price/latest", answer(load("pyth_latest.json"))),
        web.get("/v2/updates/price/stream", text("Price ids not found: deadbeef", 404)),
    ]
    batches: list[list[Tick]] = []

    async def emit(batch: list[Tick]) -> None:
        batches.append(batch)

    async with serve(*routes) as srv:
        source = pyth(session, srv.url, t, on_error=reported.append, ignore_invalid_ids=True)
        with pytest.raises(RequestRejected, match="Price ids not found"):
            await asyncio.wait_for(source.run(emit, asyncio.Event()), 5)
        assert srv.seen[0].query["ignore_invalid_price_ids"] == "true"
    assert len(batches) == 1 and t.sleeps == []
    assert [type(e) for e in reported] == [RequestRejected]
    assert "HTTP 404" in source.status()["rejected"]


def test_sse_parser_handles_split_chunks_crlf_comments_and_multiline_data() -> None:
    """Events end at a blank line, across chunk boundaries and CRLF; comments and
    non-data fields are ignored; several data lines join with newlines."""
    parser = SseParser()
    assert parser.feed(b": keep-alive\r\n\r\nda") == []
    assert parser.feed(b'ta: {"a":\r\ndata:1}\r\nevent: price\r\nid: 7\r\n') == []
    assert parser.feed(b"\r\ndata: two\n\n\n") == ['{"a":\n1}', "two"]
    with pytest.raises(FeedResponseError, match="exceeds"):
        SseParser(max_event_bytes=8).feed(b"data: 0123456789")


async def test_staleness_is_per_token(session: aiohttp.ClientSession) -> None:
    """``stale(now, max_age_s)`` lists tokens never ticked or last ticked more than
    ``max_age_s`` ago; a tick exactly ``max_age_s`` old is still fresh. Pyth ages run from
    publish time, not arrival."""
    t = FakeTime()
    async with serve(web.get(DEX_ROUTE, answer(load("dexscreener_tokens_solana.json")))) as srv:
        source = dex(session, srv.url, t)
        await source.poll_once()
    assert source.stale(T0, 1) == ["POPCAT"]
    assert source.stale(T0 + 10, 10) == ["POPCAT"]
    assert source.stale(T0 + 10.5, 10) == list(SOLANA_TOKENS)
    assert source.last_update()["BONK"] == T0 and source.last_update()["POPCAT"] is None
    async with serve(web.get("/v2/updates/price/latest", answer(load("pyth_latest.json")))) as srv:
        hermes = pyth(session, srv.url, FakeTime(T0 + 1000))
        await hermes.poll_once()
    assert hermes.stale(T0 + 30, 30) == ["BTC"]  # published at T0 - 1
    assert hermes.tokens == ("BTC", "ETH")
