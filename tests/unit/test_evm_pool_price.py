"""The slot0 price source: Uniswap V3 pool prices, by polling and by following newHeads."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.unit.evm_support import chain, make_trader, units
from valux.errors import InvalidRequest
from valux.feeds.http_source import Backoff, RequestRejected
from valux.feeds.ticks import Tick
from valux.feeds.uniswap_pool import (
    Q96,
    UniswapPoolSource,
    price_to_sqrt_price_x96,
    sqrt_price_x96_to_price,
)


def test_sqrt_price_conversion_uses_both_tokens_decimals() -> None:
    """A USDC(6)/WETH(18) pool at 3000 USDC per WETH: token0 = USDC, so slot0 holds WETH
    base units per USDC base unit; converting back gives 3000 for WETH and 1/3000 for USDC."""
    sqrt_price = price_to_sqrt_price_x96(Decimal(3000), 6, 18, base_is_token0=False)
    raw = Decimal(sqrt_price) ** 2 / Decimal(Q96) ** 2
    assert raw == pytest.approx(Decimal(10) ** 12 / 3000, rel=Decimal("1e-30"))
    assert sqrt_price_x96_to_price(sqrt_price, 6, 18, base_is_token0=False) == pytest.approx(
        Decimal(3000), rel=Decimal("1e-25")
    )
    assert sqrt_price_x96_to_price(sqrt_price, 6, 18, base_is_token0=True) == pytest.approx(
        Decimal(1) / 3000, rel=Decimal("1e-25")
    )
    assert sqrt_price_x96_to_price(Q96, 18, 18, base_is_token0=True) == 1
    with pytest.raises(ValueError):
        sqrt_price_x96_to_price(0, 18, 18, base_is_token0=True)
    with pytest.raises(ValueError):
        price_to_sqrt_price_x96(Decimal(-1), 18, 18, base_is_token0=True)


async def _source(sandbox, **kwargs):  # type: ignore[no-untyped-def]
    w3 = AsyncWeb3(AsyncHTTPProvider(sandbox.rpc_url))
    pools = {
        "ARB": sandbox.pool("ARB", "WETH", 3000),
        "LINK": sandbox.pool("LINK", "WETH", 3000),
        "GMX": sandbox.pool("GMX", "WETH", 10000),
    }
    return w3, UniswapPoolSource(w3, pools, quote_token=sandbox.weth, **kwargs)


async def test_slot0_prices_match_the_quoter_and_follow_set_price() -> None:
    """poll_once prices every pool from slot0 (quote per token); the price agrees with what
    QuoterV2 gives for a tiny order once the pool fee is taken out, and it follows the
    pool after set_price."""
    async with chain() as sandbox:
        w3, source = await _source(sandbox)
        try:
            result = await source.poll_once()
            assert result.error is None and result.rejected == ()
            prices = source.prices()
            assert prices["ARB"] == pytest.approx(Decimal("0.0002"), rel=Decimal("1e-12"))
            assert prices["LINK"] == pytest.approx(Decimal("0.005"), rel=Decimal("1e-12"))
            assert prices["GMX"] == pytest.approx(Decimal("0.01"), rel=Decimal("1e-12"))
            assert {t.token for t in result.ticks} == {"ARB", "LINK", "GMX"}

            trader = await make_trader(sandbox)
            arb = sandbox.token("ARB")
            route = await trader.venue._quote_tier(arb, sandbox.weth, units(Decimal(1), 18), 3000)
            assert route is not None
            quoted = Decimal(route.amount_out).scaleb(-18) / (1 - Decimal("0.003"))
            assert quoted == pytest.approx(prices["ARB"], rel=Decimal("1e-4"))

            await sandbox.set_price("ARB", Decimal("0.00025"))
            await source.poll_once()
            assert source.prices()["ARB"] == pytest.approx(Decimal("0.00025"), rel=Decimal("1e-12"))
            assert source.stale(source.clock(), 60) == []
        finally:
            await w3.provider.disconnect()


async def test_new_heads_over_websocket_drive_the_rounds() -> None:
    """With ws_url, run() subscribes to newHeads: a set_price (a new block) is emitted
    within the block's round, well before the 30 s polling interval."""
    async with chain() as sandbox:
        w3, source = await _source(sandbox, ws_url=sandbox.ws_url, interval_s=30.0)
        batches: list[list[Tick]] = []

        async def emit(batch: list[Tick]) -> None:
            batches.append(batch)

        stop = asyncio.Event()
        runner = asyncio.ensure_future(source.run(emit, stop))
        try:
            await _until(lambda: source.mode == "ws" and batches)
            before = await sandbox.block_number()
            await sandbox.set_price("LINK", Decimal("0.006"))
            await _until(
                lambda: any(
                    t.token == "LINK" and abs(t.price - 0.006) < 1e-12 for b in batches for t in b
                )
            )
            assert source.status()["heads"] >= 1
            assert before < source.status()["last_block"] <= await sandbox.block_number()
        finally:
            stop.set()
            await asyncio.wait_for(runner, 5)
            await w3.provider.disconnect()
        assert source.status()["mode"] == "idle"


