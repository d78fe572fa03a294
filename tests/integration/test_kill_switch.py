"""Trading states through the public API on the real system: the global kill switch reaches
every agent host in one measured round, HALTED holds every rule (and says which positions
are unprotected), REDUCING refuses entries while its stops still sell."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.helpers import Api, wait_for

STOP = {"stop_loss": {"enabled": True, "default_percentage": -10, "mode": "fixed"},
        "take_profit": {"enabled": False}, "stale_trade": {"enabled": False}}  # fmt: skip


async def _buy(api: Api, agent_id: str, token: str) -> str:
    await api.ticks([(token, 1.0)])
    sig = {"id": f"s-{uuid.uuid4().hex}", "token": token, "strength": 5, "type": "t",
           "size": "1", "agents": [agent_id]}  # fmt: skip
    (outcome,) = (await api.post("/api/v1/signals", sig, 201))["outcomes"]
    assert outcome["status"] == "bought", outcome
    return str(outcome["position_id"])


async def test_global_halt_holds_everything_then_active_lets_the_stop_sell(runtime: Any) -> None:
    """POST /risk/state HALTED: every agent host is reached in one round (latency in the
    answer); a new signal is refused naming HALTED; a price under the stop sells nothing and
    /health/ready lists the position as unprotected. Back to ACTIVE, the held trigger fires
    and the position is sold by its stop."""
    token = f"KS{uuid.uuid4().hex[:6]}"
    async with Api(runtime.port) as api:
        agent = await api.post("/api/v1/agents", {"name": "ks", "balance": "10",
                                                  "config": STOP}, 201)  # fmt: skip
        position_id = await _buy(api, agent["id"], token)
        try:
            halted = await api.post(
                "/api/v1/risk/state", {"state": "HALTED", "reason": "kill switch test"}, 200
            )
            assert halted["state"] == "HALTED" and halted["hosts_reached"] == halted["hosts"] >= 1
            assert halted["latency_ms"] >= 0
            assert (await api.get("/api/v1/risk/state"))["state"] == "HALTED"
            other = f"KO{uuid.uuid4().hex[:6]}"
            await api.ticks([(other, 1.0)])
            sig = {"id": f"s-{uuid.uuid4().hex}", "token": other, "strength": 5, "type": "t",
                   "size": "1", "agents": [agent["id"]]}  # fmt: skip
            (refused,) = (await api.post("/api/v1/signals", sig, 201))["outcomes"]
            assert refused["status"] == "ineligible" and "HALTED" in refused["reason"]
            await api.ticks([(token, 0.8)])  # under the -10 % stop: nothing may run
            status, _ = await wait_for(
                lambda: api.request("GET", "/health/ready"),
                lambda r: any(
                    "unprotected: their agents are HALTED" in reason
                    for reason in r[1].get("reasons", [])
                ),
            )
            assert status == 503
            assert (await api.get(f"/api/v1/positions/{position_id}"))["status"] == "open"
        finally:
            active = await api.post("/api/v1/risk/state", {"state": "ACTIVE"}, 200)
            assert active["hosts_reached"] == active["hosts"]
        await api.ticks([(token, 0.8)])
        closed = await wait_for(
            lambda: api.get(f"/api/v1/positions/{position_id}"),
            lambda p: p["status"] == "closed",
        )
        assert closed["exit_reason"] == "stop_loss"


async def test_reducing_refuses_entries_and_its_stops_still_sell(runtime: Any) -> None:
    """pause = REDUCING: the agent's JSON says so with the reason; a signal is refused; the
    stop loss of its open position still sells."""
    token = f"RD{uuid.uuid4().hex[:6]}"
    async with Api(runtime.port) as api:
        agent = await api.post("/api/v1/agents", {"name": "rd", "balance": "10",
                                                  "config": STOP}, 201)  # fmt: skip
        position_id = await _buy(api, agent["id"], token)
        state = await api.post(
            f"/api/v1/agents/{agent['id']}/state", {"state": "REDUCING", "reason": "test"}, 200
        )
        assert state["trading_state"] == "REDUCING" and state["trading_state_reason"] == "test"
        other = f"RO{uuid.uuid4().hex[:6]}"
        await api.ticks([(other, 1.0)])
        sig = {"id": f"s-{uuid.uuid4().hex}", "token": other, "strength": 5, "type": "t",
               "size": "1", "agents": [agent["id"]]}  # fmt: skip
        (refused,) = (await api.post("/api/v1/signals", sig, 201))["outcomes"]
        assert refused["status"] == "ineligible" and "REDUCING" in refused["reason"]
        await api.ticks([(token, 0.8)])
        closed = await wait_for(
            lambda: api.get(f"/api/v1/positions/{position_id}"),
            lambda p: p["status"] == "closed",
        )
        assert closed["exit_reason"] == "stop_loss"
