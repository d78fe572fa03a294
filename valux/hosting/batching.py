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
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from valux.hosting.peers import Peers

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
        self._delivering: set[asyncio.Task[None]] = set()
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
        task = asyncio.get_running_loop().create_task(self._deliver(items, futures))
        self._delivering.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._delivering.discard)

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


class PeerBatcher:
    """One batcher per (kind, key, method) of remote calls that take a list."""

    def __init__(self, peers: Peers, kind: str, *, timeout_s: float | None = None) -> None:
        """``timeout_s``: a caller waits at most this long for its answer (TimeoutError);
        the batch itself goes on for the others."""
        self._peers = peers
        self._kind = kind
        self._timeout_s = timeout_s
        self._batchers: dict[tuple[Any, str], CallBatcher[Any, Any]] = {}

    async def call(self, key: Any, method: str, item: Any) -> Any:
        if self._timeout_s is None:
            return await self._call(key, method, item)
        try:
            return await asyncio.wait_for(self._call(key, method, item), self._timeout_s)
        except TimeoutError as exc:  # to callers, a peer that does not answer is unreachable
            from valux.hosting.peers import PeerUnavailable

            raise PeerUnavailable(
                f"{self._kind} {key} did not answer {method} within {self._timeout_s:g}s"
            ) from exc

    async def _call(self, key: Any, method: str, item: Any) -> Any:
        batcher = self._batchers.get((key, method))
        if batcher is None:
            peers, kind = self._peers, self._kind

            async def send(items: list[Any]) -> list[Any]:
                return list(await peers.call(kind, key, method, items))

            batcher = self._batchers[(key, method)] = CallBatcher(send)
        return await batcher.call(item)
