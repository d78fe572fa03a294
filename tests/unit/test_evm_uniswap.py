"""The Uniswap venue and the wallet's transaction sender against anvil and real Uniswap V3.

No mock of the chain: anvil (chain id 42161) runs the npm-published bytecode of the V3
factory, pools, SwapRouter02, QuoterV2, WETH9 and OpenZeppelin ERC-20s; the venue talks to
it with AsyncWeb3 over HTTP and signs locally, as in production. Every test runs between
``evm_snapshot`` and ``evm_revert``.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from eth_account import Account

from tests.unit.evm_support import (
    Journal,
    chain,
    intent,
    make_trader,
    units,
    until_in_mempool,
    wait_until,
)
from valux.schema.evm_abi import MAX_UINT256
from valux.venues.base import OrderRejected, OrderState, Side, Venue, should_retry
from valux.venues.uniswap import (
    ChainIdMismatch,
    FeeSettings,
    NotStarted,
    SenderSettings,
    gas_paid_wei,
    token_flows,
)

ONE = Decimal(1)


async def _gas_paid(trader_w3, journal: Journal) -> int:  # type: ignore[no-untyped-def]
    """ETH paid for gas by every mined attempt in ``journal``."""
    total = 0
    for attempt in journal.attempts():
        try:
            receipt = await trader_w3.eth.get_transaction_receipt(attempt.tx_hash)
        except Exception:
            continue
        total += gas_paid_wei(receipt)
    return total


async def test_the_venue_implements_the_venue_protocol() -> None:
    """UniswapVenue is a valux Venue (quote / submit / status, named 'uniswap')."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox)
        assert isinstance(trader.venue, Venue)
        assert trader.venue.name == "uniswap"


async def test_quote_takes_the_best_of_the_fee_tiers() -> None:
    """QuoterV2 is asked at 500, 3000 and 10000; the largest output wins — the shallow
    0.05 % pool for a small order, the deep 0.3 % pool for a large one."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox)
        venue, weth, arb = trader.venue, sandbox.weth, sandbox.token("ARB")
        for amount, expected_fee in ((Decimal("0.01"), 500), (Decimal(5), 3000)):
            amount_in = units(amount, 18)
            per_tier = {
                fee: await venue._quote_tier(weth, arb, amount_in, fee)
                for fee in (500, 3000, 10000)
            }
            assert per_tier[10000] is None  # no ARB/WETH pool at 1 %
            best = await venue.best_route(weth, arb, amount_in)
            assert best is not None and best.fee == expected_fee
            assert best.amount_out == max(r.amount_out for r in per_tier.values() if r)
            quote = await venue.quote(Side.BUY, arb, amount)
            assert quote.base_amount == Decimal(best.amount_out).scaleb(-18)
            assert quote.quote_amount == amount
            assert quote.fee == amount * Decimal(expected_fee) / 1_000_000
            assert 0 < quote.price_impact < 0.2
            assert quote.network_fee > 0


async def test_buy_and_sell_leave_exactly_the_expected_tokens() -> None:
    """A buy moves exactly its WETH out and its ARB in, a sell of those ARB brings the wallet
    back to zero ARB, and the ETH balance falls by exactly the gas of the mined attempts."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        eth_before = await sandbox.balance(trader.address)
        bought = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.1")))
        assert bought.state is OrderState.FILLED, bought.reason
        assert await sandbox.balance(trader.address, "ARB") == bought.base_amount
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.9")
        assert bought.quote_amount == Decimal("0.1")
        assert bought.fee == Decimal("0.1") * Decimal("0.0005")
        assert bought.price == (bought.quote_amount - bought.fee) / bought.base_amount

        sold = await trader.venue.submit(intent(Side.SELL, arb, bought.base_amount))
        assert sold.state is OrderState.FILLED, sold.reason
        assert sold.base_amount == bought.base_amount
        assert await sandbox.balance(trader.address, "ARB") == 0
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.9") + sold.quote_amount
        assert Decimal("0.099") < sold.quote_amount < Decimal("0.1")  # two pool fees lost

        gas = await _gas_paid(trader.w3, trader.journal)
        assert await sandbox.balance(trader.address) == eth_before - Decimal(gas).scaleb(-18)
        kinds = [a.kind for a in trader.journal.attempts()]
        assert kinds == ["approve", "swap", "approve", "swap"]  # WETH once, ARB once


