"""scale: many agents with configs and one open position each — memory and cold start.

``agents`` agents (four stop-loss configs in turn: fixed, exponential, zones,
custom) on ``agents // agents_per_host`` agent hosts and as many wallet hosts.
Seeding goes through the API's own backend in-process
(:class:`~valux.system.backend.RayBackend`: the code behind ``POST
/api/v1/agents``, minus HTTP), ``concurrency`` creates at a time, each host
group-committing the journal writes of its agents. One signal to all agents
then opens one position per agent (one call per host). Once ``/health/ready``
says every position is armed:

- *RSS*: resident memory summed over the processes of the namespace's actors
  (PIDs from Ray's GCS actor table) plus this driver (which runs the API);
  USS (memory unique to each process) alongside, and Ray's own daemons and idle
  workers, which the target does not count, for reference;
- *cold start*: the actor system is stopped in order (final snapshots, every
  actor killed), then a new API process start-up (``Runtime.start``: migrations
  check, root supervisor, supervisors, hosts restoring from PostgreSQL,
  evaluators re-arming) until ``/health/ready`` is 200 again.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from decimal import Decimal
from typing import Any

import psutil

from bench.common import (
    BenchEnv,
    Benchmark,
    BenchResult,
    Row,
    Target,
    kill_namespace,
    namespace_actors,
    process_rss,
    start_runtime,
    valux_system,
)
from valux.api.models import SignalIn
from valux.hosting.naming import ROOT

CONFIGS: tuple[dict[str, Any], ...] = (
    {"stopLoss": {"mode": "fixed", "defaultPercentage": -20}},
    {"stopLoss": {"mode": "exponential", "defaultPercentage": -25}},
    {"stopLoss": {"mode": "zones", "defaultPercentage": -15}},
    {
        "stopLoss": {
            "mode": "custom",
            "defaultPercentage": -30,
            "trailingLevels": [
                {"change": 200, "stopLoss": 150},
                {"change": 100, "stopLoss": 70},
                {"change": 50, "stopLoss": 30},
                {"change": 20, "stopLoss": 10},
            ],
        }
    },
)
GB = 2**30


async def run(
    env: BenchEnv,
    result: BenchResult,
    *,
    agents: int,
    agents_per_host: int,
    concurrency: int = 200,
) -> None:
    overrides = {
        "hosting.agents_per_host": agents_per_host,
    }
    async with valux_system(env, "scale", **overrides) as system:
        token = f"SC{uuid.uuid4().hex[:6].upper()}"
        await system.ticks([(token, 1.0)])
        backend = system.backend()
        gate = asyncio.Semaphore(concurrency)

        async def create(i: int) -> None:
            async with gate:
                await backend.create_agent(
                    name=f"scale-{i}",
                    config=CONFIGS[i % len(CONFIGS)],
                    balance=Decimal(10),
                    agent_id=f"scale-{i:05d}-{uuid.uuid4().hex[:4]}",
                )

        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(agents)))
        seed_s = time.perf_counter() - started

        started = time.perf_counter()
        signal = SignalIn.model_validate(
            {
                "id": f"scale-{uuid.uuid4().hex}",
                "token": token,
                "strength": 5,
                "type": "buy",
                "size": "0.1",
            }
        )
        answer = await backend.post_signal(signal)
        signal_s = time.perf_counter() - started
        bought = sum(1 for o in answer["outcomes"] if o["status"] == "bought")
        await system.ready(within=300)

        actors = await asyncio.to_thread(namespace_actors, system.namespace)
        pids = [a["pid"] for a in actors if a["pid"]] + [os.getpid()]
        memory = process_rss(pids)
        others = [
            p.pid for p in psutil.Process().children(recursive=True) if p.pid not in set(pids)
        ]
        ray_daemons = process_rss(others)
        kinds: dict[str, int] = {}
        for a in actors:
            kinds[a["class"]] = kinds.get(a["class"], 0) + 1

        root = await system.handle(ROOT)
        started = time.perf_counter()
        await asyncio.wait_for(root.shutdown.remote(), 300)
        await asyncio.to_thread(kill_namespace, system.namespace)
        stop_s = time.perf_counter() - started
        await system.runtime.stop()

        started = time.perf_counter()
        system.runtime = await start_runtime(system.settings)
        start_s = time.perf_counter() - started
        await system.ready(within=300)
        cold_s = time.perf_counter() - started
        restored = await system.runtime.pool.fetchval(
            "SELECT count(*) FROM positions WHERE status = 'open'"
        )

    result.add(Row(f"RSS of {len(actors)} actor processes + driver ({agents:,} agents hosted "
                   "and armed)", "GB", value=memory["rss"] / GB,
                   targets=[Target("value", "<=", 4.0)]))  # fmt: skip
    result.add(Row("  USS (unique memory) of the same processes", "GB", value=memory["uss"] / GB))
    result.add(Row("  Ray daemons and idle workers (not counted)", "GB",
                   value=ray_daemons["rss"] / GB))  # fmt: skip
    result.add(Row("cold start: restore from PostgreSQL to ready", "s", value=cold_s,
                   targets=[Target("value", "<=", 60.0)]))  # fmt: skip
    result.add(Row("  of which Runtime.start (tree recovered)", "s", value=start_s))
    result.add(Row("  orderly stop before it (final snapshots)", "s", value=stop_s))
    result.add(Row(f"seed {agents:,} agents (backend, {concurrency} concurrent)", "s",
                   value=seed_s))  # fmt: skip
    result.add(Row(f"one signal → {bought:,} positions opened", "s", value=signal_s))
    if bought != agents or restored != agents:
        result.add(Row("positions missing (opened or restored)", "",
                       value=float(agents - min(bought, restored)),
                       targets=[Target("value", "<=", 0.0)]))  # fmt: skip
    result.details["actors"] = kinds
    result.notes.append(
        f"{agents:,} agents in 4 stop-loss configs, agents_per_host={agents_per_host:,}; "
        f"actors by class: {', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}; "
        f"{restored:,} open positions after the cold start."
    )


SPEC = Benchmark(
    name="scale",
    title="10,000 agents with one open position each: memory and cold start",
    needs_ray=True,
    quick={"agents": 50, "agents_per_host": 25},
    full={"agents": 10_000, "agents_per_host": 2_500},
    run=run,
)
