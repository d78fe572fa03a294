"""Escalation past the restart budget, and the silent-feed policy, on a real actor tree."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.integration.helpers import Api, wait_for
from tests.integration.live_support import own_system
from valux.hosting.handles import evaluator_handle
from valux.system.runtime import Runtime

STOP = {"stopLoss": {"enabled": True, "mode": "fixed", "defaultPercentage": -10}}


@asynccontextmanager
async def _system(urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str,
                  **overrides: Any) -> AsyncIterator[Runtime]:  # fmt: skip
    async with own_system(urls, redis_url, data_dir, ray_session, "esc", **overrides) as runtime:
        yield runtime


async def _buy(api: Api, token: str) -> tuple[dict[str, Any], str]:
    await api.ticks([(token, 1.0)])
    agent = await api.post("/api/v1/agents", {"name": "e", "balance": "10", "config": STOP}, 201)
    sig = {"id": f"s-{uuid.uuid4().hex}", "token": token, "strength": 5, "type": "t",
           "size": "1", "agents": [agent["id"]]}  # fmt: skip
    (bought,) = (await api.post("/api/v1/signals", sig, 201))["outcomes"]
    assert bought["status"] == "bought", bought
    return agent, bought["position_id"]


async def _kill_evaluator(namespace: str) -> None:
    """SIGKILL evaluator 0's process and wait until Ray has restarted it."""
    handle = await evaluator_handle(0, namespace)
    old = (await handle.ping.remote())["pid"]
    os.kill(old, signal.SIGKILL)

    async def pid() -> int | None:
        try:
            return int((await asyncio.wait_for(handle.ping.remote(), 2))["pid"])
        except Exception:
            return None

    await wait_for(pid, lambda p: p is not None and p != old, 60)


async def test_escalation_puts_agents_in_safe_state_and_exits_still_run(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    """An evaluator killed more often than `restart_intensity` in the window is marked
    failed (visible in /supervisors with its last failure), readiness says so, every agent
    refuses new entries with the reason, and stops still sell. With `feeds.on_silent=keep`
    a position whose token stopped ticking while an automatic feed runs is reported as
    unprotected by fresh prices."""
    overrides = {
        "supervision.restart_intensity": 1,
        "supervision.restart_period_s": 120,
        "feeds.simulated.enabled": True,
        "feeds.stale_after_s": 2,
    }
    async with (
        _system(server_urls, redis_url, data_dir, ray_session, **overrides) as runtime,
        Api(runtime.port) as api,
    ):
        token = f"ESC{uuid.uuid4().hex[:5]}"
        agent, position_id = await _buy(api, token)
        unprotected = await wait_for(
            lambda: api.request("GET", "/health/ready"),
            lambda r: any("unprotected by fresh prices" in x for x in r[1].get("reasons", [])),
            15,
        )
        assert any(token in reason for reason in unprotected[1]["reasons"])

        namespace = runtime.settings.ray.namespace
        for kills in (1, 2):  # budget is 1 restart in the window: the second one escalates
            await _kill_evaluator(namespace)
            await wait_for(  # the supervisor has counted this restart before the next kill
                lambda: api.get("/supervisors"),
                lambda t, n=kills: t["supervisors"]["evaluators"]["children"][0]["restarts"] >= n,
                30,
            )
        tree = await wait_for(
            lambda: api.get("/supervisors"),
            lambda t: t["supervisors"]["evaluators"]["children"][0]["state"] == "failed",
            30,
        )
        evaluator = tree["supervisors"]["evaluators"]["children"][0]
        assert evaluator["restarts"] >= 2 and evaluator["last_failure"]
        status, ready = await api.request("GET", "/health/ready")
        assert status == 503 and any("failed" in r for r in ready["reasons"])

        async def entry() -> dict[str, Any]:  # a fresh token each try: one position per token
            other = f"ESO{uuid.uuid4().hex[:5]}"
            await api.ticks([(other, 1.0)])
            sig = {"id": f"s-{uuid.uuid4().hex}", "token": other, "strength": 5, "type": "t",
                   "size": "1", "agents": [agent["id"]]}  # fmt: skip
            return await api.post("/api/v1/signals", sig, 201)

        # The root applies its decision on its next round (ping interval).
        refused = await wait_for(entry, lambda r: r["outcomes"][0]["status"] == "ineligible", 15)
        assert "REDUCING (safe state" in refused["outcomes"][0]["reason"]
        assert "evaluator" in refused["outcomes"][0]["reason"]

        await api.ticks([(token, 0.85)])  # below the -10 % stop: exits still run
        closed = await wait_for(
            lambda: api.get(f"/api/v1/positions/{position_id}"),
            lambda p: p["status"] == "closed",
            20,
        )
        assert closed["exit_reason"] == "stop_loss"


async def test_silent_feed_exit_policy_sells_at_the_last_price(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    """With `feeds.on_silent=exit`, positions of a token that stops ticking for
    `stale_after_s` are sold (reason `feed_silent`); a token that keeps ticking is kept."""
    overrides = {"feeds.on_silent": "exit", "feeds.stale_after_s": 2}
    async with (
        _system(server_urls, redis_url, data_dir, ray_session, **overrides) as runtime,
        Api(runtime.port) as api,
    ):
        silent, alive = f"SIL{uuid.uuid4().hex[:5]}", f"ALV{uuid.uuid4().hex[:5]}"
        _, silent_position = await _buy(api, silent)
        _, alive_position = await _buy(api, alive)

        async def silent_position_while_alive_ticks() -> dict[str, Any]:
            # The alive token keeps ticking every half second for as long as the test waits
            # (a fixed number of ticks let it fall silent too on a slow machine).
            await api.ticks([(alive, 1.0)])
            await asyncio.sleep(0.5)
            return await api.get(f"/api/v1/positions/{silent_position}")

        closed = await wait_for(
            silent_position_while_alive_ticks, lambda p: p["status"] == "closed", 20
        )
        assert closed["exit_reason"] == "feed_silent"
        assert (await api.get(f"/api/v1/positions/{alive_position}"))["status"] == "open"