async def test_a_stablecoin_quote_books_six_decimals() -> None:
    """Quoted in USDC (6 decimals): the USDC spent and ARB received are the log amounts,
    and the network fee is the gas's worth in USDC."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, quote="USDC", funds={"USDC": Decimal(250)})
        arb = sandbox.token("ARB")
        status = await trader.venue.submit(intent(Side.BUY, arb, Decimal("100.5"), quote="USDC"))
        assert status.state is OrderState.FILLED, status.reason
        assert status.quote_amount == Decimal("100.5")
        assert await sandbox.balance(trader.address, "USDC") == Decimal("149.5")
        assert await sandbox.balance(trader.address, "ARB") == status.base_amount
        assert Decimal(160) < status.base_amount < Decimal("167.5")  # ~0.6 USDC per ARB
        result = await trader.venue.result(status.intent_id)
        assert result is not None and result.quote_decimals == 6
        eth_usd = await sandbox.price("WETH", "USDC")
        expected_fee = Decimal(result.gas_paid_wei).scaleb(-18) * eth_usd
        assert abs(status.network_fee - expected_fee) / expected_fee < Decimal("0.01")


async def test_native_eth_is_wrapped_and_unwrapped_by_the_router() -> None:
    """With native_eth, a buy pays ETH (msg.value, wrapped by the router) and a sell is paid
    in ETH (unwrapWETH9 in the same multicall): the wallet never holds WETH and the router
    keeps nothing."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, eth=Decimal(3), native_eth=True)
        link = sandbox.token("LINK")
        bought = await trader.venue.submit(intent(Side.BUY, link, Decimal("0.5")))
        assert bought.state is OrderState.FILLED, bought.reason
        assert bought.quote_amount == Decimal("0.5")
        sold = await trader.venue.submit(intent(Side.SELL, link, bought.base_amount))
        assert sold.state is OrderState.FILLED, sold.reason
        assert Decimal("0.49") < sold.quote_amount < Decimal("0.5")
        gas = Decimal(await _gas_paid(trader.w3, trader.journal)).scaleb(-18)
        expected = Decimal(3) - bought.quote_amount + sold.quote_amount - gas
        assert await sandbox.balance(trader.address) == expected
        assert await sandbox.balance(trader.address, "WETH") == 0
        assert await sandbox.balance(trader.address, "LINK") == 0
        assert await sandbox.balance(sandbox.router, "WETH") == 0
        assert await sandbox.balance(sandbox.router) == 0
        assert [a.kind for a in trader.journal.attempts()] == ["swap", "approve", "swap"]


