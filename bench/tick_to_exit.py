"""tick_to_exit: a price tick below a stop → the sale's intent journaled → its fill journaled.

One agent (fixed -10 % stop). For each sample, untimed: a buy signal on a fresh
token opens a position (armed at ~1.0, stop ~0.9). Timed: the client takes the
wall clock, pushes one tick at 0.5 through ``POST /api/v1/feeds/manual/ticks``
(API → manual feed actor → evaluator, which triggers and calls the agent's host
→ ``exit_intended`` journaled → wallet host sells → ``position_closed``
journaled), then polls the journal until the agent's ``position_closed`` row is
there. Timed from the moment the tick entered the feed actor (the feed stamps
each batch; the ``exit_intended`` event carries it as ``tick_entered_at``) to
the journal's ``created_at`` (PostgreSQL's ``now()``, the start of the
group-commit transaction, same machine clock) of the intent and of the fill.
Also from the client's push (adding HTTP and the API → feed hop), the
evaluator's ``valux_tick_to_exit_seconds`` histogram (tick entering the feed →
exit's fill acknowledged to the evaluator) and the push's own round trip.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from bench.common import (
    BenchEnv,
    Benchmark,
    BenchResult,
    Row,
    Target,
    distribution,
    valux_system,
)
from bench.metrics import histogram_summary
from bench.signal_latency import FIXED_STOP
from valux.persistence.codec import decode

_EVENTS = (
    "SELECT seq, event_type, payload, created_at FROM journal"
    " WHERE stream_id = $1 AND seq > $2 ORDER BY seq"
)


async def run(env: BenchEnv, result: BenchResult, *, samples: int, warmup: int = 3) -> None:
    to_intent: list[float] = []
    to_fill: list[float] = []
    push_to_intent: list[float] = []
    push_to_fill: list[float] = []
    push_rtt: list[float] = []
    async with valux_system(env, "t2x") as system:
        tokens = [f"TX{i:04d}{uuid.uuid4().hex[:4].upper()}" for i in range(warmup + samples)]
        await system.ticks([(t, 1.0) for t in tokens])
        (agent_id,) = await system.create_agents(1, config=FIXED_STOP, balance="100000")
        stream = f"agent:{agent_id}"
        conn = await asyncpg.connect(system.database_url)
        try:
            last_seq = 0
            for i, token in enumerate(tokens):
                body = {"id": f"tx-{uuid.uuid4().hex}", "token": token, "strength": 5,
                        "type": "buy", "size": "1", "agents": [agent_id]}  # fmt: skip
                answer = await system.request("POST", "/api/v1/signals", body, expect=201)
                if answer["outcomes"][0]["status"] != "bought":
                    raise RuntimeError(f"setup buy failed: {answer}")
                last_seq = await conn.fetchval(
                    "SELECT coalesce(max(seq), 0) FROM journal WHERE stream_id = $1", stream
                )
                pushed = time.time()
                started = time.perf_counter()
                await system.ticks([(token, 0.5)], ts=pushed)
                rtt = time.perf_counter() - started
                intent_at = closed_at = entered = None
                deadline = time.monotonic() + 10
                while closed_at is None:
                    for row in await conn.fetch(_EVENTS, stream, last_seq):
                        if row["event_type"] == "exit_intended" and intent_at is None:
                            intent_at = row["created_at"].timestamp()
                            entered = decode(row["payload"]).get("tick_entered_at")
                        elif row["event_type"] == "position_closed":
                            closed_at = row["created_at"].timestamp()
                    if closed_at is None:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"no position_closed for {token} within 10 s")
                        await asyncio.sleep(0.002)
                if i >= warmup and intent_at is not None:
                    if entered is None:
                        raise RuntimeError(f"exit_intended of {token} has no tick_entered_at")
                    to_intent.append((intent_at - entered) * 1000)
                    to_fill.append((closed_at - entered) * 1000)
                    push_to_intent.append((intent_at - pushed) * 1000)
                    push_to_fill.append((closed_at - pushed) * 1000)
                    push_rtt.append(rtt * 1000)
        finally:
            await conn.close()
        text = await system.metrics_text()
        evaluator = histogram_summary(text, "valux_tick_to_exit_seconds")
        commits = histogram_summary(text, "valux_journal_commit_seconds")
    result.add(Row("tick entered the feed → exit intent journaled", "ms",
                   stats=distribution(to_intent), targets=[Target("p99", "<=", 5.0)]))  # fmt: skip
    result.add(Row("tick entered the feed → sale fill journaled", "ms",
                   stats=distribution(to_fill), targets=[Target("p99", "<=", 25.0)]))  # fmt: skip
    result.add(Row("  from the client's push → exit intent journaled", "ms",
                   stats=distribution(push_to_intent)))  # fmt: skip
    result.add(Row("  from the client's push → sale fill journaled", "ms",
                   stats=distribution(push_to_fill)))  # fmt: skip
    result.add(Row("  tick push round trip (API → feed → evaluator)", "ms",
                   stats=distribution(push_rtt)))  # fmt: skip
    if evaluator:
        result.add(Row("  evaluator histogram: tick in the feed → fill acknowledged", "ms",
                       stats=evaluator, note="bucket-interpolated; includes warm-up"))  # fmt: skip
    if commits:
        result.add(Row("  journal group commit, any host (histogram)", "ms", stats=commits))
    result.notes.append(
        f"{samples} exits, one at a time ({warmup} warm-up not timed); times to the journal's "
        "created_at (transaction start, so the commit itself, ~1 ms, is not included) from the "
        "feed actor's clock when the tick entered it (same machine), or from the client's push."
    )


SPEC = Benchmark(
    name="tick_to_exit",
    title="tick → exit intent journaled → fill journaled",
    needs_ray=True,
    quick={"samples": 20},
    full={"samples": 300},
    run=run,
)
