"""A sliding-window rate limiter in Redis, shared by every API process.

``await limiter.hit(key, limit, window_s)`` answers whether one more request
under ``key`` is allowed: at most ``limit`` requests in any ``window_s``
seconds (a sliding log, not fixed buckets, so no burst of 2×limit across a
bucket edge). Each key is a sorted set of the accepted requests' times; one Lua
script drops the entries older than the window, counts, and adds the new one
only if it fits — atomic in Redis, so several API processes share one window
exactly. Times come from Redis's own clock (``TIME``), so API hosts with
skewed clocks still agree. Refused requests are not recorded (a client that
keeps hammering is not locked out longer than the window), and the key
expires one window after its last accepted request.

``retry_after_s`` of a refusal is when the oldest request in the window leaves
it; the ``Retry-After`` header is :attr:`Decision.retry_after_header`.

Keys are the caller's choice (``ip:203.0.113.7:login``, ``user:42:signals``);
they are stored under the limiter's prefix (default ``valux:rl:``). Memory is
one sorted-set entry per accepted request in the window, so a limit is meant
for tens to thousands, not millions. Redis being unreachable raises
:class:`~valux.auth.errors.RedisUnavailable`; whether to fail open or closed
then is the caller's decision (for login: closed).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from valux.auth._redis import redis_errors

__all__ = ["DEFAULT_PREFIX", "Decision", "RateLimiter"]

DEFAULT_PREFIX = "valux:rl:"

# KEYS[1]: the window's sorted set. ARGV: limit, window in ms, a unique member.
# Returns {allowed (0/1), retry after in ms, remaining}.
_SCRIPT = """
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window_ms)
  return {1, 0, limit - count - 1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry_ms = tonumber(oldest[2]) + window_ms - now_ms
if retry_ms < 1 then retry_ms = 1 end
return {0, retry_ms, 0}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether the request may proceed; if not, how long until one more would be allowed."""

    allowed: bool
    retry_after_s: float
    remaining: int
    limit: int

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value (whole seconds, at least 1) for a refusal."""
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter:
    """Sliding-window limits over a ``redis.asyncio.Redis`` the caller owns."""

    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self.prefix = prefix
        self._script: Any = redis.register_script(_SCRIPT)

    async def hit(self, key: str, limit: int, window_s: float) -> Decision:
        """Count one request under ``key``: allowed if under ``limit`` in the last ``window_s``."""
        if limit < 1:
            raise ValueError("the rate limit must allow at least one request")
        window_ms = int(window_s * 1000)
        if window_ms < 1:
            raise ValueError("the rate-limit window must be at least 1 ms")
        member = secrets.token_hex(8)
        with redis_errors(self._redis, "rate limiting"):
            allowed, retry_ms, remaining = await self._script(
                keys=[self.prefix + key], args=[limit, window_ms, member]
            )
        return Decision(bool(allowed), int(retry_ms) / 1000, int(remaining), limit)

    async def reset(self, key: str) -> None:
        """Forget every request counted under ``key`` (e.g. after a successful login)."""
        with redis_errors(self._redis, "rate limiting"):
            await self._redis.delete(self.prefix + key)
