"""The paper exchange keeps accounts of its own, outlives the wallet host, and is the
venue side the custody audit compares a wallet with."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from tests.unit.fakes import decimal_balances
from tests.unit.harness import FAST_RECONCILE, TOKEN, small_system, until
from valux.schema.messages import OrderRequest, intent_id_for
from valux.venues.base import OrderIntent, Side

FAST = FAST_RECONCILE
WITH_FEES = {"venue.paper.fee_bps": 30, "venue.paper.network_fee": "0.000005",
             "venue.paper.slippage_bps_per_unit": 10.0}  # fmt: skip


_until = until


async def test_fills_with_fees_move_the_account_exactly_as_the_books() -> None:
    """A buy and its sale, with fees, slippage and network fees: the venue account and the
    wallet's books agree to the lamport, and the audit finds nothing."""
    system = await small_system(**FAST, **WITH_FEES)
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    assert bought["status"] == "bought"
    system.price(TOKEN, 1.2)
    sold = await system.exit("a1", bought["position_id"], 1.2)
    assert sold["status"] == "closed", sold
    [wallet] = await system.wallets.describe(["w-a1"])
    assert wallet is not None
    books = {a: v for a, v in decimal_balances(wallet).items() if v}
    assert system.exchange.exchange.balances("w-a1") == books
    assert books["SOL"] != Decimal(10)  # fees and the price move really moved funds
    [audit] = await system.wallets.audit([("w-a1", {})])
    assert audit == {"status": "ok", "evidence": []}


async def test_an_order_the_account_cannot_pay_fails_at_the_venue() -> None:
    """The exchange checks its own account, not the wallet's books: books that claim funds
    the venue does not hold get a failed order, and nothing moves."""
    system = await small_system()
    await system.add_agent("a1")
    system.wallets.entities["w-a1"].balances["SOL"] += Decimal(100)  # books ahead
    order = OrderRequest(
        "i-big", "w-a1", "a1", intent_id_for("buy", "big", "a1"), "buy", TOKEN,
        Decimal(50), "signal",
    )  # fmt: skip
    [result] = await system.wallets.execute([order])
    assert result.state == "failed"
    assert "insufficient funds at the venue" in (result.reason or "")
    assert system.exchange.exchange.balances("w-a1") == {"SOL": Decimal(10)}


async def test_the_exchange_outlives_a_wallet_host_with_an_order_in_flight() -> None:
    """The venue fills but its answer is lost; the agent host running the wallet dies
    before it learns the outcome. Its next incarnation asks the exchange, which still
    knows the truth, and books exactly that fill (the position opens and is armed,
    once)."""
    system = await small_system(**FAST, **{"venue.paper.unknown_rate": 1.0})
    await system.add_agent("a1")
    [outcome] = await system.signal("s1")
    assert outcome["status"] == "pending"
    account = system.exchange.exchange.balances("w-a1")
    assert account[TOKEN] > 0  # the venue filled it
    await system.restart_agents()  # at once: the old incarnation never learned the fill
    agent = system.agents.entities["a1"]
    await _until(lambda: len(agent.positions) == 1 and not agent.pending_buys)
    [wallet] = await system.wallets.describe(["w-a1"])
    assert wallet is not None
    assert {a: v for a, v in decimal_balances(wallet).items() if v} == account
    [position] = agent.positions.values()
    assert Decimal(position["remaining"]) == account[TOKEN]


async def test_a_deposit_is_credited_once_per_reference() -> None:
    system = await small_system()
    exchange = system.exchange.exchange
    for _ in range(2):
        await exchange.deposit("dep-1", "acct", "SOL", Decimal("1.5"))
    assert exchange.balances("acct") == {"SOL": Decimal("1.5")}


async def test_venue_ahead_of_the_books_is_a_custody_mismatch() -> None:
    """Funds reached the venue account but not the wallet's journal (a crash between the
    two steps of a deposit): the audit names the venue account."""
    system = await small_system(**FAST)
    await system.add_agent("a1")
    await system.exchange.exchange.deposit("lost", "w-a1", "SOL", Decimal(2))
    await _until(lambda: "a1" in system.agents.reconciler.mismatches)
    evidence = system.agents.reconciler.mismatches["a1"]["evidence"]
    assert evidence == ["SOL: wallet memory 10, venue account 12"]


async def test_concurrent_orders_cannot_overdraw_the_account() -> None:
    """Two buys of 6 SOL from a 10 SOL account submitted at once: the exchange reserves
    what is in flight, so one fills and the other fails for funds."""
    system = await small_system(**{"venue.paper.latency_ms": 20})
    await system.add_agent("a1")
    exchange = system.exchange.exchange
    intents = [
        OrderIntent(
            intent_id=f"x{i}",
            wallet_id="w-a1",
            side=Side.BUY,
            token=TOKEN,
            quote_asset="SOL",
            amount=Decimal(6),
            created_at=time.time(),
        )
        for i in range(2)
    ]
    statuses = await asyncio.gather(*(exchange.submit(i) for i in intents))
    assert sorted(s.state.value for s in statuses) == ["failed", "filled"]
    assert exchange.balances("w-a1")["SOL"] == Decimal(4)


async def test_one_order_whose_price_lookup_fails_does_not_fail_its_batch() -> None:
    """Two wallets' orders in one batch; the price source fails for one token (its
    evaluator restarting): that order is UNKNOWN (asked again later), the other fills."""
    system = await small_system()
    await system.add_agent("a1")
    await system.add_agent("a2")
    answer = system.evaluator.latest_price

    async def flaky(token: str) -> tuple[float, float] | None:
        if token == "NOPRICE":
            raise ConnectionError("evaluator restarting")
        return await answer(token)

    system.evaluator.latest_price = flaky  # type: ignore[method-assign]
    intents = [
        OrderIntent(intent_id=f"x-{w}", wallet_id=f"w-{w}", side=Side.BUY, token=token,
                    quote_asset="SOL", amount=Decimal(1), created_at=time.time())
        for w, token in (("a1", "NOPRICE"), ("a2", TOKEN))
    ]  # fmt: skip
    unpriced, priced = await system.exchange.submit(intents)
    assert unpriced.state.value == "unknown" and "price source failed" in (unpriced.reason or "")
    assert priced.state.value == "filled"


async def test_a_sale_the_venue_failed_is_retried_as_a_new_order() -> None:
    """The venue fails the stop's sale (a legitimate failure, recorded under its intent
    id); the next trigger is a new decision with a new id, and sells. (With one id per
    position, the wallet answered the recorded failure forever: the position could never
    be sold again.)"""
    system = await small_system()
    await system.add_agent("a1")
    [bought] = await system.signal("s1")
    venue = system.exchange.exchange.venue
    venue.failure_rate = 1.0
    failed = await system.exit("a1", bought["position_id"], 0.8)
    assert failed["status"] == "failed"
    venue.failure_rate = 0.0
    sold = await system.exit("a1", bought["position_id"], 0.8)
    assert sold["status"] == "closed", sold
    [wallet] = await system.wallets.describe(["w-a1"])
    assert wallet is not None and TOKEN not in {
        a for a, v in wallet["balances"].items() if Decimal(v)
    }
