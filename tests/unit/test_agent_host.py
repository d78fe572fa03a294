"""AgentHost with WalletHost in one process (no Ray, no servers): the trading flow end to end."""

from __future__ import annotations

from decimal import Decimal

from tests.unit.fakes import decimal_balances
from tests.unit.harness import TOKEN, small_system


async def test_a_signal_buys_journals_and_arms_the_position() -> None:
    """A signal to an eligible agent fills, journals buy_intended → position_opened, arms."""
    system = await small_system()
    await system.add_agent("a1")
    [outcome] = await system.signal("s1")
    assert outcome["status"] == "bought" and outcome["armed"] is True
    pid = outcome["position_id"]
    assert pid in system.evaluator.armed
    types = [t for _, t, _ in system.store.stream("agent:a1")]
    assert types == ["agent_created", "buy_intended", "position_opened"]
    wallet = (await system.wallets.describe(["w-a1"]))[0]
    assert decimal_balances(wallet)["SOL"] == Decimal(9)
    assert decimal_balances(wallet)[TOKEN] == Decimal(1)


async def test_a_repeated_signal_is_answered_from_the_first_outcome() -> None:
    """The same signal id twice: one buy, the second answer is the first marked duplicate."""
    system = await small_system()
    await system.add_agent("a1")
    [first] = await system.signal("s1")
    [again] = await system.signal("s1")
    assert again["duplicate"] is True and again["position_id"] == first["position_id"]
    assert len(system.agents.entities["a1"].positions) == 1


async def test_a_stop_exit_sells_everything_once() -> None:
    """An exit closes the position, credits the proceeds; a second exit is ignored."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    system.price(TOKEN, 0.8)
    closed = await system.exit("a1", bought["position_id"], 0.8)
    assert closed["status"] == "closed"
    again = await system.exit("a1", bought["position_id"], 0.8)
    assert again == {"position_id": bought["position_id"], "status": "ignored", "reason": "closed"}
    wallet = (await system.wallets.describe(["w-a1"]))[0]
    assert decimal_balances(wallet) == {"SOL": Decimal("9.8")}


async def test_a_restarted_agent_host_recovers_positions_from_the_journal() -> None:
    """A new incarnation rebuilds agents and positions from snapshot + journal."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    host = await system.restart_agents()
    assert list(host.entities["a1"].positions) == [bought["position_id"]]
