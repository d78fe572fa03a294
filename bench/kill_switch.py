"""kill_switch: the global trading state's fan-out to every agent host.

``hosts`` agent hosts (one agent each, ``agents_per_host`` = 1, so every agent lives in
its own process), each agent holding one open position. Then ``toggles`` times: ``POST
/api/v1/risk/state`` HALTED, then ACTIVE. Measured, per HALT:

- *fan-out*: the round of parallel calls from the root to every agent host, as the root
  measured it and returned it (``latency_ms``; also ``valux_global_state_fanout_seconds``);
- *request*: the whole HTTP request, API → root → journal (PostgreSQL) → every host → API.

Every answer must say ``hosts_reached == hosts``; a HALT that missed a host fails the run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.common import BenchEnv, Benchmark, BenchResult, Row, Target, distribution, valux_system


async def run(env: BenchEnv, result: BenchResult, *, hosts: int, toggles: int) -> None:
    fanout_ms: list[float] = []
    request_ms: list[float] = []
    overrides = {"hosting.agents_per_host": 1}
    async with valux_system(env, "killswitch", **overrides) as system:
        token = f"KS{uuid.uuid4().hex[:6].upper()}"
        await system.ticks([(token, 1.0)])
        await system.create_agents(hosts, balance="100")
        body = {"id": f"ks-{uuid.uuid4().hex}", "token": token, "strength": 5, "type": "buy",
                "size": "1"}  # fmt: skip
        await system.request("POST", "/api/v1/signals", body, expect=201)
        await system.ready()
        for _ in range(toggles):
            started = time.perf_counter()
            halted: dict[str, Any] = await system.request(
                "POST", "/api/v1/risk/state", {"state": "HALTED", "reason": "bench"}, expect=200
            )
            request_ms.append((time.perf_counter() - started) * 1000)
            if halted["hosts_reached"] != halted["hosts"] or halted["hosts"] < hosts:
                raise RuntimeError(f"HALT reached {halted['hosts_reached']} of {hosts} hosts")
            fanout_ms.append(float(halted["latency_ms"]))
            await system.request("POST", "/api/v1/risk/state", {"state": "ACTIVE"}, expect=200)
    within = [Target("p99", "<=", 100.0)]
    result.add(Row(f"global HALT → all {hosts} agent hosts (root's parallel round)", "ms",
                   stats=distribution(fanout_ms), targets=within))  # fmt: skip
    result.add(Row("  POST /api/v1/risk/state HALTED, whole request (journal + round)", "ms",
                   stats=distribution(request_ms)))  # fmt: skip
    result.notes.append(
        f"{toggles} HALT/ACTIVE toggles; {hosts} agent hosts, one agent and one open position "
        "each; every HALT reached every host."
    )


SPEC = Benchmark(
    name="kill_switch",
    title="Global HALT fan-out to every agent host",
    needs_ray=True,
    quick={"hosts": 2, "toggles": 3},
    full={"hosts": 8, "toggles": 30},
    run=run,
)
