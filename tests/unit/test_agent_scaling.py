"""A buy costs the same with 1 or 1,000 open positions: the agent keeps its open tokens as
it goes, the buy reads only the quote balance, and snapshots grow rarer as the state
grows (their cost stays O(1) per event)."""

from __future__ import annotations

from typing import Any

from tests.unit.harness import STOP_ONLY, System, small_system
from valux.trading.agent import Agent

MANY = {**STOP_ONLY, "engine": {"maxOpenPositions": 5000}}


def _recount(agent: Agent) -> set[str]:
    tokens = {p["token"] for p in agent.positions.values()}
    return tokens | {b["token"] for b in agent.pending_buys.values()}


async def _buy(system: System, n: int, token: str) -> dict[str, Any]:
    system.price(token, 1.0)
    (outcome,) = await system.signal(f"s{n}", token=token)
    return outcome


async def test_open_tokens_follow_buys_closes_failures_and_a_restart() -> None:
    """The agent's open tokens equal the tokens of its positions and buys in flight after
    every kind of change, and after its host restarts (state from snapshot + journal);
    a second buy of a held token is still refused."""
    system = await small_system(**{"journal.snapshot_every_events": 3})
    await system.add_agent("a1", balance="100", config=MANY)
    agent = system.agents.entities["a1"]
    bought = [await _buy(system, i, f"T{i}") for i in range(6)]
    assert set(agent.open_tokens()) == _recount(agent) == {f"T{i}" for i in range(6)}
    closed = await system.exit("a1", bought[0]["position_id"], 1.0)
    assert closed["status"] == "closed" and "T0" not in agent.open_tokens()
    system.peers.down.add(("wallet", 0, "execute"))
    pending = await _buy(system, 99, "TP")  # in flight: the wallet was unreachable
    system.peers.down.clear()
    assert pending["status"] == "pending" and "TP" in agent.open_tokens()
    assert set(agent.open_tokens()) == _recount(agent) and len(agent.open_tokens()) == 6
    restarted = (await system.restart_agents()).entities["a1"]
    assert set(restarted.open_tokens()) == _recount(restarted)
    assert (await _buy(system, 100, "T3"))["reason"].startswith("POSITION_EXISTS")


async def test_a_buy_asks_its_wallet_for_the_quote_balance_only() -> None:
    """Sizing needs the quote balance; fetching every token the wallet holds would cost
    in proportion to the positions."""
    system = await small_system()
    await system.add_agent("a1", balance="100", config=MANY)
    for i in range(3):
        await _buy(system, i, f"T{i}")
    called = [method for kind, _, method in system.peers.calls if kind == "wallet"]
    assert called.count("quote_balances") == 3 and "balances" not in called


def test_snapshots_come_after_as_many_events_as_the_state_has_items() -> None:
    """With ``every_events`` 100, an agent of 5 positions snapshots after 100 events, one of
    1,000 positions after 1,000: snapshot work per event stays constant."""
    agent = Agent("a1")
    agent.positions = {f"p{i}": {"token": f"T{i}"} for i in range(5)}
    agent._events_since_snapshot = 100
    assert agent.snapshot_due(100, 1e9)
    agent.positions = {f"p{i}": {"token": f"T{i}"} for i in range(1000)}
    assert not agent.snapshot_due(100, 1e9)
    agent._events_since_snapshot = 1000
    assert agent.snapshot_due(100, 1e9)
    assert agent.snapshot_weight() == 1000
