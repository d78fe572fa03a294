"""The HTTP price sources as a PriceFeed runs them (valux.feeds.live), against the
sandbox's Jupiter-shaped Price API: configured tokens and open positions' mints are
followed, a change of the set restarts the source over the new set, prices are in SOL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.unit.harness import until
from tests.unit.sandbox_support import control, sandbox_env
from valux.config.secrets import JUPITER_KEY_ENV
from valux.config.settings import load_settings
from valux.feeds.live import FollowingRunner
from valux.feeds.ticks import Tick


async def test_follows_configured_tokens_and_open_positions_mints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sandbox_env(slot_ms=40) as env:
        monkeypatch.setenv(JUPITER_KEY_ENV, env.headers["x-api-key"])
        bonk, wif = env.mint("BONK"), env.mint("WIF")
        settings = load_settings(
            env={},
            overrides={
                "jupiter.url": env.sandbox.service.url,
                "feeds.jupiter.enabled": True,
                "feeds.jupiter.interval_s": 0.05,
                "feeds.jupiter.refresh_s": 0.05,
                "feeds.jupiter.tokens": {"BONK": bonk},
            },
        )
        ticks: list[Tick] = []
        open_mints: list[str] = ["not-a-mint"]  # a paper symbol is never asked for

        async def emit(batch: list[Tick]) -> None:
            ticks.extend(batch)

        async def positions() -> list[str]:
            return list(open_mints)

        runner = FollowingRunner("jupiter", settings, emit, positions)
        task = asyncio.create_task(runner.run())
        try:
            await until(lambda: any(t.token == "BONK" for t in ticks), 10)
            assert runner.followed == {"BONK": bonk}
            open_mints.append(wif)
            await until(lambda: any(t.token == wif for t in ticks), 10)
            assert runner.followed == {"BONK": bonk, wif: wif}
            prices = []
            for usd in ("3", "6"):  # the ticks follow the pool: twice the USD, twice the SOL
                await control(env, "price", {"token": "WIF", "price": usd})
                before = len(ticks)
                await until(lambda b=before: sum(t.token == wif for t in ticks[b:]) >= 2, 10)
                prices.append([t.price for t in ticks[before:] if t.token == wif][-1])
            assert abs(prices[1] / prices[0] - 2) < 0.01, prices
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_follows_an_evm_positions_token_through_its_deepest_pool() -> None:
    """On anvil: an open position's token address is followed through its pool against
    WETH (found by the factory), its ticks are WETH per token from slot0, and a pool moved
    by a real swap moves them."""
    from tests.unit.evm_support import chain

    async with chain() as sandbox:
        d = sandbox.description()
        settings = load_settings(
            env={},
            overrides={
                "evm.rpc_url": d["evm_rpc_url"],
                "evm.factory": d["evm_factory"],
                "evm.weth": d["evm_tokens"]["WETH"],
                "feeds.uniswap.enabled": True,
                "feeds.uniswap.interval_s": 0.05,
                "feeds.uniswap.refresh_s": 0.05,
            },
        )
        arb = sandbox.token("ARB")
        ticks: list[Tick] = []

        async def emit(batch: list[Tick]) -> None:
            ticks.extend(batch)

        async def positions() -> list[str]:
            return [arb, "BONK"]  # a paper symbol is never looked up

        runner = FollowingRunner("uniswap", settings, emit, positions)
        task = asyncio.create_task(runner.run())
        try:
            await until(lambda: any(t.token == arb for t in ticks), 15)
            assert set(runner.followed) == {arb}
            expected = float(await sandbox.price("ARB"))
            assert abs([t.price for t in ticks if t.token == arb][-1] / expected - 1) < 1e-6
            await sandbox.set_price("ARB", Decimal("0.0004"))
            await until(lambda: abs(ticks[-1].price / 0.0004 - 1) < 0.01, 15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
