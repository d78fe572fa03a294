"""Latest prices for venues that quote from the market (the paper venue).

The StopLossEvaluator of a token already holds its latest tick, so it is the
price board: a lookup asks the token's evaluator (one call), unless a fresh
reference price came with the order (an exit carries the tick that triggered
it) or was seen within ``max_age_s``.
"""

from __future__ import annotations

import time

from valux.supervisors.handles import evaluator_handle
from valux.supervisors.naming import shard_of


class PriceLookup:
    """Token → latest price, with a short local cache."""

    def __init__(self, evaluators: int, namespace: str, *, max_age_s: float = 1.0) -> None:
        self._evaluators = evaluators
        self._namespace = namespace
        self._max_age_s = max_age_s
        self._cache: dict[str, tuple[float, float]] = {}  # token -> (price, wall time seen)

    def remember(self, token: str, price: float, ts: float | None = None) -> None:
        self._cache[token] = (price, time.time() if ts is None else ts)

    async def price(self, token: str) -> float | None:
        cached = self._cache.get(token)
        if cached is not None and time.time() - cached[1] <= self._max_age_s:
            return cached[0]
        evaluator = await evaluator_handle(shard_of(token, self._evaluators), self._namespace)
        latest: tuple[float, float] | None = await evaluator.latest_price.remote(token)
        if latest is None:
            return None
        self._cache[token] = (latest[0], time.time())
        return latest[0]
