"""Exactly once that does not forget: old signals and old intents stay answered, with
memory bounded at any age."""

from __future__ import annotations

from decimal import Decimal

import pytest

import valux.custody.wallet as wallet_module
from tests.unit.fakes import decimal_balances
from tests.unit.harness import TOKEN, small_system
from valux.schema.messages import OrderRequest, Signal
from valux.trading.agent import MAX_RECENT_SIGNALS


async def test_a_signal_older_than_memory_is_still_a_duplicate() -> None:
    """The issue's reproduction, scaled to the memory bound: buy on ``first``, close it,
    more ineligible signals than an agent remembers, then ``first`` again: duplicate, and
    no second buy (the outcome comes from ``signal_outcomes``)."""
    system = await small_system()
    await system.add_agent("a1", config={"signals": {"minScore": 5}})
    [first] = await system.signal("first")
    system.price(TOKEN, 0.9)
    await system.exit("a1", first["position_id"], 0.9)
    agent = system.agents.entities["a1"]
    for i in range(MAX_RECENT_SIGNALS + 50):
        weak = Signal(id=f"weak-{i}", token=TOKEN, strength=1, type="t", size=Decimal(1))
        await system.agents.on_signal(weak)
    assert "first" not in agent.signals and len(agent.signals) == MAX_RECENT_SIGNALS
    [again] = await system.signal("first")
    assert again["duplicate"] is True and again["position_id"] == first["position_id"]
    opened = [t for _, t, _ in system.store.stream("agent:a1") if t == "position_opened"]
    assert len(opened) == 1


async def test_a_restarted_host_still_answers_old_signals() -> None:
    """Memory rebuilt from the journal is bounded; the rest is in PostgreSQL."""
    system = await small_system()
    await system.add_agent("a1")
    await system.signal("first")
    host = await system.restart_agents()
    host.entities["a1"].signals.clear()  # as if it had aged out
    [again] = await system.signal("first")
    assert again["duplicate"] is True and again["status"] == "bought"


async def test_a_wallet_never_executes_again_an_intent_it_finished_long_ago(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finished intents beyond the memory bound are answered from ``wallet_intents``;
    balances do not move a second time."""
    monkeypatch.setattr(wallet_module, "MAX_RECENT_FINISHED", 3)
    system = await small_system()
    await system.add_agent("a1", balance="100")
    orders = [
        OrderRequest(f"i-{n}", "w-a1", "a1", f"i-{n}", "buy", TOKEN, Decimal(1), "test")
        for n in range(6)
    ]
    for order in orders:
        [result] = await system.wallets.execute([order])
        assert result.state == "filled"
    wallet = system.wallets.entities["w-a1"]
    assert len(wallet.finished) == 3 and "i-0" not in wallet.finished
    before = decimal_balances((await system.wallets.describe(["w-a1"]))[0])
    [again] = await system.wallets.execute([orders[0]])
    assert again.state == "filled" and again.base_amount == Decimal(1)
    assert decimal_balances((await system.wallets.describe(["w-a1"]))[0]) == before
    [resolved] = await system.wallets.resolve([("w-a1", "i-0")])
    assert resolved is not None and resolved.state == "filled"