async def test_without_a_websocket_the_source_polls() -> None:
    """A ws_url nobody listens on: the subscription error is reported and the source polls
    every interval_s meanwhile, so ticks still flow."""
    async with chain() as sandbox:
        errors: list[object] = []
        w3, source = await _source(
            sandbox,
            ws_url="ws://127.0.0.1:9",
            interval_s=0.05,
            backoff=Backoff(initial_s=5.0),
            on_error=errors.append,
        )
        batches: list[list[Tick]] = []

        async def emit(batch: list[Tick]) -> None:
            batches.append(batch)

        stop = asyncio.Event()
        runner = asyncio.ensure_future(source.run(emit, stop))
        try:
            await _until(lambda: len(batches) >= 3)
            assert source.mode == "polling" and errors
        finally:
            stop.set()
            await asyncio.wait_for(runner, 5)
            await w3.provider.disconnect()


async def test_an_address_that_is_not_a_pool_is_refused_for_good() -> None:
    """A followed address that is not a pool of the quote token is rejected once (not
    polled again) and goes stale; the other tokens keep ticking."""
    async with chain() as sandbox:
        w3 = AsyncWeb3(AsyncHTTPProvider(sandbox.rpc_url))
        pools = {
            "ARB": sandbox.pool("ARB", "WETH", 3000),
            "USDPOOL": sandbox.pool("ARB", "USDC", 3000),  # no WETH in it
            "TOKEN": sandbox.token("LINK"),  # a token, not a pool
        }
        source = UniswapPoolSource(w3, pools, quote_token=sandbox.weth)
        try:
            first = await source.poll_once()
            assert {type(r) for r in first.rejected} == {RequestRejected}
            assert len(first.rejected) == 2
            assert [t.token for t in first.ticks] == ["ARB"]
            second = await source.poll_once()
            assert second.rejected == () and [t.token for t in second.ticks] == ["ARB"]
            assert sorted(source.stale(source.clock(), 60)) == ["TOKEN", "USDPOOL"]
            assert len(source.status()["rejected"]) == 2
        finally:
            await w3.provider.disconnect()


def test_bad_settings_are_refused_with_every_field() -> None:
    """Non-address pools, a bad quote token and a non-ws URL are reported together."""
    w3 = AsyncWeb3(AsyncHTTPProvider("http://127.0.0.1:9"))
    with pytest.raises(InvalidRequest) as refused:
        UniswapPoolSource(w3, {"X": "nope"}, quote_token="0x12", ws_url="http://x")
    fields = {e.field for e in refused.value.errors}
    assert {"tokens['X']", "quote_token", "ws_url"} <= fields


async def _until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