async def test_wrap_and_unwrap_are_idempotent_conversions() -> None:
    """wrap/unwrap move ETH ↔ WETH one for one, once per intent id."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, eth=Decimal(2))
        wrapped = await trader.venue.wrap("wrap-1", Decimal("0.75"))
        again = await trader.venue.wrap("wrap-1", Decimal("0.75"))
        assert wrapped.state is OrderState.FILLED and again == wrapped
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.75")
        unwrapped = await trader.venue.unwrap("unwrap-1", Decimal("0.25"))
        assert unwrapped.state is OrderState.FILLED
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.5")
        gas = Decimal(wrapped.gas_paid_wei + unwrapped.gas_paid_wei).scaleb(-18)
        assert await sandbox.balance(trader.address) == Decimal("1.5") - gas
        assert len(trader.journal.attempts()) == 2


async def test_five_concurrent_buys_get_consecutive_nonces_and_all_land() -> None:
    """Five buys submitted at once from one wallet go out with consecutive nonces (after
    the one approval they share) and every one is mined and booked. (Each is quoted
    before the others land, so each is small enough for the four ahead of it to stay
    inside its 50 bps slippage bound.)"""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": Decimal(2)})
        sends_at_write: list[int] = []
        trader.journal.on_write = lambda _: sends_at_write.append(
            trader.provider.methods.count("eth_sendRawTransaction")
        )
        arb = sandbox.token("ARB")
        intents = [intent(Side.BUY, arb, Decimal("0.005")) for _ in range(5)]
        statuses = await asyncio.gather(*(trader.venue.submit(i) for i in intents))
        # every attempt was journaled before its own send: the k-th row saw k sends
        assert sends_at_write == list(range(6))
        assert all(s.state is OrderState.FILLED for s in statuses), [s.reason for s in statuses]
        swaps = trader.journal.of_kind("swap")
        approvals = trader.journal.of_kind("approve")
        assert len(approvals) == 1 and approvals[0].nonce == 0
        assert sorted(a.nonce for a in swaps) == [1, 2, 3, 4, 5]
        assert {a.intent_id for a in swaps} == {i.intent_id for i in intents}
        total = sum((s.base_amount for s in statuses), Decimal(0))
        assert await sandbox.balance(trader.address, "ARB") == total
        assert await sandbox.balance(trader.address, "WETH") == Decimal("1.975")
        assert await trader.w3.eth.get_transaction_count(trader.address) == 6


async def test_a_stuck_transaction_is_replaced_and_lands_once() -> None:
    """With mining paused, a swap that waited past replace_after_s is signed again at the
    same nonce with ≥ 10 % higher maxFee and tip; when mining resumes exactly one lands,
    the replacement, and the tokens arrive once."""
    async with chain() as sandbox:
        settings = SenderSettings(
            poll_interval_s=0.02, replace_after_s=0.3, replace_after_blocks=1000
        )
        trader = await make_trader(sandbox, funds={"WETH": ONE}, settings=settings)
        arb = sandbox.token("ARB")
        warm = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))  # approves
        assert warm.state is OrderState.FILLED
        held = await sandbox.balance(trader.address, "ARB")
        await sandbox.set_automine(False)
        order = intent(Side.BUY, arb, Decimal("0.1"))
        task = asyncio.ensure_future(trader.venue.submit(order))
        await wait_until(lambda: len(trader.journal.swaps(order.intent_id)) >= 2)
        first, second = trader.journal.swaps(order.intent_id)[:2]
        assert first.nonce == second.nonce
        assert second.fields["replaces"] == first.tx_hash
        for key in ("max_fee_per_gas", "max_priority_fee_per_gas"):
            assert int(second.fields[key]) * 10 >= int(first.fields[key]) * 11
        assert not task.done()
        await until_in_mempool(sandbox, [second.tx_hash])
        await sandbox.mine()
        status = await asyncio.wait_for(task, 10)
        assert status.state is OrderState.FILLED, status.reason
        replaced = trader.journal.swaps(order.intent_id)
        mined = [a.tx_hash for a in replaced if await _has_receipt(trader.w3, a.tx_hash)]
        assert len(mined) == 1 and status.tx_id == mined[0] != first.tx_hash
        assert await sandbox.balance(trader.address, "ARB") == held + status.base_amount


async def _has_receipt(w3, tx_hash: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        await w3.eth.get_transaction_receipt(tx_hash)
    except Exception:
        return False
    return True


async def test_a_transaction_priced_out_for_n_blocks_is_replaced() -> None:
    """When the base fee jumps above a pending swap's maxFeePerGas, blocks go by without
    it; after replace_after_blocks blocks it is replaced with fees fresh enough to land."""
    async with chain() as sandbox:
        settings = SenderSettings(
            poll_interval_s=0.02, replace_after_s=None, replace_after_blocks=2
        )
        trader = await make_trader(sandbox, funds={"WETH": ONE}, settings=settings)
        arb = sandbox.token("ARB")
        assert (await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))).state is (
            OrderState.FILLED
        )
        await sandbox.set_automine(False)
        order = intent(Side.BUY, arb, Decimal("0.1"))
        task = asyncio.ensure_future(trader.venue.submit(order))
        await wait_until(lambda: trader.journal.swaps(order.intent_id))
        first = trader.journal.swaps(order.intent_id)[0]
        await until_in_mempool(sandbox, [first.tx_hash])
        await sandbox.set_next_base_fee(int(first.fields["max_fee_per_gas"]) * 3)
        await sandbox.mine(2)  # the swap cannot pay this base fee: two empty blocks
        await wait_until(lambda: len(trader.journal.swaps(order.intent_id)) >= 2)
        second = trader.journal.swaps(order.intent_id)[1]
        assert int(second.fields["max_fee_per_gas"]) > int(first.fields["max_fee_per_gas"]) * 2
        await until_in_mempool(sandbox, [second.tx_hash])
        await sandbox.mine()
        status = await asyncio.wait_for(task, 10)
        assert status.state is OrderState.FILLED and status.tx_id == second.tx_hash
        assert not await _has_receipt(trader.w3, first.tx_hash)


async def test_a_wrong_chain_id_is_refused_before_anything_is_signed() -> None:
    """A wallet configured for chain 1 against the 42161 node: start() refuses, and a
    submit raises ChainIdMismatch (not retryable) without one signature and without one
    eth_sendRawTransaction (or any other transaction call) reaching the node."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE}, chain_id=1, start=False)
        with pytest.raises(ChainIdMismatch, match="42161"):
            await trader.sender.start()
        arb = sandbox.token("ARB")
        with pytest.raises(ChainIdMismatch) as refused:
            await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.1")))
        assert isinstance(refused.value, OrderRejected) and not should_retry(refused.value)
        with pytest.raises(ChainIdMismatch):
            await trader.venue.wrap("w", Decimal("0.1"))
        assert trader.signer.signed == []
        assert trader.journal.rows == []
        sent = set(trader.provider.methods)
        assert "eth_sendRawTransaction" not in sent
        assert "eth_sendTransaction" not in sent
        assert "eth_chainId" in sent


