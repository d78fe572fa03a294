"""Journals written by older valux replay: schema versions, upcasters, bad events quarantine
one entity (not its host), and a deleted agent's id can be used again."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

from tests.unit.harness import STOP_ONLY, TOKEN, small_system
from valux.persistence.codec import encode
from valux.schema.messages import OrderRequest

_OLD_NAMESPACE = uuid.UUID("5a1c7e2e-9b1f-4d0e-8a57-76616c757821")


def _old_id(*parts: str) -> str:
    """An intent id as valux wrote it before the JSON encoding (``":".join``)."""
    return str(uuid.uuid5(_OLD_NAMESPACE, ":".join(parts)))


def _v1(system: Any, stream: str, seq: int, event_type: str, data: dict[str, Any]) -> None:
    system.store.events[(stream, seq)] = (event_type, encode(data), 1)


async def test_a_version_1_pause_replays_as_reducing_and_its_resume_as_active() -> None:
    system = await small_system()
    await system.add_agent("a1")
    _v1(system, "agent:a1", 2, "status_changed", {"status": "paused"})
    host = await system.restart_agents()
    assert host.entities["a1"].state.value == "REDUCING"
    assert host.entities["a1"].status == "active"
    _v1(system, "agent:a1", 3, "status_changed", {"status": "active"})
    host = await system.restart_agents()
    assert host.entities["a1"].state.value == "ACTIVE"


async def test_a_version_1_paused_snapshot_loads_as_reducing() -> None:
    system = await small_system()
    await system.add_agent("a1")
    agent = system.agents.entities["a1"]
    state = agent.to_snapshot()
    state["status"] = "paused"
    del state["trading_state"], state["risk"]
    system.store.snapshots["agent:a1"] = (agent.seq, encode(state), 1)
    host = await system.restart_agents()
    assert host.entities["a1"].state.value == "REDUCING"


async def test_an_unreadable_event_quarantines_its_agent_and_not_the_host() -> None:
    """One agent's stream holds an event no code knows and another's a payload that does
    not decode: both are reported unreadable, the third agent trades on."""
    system = await small_system()
    for name in ("bad1", "bad2", "good"):
        await system.add_agent(name)
    system.store.events[("agent:bad1", 2)] = ("from_the_future", encode({}), 2)
    system.store.events[("agent:bad2", 2)] = ("renamed", b"\xc1\xc1 not msgpack", 2)
    host = await system.restart_agents()
    assert set(host.unreadable) == {"bad1", "bad2"}
    assert "from_the_future" in host.unreadable["bad1"]
    outcomes = {o["agent_id"]: o for o in await system.signal("s1")}
    assert outcomes["good"]["status"] == "bought"
    assert outcomes["bad1"]["status"] == "refused" and outcomes["bad1"]["final"] is False
    assert (await host.health())["unreadable"].keys() == {"bad1", "bad2"}


async def test_a_newer_schema_version_is_unreadable_not_misread() -> None:
    system = await small_system()
    await system.add_agent("a1")
    system.store.events[("agent:a1", 2)] = ("renamed", encode({"name": "x"}), 99)
    host = await system.restart_agents()
    assert "newer valux" in host.unreadable["a1"]


async def test_a_journal_with_old_intent_ids_replays_and_resolves() -> None:
    """A pending buy journaled under the old id encoding: after a restart the reconciler
    resolves it by that id (the wallet filled it) and opens the position."""
    system = await small_system()
    await system.add_agent("a1")
    old = _old_id("buy", "sig", "a1")
    _v1(system, "agent:a1", 2, "buy_intended",
        {"intent_id": old, "signal_id": "sig", "token": TOKEN, "size": Decimal(1),
         "ts": time.time()})  # fmt: skip
    order = OrderRequest(old, "w-a1", "a1", old, "buy", TOKEN, Decimal(1), "signal")
    [filled] = await system.wallets.execute([order])
    assert filled.state == "filled"
    host = await system.restart_agents()
    assert list(host.entities["a1"].positions) == [old]


async def test_a_deleted_agent_id_can_be_created_again() -> None:
    """create → delete → create with the same id: a fresh agent on the same stream (the
    API found a 500 StaleEntity here)."""
    system = await small_system()
    await system.add_agent("a1")
    await system.agents.set_status("a1", "delete")
    view = await system.agents.create_agent("a1", "again", STOP_ONLY, "w-a1-2", 0, 5)
    assert view["name"] == "again" and view["wallet_id"] == "w-a1-2"
    types = [t for _, t, _ in system.store.stream("agent:a1")]
    assert types == ["agent_created", "status_changed", "agent_created"]
    host = await system.restart_agents()  # the new incarnation is the one recovered
    assert host.entities["a1"].name == "again"


async def test_a_deleted_id_is_created_again_on_a_host_that_never_loaded_it() -> None:
    """A restarted host does not load deleted agents; creating the id again continues its
    journal stream instead of colliding with it."""
    system = await small_system()
    await system.add_agent("a1")
    await system.agents.set_status("a1", "delete")
    host = await system.restart_agents()
    assert "a1" not in host.entities
    await host.create_agent("a1", "third", STOP_ONLY, "w-a1-3", 0, 7)
    assert [seq for seq, _, _ in system.store.stream("agent:a1")] == [1, 2, 3]
