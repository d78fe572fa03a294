"""Actor starts, recorded by each supervised process when it starts (``actor_starts``).

A supervisor counts a child's restarts from these rows — the starts since the actor
system booted, minus the first — so no restart is missed between two pings and none is
forgotten when the supervisor itself restarts.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg

from valux.persistence.journal import Commit, RowWrite
from valux.persistence.store import Query, Store

RECORD_START = (
    "INSERT INTO actor_starts (name, incarnation, pid, started_at)"
    " VALUES ($1, $2, $3, now()) ON CONFLICT DO NOTHING"
)
RECORD_BOOT = "INSERT INTO system_boots (boot_at) VALUES (now()) ON CONFLICT DO NOTHING"
STARTS_SINCE_BOOT = Query(
    "starts_since_boot",
    "SELECT name, extract(epoch FROM started_at) AS ts FROM actor_starts"
    " WHERE name = ANY($1::text[])"
    " AND started_at >= coalesce((SELECT max(boot_at) FROM system_boots), '-infinity')"
    " ORDER BY name, started_at",
)


async def record_start(target: Store | asyncpg.Pool, name: str, incarnation: str) -> None:
    """Record this process's start (through a host's store, or a pool)."""
    args = (name, incarnation, os.getpid())
    if isinstance(target, asyncpg.Pool):
        await target.execute(RECORD_START, *args)
    else:
        row = RowWrite(RECORD_START, ("actor_starts", name, incarnation), args)
        await target.commit(Commit(rows=[row]))


async def starts_since_boot(pool: asyncpg.Pool, names: list[str]) -> dict[str, list[float]]:
    """Wall-clock start times of each named actor since the system booted, oldest first."""
    out: dict[str, list[float]] = {name: [] for name in names}
    rows: list[Any] = await pool.fetch(STARTS_SINCE_BOOT.sql, names)
    for row in rows:
        out[row["name"]].append(float(row["ts"]))
    return out