async def test_an_unstarted_sender_signs_nothing() -> None:
    """Before start() has checked the chain id, a submit is refused (NotStarted)."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE}, start=False)
        with pytest.raises(NotStarted):
            await trader.venue.submit(intent(Side.BUY, sandbox.token("ARB"), Decimal("0.1")))
        assert trader.signer.signed == [] and trader.journal.rows == []


async def test_a_slippage_revert_at_estimate_is_failed_and_sends_nothing() -> None:
    """A minimum output above what the pool gives reverts in eth_estimateGas with
    'Too little received': FAILED with that reason, no swap signed, balances intact."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        quote = await trader.venue.quote(Side.BUY, arb, Decimal("0.1"))
        order = intent(Side.BUY, arb, Decimal("0.1"))
        status = await trader.venue.submit(order, min_amount_out=quote.base_amount * 2)
        assert status.state is OrderState.FAILED
        assert status.reason is not None and "Too little received" in status.reason
        assert status.base_amount == status.quote_amount == 0
        assert trader.journal.of_kind("swap") == []
        assert await sandbox.balance(trader.address, "WETH") == ONE
        assert await sandbox.balance(trader.address, "ARB") == 0
        assert (await trader.venue.status(order.intent_id)).state is OrderState.FAILED


async def test_a_slippage_revert_on_chain_is_failed_with_funds_intact() -> None:
    """A buy front-run in the same block by a larger buy with a higher tip reverts on
    chain with 'Too little received': FAILED with the decoded reason, no WETH or ARB moved
    (only gas was paid, which the SwapResult reports)."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        whale_settings = SenderSettings(
            poll_interval_s=0.02, fees=FeeSettings(min_priority_fee_wei=50 * 10**9)
        )
        whale = await make_trader(sandbox, funds={"WETH": Decimal(200)}, settings=whale_settings)
        arb = sandbox.token("ARB")
        for who in (trader, whale):  # approvals out of the way
            assert (await who.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))).state is (
                OrderState.FILLED
            )
        weth_before = await sandbox.balance(trader.address, "WETH")
        arb_before = await sandbox.balance(trader.address, "ARB")
        await sandbox.set_automine(False)
        order = intent(Side.BUY, arb, Decimal("0.5"))
        mine = asyncio.ensure_future(trader.venue.submit(order))
        await wait_until(lambda: trader.journal.swaps(order.intent_id))
        big = asyncio.ensure_future(whale.venue.submit(intent(Side.BUY, arb, Decimal(100))))
        await wait_until(lambda: len(whale.journal.of_kind("swap")) == 2)
        await until_in_mempool(
            sandbox,
            [trader.journal.swaps(order.intent_id)[0].tx_hash,
             whale.journal.of_kind("swap")[1].tx_hash],
        )  # fmt: skip
        await sandbox.mine()
        status, whale_status = await asyncio.wait_for(asyncio.gather(mine, big), 10)
        assert whale_status.state is OrderState.FILLED
        assert status.state is OrderState.FAILED
        assert status.reason is not None and "Too little received" in status.reason
        assert status.base_amount == status.quote_amount == 0
        assert await sandbox.balance(trader.address, "WETH") == weth_before
        assert await sandbox.balance(trader.address, "ARB") == arb_before
        result = await trader.venue.result(order.intent_id)
        assert result is not None and result.gas_paid_wei > 0 and result.tx_hash == status.tx_id


async def test_insufficient_balance_is_failed_before_signing() -> None:
    """A buy larger than the wallet's WETH is FAILED with the balances in the reason;
    nothing is signed."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": Decimal("0.05")})
        status = await trader.venue.submit(intent(Side.BUY, sandbox.token("ARB"), Decimal("0.1")))
        assert status.state is OrderState.FAILED
        assert status.reason is not None and "insufficient balance" in status.reason
        assert trader.signer.signed == []


