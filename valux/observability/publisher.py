"""Best-effort fan-out of updates to API processes through Redis pub/sub.

Trading never depends on Redis (DESIGN.md): :meth:`RedisPublisher.publish`
only enqueues; a background task sends, reconnecting with backoff. When Redis
is down or the queue is full, messages are dropped and counted, never awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import redis.asyncio as aioredis
import structlog

CHANNEL_PRICES = "valux:prices"
CHANNEL_POSITIONS = "valux:positions"
CHANNEL_TRADES = "valux:trades"


class RedisPublisher:
    """Non-blocking publisher; ``url=None`` disables publishing."""

    def __init__(self, url: str | None, *, max_queue: int = 10_000) -> None:
        self._url = url
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent = 0
        self.connected = False
        self._log = structlog.get_logger("valux.publisher")

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        if self._url is None:
            return
        try:
            self._queue.put_nowait((channel, json.dumps(message, default=str)))
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._url is not None
        backoff = 0.1
        while True:
            client = aioredis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
            try:
                while True:
                    channel, body = await self._queue.get()
                    batch = [(channel, body)]
                    while not self._queue.empty() and len(batch) < 500:
                        batch.append(self._queue.get_nowait())
                    async with client.pipeline(transaction=False) as pipe:
                        for ch, payload in batch:
                            pipe.publish(ch, payload)
                        await pipe.execute()
                    self.connected = True
                    self.sent += len(batch)
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: drop what is queued, retry later
                self.connected = False
                self.dropped += self._queue.qsize()
                while not self._queue.empty():
                    self._queue.get_nowait()
                self._log.warning("redis_publish_failed", error=str(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                await client.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
