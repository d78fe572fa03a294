"""One failing logical actor is restarted alone, and quarantined when it keeps failing."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.helpers import Api
from valux.hosting.handles import agent_host_handle


async def test_failing_agent_restarts_alone_then_is_quarantined(runtime: Any) -> None:
    """A handler fault leaves only that agent's decision undone (``refused``, 503: nothing
    was recorded, so posting the signal again decides it) and restarts it from its journal
    (its open position survives); its host-mate still trades, and its answer is final. Past
    the restart intensity the agent is quarantined: visible in the API with its last error,
    ineligible for entries, until resumed."""
    token = f"ISO{uuid.uuid4().hex[:6]}"
    settings = runtime.settings
    async with Api(runtime.port) as api:
        await api.ticks([(token, 1.0)])
        bad = await api.post("/api/v1/agents", {"name": "bad", "balance": "10"}, 201)
        good = await api.post("/api/v1/agents", {"name": "good", "balance": "10"}, 201)
        opened = {"id": f"s-{uuid.uuid4().hex}", "token": token, "strength": 5, "type": "t",
                  "size": "1", "agents": [bad["id"]]}  # fmt: skip
        (first,) = (await api.post("/api/v1/signals", opened, 201))["outcomes"]
        assert first["status"] == "bought"

        host = await agent_host_handle(bad["host_slot"], settings.ray.namespace)
        await host.inject_agent_fault.remote(bad["id"], 1)
        other = f"OT{uuid.uuid4().hex[:6]}"
        await api.ticks([(other, 1.0)])
        both = {"id": f"s-{uuid.uuid4().hex}", "token": other, "strength": 5, "type": "t",
                "size": "1", "agents": [bad["id"], good["id"]]}  # fmt: skip
        outcomes = {
            o["agent_id"]: o for o in (await api.post("/api/v1/signals", both, 503))["outcomes"]
        }
        assert outcomes[bad["id"]]["status"] == "refused"
        assert outcomes[bad["id"]]["final"] is False
        assert "internal error" in outcomes[bad["id"]]["reason"]
        assert outcomes[good["id"]]["status"] == "bought" and outcomes[good["id"]]["final"]
        repost = await api.post("/api/v1/signals", both, 200)  # a known id: 200, duplicate
        assert repost["duplicate"] is True
        again = {o["agent_id"]: o for o in repost["outcomes"]}
        # The retry decides the restarted agent; its host-mate's first answer is kept.
        assert again[bad["id"]]["status"] == "bought" and again[bad["id"]]["final"]
        assert again[good["id"]]["position_id"] == outcomes[good["id"]]["position_id"]
        restarted = await api.get(f"/api/v1/agents/{bad['id']}")
        assert restarted["status"] == "active"
        assert restarted["open_positions"] == 2

        await host.inject_agent_fault.remote(bad["id"], settings.supervision.restart_intensity + 1)
        for _ in range(settings.supervision.restart_intensity + 1):
            faulty = {**both, "id": f"s-{uuid.uuid4().hex}", "agents": [bad["id"]]}
            status, _ = await api.request("POST", "/api/v1/signals", None, faulty)
            assert status in (201, 503)  # undecided while it faults, ineligible once quarantined
        quarantined = await api.get(f"/api/v1/agents/{bad['id']}")
        assert quarantined["status"] == "quarantined"
        assert "injected fault" in quarantined["last_error"]
        later = {**both, "id": f"s-{uuid.uuid4().hex}", "agents": [bad["id"]]}
        (outcome,) = (await api.post("/api/v1/signals", later, 201))["outcomes"]
        assert outcome["status"] == "ineligible" and "quarantined" in outcome["reason"]
        await api.post(f"/api/v1/agents/{bad['id']}/resume", {}, 200)
        assert (await api.get(f"/api/v1/agents/{bad['id']}"))["status"] == "active"