async def test_a_sell_beyond_the_balance_reverts_on_chain_and_moves_nothing() -> None:
    """Two sells of the whole ARB balance sent before either is mined: both pass the
    balance check and the estimate, one fills, the other reverts on chain with STF
    (insufficient balance) — FAILED with that reason, and the books move once."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        bought = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.2")))
        tiny = await trader.venue.submit(intent(Side.SELL, arb, Decimal(1)))  # approves ARB
        assert tiny.state is OrderState.FILLED
        held = await sandbox.balance(trader.address, "ARB")
        assert held == bought.base_amount - 1
        weth_before = await sandbox.balance(trader.address, "WETH")
        await sandbox.set_automine(False)
        sells = [intent(Side.SELL, arb, held), intent(Side.SELL, arb, held)]
        tasks = [asyncio.ensure_future(trader.venue.submit(order)) for order in sells]
        await wait_until(lambda: all(trader.journal.swaps(o.intent_id) for o in sells))
        await until_in_mempool(sandbox, [trader.journal.swaps(o.intent_id)[0].tx_hash
                                         for o in sells])  # fmt: skip
        await sandbox.mine()
        statuses = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        filled = [s for s in statuses if s.state is OrderState.FILLED]
        failed = [s for s in statuses if s.state is OrderState.FAILED]
        assert len(filled) == 1 and len(failed) == 1
        assert failed[0].reason is not None and "reverted on chain: STF" in failed[0].reason
        assert failed[0].base_amount == failed[0].quote_amount == 0
        assert await sandbox.balance(trader.address, "ARB") == 0
        assert await sandbox.balance(trader.address, "WETH") == weth_before + filled[0].quote_amount


async def test_a_send_the_node_refuses_fails_the_order_and_keeps_the_nonce_free() -> None:
    """A wallet with WETH but no ETH for gas: the node refuses the signed approval
    (insufficient funds), the buy is FAILED with the node's reason, and the nonce is not
    used up — once funded, the next order goes out at nonce 0 and fills."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, eth=Decimal(0), funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        status = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.1")))
        assert status.state is OrderState.FAILED
        assert status.reason is not None and "insufficient funds" in status.reason.lower()
        assert trader.sender.next_nonce == 0
        await sandbox.fund(trader.address, ONE)
        again = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.1")))
        assert again.state is OrderState.FILLED, again.reason
        assert [a.nonce for a in trader.journal.attempts()] == [0, 0, 1]
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.9")


async def test_approvals_are_not_repeated() -> None:
    """The router is approved once per token (MAX_UINT256); later buys and sells of the
    same tokens only read the allowance."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb, link = sandbox.token("ARB"), sandbox.token("LINK")
        first = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.1")))
        orders = [
            intent(Side.BUY, arb, Decimal("0.1")),
            intent(Side.BUY, link, Decimal("0.1")),
            intent(Side.SELL, arb, first.base_amount / 2),
            intent(Side.SELL, arb, first.base_amount / 2),
        ]
        for order in orders:
            status = await trader.venue.submit(order)
            assert status.state is OrderState.FILLED, status.reason
        approvals = trader.journal.of_kind("approve")
        assert [a.fields["to"] for a in approvals] == [sandbox.weth, arb]
        assert len(trader.journal.of_kind("swap")) == 5
        weth = trader.w3.eth.contract(address=sandbox.weth, abi=_ALLOWANCE_ABI)
        allowance = await weth.functions.allowance(trader.address, sandbox.router).call()
        assert allowance == MAX_UINT256


_ALLOWANCE_ABI = [
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "o", "type": "address"}, {"name": "s", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    }
]


async def test_submit_is_idempotent_by_intent_id() -> None:
    """The same intent submitted twice at once and once more later swaps once; status
    answers the same outcome, and an unknown id is NOT_FOUND."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        order = intent(Side.BUY, sandbox.token("ARB"), Decimal("0.1"))
        one, two = await asyncio.gather(trader.venue.submit(order), trader.venue.submit(order))
        three = await trader.venue.submit(order)
        assert one == two == three and one.state is OrderState.FILLED
        assert len(trader.journal.of_kind("swap")) == 1
        assert await trader.venue.status(order.intent_id) == one
        assert (await trader.venue.status("never-sent")).state is OrderState.NOT_FOUND


