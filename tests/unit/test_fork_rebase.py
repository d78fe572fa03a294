"""A journal fork keeps what was acted on: an exit buffered during an outage, behind an
entry that was refused in doubt and committed after all, is rebased onto the stream as
PostgreSQL holds it — the sale the wallet made stays the agent's sale.

(The 10-minute chaos run at 79d11b4 ended with a wallet that had sold ~0.31 of a token
while its agent's position stayed open: the fork had dropped the agent's buffered
``exit_intended`` / ``position_closed`` and kept the wallet's fill, a stream of its own.)
"""

from __future__ import annotations

from decimal import Decimal

from tests.unit.harness import TOKEN, System, small_system, until
from valux.hosting.host import StaleEntity
from valux.persistence.journal import Commit, Event
from valux.trading.agent import Agent
from valux.trading.reconciliation import held_tokens


async def _sale_behind_an_entry_in_doubt(system: System) -> str:
    """An open position; then an outage in which an entry of the same agent is refused
    but commits (a blackhole), and the position's stop sells it (buffered)."""
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    assert bought["status"] == "bought"
    position_id: str = bought["position_id"]
    system.price("TK3", 1.0)
    [kept] = await system.signal("s0", token="TK3", size="0.5")
    assert kept["status"] == "bought"
    system.price("TK2", 1.0)
    system.store.down = True
    system.store.in_doubt = True
    [refused] = await system.signal("s2", token="TK2")
    assert refused["final"] is False, refused  # refused for now: post it again
    system.price(TOKEN, 0.8)
    closed = await system.exit("a1", position_id, 0.8)
    assert closed["status"] == "closed", closed
    return position_id


async def test_an_exit_behind_an_entry_that_committed_in_doubt_survives_the_fork() -> None:
    system = await small_system()
    position_id = await _sale_behind_an_entry_in_doubt(system)
    await system.store.up()
    assert system.store.forks == 1
    stream = [etype for _seq, etype, _data in system.store.stream("agent:a1")]
    assert stream[-3:] == ["buy_intended", "exit_intended", "position_closed"], stream
    live = system.agents.entities["a1"]
    assert position_id not in live.positions and "s2" in {
        b["signal_id"] for b in live.pending_buys.values()
    }  # the memory is now PostgreSQL's stream with the exit after it
    [kept] = live.positions
    assert kept in system.agents.reconciler.unarmed["a1"]  # armed again by the next round

    restarted = await system.restart_agents()  # PostgreSQL alone
    agent = restarted.entities["a1"]
    wallet = restarted.wallet_host.entities["w-a1"]
    assert position_id not in agent.positions
    assert wallet.balance(TOKEN) == held_tokens(agent).get(TOKEN, Decimal(0)) == 0
    report = await restarted.wallet_host.audit([("w-a1", held_tokens(agent))])
    assert report == [{"status": "ok", "evidence": []}]


async def test_positions_the_memory_never_knew_are_armed_after_a_reload() -> None:
    """The fork's stream may hold a position the memory never armed (its
    ``position_opened`` was refused in doubt): after the rebase every open position is
    armed again by the reconciler."""
    system = await small_system(**{"reconcile.interval_s": 0.02})
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    position_id = bought["position_id"]
    system.evaluator.armed.clear()  # as if the evaluator never heard of it
    agent = system.agents.entities["a1"]
    system.agents.after_reload(agent)
    await until(lambda: position_id in system.evaluator.armed)


async def test_a_stream_ahead_of_memory_reloads_the_agent_without_quarantining_it() -> None:
    """An entry refused in doubt that committed puts the stream one event ahead: every
    handler queued in the mailbox meanwhile fails with ``StaleEntity``. That is the memory
    being behind, not the agent failing — the chaos run at dba4b64 quarantined an agent for
    six such exits in 100 ms. It is reloaded, not counted; its next exit closes the
    position."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    agent = system.agents.entities["a1"]
    in_doubt = Event(agent.stream_id, agent.seq + 1, "signal_handled",
                     {"signal_id": "s-doubt", "outcome": {"status": "ineligible"}},
                     Agent.schema_version)  # fmt: skip
    system.store._write(Commit(events=[in_doubt]))
    stale = StaleEntity(f"a1: journal has seq {in_doubt.seq} already")
    for _ in range(system.settings.supervision.restart_intensity + 1):
        assert await system.agents.entity_failed("a1", stale) is False
    fresh = system.agents.entities["a1"]
    assert fresh.status == "active" and fresh.seq == in_doubt.seq
    system.price(TOKEN, 0.8)
    closed = await system.exit("a1", bought["position_id"], 0.8)
    assert closed["status"] == "closed", closed
