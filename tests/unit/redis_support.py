"""One Redis for the unit tests that need a real one: ``REDIS_URL``, else a local Redis that
answers on 6379, else an embedded one started for the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.local_servers import local_or_embedded


def reachable(url: str) -> bool:
    """A Redis answers PING at ``url`` within a second."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError):
        return False
    return True


def redis_for_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield the URL of a Redis to use (the body of a module-scoped ``redis_url`` fixture)."""
    from valux.ops.embedded import EmbeddedRedis

    yield from local_or_embedded(
        tmp_path_factory,
        env="REDIS_URL",
        default="redis://127.0.0.1:6379/0",
        answers=reachable,
        embedded=EmbeddedRedis,
    )
