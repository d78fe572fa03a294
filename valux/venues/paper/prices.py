"""Latest prices for venues that quote from the market (the paper venue).

The StopLossEvaluator of a token already holds its latest tick, so it is the
price board: a lookup asks the token's evaluator (one call), unless a fresh
reference price came with the order (an exit carries the tick that triggered
it) or was seen within ``max_age_s``.

With ``market_time`` (``venue.paper.simulated_clock``, backtests) the lookup
keeps no cache — wall time says nothing about how fresh a replayed price is, so
every lookup asks the evaluator — and :meth:`PriceLookup.market_time` is the
timestamp of the newest price it has seen: the clock of the venue's fills.

Concurrent lookups of one token share one evaluator call (single flight): a
signal fanned out to a thousand agents quotes the same token a thousand times
at once, before any answer could fill the cache.
"""

from __future__ import annotations

import asyncio
import time

from valux.hosting.naming import shard_of
from valux.hosting.peers import Peers


class PriceLookup:
    """Token → latest price, with a short local cache."""

    def __init__(
        self,
        evaluators: int,
        peers: Peers,
        *,
        max_age_s: float = 1.0,
        market_time: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        self._evaluators = evaluators
        self._timeout_s = timeout_s
        self._peers = peers
        self._max_age_s = max_age_s
        self._market = market_time
        self._newest: float | None = None  # ts of the newest price seen (market_time mode)
        self._cache: dict[str, tuple[float, float]] = {}  # token -> (price, wall time seen)
        self._inflight: dict[str, asyncio.Task[tuple[float, float] | None]] = {}

    def market_time(self) -> float:
        """The timestamp of the newest price seen; wall time until one has been seen."""
        return time.time() if self._newest is None else self._newest

    def _seen(self, ts: float | None) -> None:
        if ts is not None and (self._newest is None or ts > self._newest):
            self._newest = ts

    def remember(self, token: str, price: float, ts: float | None = None) -> None:
        if self._market:
            self._seen(ts)
            return
        self._cache[token] = (price, time.time() if ts is None else ts)

    async def price(self, token: str) -> float | None:
        cached = self._cache.get(token)
        if cached is not None and time.time() - cached[1] <= self._max_age_s:
            return cached[0]
        latest = await self._latest(token)
        if latest is None:
            return None
        if self._market:
            self._seen(latest[1])
        else:
            self._cache[token] = (latest[0], time.time())
        return latest[0]

    async def _latest(self, token: str) -> tuple[float, float] | None:
        """The evaluator's ``(price, ts)`` of ``token``; one call for concurrent askers
        (shielded: a cancelled asker does not cancel the others' call)."""
        call = self._inflight.get(token)
        if call is None:
            call = asyncio.get_running_loop().create_task(self._ask_evaluator(token))
            self._inflight[token] = call
            call.add_done_callback(lambda done: self._settled(token, done))
        return await asyncio.shield(call)

    def _settled(self, token: str, call: asyncio.Task[tuple[float, float] | None]) -> None:
        self._inflight.pop(token, None)
        if not call.cancelled():
            call.exception()  # retrieved here too: every asker may have gone away

    async def _ask_evaluator(self, token: str) -> tuple[float, float] | None:
        """Bounded: an evaluator that is restarting (re-arming from a database that hangs)
        must not hold the order that needs its price forever; the order is then retried."""
        shard = shard_of(token, self._evaluators)
        latest: tuple[float, float] | None = await asyncio.wait_for(
            self._peers.call("evaluator", shard, "latest_price", token), self._timeout_s
        )
        return latest
