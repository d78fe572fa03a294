"""PriceFeed: one source of prices, pushing tick *batches* to the evaluators.

Contract:
- Owns one price source (simulated, replay or manual) and the time of its last
  tick per token (freshness, for health).
- Each batch is split by evaluator shard and pushed with one call per shard;
  the next batch waits for the previous pushes (back-pressure instead of an
  unbounded queue). Prices go to Redis for WebSocket clients at most
  ``_PUBLISH_EVERY_S`` apart per feed, best effort.
- On restart: a simulated feed resumes from its seed (prices restart from the
  configured start prices — it is a simulation); a replay restarts its file; a
  manual feed waits for the next push. Nothing else is stored.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import structlog

from valux.config.secrets import with_password
from valux.config.settings import Settings
from valux.feeds.live import HTTP_SOURCES, OPEN_POSITION_TOKENS, FollowingRunner
from valux.feeds.manual import ManualFeed
from valux.feeds.replay import ReplayFeed
from valux.feeds.simulated import SimTokenSpec, SimulatedFeed
from valux.feeds.ticks import Tick
from valux.hosting.host import node_id
from valux.hosting.naming import feed_name, shard_of
from valux.hosting.peers import Peers, RayPeers
from valux.observability.logging import configure_logging
from valux.observability.metrics import TICKS, collect_families
from valux.observability.publisher import CHANNEL_PRICES, RedisPublisher
from valux.persistence.starts import RECORD_START

_PUBLISH_EVERY_S = 0.1


class PriceFeed:
    """One price source; see the module docstring for the contract."""

    # Ray runs an async constructor to completion before the actor takes its first call,
    # which is exactly the recovery contract; mypy only knows synchronous constructors.
    async def __init__(  # type: ignore[misc]
        self,
        source: str,
        settings: Settings,
        redis_url: str | None,
        database_url: str | None = None,
        *,
        peers: Peers | None = None,
    ) -> None:
        self.source = source
        self.incarnation = uuid.uuid4().hex
        self.peers: Peers = peers if peers is not None else RayPeers(settings.ray.namespace)
        self.settings = settings
        configure_logging(settings.logging.level, settings.logging.format, process=f"feed-{source}")
        self.log = structlog.get_logger("valux.feed").bind(source=source)
        if database_url is not None:
            await self._record_start(database_url)
        self.publisher = RedisPublisher(with_password(redis_url))
        self.shards = settings.hosting.evaluators
        self.last_tick: dict[str, float] = {}
        self.last_price: dict[str, float] = {}
        self.batches = 0
        self.ticks = 0
        self.started_at = time.time()
        self._last_publish = 0.0
        self._task: asyncio.Task[None] | None = None
        self._manual: ManualFeed | None = None
        self._runner: FollowingRunner | None = None
        self._positions_url: str | None = None
        self._pool: asyncpg.Pool | None = None
        feeds = settings.feeds
        if source == "simulated":
            sim = feeds.simulated
            specs = [
                SimTokenSpec(t.symbol, float(t.start_price), t.drift, t.volatility)
                for t in sim.tokens
            ]
            simulated = SimulatedFeed(specs, seed=sim.seed, interval_s=sim.interval_ms / 1000)
            self._task = asyncio.get_running_loop().create_task(self._run_simulated(simulated))
        elif source == "replay":
            if feeds.replay.path is None:
                raise ValueError("the replay feed needs feeds.replay.path")
            replay = ReplayFeed.from_file(feeds.replay.path)
            self._task = asyncio.get_running_loop().create_task(
                self._run_replay(replay, feeds.replay.speed)
            )
        elif source == "manual":
            self._manual = ManualFeed()
        elif source in HTTP_SOURCES:
            self._positions_url = database_url
            self._runner = FollowingRunner(source, settings, self._emit, self._open_tokens)
            self._task = asyncio.get_running_loop().create_task(self._runner.run())
        else:
            raise ValueError(f"unknown price source {source!r}")

    async def _record_start(self, database_url: str) -> None:
        try:
            conn = await asyncpg.connect(with_password(database_url), timeout=5)
            try:
                await conn.execute(
                    RECORD_START, feed_name(self.source), self.incarnation, os.getpid()
                )
            finally:
                await conn.close()
        except Exception as exc:  # the supervisor then counts restarts by ping
            self.log.warning("start_not_recorded", error=str(exc))

    # -- sources -----

    async def _run_simulated(self, feed: SimulatedFeed) -> None:
        interval = self.settings.feeds.simulated.interval_ms / 1000
        while True:
            started = time.monotonic()
            try:
                await self._route(feed.next_batch(time.time()))
            except Exception as exc:  # an evaluator restarting: keep ticking
                self.log.warning("push_failed", error=str(exc))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _run_replay(self, feed: ReplayFeed, speed: float) -> None:
        async for batch in feed.paced(speed):
            try:
                await self._route(batch)
            except Exception as exc:
                self.log.warning("push_failed", error=str(exc))
        self.log.info("replay_finished", ticks=self.ticks)

    async def _emit(self, batch: list[Tick]) -> None:
        """An HTTP source's batch: delivered, or logged (the next poll brings fresh ones)."""
        try:
            await self._route(batch)
        except Exception as exc:  # an evaluator restarting: keep polling
            self.log.warning("push_failed", error=str(exc))

    async def _open_tokens(self) -> list[str]:
        """Tokens with open positions (the HTTP sources follow their mints)."""
        if self._positions_url is None:
            return []
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                with_password(self._positions_url), min_size=0, max_size=1, timeout=5
            )
        rows = await self._pool.fetch(OPEN_POSITION_TOKENS, timeout=5)
        return [r["token"] for r in rows]

    async def push(self, ticks: list[Tick]) -> int:
        """Manual source: route a batch now (returns after the evaluators have it)."""
        if self._manual is None:
            raise ValueError(f"feed {self.source} does not accept pushed ticks")
        entered = time.time()
        self._manual.push(ticks)
        await self._route(self._manual.drain(), entered)
        return len(ticks)

    # -- routing -----

    async def _route(self, batch: list[Tick], entered: float | None = None) -> None:
        """Send a batch to its evaluators; ``entered``: when it entered this feed (the
        start of tick → exit latency; now, by default)."""
        entered = time.time() if entered is None else entered
        if not batch:
            return
        by_shard: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
        for tick in batch:
            by_shard[shard_of(tick.token, self.shards)].append((tick.token, tick.price, tick.ts))
        await asyncio.gather(
            *(
                self.peers.call("evaluator", shard, "on_ticks", ticks, entered)
                for shard, ticks in by_shard.items()
            )
        )
        now = time.time()
        for tick in batch:
            self.last_tick[tick.token] = now
            self.last_price[tick.token] = tick.price
        self.batches += 1
        self.ticks += len(batch)
        TICKS.labels(self.source).inc(len(batch))
        if now - self._last_publish >= _PUBLISH_EVERY_S:
            self._last_publish = now
            self.publisher.publish(
                CHANNEL_PRICES,
                {
                    "type": "prices",
                    "source": self.source,
                    "ticks": [{"token": t.token, "price": t.price, "ts": t.ts} for t in batch],
                },
            )

    # -- supervision surface -----

    async def ping(self) -> dict[str, Any]:
        failed = self._task is not None and self._task.done()
        return {
            "kind": "feed",
            "pid": os.getpid(),
            "node": node_id(),
            "source": self.source,
            "batches": self.batches,
            "ticks": self.ticks,
            "last_tick_age_s": None
            if not self.last_tick
            else round(time.time() - max(self.last_tick.values()), 3),
            "push_driven": self._manual is not None,
            "http": None if self._runner is None else self._runner.status(),
            "finished": failed,
            "started_at": self.started_at,
            "incarnation": self.incarnation,
        }

    async def metrics(self) -> list[Any]:
        return collect_families()

    async def shutdown(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
        if self._pool is not None:
            await self._pool.close()
        await self.publisher.close()
        return {"ticks": self.ticks}
