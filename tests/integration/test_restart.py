"""Restarting the whole actor system restores every agent, balance and open position exactly."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import ray

from tests.integration.conftest import fresh_database, make_settings
from tests.integration.helpers import Api, wait_for
from valux.system.runtime import Runtime


def kill_namespace(namespace: str) -> int:
    """SIGKILL-equivalent for every valux actor of ``namespace`` (no final snapshot)."""
    killed = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace:
            ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
            killed += 1
    return killed


async def _state(api: Api, agent_ids: list[str]) -> dict[str, Any]:
    agents = {a: await api.get(f"/api/v1/agents/{a}") for a in agent_ids}
    wallets = {a: await api.get(f"/api/v1/agents/{a}/wallet") for a in agent_ids}
    positions = await api.get("/api/v1/positions?status=open&limit=1000")
    return {"agents": agents, "wallets": wallets, "positions": positions}


async def test_restart_restores_agents_balances_positions_and_rearms(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    """With open positions (one with a ratcheted stop), killing every actor and starting a new
    system restores identical agents, wallets and positions, re-arms every position before
    ready, and the restored stop still fires on the first tick below it."""
    namespace = f"{ray_session}-restart-{uuid.uuid4().hex[:4]}"
    with fresh_database(server_urls[0]) as database_url:
        settings = make_settings(
            data_dir, database_url, redis_url, namespace,
            **{"hosting.agents_per_host": 2,
               "journal.snapshot_every_events": 3},
        )  # fmt: skip
        first = Runtime(settings)
        await first.start()
        tokens = [f"RS{i}{uuid.uuid4().hex[:4]}" for i in range(3)]
        agent_ids: list[str] = []
        async with Api(first.port) as api:
            await api.ticks([(t, 1.0) for t in tokens])
            for n in range(3):
                agent = await api.post(
                    "/api/v1/agents",
                    {"name": f"r{n}", "balance": "10",
                     "config": {"stopLoss": {"defaultPercentage": -20, "mode": "fixed"}}},
                    201,
                )  # fmt: skip
                agent_ids.append(agent["id"])
                for t in tokens[: n + 1]:
                    sig = {"id": f"s-{uuid.uuid4().hex}", "token": t, "strength": 5,
                           "type": "buy", "size": "1", "agents": [agent["id"]]}  # fmt: skip
                    (out,) = (await api.post("/api/v1/signals", sig, 201))["outcomes"]
                    assert out["status"] == "bought", out
            await api.ticks([(tokens[0], 1.6)])  # peak +60 % → stop locks +50 %
            await wait_for(  # every stop stored, the ratchet included (not only SL-1)
                lambda: api.get("/api/v1/positions?status=open&limit=1000"),
                lambda ps: (
                    all(p["stop_pct"] is not None for p in ps)
                    and all(p["stop_pct"] > 40 for p in ps if p["token"] == tokens[0])
                ),
            )
            before = await _state(api, agent_ids)
        assert len(before["positions"]) == 6
        assert kill_namespace(namespace) > 0
        await first.runner.cleanup()  # type: ignore[union-attr]
        await first.pool.close()  # type: ignore[union-attr]

        started = time.perf_counter()
        second = Runtime(settings)
        await second.start()
        try:
            async with Api(second.port) as api:
                await wait_for(
                    lambda: api.request("GET", "/health/ready"), lambda r: r[0] == 200, 30
                )
                restart_to_ready = time.perf_counter() - started
                after = await _state(api, agent_ids)
                assert after == before
                # the ratcheted stop (+50 % over purchase) survives: 1.45 is below it
                locked = [p for p in after["positions"] if p["token"] == tokens[0]]
                assert all(p["stop_pct"] > 40 for p in locked)
                await api.ticks([(tokens[0], 1.45)])
                await wait_for(
                    lambda: api.get("/api/v1/positions?status=open&limit=1000"),
                    lambda ps: all(p["token"] != tokens[0] for p in ps),
                )
            print(f"restart-to-ready with 6 open positions: {restart_to_ready:.2f}s")
        finally:
            kill_namespace(namespace)
            await second.runner.cleanup()  # type: ignore[union-attr]
            await second.pool.close()  # type: ignore[union-attr]
