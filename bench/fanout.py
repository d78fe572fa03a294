"""fanout: one signal to every agent, hosted on several Ray actors, until every fill is journaled.

``agents`` agents (default config) on ``agents // agents_per_host`` agent hosts
(and as many wallet hosts), created through the API. Then ``signals`` buy
signals, each on a token of its own and addressed to all agents, are posted
one after the other. Timed per signal: ``POST /api/v1/signals`` from send to
response, which comes only after every agent's buy is filled, journaled and
armed (one call per host, the hosts' agents concurrent, wallet calls batched
per loop turn). After each signal the ``trades`` read model is counted: it
must hold one buy per agent for that token. One warm-up signal is not timed.
"""

from __future__ import annotations

import time
import uuid

import asyncpg

from bench.common import BenchEnv, Benchmark, BenchResult, Row, Target, distribution, valux_system


async def run(
    env: BenchEnv, result: BenchResult, *, agents: int, agents_per_host: int, signals: int
) -> None:
    hosts = -(-agents // agents_per_host)
    async with valux_system(
        env,
        "fanout",
        **{"hosting.agents_per_host": agents_per_host},
    ) as system:
        tokens = [f"FAN{i:03d}{uuid.uuid4().hex[:4].upper()}" for i in range(signals + 1)]
        await system.ticks([(t, 1.0) for t in tokens])
        created = time.perf_counter()
        await system.create_agents(agents, balance="100", concurrency=32)
        create_s = time.perf_counter() - created
        latencies: list[float] = []
        short: list[str] = []
        conn = await asyncpg.connect(system.database_url)
        try:
            for i, token in enumerate(tokens):
                body = {"id": f"fan-{uuid.uuid4().hex}", "token": token, "strength": 5,
                        "type": "buy", "size": "0.1"}  # fmt: skip
                started = time.perf_counter()
                answer = await system.request("POST", "/api/v1/signals", body, expect=201)
                elapsed = time.perf_counter() - started
                bought = sum(1 for o in answer["outcomes"] if o["status"] == "bought")
                trades = await conn.fetchval(
                    "SELECT count(*) FROM trades WHERE token = $1 AND side = 'buy'", token
                )
                if bought != agents or trades != agents:
                    short.append(f"{token}: {bought} bought, {trades} trades of {agents}")
                if i > 0:
                    latencies.append(elapsed * 1000)
        finally:
            await conn.close()
    result.add(
        Row(
            f"signal → {agents} fills journaled ({hosts} hosts)",
            "ms",
            stats=distribution(latencies),
            targets=[Target("p99", "<=", 100.0)],
        )
    )
    result.add(Row("fills per second during fan-out (mean)", "fills/s",
                   value=agents / (sum(latencies) / len(latencies) / 1000)))  # fmt: skip
    result.add(Row(f"create {agents} agents through the API (32 concurrent)", "s", value=create_s))
    if short:
        result.notes.append("INCOMPLETE fan-outs: " + "; ".join(short[:5]))
        result.add(Row("signals whose fills were not all journaled", "", value=float(len(short)),
                       targets=[Target("value", "<=", 0)]))  # fmt: skip
    result.notes.append(
        f"{signals} signals (different tokens) to all {agents} agents, agents_per_host="
        f"{agents_per_host}; each response checked against the trades table "
        f"({agents} buys per token); 1 warm-up signal not timed."
    )


SPEC = Benchmark(
    name="fanout",
    title="one signal fanned out to every agent on several hosts",
    needs_ray=True,
    quick={"agents": 20, "agents_per_host": 5, "signals": 5},
    full={"agents": 1000, "agents_per_host": 250, "signals": 20},
    run=run,
)
