"""No password in an actor's constructor arguments: the root (and through it every actor)
is spawned with URLs and settings stripped of their passwords, and an actor finds the
password in its own environment."""

from __future__ import annotations

import os
from typing import Any

import pytest
import ray

import valux.system.runtime as runtime_module
from tests.unit.harness import unit_settings
from valux.config.secrets import (
    export_for_actors,
    password_of,
    public_settings,
    with_password,
    without_password,
)
from valux.supervisors import factory

DB = "postgresql://valux:s3cr3t-db@db.internal:5433/valux?sslmode=require"
REDIS = "redis://:s3cr3t-redis@cache.internal:6380/2"


def test_urls_lose_and_regain_their_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stripping keeps user, host, port, path and query; the password comes back from the
    environment only for the same server, user and database."""
    assert without_password(DB) == "postgresql://valux@db.internal:5433/valux?sslmode=require"
    assert without_password(REDIS) == "redis://cache.internal:6380/2"
    assert without_password("postgresql://u@h/d") == "postgresql://u@h/d"
    monkeypatch.setenv("DATABASE_URL", DB)
    monkeypatch.setenv("REDIS_URL", REDIS)
    assert with_password(without_password(DB)) == DB
    assert password_of(with_password(without_password(REDIS))) == "s3cr3t-redis"
    other = "postgresql://valux@other.internal:5433/valux"
    assert with_password(other) == other  # another server: asyncpg's PGPASSWORD/passfile
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("VALUX_REDIS_PASSWORD", "from-env")
    assert password_of(with_password("redis://cache.internal:6380/2")) == "from-env"


def test_export_puts_passwords_where_workers_inherit_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a local Ray instance starts, the passwords go into this process's environment
    (PGPASSWORD for asyncpg, the URLs for with_password)."""
    for name in ("DATABASE_URL", "PGPASSWORD", "REDIS_URL", "VALUX_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    export_for_actors(DB, REDIS)
    assert os.environ["PGPASSWORD"] == "s3cr3t-db"
    assert os.environ["VALUX_REDIS_PASSWORD"] == "s3cr3t-redis"


async def test_the_root_is_spawned_without_any_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """attach_or_start spawns the root (whose arguments every actor's derive from) with no
    password anywhere in its arguments, settings included."""
    spawned: list[tuple[Any, ...]] = []

    class Root:
        class ping:  # mimics a Ray method handle: root.ping.remote()
            @staticmethod
            async def remote() -> dict[str, Any]:
                return {"pid": 1}

    def spawn(*args: Any, **options: Any) -> Root:
        spawned.append((*args, options))
        return Root()

    def no_root(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("no such actor")

    async def record_boot(url: str) -> None:
        assert password_of(url) == "s3cr3t-db"  # the driver itself uses the full URL

    monkeypatch.setattr(factory, "spawn", spawn)
    monkeypatch.setattr(ray, "get_actor", no_root)
    monkeypatch.setattr(runtime_module, "_record_boot", record_boot)
    settings = unit_settings(**{"database.url": DB, "redis.url": REDIS,
                                "venue.paper.database_url": DB,
                                "jupiter.api_key": "s3cr3t-jupiter"})  # fmt: skip
    await runtime_module.attach_or_start(settings, DB, REDIS)
    (args,) = spawned
    text = repr(args) + repr(args[3].model_dump())
    assert "s3cr3t" not in text
    assert args[4] == without_password(DB) and args[5] == without_password(REDIS)
    assert public_settings(settings).database.url == without_password(DB)
