"""Micro-batching of calls to one remote actor.

Many logical actors on one host act concurrently; each wants to talk to a
wallet host or an evaluator. Rather than one Ray call per agent (DESIGN.md hot
path rule), each caller awaits :meth:`CallBatcher.call` and the batcher sends
everything submitted in the same event-loop turn as *one* call carrying a list,
then hands each caller its own result. Code per agent stays sequential and
readable; the wire sees one call per host per turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class CallBatcher(Generic[T, R]):
    """Collects items for one turn of the loop and sends them together."""

    def __init__(self, send: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int = 5000):
        self._send = send
        self._max_batch = max_batch
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._scheduled = False
        self.calls = 0
        self.items = 0

    async def call(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        self.calls += 1
        self.items += len(items)
        asyncio.get_running_loop().create_task(self._deliver(items, futures))

    async def _deliver(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._send(items)
            if len(results) != len(items):
                raise RuntimeError(f"batched call answered {len(results)} of {len(items)} items")
        except BaseException as exc:  # every caller sees the failure of the shared call
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