async def test_a_restart_between_send_and_receipt_resolves_by_hash() -> None:
    """The wallet host dies after the swap was journaled and sent, before its receipt. A
    new sender + venue built from the journal find the nonce in the mempool, answer
    PENDING, then FILLED once mined — and a new submit of the intent signs nothing."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        assert (await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))).state is (
            OrderState.FILLED
        )
        held = await sandbox.balance(trader.address, "ARB")
        await sandbox.set_automine(False)
        order = intent(Side.BUY, arb, Decimal("0.1"))
        sends = trader.provider.answered.count("eth_sendRawTransaction")
        task = asyncio.ensure_future(trader.venue.submit(order))
        await wait_until(  # the node has the swap
            lambda: trader.provider.answered.count("eth_sendRawTransaction") == sends + 1
        )
        for running in list(trader.venue._running.values()):  # the process dies
            running.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        journal_rows = len(trader.journal.rows)
        reborn = await make_trader(
            sandbox,
            account=trader.account,
            eth=Decimal(0),
            journal=trader.journal,
            attempts=trader.journal.attempts(),
        )
        report = reborn.sender.report
        assert report is not None
        swap = trader.journal.swaps(order.intent_id)[0]
        assert report.in_mempool == {swap.nonce: order.intent_id} and report.gaps == {}
        assert (await reborn.venue.status(order.intent_id)).state is OrderState.PENDING
        await sandbox.mine()
        status = await reborn.venue.status(order.intent_id)
        assert status.state is OrderState.FILLED and status.tx_id == swap.tx_hash
        assert await reborn.venue.submit(order) == status
        assert len(trader.journal.rows) == journal_rows  # nothing new signed
        assert reborn.signer.signed == []
        assert await sandbox.balance(trader.address, "ARB") == held + status.base_amount


async def test_submit_after_a_restart_follows_the_journaled_swap_to_its_end() -> None:
    """After a restart, submit (not only status) of a journaled, still pending intent
    waits for that transaction instead of signing a second swap."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))
        await sandbox.set_automine(False)
        order = intent(Side.BUY, arb, Decimal("0.1"))
        sends = trader.provider.answered.count("eth_sendRawTransaction")
        task = asyncio.ensure_future(trader.venue.submit(order))
        await wait_until(  # the node has the swap
            lambda: trader.provider.answered.count("eth_sendRawTransaction") == sends + 1
        )
        for running in list(trader.venue._running.values()):
            running.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        reborn = await make_trader(
            sandbox,
            account=trader.account,
            eth=Decimal(0),
            journal=trader.journal,
            attempts=trader.journal.attempts(),
        )
        follow = asyncio.ensure_future(reborn.venue.submit(order))
        await asyncio.sleep(0.1)
        assert not follow.done()
        await sandbox.mine()
        status = await asyncio.wait_for(follow, 10)
        assert status.state is OrderState.FILLED
        assert reborn.signer.signed == []
        assert len(trader.journal.swaps(order.intent_id)) == 1


