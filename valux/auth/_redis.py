"""Shared by the Redis-backed pieces: turning "Redis is down" into one clear error.

:func:`redis_errors` wraps a block of Redis calls and re-raises connection
failures and timeouts as :class:`~valux.auth.errors.RedisUnavailable`, whose
message names Redis and where it was expected (host and port, or the Unix
socket; never a password), so the API's 503 says what is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import exceptions as redis_exceptions

from valux.auth.errors import RedisUnavailable

__all__ = ["describe", "redis_errors"]


def describe(client: Any) -> str:
    """Where ``client`` (a ``redis.asyncio.Redis``) connects, e.g. ``127.0.0.1:6379/0``."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return "its configured address"
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']} (db {db})"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


@contextmanager
def redis_errors(client: Any, what: str) -> Iterator[None]:
    """Re-raise connection failures and timeouts inside the block as ``RedisUnavailable``."""
    try:
        yield
    except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"Redis at {describe(client)} is unreachable, so {what} is unavailable "
            f"({type(exc).__name__}: {exc})"
        ) from exc
