"""Trading states and breakers: REDUCING takes no entries but runs every exit; HALTED runs
nothing and says so; the global state reaches every agent; breakers trip on their own."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.harness import STOP_ONLY, small_system
from valux.errors import Conflict
from valux.schema.messages import ExitRequest

DCA: dict[str, Any] = {
    **STOP_ONLY,
    "dca": {"enabled": True, "mode": "custom", "levels": [{"dropPercent": -5, "buyPercent": 50}],
            "maxDCACount": 1, "cooldownSeconds": 10},
}  # fmt: skip


async def test_reducing_refuses_entries_records_why_and_still_exits() -> None:
    """pause = REDUCING: the signal is refused (and the refusal recorded, so a repeat
    answers the same); the stop of an open position still sells."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    view = await system.agents.set_status("a1", "pause")
    assert view["trading_state"] == "REDUCING" and view["effective_state"] == "REDUCING"
    [refused] = await system.signal("s2", token="TK2")
    assert refused["status"] == "ineligible" and refused["final"] is True
    [again] = await system.signal("s2", token="TK2")
    assert again["duplicate"] is True and again["reason"] == refused["reason"]
    closed = await system.exit("a1", bought["position_id"], 0.8)
    assert closed["status"] == "closed"


async def test_reducing_arms_no_dca() -> None:
    """A REDUCING agent's positions are re-armed without their DCA threshold."""
    system = await small_system()
    await system.add_agent("a1", config=DCA)
    [bought] = await system.signal("s1")
    assert system.evaluator.armed[bought["position_id"]]["exit_rules"]["exits"] is not None
    await system.agents.set_trading_state("a1", "REDUCING", "risk review")
    assert system.evaluator.armed[bought["position_id"]]["exit_rules"]["exits"] is None
    await system.agents.set_trading_state("a1", "ACTIVE", None)
    assert system.evaluator.armed[bought["position_id"]]["exit_rules"]["exits"] is not None


async def test_halted_runs_no_exit_reports_unprotected_and_releases_on_lift() -> None:
    """HALTED: a stop trigger is held, a manual close is refused with how to lift it, the
    position is listed as unprotected; lifting the state re-arms with release."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    pid = bought["position_id"]
    await system.agents.set_trading_state("a1", "HALTED", "incident 42")
    held = await system.exit("a1", pid, 0.5)
    assert held["status"] == "ignored" and "incident 42" in held["reason"]
    with pytest.raises(Conflict, match="HALTED"):
        await system.agents.close_position("a1", pid)
    health = await system.agents.health()
    assert health["halted_positions"] == [
        {"agent_id": "a1", "position_id": pid, "reason": "incident 42"}
    ]
    await system.agents.set_trading_state("a1", "REDUCING", "incident over")
    assert system.evaluator.armed[pid]["release"] is True
    assert (await system.exit("a1", pid, 0.5))["status"] == "closed"


async def test_global_halt_reaches_agents_and_survives_a_host_restart() -> None:
    """The global state overrides the agents' own; a restarted host reads it back."""
    system = await small_system()
    await system.add_agent("a1")
    changed = await system.agents.set_global_state("HALTED", "kill switch", time.time())
    assert changed == 1
    [refused] = await system.signal("s1")
    assert refused["status"] == "ineligible" and "kill switch" in refused["reason"]
    system.store.tables["risk_states"][("risk_states", "global")] = {
        "scope": "global", "state": "HALTED", "reason": "kill switch"}  # fmt: skip
    host = await system.restart_agents()
    assert host.view(host.entities["a1"])["effective_state"] == "HALTED"


async def test_states_are_journaled_and_survive_a_restart() -> None:
    system = await small_system()
    await system.add_agent("a1")
    await system.agents.set_trading_state("a1", "REDUCING", "manual")
    host = await system.restart_agents()
    agent = host.entities["a1"]
    assert agent.state.value == "REDUCING" and agent.trading_state["reason"] == "manual"


@pytest.mark.parametrize(
    ("risk", "closes", "breaker"),
    [
        ({"maxLossStreak": 2}, [0.9, 0.9], "loss_streak"),
        ({"dailyLossLimit": 0.15}, [0.9, 0.9], "daily_loss"),
        ({"maxDrawdownPercent": 1.5}, [0.9, 0.9], "max_drawdown"),
    ],
)
async def test_breakers_put_the_agent_in_reducing_with_the_reason(
    risk: dict[str, Any], closes: list[float], breaker: str
) -> None:
    """Two closes losing 0.1 each (capital 10): each breaker trips at the second."""
    system = await small_system()
    config = {**STOP_ONLY, "risk": risk}
    wallet_id = "w-a1"
    await system.wallets.create_wallet(wallet_id, "a1", Decimal(10), "SOL")
    await system.agents.create_agent("a1", "a1", config, wallet_id, 0, 0, Decimal(10))
    agent = system.agents.entities["a1"]
    for n, price in enumerate(closes):
        token = f"T{n}"  # a fresh token each round: the wallet host caches prices for 1 s
        system.price(token, 1.0)
        [bought] = await system.signal(f"s{n}", token=token)
        assert agent.state.value == "ACTIVE", agent.trading_state
        system.price(token, price)
        request = ExitRequest("a1", bought["position_id"], token, "stop_loss", price, time.time())
        await system.agents.on_exits([request])
    assert agent.state.value == "REDUCING"
    assert agent.trading_state["source"] == "breaker"
    assert agent.trading_state["reason"].startswith(f"breaker {breaker}")
    resumed = await system.agents.set_status("a1", "resume")
    assert resumed["trading_state"] == "ACTIVE" and resumed["risk"]["loss_streak"] == 0
