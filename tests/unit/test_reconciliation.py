"""Reconciliation is permanent: in-flight intents resolve, fences hold, custody is audited,
positions are re-armed — with nothing outside the reconciler calling it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.unit.fakes import decimal_balances
from tests.unit.harness import FAST_RECONCILE, TOKEN, small_system, until
from valux.observability.metrics import CUSTODY_MISMATCHES
from valux.schema.messages import OrderRequest, intent_id_for
from valux.trading.reconciliation import held_tokens

FAST = FAST_RECONCILE


_until = until


async def test_a_pending_buy_resolves_without_anyone_asking() -> None:
    """The venue's answer is lost (unknown outcome): the buy is answered ``pending``, and
    the permanent loop alone opens and arms the position once the wallet knows the fill."""
    system = await small_system(**FAST, **{"venue.paper.unknown_rate": 1.0})
    await system.add_agent("a1")
    [outcome] = await system.signal("s1")
    assert outcome["status"] == "pending" and outcome["final"] is False
    agent = system.agents.entities["a1"]
    await _until(lambda: len(agent.positions) == 1 and not agent.pending_buys)
    [pid] = agent.positions
    await _until(lambda: pid in system.evaluator.armed)  # armed right after it is journaled


async def test_a_buy_the_wallet_never_received_is_voided_then_failed() -> None:
    """Wallet unreachable while the buy is sent: after ``pending_after_s`` the reconciler
    voids the intent at the wallet and books the buy failed; the late arrival of that very
    order is refused and moves no funds."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    system.peers.down.add(("wallet", 0, "execute"))
    [outcome] = await system.signal("s1")
    assert outcome["status"] == "pending" and outcome["final"] is False
    system.peers.down.clear()
    agent = system.agents.entities["a1"]
    intent_id = intent_id_for("buy", "s1", "a1")
    await _until(lambda: not agent.pending_buys)
    assert agent.signals["s1"]["status"] == "failed"
    assert "voided" in agent.signals["s1"]["reason"]
    late = OrderRequest(intent_id, "w-a1", "a1", intent_id, "buy", TOKEN, Decimal(1), "signal")
    [answer] = await system.wallets.execute([late])
    assert answer.state == "failed" and "voided" in (answer.reason or "")
    wallet = (await system.wallets.describe(["w-a1"]))[0]
    assert decimal_balances(wallet) == {"SOL": Decimal(10)}


async def test_a_late_execute_after_the_buy_was_sent_is_fenced() -> None:
    """The order *was* sent but the agent gave up before it arrived (the wallet host was
    slow): a void first makes its later arrival a refusal, never a buy without position."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    intent_id = intent_id_for("buy", "late", "a1")
    voided = await system.wallets.void([("w-a1", intent_id, "not received by the wallet")])
    assert voided[0].state == "failed"
    late = OrderRequest(intent_id, "w-a1", "a1", intent_id, "buy", TOKEN, Decimal(1), "signal")
    [answer] = await system.wallets.execute([late])
    assert answer.state == "failed"
    wallet = (await system.wallets.describe(["w-a1"]))[0]
    assert decimal_balances(wallet) == {"SOL": Decimal(10)}
    restarted = await system.restart_agents()  # the fence is journaled
    [again] = await restarted.wallet_host.execute([late])
    assert again.state == "failed"


async def test_a_sale_the_wallet_never_saw_is_sent_again_under_its_id() -> None:
    """The stop's sale does not reach the wallet (its host restarting): the reconciler does
    not book it failed — a first send still on its way would then sell behind the agent's
    back — but sends it again under the same intent id; the position closes, once, and a
    late arrival of the first send is the same order."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    system.peers.down.add(("wallet", 0, "execute"))
    pending = await system.exit("a1", bought["position_id"], 0.8)
    assert pending["status"] == "pending"
    system.peers.down.clear()
    agent = system.agents.entities["a1"]
    await _until(lambda: not agent.positions)
    sale = intent_id_for("sale", bought["position_id"])
    late = OrderRequest(sale, "w-a1", "a1", bought["position_id"], "sell", TOKEN,
                        Decimal(bought["amount"]), "stop_loss")  # fmt: skip
    [again] = await system.wallets.execute([late])
    assert again.state == "filled"
    [wallet] = await system.wallets.describe(["w-a1"])
    assert wallet is not None
    held = {a: v for a, v in decimal_balances(wallet).items() if v}
    assert held == system.exchange.exchange.balances("w-a1")
    assert TOKEN not in held  # sold once: nothing left, nothing oversold


