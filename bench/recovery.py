"""recovery: SIGKILL of one agent host process holding many open positions, until it serves again.

``agents`` agents on one agent host (``agents_per_host`` = ``agents``), each
opening ``positions_per_agent`` positions (one signal per token to all agents),
so the host holds ``agents × positions_per_agent`` open positions. Then, ``kills``
times: the host's PID is read from Ray's GCS actor table (nothing is added to
the engine), the process is killed with SIGKILL, and the clock runs until

- *answering*: the host answers ``ping`` with a new incarnation and
  ``describe`` returns every agent, and ``open_positions`` every position (Ray
  restarted the process; its constructor rebuilt the agents from snapshots and
  journal replay);
- *re-armed*: every one of those positions is armed at the evaluators
  (``armed_ids``) — the recovery target is the later of the two;
- *ready*: ``GET /health/ready`` is 200 again (the supervisor has seen the new
  incarnation at its next ping, every 2 s by default).

The system is ready again before the next kill.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench.common import (
    BenchEnv,
    Benchmark,
    BenchResult,
    Row,
    Target,
    actor_pid,
    distribution,
    sigkill,
    valux_system,
)
from valux.hosting.naming import agent_host_name, evaluator_name

_CALL_TIMEOUT_S = 2.0


async def _call(method: Any, *args: Any) -> Any:
    return await asyncio.wait_for(method.remote(*args), _CALL_TIMEOUT_S)


async def run(
    env: BenchEnv,
    result: BenchResult,
    *,
    agents: int,
    positions_per_agent: int,
    kills: int,
) -> None:
    answering: list[float] = []
    rearmed: list[float] = []
    ready: list[float] = []
    recovery_s: list[float] = []
    async with valux_system(env, "recovery", **{"hosting.agents_per_host": agents}) as system:
        tokens = [f"RC{i:03d}{uuid.uuid4().hex[:4].upper()}" for i in range(positions_per_agent)]
        await system.ticks([(t, 1.0) for t in tokens])
        agent_ids = await system.create_agents(agents, balance="1000")
        for token in tokens:
            body = {"id": f"rc-{uuid.uuid4().hex}", "token": token, "strength": 5,
                    "type": "buy", "size": "0.1"}  # fmt: skip
            await system.request("POST", "/api/v1/signals", body, expect=201)
        name = agent_host_name(0)
        host = await system.handle(name)
        expected = len(await _call(host.open_positions))
        evaluators = [
            await system.handle(evaluator_name(s))
            for s in range(system.settings.hosting.evaluators)
        ]
        await system.ready()
        for _ in range(kills):
            before = (await _call(host.ping))["incarnation"]
            position_ids = {p["id"] for p in await _call(host.open_positions)}
            pid = await asyncio.to_thread(actor_pid, system.namespace, name)
            started = time.perf_counter()
            sigkill(pid)
            t_answer = t_armed = None
            while t_answer is None or t_armed is None:
                now = time.perf_counter() - started
                if now > 120:
                    raise RuntimeError("the killed host did not recover within 120 s")
                if t_answer is None:
                    try:
                        info = await _call(host.ping)
                        if info["incarnation"] != before:
                            views = await _call(host.describe, agent_ids)
                            held = await _call(host.open_positions)
                            if len(views) == agents and len(held) == expected:
                                t_answer = time.perf_counter() - started
                    except Exception:  # restarting: ActorUnavailable, timeouts
                        pass
                if t_armed is None:
                    try:
                        armed: set[str] = set()
                        for ev in evaluators:
                            armed.update(await _call(ev.armed_ids))
                        if position_ids <= armed:
                            t_armed = time.perf_counter() - started
                    except Exception:
                        pass
                await asyncio.sleep(0.01)
            await system.ready(within=120)
            ready.append(time.perf_counter() - started)
            answering.append(t_answer)
            rearmed.append(t_armed)
            recovery_s.append(max(t_answer, t_armed))
    result.add(Row(f"SIGKILL → agents answering and {expected:,} positions armed", "s",
                   stats=distribution(recovery_s), targets=[Target("p99", "<=", 5.0)]))  # fmt: skip
    result.add(Row("  SIGKILL → host answering (new incarnation, all agents)", "s",
                   stats=distribution(answering)))  # fmt: skip
    result.add(Row("  SIGKILL → positions armed at the evaluators", "s",
                   stats=distribution(rearmed)))  # fmt: skip
    result.add(Row("  SIGKILL → /health/ready 200 (supervisor ping every 2 s)", "s",
                   stats=distribution(ready)))  # fmt: skip
    result.notes.append(
        f"{kills} SIGKILLs of the agent host holding {agents} agents × {positions_per_agent} "
        f"positions = {expected:,} open positions; PID from Ray's GCS actor table. Positions "
        "stay armed at the evaluators (a separate process) throughout, so 'armed' is immediate."
    )


SPEC = Benchmark(
    name="recovery",
    title="SIGKILL an agent host → agents answering, positions armed",
    needs_ray=True,
    quick={"agents": 5, "positions_per_agent": 4, "kills": 1},
    full={"agents": 50, "positions_per_agent": 20, "kills": 5},
    run=run,
)
