"""Throw-away PostgreSQL databases for backtests, benchmarks and the chaos test.

Each gets a fresh database on the server of an admin connection URL, used and then
dropped, so runs never see each other's journal or read models.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = ["admin_execute", "scratch_database", "with_database"]


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def admin_execute(admin_url: str, sql: str) -> None:
    """Run one statement on its own connection (CREATE/DROP DATABASE cannot share one)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database ``<prefix>_<hex>``; yields its URL; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with contextlib.suppress(Exception):
            await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