async def test_a_void_of_an_intent_that_did_arrive_answers_its_outcome() -> None:
    """Voiding is a question first: an intent the wallet has is answered as it stands."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    [answer] = await system.wallets.void([("w-a1", bought["position_id"], "given up")])
    assert answer.state == "filled"


async def test_custody_mismatch_alerts_reduces_and_is_reported() -> None:
    """Tokens the positions do not explain (here: memory tampered behind the journal's back)
    are found by the audit: evidence, metric, REDUCING with the reason, listed in health."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    await system.signal("s1")
    before = CUSTODY_MISMATCHES._value.get()
    system.wallets.entities["w-a1"].balances[TOKEN] += Decimal("0.5")
    agent = system.agents.entities["a1"]
    await _until(lambda: agent.state.value == "REDUCING")
    assert agent.trading_state["source"] == "reconciliation"
    assert "wallet holds 1.5, open positions hold 1" in agent.trading_state["reason"]
    health = await system.agents.health()
    assert "a1" in health["reconciliation"]["mismatches"]
    assert CUSTODY_MISMATCHES._value.get() == before + 1
    [refused] = await system.signal("s2", token="OTHER")
    assert refused["status"] == "ineligible" and "REDUCING" in refused["reason"]


async def test_wallet_memory_behind_its_journal_is_a_mismatch() -> None:
    """The journal's sum of deposits and fills is the reference: a wallet whose memory
    missed a committed fill (the reported chaos mismatch) is caught."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    system.wallets.entities["w-a1"].balances["SOL"] -= Decimal("0.25")
    agent = system.agents.entities["a1"]
    await _until(lambda: "a1" in system.agents.reconciler.mismatches)
    evidence = system.agents.reconciler.mismatches["a1"]["evidence"]
    assert evidence == [
        "SOL: wallet memory 9.75, journal (deposits + fills) 10",
        "SOL: wallet memory 9.75, venue account 10",
    ]
    assert agent.state.value == "REDUCING"


async def test_no_custody_verdict_while_the_journal_still_buffers_exits() -> None:
    """After an outage the journal writes its buffer back while PostgreSQL already answers:
    the journal's sums then lag the wallet by the buffered sale. The audit waits for the
    buffer (the 10-minute chaos run saw this false alarm on ten wallets)."""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    system.store.down = True
    system.price(TOKEN, 0.8)
    assert (await system.exit("a1", bought["position_id"], 0.8))["status"] == "closed"
    system.store.down = False  # answering again; the buffer is not written yet
    held = held_tokens(system.agents.entities["a1"])
    [waiting] = await system.wallets.audit([("w-a1", held)])
    assert waiting == {"status": "busy", "evidence": []}
    await system.store.up()
    [after] = await system.wallets.audit([("w-a1", held)])
    assert after == {"status": "ok", "evidence": []}


async def test_a_consistent_wallet_passes_the_audit() -> None:
    """Buys, a DCA-free stop sale and deposits add up: no mismatch after many audits."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    await system.signal("s2", token="TK2", size="0.5")
    system.price(TOKEN, 0.9)
    await system.exit("a1", bought["position_id"], 0.9)
    await asyncio.sleep(0.2)
    assert system.agents.reconciler.mismatches == {}
    assert system.agents.entities["a1"].state.value == "ACTIVE"
    assert system.agents.reconciler.rounds > 3


async def test_a_position_whose_arming_failed_is_armed_by_the_next_round() -> None:
    """``armed: false`` (evaluator unreachable during the buy) is not the end of it."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    system.evaluator.fail_arm = True
    [bought] = await system.signal("s1")
    assert bought["status"] == "bought" and bought["armed"] is False
    system.evaluator.fail_arm = False
    await _until(lambda: bought["position_id"] in system.evaluator.armed)


async def test_the_wallet_resolver_survives_a_failing_intent() -> None:
    """A venue error on one intent is logged and the resolver keeps resolving the others."""
    system = await small_system(**{"venue.paper.unknown_rate": 1.0})
    await system.add_agent("a1")
    await system.add_agent("a2")
    await system.signal("s1")
    venue = system.wallets.venue
    real_status = venue.status
    calls = {"n": 0}

    async def flaky(intent_id: str):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("venue hiccup")
        return await real_status(intent_id)

    venue.status = flaky  # type: ignore[method-assign]
    await system.wallets.resolve_pending()
    await system.wallets.resolve_pending()
    assert not any(w.pending for w in system.wallets.entities.values())
    assert system.wallets._resolver is not None and not system.wallets._resolver.done()


async def test_stop_ends_the_loop_even_when_a_call_swallows_its_cancellation() -> None:
    """Some clients turn the cancellation of a call in flight into an error of their own,
    which a round isolates per agent: the loop must still end (it hung the suite)."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    entered = asyncio.Event()

    async def audit_that_swallows(wallet_id: str, held: object) -> dict[str, object]:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("read error (a client's own)") from None
        return {"status": "ok", "evidence": []}

    system.agents.wallets.audit = audit_that_swallows  # type: ignore[method-assign]
    await asyncio.wait_for(entered.wait(), 3)
    await asyncio.wait_for(system.agents.reconciler.stop(), 3)
