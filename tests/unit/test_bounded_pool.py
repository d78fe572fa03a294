"""BoundedPool against a real PostgreSQL: with every connection held, each call of the
pool — fetchval, execute, ``async with acquire()`` — raises TimeoutError after the bound
instead of waiting for a free connection; a query that runs too long is cut at the bound;
the pool serves again afterwards. No Ray."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.unit.pg_support import postgres_for_tests
from valux.persistence.bounded_pool import BoundedPool, create_bounded_pool

BOUND_S = 0.5


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from postgres_for_tests(tmp_path_factory)


async def _took(call: Callable[[], Awaitable[Any]]) -> float:
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await call()
    return time.monotonic() - began


async def _acquire_and_query(pool: BoundedPool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


async def test_every_wait_on_the_pool_is_bounded(postgres_url: str) -> None:
    pool = await create_bounded_pool(
        postgres_url, bound_s=BOUND_S, min_size=1, max_size=1, connect_timeout_s=10
    )
    try:
        held = await pool.acquire()
        try:
            for call in (
                lambda: pool.fetchval("SELECT 1"),
                lambda: pool.execute("SELECT 1"),
                lambda: _acquire_and_query(pool),
            ):
                assert BOUND_S * 0.9 < await _took(call) < BOUND_S * 4
        finally:
            await pool.release(held)
        assert await _took(lambda: pool.fetchval("SELECT pg_sleep(5)")) < BOUND_S * 4
        assert await asyncio.wait_for(pool.fetchval("SELECT 7"), 10) == 7
    finally:
        await asyncio.wait_for(pool.close(), 10)
