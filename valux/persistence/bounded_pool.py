"""An asyncpg pool in which nothing waits on PostgreSQL longer than one bound.

asyncpg's ``command_timeout`` bounds each query and the connect timeout each new
connection, but the wait for a free connection is unbounded: while PostgreSQL hangs,
every connection is held by a query that is timing out, and the requests queued behind
them wait in turn, each a multiple of the bound. :class:`BoundedPool` bounds that wait
too, so every call of the pool either runs or raises ``TimeoutError`` within two to three
times the bound (the wait for a connection, the query, and at worst the release of a
connection whose query timed out). ``acquire(timeout=None)`` means the bound, never
"wait forever".
"""

from __future__ import annotations

from typing import Any

import asyncpg

__all__ = ["BoundedPool", "create_bounded_pool"]


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """:class:`asyncpg.Pool` whose :meth:`acquire` waits at most ``acquire_timeout_s``
    unless a caller passes its own timeout (``fetch``, ``execute`` and the rest acquire
    through it)."""

    def __init__(self, *args: Any, acquire_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout_s if timeout is None else timeout)


async def create_bounded_pool(
    dsn: str, *, bound_s: float, min_size: int, max_size: int, connect_timeout_s: float
) -> BoundedPool:
    """A started :class:`BoundedPool`: queries, new connections (at most
    ``connect_timeout_s``) and waits for a free connection bounded by ``bound_s``."""
    pool = BoundedPool(
        dsn,
        acquire_timeout_s=bound_s,
        min_size=min_size,
        max_size=max_size,
        # asyncpg.create_pool's defaults for what it would pass itself:
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=bound_s,
        timeout=min(connect_timeout_s, bound_s),
    )
    await pool
    return pool
