"""signal_latency: a signal's round trip to an acknowledged fill, one agent, over HTTP.

One agent (fixed -10 % stop), paper venue, manual feed. The client (aiohttp,
keep-alive) posts ``signals`` buy signals one after the other, all on one token
with ``agents: [id]`` and a size; between two signals the agent's position is
closed through ``POST /positions/{id}/close`` (untimed), so every signal finds
the agent flat. Timed: ``POST /api/v1/signals`` from send to the 201 response,
which the API gives only after the fill is journaled and the position armed
(HTTP → API → agent host → wallet host → venue → journal → evaluator and back).
A few warm-up signals first are not timed. Also reported: the agent host's own
``valux_signal_to_fill_seconds`` histogram (signal entering the host to fill
journaled and armed), read from ``GET /metrics``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

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

FIXED_STOP = {"stopLoss": {"enabled": True, "defaultPercentage": -10, "mode": "fixed"}}


async def run(env: BenchEnv, result: BenchResult, *, signals: int, warmup: int = 5) -> None:
    async with valux_system(env, "siglat") as system:
        token = f"LAT{uuid.uuid4().hex[:6].upper()}"
        await system.ticks([(token, 1.0)])
        (agent_id,) = await system.create_agents(1, config=FIXED_STOP, balance="100000")
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        for i in range(warmup + signals):
            body: dict[str, Any] = {
                "id": f"lat-{uuid.uuid4().hex}",
                "token": token,
                "strength": 5,
                "type": "buy",
                "size": "1",
                "agents": [agent_id],
            }
            started = time.perf_counter()
            answer = await system.request("POST", "/api/v1/signals", body, expect=201)
            elapsed = time.perf_counter() - started
            (outcome,) = answer["outcomes"]
            statuses[outcome["status"]] = statuses.get(outcome["status"], 0) + 1
            if outcome["status"] != "bought":
                raise RuntimeError(f"signal {i} was not filled: {outcome}")
            if i >= warmup:
                latencies.append(elapsed * 1000)
            await system.request("POST", f"/api/v1/positions/{outcome['position_id']}/close", {})
        text = await system.metrics_text()
        host = histogram_summary(text, "valux_signal_to_fill_seconds")
        commits = histogram_summary(text, "valux_journal_commit_seconds")
    result.add(
        Row(
            "signal → fill acknowledged (HTTP round trip)",
            "ms",
            stats=distribution(latencies),
            targets=[Target("p50", "<=", 5.0), Target("p99", "<=", 15.0)],
        )
    )
    if host:
        result.add(
            Row(
                "  of which in the agent host (histogram)",
                "ms",
                stats=host,
                note="bucket-interpolated; includes warm-up",
            )
        )
    if commits:
        result.add(
            Row(
                "  journal group commit, any host (histogram)",
                "ms",
                stats=commits,
                note="a signal waits for ~4 of these in sequence (buy intent, wallet intent, "
                "fill, position opened)",
            )
        )
    result.details["outcomes"] = statuses
    result.notes.append(
        f"{signals} sequential signals on one token, one agent, position closed between "
        f"signals (untimed); {warmup} warm-up signals not timed."
    )


SPEC = Benchmark(
    name="signal_latency",
    title="signal → fill acknowledged, one agent, HTTP API",
    needs_ray=True,
    quick={"signals": 20},
    full={"signals": 500},
    run=run,
)