async def test_a_journaled_but_unsent_attempt_is_a_gap_after_restart() -> None:
    """The host dies between the journal write and the send: the restarted sender reports
    the nonce as a gap (journaled, unknown to the node), the intent is PENDING, and
    fill_gaps cancels it with a zero-value self-transfer so it resolves FAILED."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))
        trader.journal.fail_after_write = True
        order = intent(Side.BUY, arb, Decimal("0.1"))
        with pytest.raises(RuntimeError, match="died"):
            await trader.venue.submit(order)
        trader.journal.fail_after_write = False
        assert "eth_sendRawTransaction" not in trader.provider.methods[-2:]
        swap = trader.journal.swaps(order.intent_id)[0]

        reborn = await make_trader(
            sandbox,
            account=trader.account,
            eth=Decimal(0),
            journal=trader.journal,
            attempts=trader.journal.attempts(),
        )
        assert reborn.sender.report is not None
        assert reborn.sender.report.gaps == {swap.nonce: order.intent_id}
        assert reborn.sender.next_nonce == swap.nonce
        assert (await reborn.venue.status(order.intent_id)).state is OrderState.PENDING
        filled = await reborn.sender.fill_gaps(reborn.signer)
        assert [(a.nonce, a.kind, a.intent_id) for a in filled] == [
            (swap.nonce, "cancel", order.intent_id)
        ]
        status = await reborn.venue.status(order.intent_id)
        assert status.state is OrderState.FAILED and "cancelled" in (status.reason or "")
        assert reborn.sender.next_nonce == swap.nonce + 1
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.99")


async def test_a_gap_reused_by_the_next_swap_resolves_the_old_intent_as_dropped() -> None:
    """Without fill_gaps the next send reuses the gap's nonce; once it is mined the old
    intent is FAILED (dropped), and its swap never ran."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.01")))
        trader.journal.fail_after_write = True
        lost = intent(Side.BUY, arb, Decimal("0.1"))
        with pytest.raises(RuntimeError):
            await trader.venue.submit(lost)
        trader.journal.fail_after_write = False
        reborn = await make_trader(
            sandbox,
            account=trader.account,
            eth=Decimal(0),
            journal=trader.journal,
            attempts=trader.journal.attempts(),
        )
        fresh = await reborn.venue.submit(intent(Side.BUY, arb, Decimal("0.2")))
        assert fresh.state is OrderState.FILLED
        old = await reborn.venue.status(lost.intent_id)
        assert old.state is OrderState.FAILED and "dropped" in (old.reason or "")
        assert await sandbox.balance(trader.address, "WETH") == Decimal("0.79")


async def test_receipt_transfer_logs_are_what_the_booking_reads() -> None:
    """token_flows over a real swap receipt: WETH left the wallet, ARB reached it, in the
    exact amounts the status reports; the pool and router flows are not the wallet's."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        arb = sandbox.token("ARB")
        status = await trader.venue.submit(intent(Side.BUY, arb, Decimal("0.3")))
        receipt = await trader.w3.eth.get_transaction_receipt(status.tx_id)
        flows = token_flows(receipt["logs"], trader.address, weth=sandbox.weth)
        assert flows.sent == {sandbox.weth: units(Decimal("0.3"), 18)}
        assert flows.received == {arb: units(status.base_amount, 18)}
        assert flows.net(arb) == units(status.base_amount, 18)
        pool = sandbox.pool("ARB", "WETH", 3000)
        pool_flows = token_flows(receipt["logs"], pool, weth=sandbox.weth)
        assert pool_flows.received == flows.sent and pool_flows.sent == flows.received


async def test_orders_the_venue_cannot_fill_are_rejected_not_failed() -> None:
    """A token without a pool, a non-address token, or another quote asset raise
    OrderRejected before anything is signed."""
    async with chain() as sandbox:
        trader = await make_trader(sandbox, funds={"WETH": ONE})
        nobody = Account.create().address
        for bad in (
            intent(Side.BUY, sandbox.token("USDC"), Decimal("0.1"), quote="USDT"),
            intent(Side.BUY, "ARB", Decimal("0.1")),
            intent(Side.BUY, nobody, Decimal("0.1")),
            intent(Side.BUY, sandbox.weth, Decimal("0.1")),
        ):
            with pytest.raises(OrderRejected):
                await trader.venue.submit(bad)
        gmx_usdc = intent(Side.BUY, sandbox.token("GMX"), Decimal("5"), quote="USDC")
        usdc_trader = await make_trader(sandbox, quote="USDC", funds={"USDC": Decimal(10)})
        with pytest.raises(OrderRejected, match="no Uniswap V3 pool"):
            await usdc_trader.venue.submit(gmx_usdc)
        assert trader.signer.signed == [] and usdc_trader.signer.signed == []
