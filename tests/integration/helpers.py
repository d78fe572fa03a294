"""Small HTTP helpers for integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


class Api:
    """A JSON client for the valux API that checks status codes."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session: aiohttp.ClientSession

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    def url(self, path: str) -> str:
        return self.base + path

    async def request(
        self, method: str, path: str, expect: int | None = None, body: Any = None
    ) -> tuple[int, Any]:
        async with self.session.request(method, self.url(path), json=body) as resp:
            data = await resp.json(content_type=None)
            if expect is not None:
                assert resp.status == expect, f"{method} {path}: {resp.status} {data}"
            return resp.status, data

    async def get(self, path: str, expect: int = 200) -> Any:
        return (await self.request("GET", path, expect))[1]

    async def post(self, path: str, body: Any, expect: int) -> Any:
        return (await self.request("POST", path, expect, body))[1]

    async def ticks(self, ticks: list[tuple[str, float]]) -> None:
        now = time.time()
        body = {"ticks": [{"token": t, "price": p, "ts": now} for t, p in ticks]}
        await self.post("/api/v1/feeds/manual/ticks", body, 202)


async def wait_for(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 15.0
) -> T:
    """Poll ``fetch`` until ``done`` holds; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + within
    value = await fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value}")
        await asyncio.sleep(0.05)
        value = await fetch()
    return value
