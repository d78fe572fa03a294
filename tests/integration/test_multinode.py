"""Two Ray nodes on this machine: a second node joins the session's head (``ray start
--address``, its own temp dir, a custom resource), valux spreads its agent hosts over both,
the second node is killed — every one of its processes — and the agent hosts it ran restart
on the head, re-arm their positions and readiness comes back, losing and doubling nothing.

The suite runs one such cycle (bounded at 15 s: a loaded CI machine starts the moved
processes slowly); ``-m slow`` runs five, each on a fresh second node with the hosts spread
over it again, and asserts the target: p99 of kill → ready ≤ 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import ray

from tests.integration.conftest import fresh_database, make_settings
from tests.integration.helpers import Api, wait_for
from tests.integration.test_restart import kill_namespace
from valux.hosting.naming import agent_host_name
from valux.system.runtime import Runtime

RAY = str(Path(sys.executable).parent / "ray")
STOP = {"stopLoss": {"enabled": True, "defaultPercentage": -10, "mode": "fixed"},
        "staleTrade": {"enabled": False}}  # fmt: skip
AGENTS = 6
AGENTS_PER_HOST = 2  # three agent hosts: SPREAD puts some of them on the second node
HOSTS = AGENTS // AGENTS_PER_HOST


def _alive_nodes() -> dict[str, dict[str, Any]]:
    return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    table = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines()[1:]:
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Node:
    """A second Ray node joined to the session's head."""

    process: subprocess.Popen[bytes]
    node_id: str
    temp_dir: Path
    log: Path

    @classmethod
    def start(cls, log: Path) -> Node:
        gcs = ray.get_runtime_context().gcs_address
        before = set(_alive_nodes())
        temp_dir = Path(tempfile.mkdtemp(prefix="vx-b-"))  # short: socket paths are limited
        with log.open("wb") as out:
            process = subprocess.Popen(
                [RAY, "start", f"--address={gcs}", "--num-cpus=1",
                 '--resources={"valux_node_b": 1}', f"--temp-dir={temp_dir}",
                 "--disable-usage-stats", "--block"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while True:
            joined = [i for i, n in _alive_nodes().items()
                      if i not in before and n["Resources"].get("valux_node_b")]  # fmt: skip
            if joined:
                return cls(process, joined[0], temp_dir, log)
            failed = process.poll() is not None or time.monotonic() > deadline
            assert not failed, log.read_text()[-2000:]
            time.sleep(0.3)

    def kill(self) -> int:
        """SIGKILL the whole node at once (``ray start``, raylet, log monitor, workers)."""
        victims = _tree(self.process.pid)
        _kill(victims)
        self.process.wait(timeout=10)
        return len(victims)

    def remove(self) -> None:
        """Gone for good, and seen dead by the head (so nothing else is placed on it)."""
        if self.process.poll() is None:
            self.kill()
        deadline = time.monotonic() + 30
        while self.node_id in _alive_nodes() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
async def system(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> AsyncIterator[tuple[Runtime, str]]:
    namespace = f"{ray_session}-multinode-{uuid.uuid4().hex[:4]}"
    with fresh_database(server_urls[0]) as database_url:
        settings = make_settings(
            data_dir,
            database_url,
            redis_url,
            namespace,
            # the slow test kills every agent host between cycles to spread them again:
            # those restarts must not trip the restart intensity (escalation is another test)
            **{"hosting.agents_per_host": AGENTS_PER_HOST, "supervision.restart_intensity": 100},
        )
        runtime = Runtime(settings)
        await runtime.start()
        try:
            yield runtime, database_url
        finally:
            kill_namespace(namespace)
            await runtime.runner.cleanup()  # type: ignore[union-attr]
            await asyncio.wait_for(runtime.pool.close(), 10)  # type: ignore[union-attr]


async def _hosts(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each agent host's answer to ping (its node and pid)."""
    ns = runtime.settings.ray.namespace
    out = {}
    for slot in range(HOSTS):
        handle = await asyncio.to_thread(ray.get_actor, agent_host_name(slot), namespace=ns)
        out[agent_host_name(slot)] = await asyncio.wait_for(handle.ping.remote(), 10)
    return out


async def _hosts_or_none(runtime: Runtime) -> dict[str, dict[str, Any]] | None:
    """:func:`_hosts`, or None while some host is restarting."""
    try:
        return await _hosts(runtime)
    except Exception:
        return None


async def _spread_onto(runtime: Runtime, api: Api, node: Node) -> dict[str, dict[str, Any]]:
    """Until some agent host runs on ``node``: kill every agent host process, so Ray
    restarts them with SPREAD over both nodes. Returns the placement (ready again)."""
    for _ in range(5):
        placed = await _hosts(runtime)
        if any(info["node"] == node.node_id for info in placed.values()):
            await wait_for(lambda: api.request("GET", "/health/ready"), lambda r: r[0] == 200, 60)
            return placed
        old_pids = {name: info["pid"] for name, info in placed.items()}
        _kill(list(old_pids.values()))
        await wait_for(
            lambda: _hosts_or_none(runtime),
            lambda now, old=old_pids: (
                now is not None
                and all(  # type: ignore[misc]
                    now[n]["pid"] != old[n] for n in old
                )
            ),
            60,
        )
    raise AssertionError(f"no agent host was placed on the second node: {placed}")


async def _kill_and_recover(runtime: Runtime, api: Api, node: Node) -> tuple[float, int]:
    """Kill ``node`` whole; seconds until the agent hosts it ran answer from the head and
    /health/ready is 200; and how many hosts moved."""
    placed = await _spread_onto(runtime, api, node)
    moved = {name for name, info in placed.items() if info["node"] == node.node_id}
    killed = node.kill()
    began = time.monotonic()
    assert killed >= 3  # ray start, raylet, log monitor, the hosts' workers

    async def recovered() -> bool:
        status, _ = await api.request("GET", "/health/ready")
        hosts = await _hosts_or_none(runtime) if status == 200 else None
        return hosts is not None and all(
            hosts[n]["node"] != node.node_id and hosts[n]["pid"] != placed[n]["pid"] for n in moved
        )

    while not await recovered():
        assert time.monotonic() - began < 90, "the moved agent hosts did not come back"
        await asyncio.sleep(0.05)
    return time.monotonic() - began, len(moved)


async def _run(runtime: Runtime, database_url: str, tmp: Path, cycles: int) -> list[float]:
    token = f"MN{uuid.uuid4().hex[:5]}"
    recoveries: list[float] = []
    async with Api(runtime.port) as api:
        await api.ticks([(token, 1.0)])
        agents = [
            (await api.post("/api/v1/agents", {"name": f"mn{i}", "balance": "10",
                                               "config": STOP}, 201))["id"]
            for i in range(AGENTS)
        ]  # fmt: skip
        body = {"id": f"s-{uuid.uuid4().hex}", "token": token, "strength": 5, "type": "t",
                "size": "1", "agents": agents}  # fmt: skip
        outcomes = (await api.post("/api/v1/signals", body, 201))["outcomes"]
        assert [o["status"] for o in outcomes] == ["bought"] * AGENTS
        for cycle in range(cycles):
            node = Node.start(tmp / f"node-{cycle}.log")
            try:
                seconds, moved = await _kill_and_recover(runtime, api, node)
            finally:
                node.remove()
            recoveries.append(seconds)
            print(f"multi-node: cycle {cycle}: {moved} agent host(s) moved, ready {seconds:.2f}s")
        positions = await api.get("/api/v1/positions?status=open")
        assert sorted(p["agent_id"] for p in positions if p["token"] == token) == sorted(agents)
    conn = await asyncpg.connect(database_url)
    try:
        opened = await conn.fetchval(
            "SELECT count(*) FROM journal WHERE event_type = 'position_opened'"
        )
    finally:
        await conn.close()
    assert opened == AGENTS  # none lost, none opened twice
    return recoveries


async def test_killing_a_node_moves_its_agent_hosts_and_loses_nothing(
    system: tuple[Runtime, str], tmp_path: Path
) -> None:
    """Agent hosts spread over both nodes; every agent buys. The second node is killed
    whole: the hosts it ran come back on the head, every position is still open and armed
    (readiness returns), and the journal holds one opening per position."""
    (recovery,) = await _run(*system, tmp_path, cycles=1)
    assert recovery <= 15.0, f"ready {recovery:.2f}s after the node was killed"


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_node_loss_recovery_p99_is_within_five_seconds(
    system: tuple[Runtime, str], tmp_path: Path
) -> None:
    """Five node kills, each on a fresh second node with the agent hosts spread over it
    again: p99 (the worst of five) of kill → ready is at most 5 s."""
    recoveries = await _run(*system, tmp_path, cycles=5)
    print(f"multi-node: kill → ready: {sorted(round(r, 2) for r in recoveries)}")
    assert max(recoveries) <= 5.0, recoveries
