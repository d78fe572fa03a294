"""journal: events per second appended through the group-committing Journal.

:class:`valux.persistence.journal.Journal` used directly, as a host uses it: one
Journal over an asyncpg pool (4 connections, like a host's) on a fresh
database with valux's migrations, ``synchronous_commit`` on (checked and
reported). ``committers`` concurrent logical actors ("agents"), each with its
own stream, commit one event at a time (a ``position_opened``-sized msgpack
payload with Decimals) and wait for durability before the next, like an agent
that journals before it answers. Timed: all ``events`` appended; the journal
table is then counted. Reported: events/s, per-commit latency, and how many
commits each group transaction carried.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import asyncpg

from bench.common import (
    BenchEnv,
    Benchmark,
    BenchResult,
    Row,
    Target,
    distribution,
    fresh_database,
)
from valux.persistence.journal import Commit, Event, Journal
from valux.persistence.migrations import apply_migrations


def _payload(i: int) -> dict[str, Any]:
    return {
        "intent_id": f"buy:sig-{i}:agent",
        "signal_id": f"sig-{i}",
        "position": {
            "id": f"buy:sig-{i}:agent",
            "token": "BONK",
            "amount": Decimal("123456.789012"),
            "purchase_price": Decimal("0.00000812"),
            "invested": Decimal("1.003"),
            "opened_at": 1.7e9 + i,
        },
        "ts": 1.7e9 + i,
    }


async def run(
    env: BenchEnv,
    result: BenchResult,
    *,
    events: int,
    committers: int,
    window_ms: float = 0.0,
    pool_size: int = 4,
) -> None:
    per = max(1, events // committers)
    total = per * committers
    async with fresh_database(env.admin_url, "journal") as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size)
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
                sync_commit = await conn.fetchval("SHOW synchronous_commit")
            journal = Journal(pool, window_ms=window_ms)
            latencies: list[float] = []

            async def committer(c: int) -> None:
                stream = f"agent:bench-{c:05d}"
                for seq in range(1, per + 1):
                    commit = Commit(events=[Event(stream, seq, "position_opened", _payload(seq))])
                    started = time.perf_counter()
                    await journal.commit(commit)
                    latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(committer(c) for c in range(committers)))
            elapsed = time.perf_counter() - started
            await journal.close()
            stored = await pool.fetchval("SELECT count(*) FROM journal")
            transactions = journal.transactions
        finally:
            await pool.close()
    result.add(Row(f"events appended ({committers:,} concurrent committers)", "events/s",
                   value=total / elapsed, targets=[Target("value", ">=", 20_000.0)]))  # fmt: skip
    result.add(Row("commit latency (one event, until durable)", "ms",
                   stats=distribution(latencies)))  # fmt: skip
    result.add(Row("commits per group transaction (mean)", "", value=total / max(1, transactions)))
    if stored != total:
        result.add(Row("events missing from the journal table", "", value=float(total - stored),
                       targets=[Target("value", "<=", 0.0)]))  # fmt: skip
    result.notes.append(
        f"{total:,} events, synchronous_commit={sync_commit}, group-commit window {window_ms} ms, "
        f"pool of {pool_size}; {stored:,} rows counted afterwards."
    )
    result.details["synchronous_commit"] = sync_commit


SPEC = Benchmark(
    name="journal",
    title="journal appends per second with group commit",
    needs_ray=False,
    quick={"events": 2_000, "committers": 100},
    full={"events": 200_000, "committers": 1_000},
    run=run,
)
