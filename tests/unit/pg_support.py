"""One PostgreSQL server for the unit tests that need a real one: ``DATABASE_URL``, else a
local server that answers on 5432, else an embedded one started for the module. Tests make
scratch databases on it (:mod:`valux.ops.scratch_db`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from tests.unit.local_servers import local_or_embedded


def answers(url: str) -> bool:
    """A PostgreSQL accepts a connection at ``url`` within two seconds."""

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=2)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def postgres_for_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield a server's admin URL (the body of a module-scoped fixture)."""
    from valux.ops.embedded import EmbeddedPostgres

    yield from local_or_embedded(
        tmp_path_factory,
        env="DATABASE_URL",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        answers=answers,
        embedded=EmbeddedPostgres,
    )
