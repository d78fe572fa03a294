"""The Jupiter venue against the sandbox: a real SVM (LiteSVM) behind a mainnet-shaped RPC
and a Jupiter-shaped service whose pools are real SPL token accounts. No mock of the
chain: the proxies in front of the sandbox only record requests (and, where a test says
so, answer one or move a price before forwarding).

The ledger's clock is manual; the venue's ``sleep`` advances it one slot per poll, so
waiting out a blockhash (150 blocks + finalization) takes milliseconds.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from aiohttp import web
from solders.hash import Hash
from solders.keypair import Keypair
from solders.signature import Signature
from solders.system_program import TransferParams, transfer

from tests.unit.jupiter_support import (
    Call,
    Crash,
    Journal,
    JupEnv,
    SleepLog,
    SlotClock,
    build_venue,
    intent,
    jupiter_env,
    lamports,
    token_units,
)
from tests.unit.sandbox_support import signed
from valux.custody.policy import SpendPolicy, SpendRefused, check
from valux.sandbox.ledger import Commitment
from valux.venues.base import OrderIntent, OrderRejected, OrderState, Side, Venue
from valux.venues.jupiter import (
    JupiterConfig,
    Prepared,
    SenderSettings,
    read_holdings,
)

ATA_RENT = 2_039_280


async def test_buy_then_sell_books_exactly_what_the_chain_moved() -> None:
    """A fresh wallet funded by the faucet buys BONK for 1 SOL, then sells it all: each
    booked amount equals the on-chain change to the lamport and base unit (the buy's
    debit includes the new token account's rent and the fee, the sell's credit is net of
    its fee), the holdings reader agrees, and a second submit of the same id answers the
    first outcome without a new transaction."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        clock = SlotClock(env.sandbox)
        venue = build_venue(env, wallet, journal, clock)
        assert isinstance(venue, Venue)
        bonk = env.mint("BONK")

        sol_before = await lamports(env, wallet)
        buy = intent(wallet, Side.BUY, bonk, "1", "buy-1")
        status = await venue.submit(buy)
        assert status.state is OrderState.FILLED, status.reason
        sol_after_buy = await lamports(env, wallet)
        units = token_units(env, wallet, bonk)
        assert status.quote_amount == Decimal(sol_before - sol_after_buy).scaleb(-9)
        assert status.base_amount == Decimal(units).scaleb(-5)
        assert status.quote_amount <= Decimal(1)  # the fee reserve came out of the amount
        result = await venue.result("buy-1")
        assert result is not None and result.attempts == 1
        assert result.rent_lamports == ATA_RENT
        assert status.network_fee == Decimal(result.tx_fee_lamports + ATA_RENT).scaleb(-9)
        assert status.tx_id == journal.signatures()[0]
        swapped = result.swap_lamports
        assert status.price == Decimal(swapped).scaleb(-9) / status.base_amount
        assert status.fee == 0

        holdings = await read_holdings(venue.rpc, venue.wallet)
        assert holdings.lamports == sol_after_buy
        assert holdings.units_of(bonk) == units
        assert holdings.balances()[bonk] == status.base_amount

        again = await venue.submit(buy)
        assert again == status
        assert await venue.status("buy-1") == status
        assert len(journal.rows) == 1

        sell = intent(wallet, Side.SELL, bonk, str(status.base_amount), "sell-1")
        sold = await venue.submit(sell)
        assert sold.state is OrderState.FILLED, sold.reason
        sol_after_sell = await lamports(env, wallet)
        assert token_units(env, wallet, bonk) == 0
        assert sold.base_amount == status.base_amount
        assert sold.quote_amount == Decimal(sol_after_sell - sol_after_buy).scaleb(-9)
        sell_result = await venue.result("sell-1")
        assert sell_result is not None and sell_result.rent_lamports == 0
        assert sold.network_fee == Decimal(sell_result.tx_fee_lamports).scaleb(-9)
        assert sold.price == (sold.quote_amount + sold.network_fee) / sold.base_amount
        # journal arithmetic = chain: start − debit + credit = end
        assert sol_before - (status.quote_amount - sold.quote_amount).scaleb(9) == sol_after_sell


async def test_every_signature_is_journaled_before_the_node_sees_it() -> None:
    """Journal before send: in the ordered log of what the proxies saw, each attempt's
    journal row comes before the first sendTransaction carrying its signature, and at
    journal time the ledger had neither landed nor queued it."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        journal = Journal(env.events)
        seen_at_journal: list[tuple[int, bool]] = []

        def on_journal(_number: int, signature: str) -> None:
            sent_before = signature in env.rpc_proxy.sent_signatures()
            landed = env.ledger.record(Signature.from_string(signature)) is not None
            seen_at_journal.append((env.ledger.pending_count(), sent_before or landed))

        journal.on_journal = on_journal
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        assert (await venue.submit(intent(wallet, Side.BUY, bonk, "0.5", "b"))).state is (
            OrderState.FILLED
        )
        held = token_units(env, wallet, bonk)
        sold = await venue.submit(
            intent(wallet, Side.SELL, bonk, str(Decimal(held).scaleb(-5)), "s")
        )
        assert sold.state is OrderState.FILLED
        assert seen_at_journal == [(0, False), (0, False)]
        for signature in journal.signatures():
            journaled = env.events.index(("journal", signature))
            first_send = env.events.index(("send", signature))
            assert journaled < first_send


async def test_a_journal_that_fails_means_nothing_is_sent() -> None:
    """If on_attempt raises (the journal could not commit), the error propagates and no
    sendTransaction ever leaves: the wallet's SOL is untouched."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        before = await lamports(env, wallet)

        async def broken(*_args: object) -> None:
            raise RuntimeError("journal down")

        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        venue.sender.on_attempt = broken
        with pytest.raises(RuntimeError, match="journal down"):
            await venue.submit(intent(wallet, Side.BUY, env.mint("WIF"), "1"))
        assert env.rpc_proxy.rpc_calls("sendTransaction") == []
        env.ledger.advance(3)
        assert await lamports(env, wallet) == before


async def test_a_dropped_transaction_is_rebroadcast_until_it_lands() -> None:
    """With every send dropped at first, the sender broadcasts the same signed bytes again
    (same signature, one journaled attempt) until the network lets one through; it lands
    once and is booked."""
    async with jupiter_env(drop_rate=1.0) as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")

        async def heal_after_three(call: Call) -> web.Response | None:
            if call.rpc_method == "sendTransaction" and len(env.rpc_proxy.sent_signatures()) >= 3:
                env.ledger.drop_rate = 0.0
            return None

        env.rpc_proxy.hooks.append(heal_after_three)
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        before = await lamports(env, wallet)
        status = await venue.submit(intent(wallet, Side.BUY, bonk, "1"))
        assert status.state is OrderState.FILLED, status.reason
        sent = env.rpc_proxy.sent_signatures()
        assert len(journal.rows) == 1
        assert len(sent) >= 3 and set(sent) == {journal.signatures()[0]}
        sends = env.rpc_proxy.rpc_calls("sendTransaction")
        assert sends[0].body["params"][1]["skipPreflight"] is False
        assert all(c.body["params"][1]["skipPreflight"] is True for c in sends[1:])
        assert all(c.body["params"][1]["maxRetries"] == 0 for c in sends)
        assert await lamports(env, wallet) == before - int(status.quote_amount.scaleb(9))
        assert token_units(env, wallet, bonk) == int(status.base_amount.scaleb(5))


async def test_an_expired_blockhash_is_resigned_once_and_one_swap_lands() -> None:
    """The first transaction is delayed past its blockhash's window and never lands; only
    once the finalized block height passed its lastValidBlockHeight (and its signature is
    provably absent) does the venue quote again and sign a second transaction — exactly
    one re-sign, exactly one landed swap, the spend policy asked before each signature."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        journal = Journal(env.events)

        finalized_at_resign: list[int] = []

        def delay_first(number: int, _signature: str) -> None:
            env.ledger.landing_delay_slots = 10_000 if number == 1 else 0
            if number == 2:
                finalized_at_resign.append(env.ledger.block_height_at(Commitment.FINALIZED))

        journal.on_journal = delay_first
        checked: list[int] = []

        async def before_sign(_intent: OrderIntent, prepared: Prepared) -> None:
            checked.append(prepared.last_valid_block_height)

        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox), before_sign=before_sign)
        before = await lamports(env, wallet)
        status = await venue.submit(intent(wallet, Side.BUY, bonk, "1"))
        assert status.state is OrderState.FILLED, status.reason
        first, second = journal.attempts()
        assert second.fields["replaces"] == first.signature and second.number == 2
        assert second.blockhash != first.blockhash
        assert len(checked) == 2 and checked[1] > checked[0]
        # the second was signed only once the first could no longer land
        assert finalized_at_resign[0] > first.last_valid_block_height
        assert not env.ledger.is_blockhash_valid(Hash.from_string(first.blockhash))
        assert status.tx_id == second.signature
        statuses = await venue.rpc.signature_statuses([first.signature, second.signature])
        assert statuses[0] is None and statuses[1] is not None
        assert await lamports(env, wallet) == before - int(status.quote_amount.scaleb(9))
        assert token_units(env, wallet, bonk) == int(status.base_amount.scaleb(5))
        result = await venue.result("i-1")
        assert result is not None and result.attempts == 2


async def test_expired_attempts_past_the_budget_are_failed_with_nothing_moved() -> None:
    """With max_attempts=1 a transaction that never lands ends FAILED ("expired") once its
    blockhash is provably gone; nothing was re-signed and the wallet only lost nothing."""
    async with jupiter_env(landing_delay_slots=10_000) as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        venue = build_venue(
            env, wallet, journal, SlotClock(env.sandbox), config=JupiterConfig(max_attempts=1)
        )
        before = await lamports(env, wallet)
        status = await venue.submit(intent(wallet, Side.BUY, env.mint("BONK"), "1"))
        assert status.state is OrderState.FAILED
        assert status.reason is not None and "expired" in status.reason
        assert len(journal.rows) == 1
        assert await lamports(env, wallet) == before
        assert status.quote_amount == status.base_amount == 0


async def test_a_restart_after_send_resolves_by_signature_without_a_second_swap() -> None:
    """The wallet host dies after the swap was sent and before it confirmed. A new sender
    and venue built from the journaled attempt find it by signature: status is PENDING
    while it is in flight, and submit of the same intent follows it to FILLED — no new
    signature, one swap on chain."""
    async with jupiter_env(landing_delay_slots=4) as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        journal = Journal(env.events)
        clock = SlotClock(env.sandbox)
        clock.crash_after = 1
        first = build_venue(env, wallet, journal, clock)
        order = intent(wallet, Side.BUY, bonk, "1")
        before = await lamports(env, wallet)
        with pytest.raises(Crash):
            await first.submit(order)
        assert len(journal.rows) == 1
        signature = journal.signatures()[0]
        assert env.rpc_proxy.sent_signatures()[0] == signature
        assert env.ledger.pending_count() == 1  # sent, not landed

        later = SlotClock(env.sandbox)
        second = build_venue(env, wallet, journal, later, attempts=journal.attempts())
        assert (await second.status("i-1")).state is OrderState.PENDING
        status = await second.submit(order)
        assert status.state is OrderState.FILLED, status.reason
        assert status.tx_id == signature
        assert len(journal.rows) == 1
        assert set(env.rpc_proxy.sent_signatures()) == {signature}
        assert await lamports(env, wallet) == before - int(status.quote_amount.scaleb(9))
        assert token_units(env, wallet, bonk) == int(status.base_amount.scaleb(5))
        third = build_venue(
            env, wallet, journal, SlotClock(env.sandbox), attempts=journal.attempts()
        )
        booked = await third.status("i-1")
        assert (booked.state, booked.base_amount, booked.quote_amount, booked.tx_id) == (
            status.state,
            status.base_amount,
            status.quote_amount,
            status.tx_id,
        )


async def test_a_death_between_journal_and_send_is_broadcast_after_the_restart() -> None:
    """The host dies right after the journal commit, before sending: the node never saw
    the transaction. After the restart the journaled signed bytes are broadcast as they
    are (same signature, no new attempt) and the swap lands once."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        journal = Journal(env.events, fail_after_write=True)
        order = intent(wallet, Side.BUY, bonk, "2")
        with pytest.raises(Crash):
            await build_venue(env, wallet, journal, SlotClock(env.sandbox)).submit(order)
        assert env.rpc_proxy.rpc_calls("sendTransaction") == []
        journal.fail_after_write = False
        before = await lamports(env, wallet)

        restarted = build_venue(
            env, wallet, journal, SlotClock(env.sandbox), attempts=journal.attempts()
        )
        assert (await restarted.status("i-1")).state is OrderState.PENDING
        status = await restarted.submit(order)
        assert status.state is OrderState.FILLED, status.reason
        assert status.tx_id == journal.signatures()[0] and len(journal.rows) == 1
        assert await lamports(env, wallet) == before - int(status.quote_amount.scaleb(9))


async def test_a_restarted_venue_reports_expired_attempts_as_failed_and_never_resigns_them() -> (
    None
):
    """After a restart, an intent whose only attempt expired without landing is FAILED by
    status (final, nothing moved); a later submit of that id answers the same FAILED and
    signs nothing."""
    async with jupiter_env(landing_delay_slots=10_000) as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        clock = SlotClock(env.sandbox)
        clock.crash_after = 0
        order = intent(wallet, Side.BUY, env.mint("POPCAT"), "1")
        with pytest.raises(Crash):
            await build_venue(env, wallet, journal, clock).submit(order)
        env.ledger.advance(200)
        restarted = build_venue(
            env, wallet, journal, SlotClock(env.sandbox), attempts=journal.attempts()
        )
        failed = await restarted.status("i-1")
        assert failed.state is OrderState.FAILED and "expired" in (failed.reason or "")
        again = await restarted.submit(order)
        assert again.state is OrderState.FAILED
        assert len(journal.rows) == 1


async def test_slippage_between_quote_and_swap_is_failed_with_funds_intact() -> None:
    """The pool moves (BONK's price doubles) after the quote and before /swap: Jupiter's
    service refuses the swap for slippage; the intent is FAILED with that reason, nothing
    was signed or sent, and the wallet's SOL and tokens are exactly as before."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")

        async def pump_before_swap(call: Call) -> web.Response | None:
            if call.path.startswith("/swap/v1/swap"):
                await env.set_price("BONK", "0.00004")
            return None

        env.jup_proxy.hooks.append(pump_before_swap)
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        before = await lamports(env, wallet)
        status = await venue.submit(intent(wallet, Side.BUY, bonk, "1"))
        assert status.state is OrderState.FAILED
        assert "slippage" in (status.reason or "").lower()
        assert journal.rows == [] and env.rpc_proxy.rpc_calls("sendTransaction") == []
        assert await lamports(env, wallet) == before
        assert token_units(env, wallet, bonk) == 0
        assert status.base_amount == status.quote_amount == 0


async def test_an_unknown_mint_is_rejected_before_anything_is_signed() -> None:
    """A mint that does not exist, an address that is not a mint (the wallet itself), a
    malformed address and the wrapped-SOL mint itself are all OrderRejected; nothing is
    journaled."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        for token in (
            str(Keypair().pubkey()),
            str(wallet.pubkey()),
            "not-a-mint",
            "So11111111111111111111111111111111111111112",
        ):
            with pytest.raises(OrderRejected):
                await venue.submit(intent(wallet, Side.BUY, token, "1", f"x-{token[:6]}"))
            with pytest.raises(OrderRejected):
                await venue.quote(Side.BUY, token, Decimal(1))
        assert journal.rows == []


async def test_wrong_quote_asset_and_dust_amounts_are_rejected() -> None:
    """An intent quoted in USDC, a buy too small to cover the fee reserve and a sell below
    one base unit are refused as given."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        venue = build_venue(env, wallet, Journal(env.events), SlotClock(env.sandbox))
        usdc = OrderIntent(
            intent_id="u",
            wallet_id="w",
            side=Side.BUY,
            token=bonk,
            quote_asset="USDC",
            amount=Decimal(1),
            created_at=0.0,
        )
        with pytest.raises(OrderRejected, match="trades against SOL"):
            await venue.submit(usdc)
        with pytest.raises(OrderRejected, match="fee reserve"):
            await venue.submit(intent(wallet, Side.BUY, bonk, "0.001", "tiny"))
        with pytest.raises(OrderRejected, match="base unit"):
            await venue.submit(intent(wallet, Side.SELL, bonk, "0.000001", "dust"))


async def test_the_spend_policy_sees_the_transactions_own_numbers_before_signing() -> None:
    """before_sign receives the priority fee the transaction itself will pay (from its
    compute-budget instructions, within the cap sent to Jupiter) and the quote's price
    impact; a policy refusal raised there propagates and nothing is signed."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        journal = Journal(env.events)
        policy = SpendPolicy(
            quote_asset="SOL", max_per_order=None, max_per_day=None, max_priority_fee_lamports=1_000
        )
        seen: list[Prepared] = []

        async def before_sign(order: OrderIntent, prepared: Prepared) -> None:
            seen.append(prepared)
            violation = check(
                policy,
                order,
                spent_today=Decimal(0),
                price_impact=prepared.price_impact,
                priority_fee=prepared.priority_fee_lamports,
            )
            if violation is not None:
                raise violation.error()

        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox), before_sign=before_sign)
        with pytest.raises(SpendRefused) as refused:
            await venue.submit(intent(wallet, Side.BUY, bonk, "1"))
        assert refused.value.code == "POLICY_MAX_PRIORITY_FEE"
        assert journal.rows == [] and env.rpc_proxy.rpc_calls("sendTransaction") == []
        prepared = seen[0]
        swap = env.jup_proxy.paths("/swap/v1/swap")[0].body
        cap = swap["prioritizationFeeLamports"]["priorityLevelWithMaxLamports"]
        assert cap == {"maxLamports": 1_000_000, "priorityLevel": "veryHigh"}
        assert swap["dynamicComputeUnitLimit"] is True and swap["wrapAndUnwrapSol"] is True
        assert prepared.priority_fee_lamports == -(
            -prepared.compute_unit_limit * prepared.compute_unit_price_micro_lamports // 10**6
        )
        assert 1_000 < prepared.priority_fee_lamports <= 1_000_000
        assert prepared.price_impact == Decimal(prepared.quote.raw["priceImpactPct"])
        assert prepared.price_impact > 0


async def test_two_step_prepare_then_submit_uses_the_checked_transaction() -> None:
    """A wallet may prepare, check the numbers itself, then submit the prepared swap: the
    transaction it checked is the one signed (same blockhash), and it fills."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        order = intent(wallet, Side.BUY, env.mint("WIF"), "1")
        prepared = await venue.prepare(order)
        assert prepared.network_fee_lamports == (
            prepared.signature_fee_lamports + prepared.priority_fee_lamports + ATA_RENT
        )
        status = await venue.submit(order, prepared=prepared)
        assert status.state is OrderState.FILLED
        assert journal.attempts()[0].blockhash == prepared.blockhash
        assert len(env.jup_proxy.paths("/swap/v1/swap")) == 1


async def test_insufficient_funds_are_failed_before_signing() -> None:
    """A buy larger than the wallet's SOL and a sell of tokens it does not hold are FAILED
    with the numbers, unsigned."""
    async with jupiter_env() as env:
        wallet = await env.wallet(1)
        bonk = env.mint("BONK")
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        buy = await venue.submit(intent(wallet, Side.BUY, bonk, "5", "big"))
        assert buy.state is OrderState.FAILED and "insufficient SOL" in (buy.reason or "")
        sell = await venue.submit(intent(wallet, Side.SELL, bonk, "10", "none"))
        assert sell.state is OrderState.FAILED and "insufficient" in (sell.reason or "")
        assert journal.rows == []


def _drain(env: JupEnv, wallet: Keypair, keep: int) -> None:
    """Move all but ``keep`` lamports out of ``wallet`` in a transaction that lands now."""
    balance = env.ledger.balance(wallet.pubkey())
    ix = transfer(
        TransferParams(
            from_pubkey=wallet.pubkey(),
            to_pubkey=Keypair().pubkey(),
            lamports=balance - keep - 5_000,
        )
    )
    blockhash, _ = env.ledger.latest_blockhash()
    env.ledger.submit(signed(wallet, [ix], blockhash))


async def test_a_swap_that_would_fail_is_refused_at_preflight_for_free() -> None:
    """The wallet's SOL leaves between prepare and send: the node's preflight refuses the
    first send, the intent is FAILED with the simulation's error, and no fee was paid."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)

        async def drain(_order: OrderIntent, _prepared: Prepared) -> None:
            _drain(env, wallet, keep=100_000_000)

        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox), before_sign=drain)
        status = await venue.submit(intent(wallet, Side.BUY, env.mint("BONK"), "1"))
        after = await lamports(env, wallet)
        assert status.state is OrderState.FAILED
        assert "preflight" in (status.reason or "")
        assert after == 100_000_000
        env.ledger.advance(5)
        assert await lamports(env, wallet) == after


async def test_a_swap_that_lands_with_an_error_is_failed_and_reports_the_fee_it_paid() -> None:
    """With preflight skipped, a swap whose SOL left the wallet lands and fails on chain:
    FAILED with the instruction error, no amounts, and SwapResult.fee_paid_lamports equal
    to the SOL the wallet lost (its fee) so the wallet can book it."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)

        async def drain(_order: OrderIntent, _prepared: Prepared) -> None:
            _drain(env, wallet, keep=100_000_000)

        venue = build_venue(
            env,
            wallet,
            journal,
            SlotClock(env.sandbox),
            before_sign=drain,
            settings=SenderSettings(skip_preflight=True, confirm_timeout_s=600),
        )
        status = await venue.submit(intent(wallet, Side.BUY, env.mint("BONK"), "1"))
        assert status.state is OrderState.FAILED
        assert "failed on chain" in (status.reason or "") and "instruction" in (status.reason or "")
        result = await venue.result("i-1")
        assert result is not None and result.fee_paid_lamports > 0
        assert await lamports(env, wallet) == 100_000_000 - result.fee_paid_lamports
        assert status.base_amount == status.quote_amount == status.network_fee == 0


async def test_concurrent_submits_of_one_intent_execute_once() -> None:
    """Three concurrent submits of the same id share one execution: one attempt, one
    swap, three identical answers; an id never seen is NOT_FOUND."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        order = intent(wallet, Side.BUY, env.mint("BONK"), "1")
        answers = await asyncio.gather(*(venue.submit(order) for _ in range(3)))
        assert {a.state for a in answers} == {OrderState.FILLED}
        assert len({a.tx_id for a in answers}) == 1
        assert len(journal.rows) == 1
        assert (await venue.status("nope")).state is OrderState.NOT_FOUND


async def test_a_busy_service_is_retried_with_backoff_inside_submit() -> None:
    """Jupiter answers 503 twice and 429 (Retry-After: 2) once before serving: the
    venue's client waits (backoff, then at least the Retry-After) and the buy fills."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        answers = [
            web.json_response({"error": "busy"}, status=503),
            web.json_response({"error": "busy"}, status=503),
            web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "2"}),
        ]

        async def busy(call: Call) -> web.Response | None:
            if call.path.startswith("/swap/v1/quote") and answers:
                return answers.pop(0)
            return None

        env.jup_proxy.hooks.append(busy)
        waits = SleepLog()
        venue = build_venue(
            env, wallet, Journal(env.events), SlotClock(env.sandbox), client_sleeps=waits
        )
        status = await venue.submit(intent(wallet, Side.BUY, env.mint("BONK"), "1"))
        assert status.state is OrderState.FILLED
        assert waits.waits == [0.25, 0.5, 2.0]


async def test_quote_prices_the_order_the_venue_would_place() -> None:
    """quote() of a buy prices the SOL left after the fee reserve and reports Jupiter's
    price impact; a sell's quote is net of the reserved network fee."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        venue = build_venue(env, wallet, Journal(env.events), SlotClock(env.sandbox))
        buy = await venue.quote(Side.BUY, bonk, Decimal(1))
        reserve = 10_000 + 1_000_000 + ATA_RENT
        assert buy.network_fee == Decimal(reserve).scaleb(-9)
        assert buy.quote_amount == 1
        asked = env.jup_proxy.paths("/swap/v1/quote")[-1].path
        assert f"amount={10**9 - reserve}" in asked
        assert buy.price == Decimal(10**9 - reserve).scaleb(-9) / buy.base_amount
        assert 0 < buy.price_impact < 0.01
        sell = await venue.quote(Side.SELL, bonk, buy.base_amount)
        assert sell.quote_amount < buy.quote_amount


async def test_a_node_outage_after_sending_is_unknown_then_resolved_by_status() -> None:
    """The RPC node goes down right after the swap was sent: submit does not raise and
    does not sign again — it answers UNKNOWN once its wait runs out; when the node is
    back, status finds the signature landed and books it."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        down = {"on": False}

        async def outage(call: Call) -> web.Response | None:
            if call.rpc_method == "sendTransaction":
                down["on"] = True
                return None  # this one still reaches the node
            return web.Response(status=503, text="down") if down["on"] else None

        env.rpc_proxy.hooks.append(outage)
        journal = Journal(env.events)
        venue = build_venue(
            env,
            wallet,
            journal,
            SlotClock(env.sandbox),
            settings=SenderSettings(poll_interval_s=0.5, confirm_timeout_s=5.0),
        )
        before = await lamports(env, wallet)
        status = await venue.submit(intent(wallet, Side.BUY, bonk, "1"))
        assert status.state is OrderState.UNKNOWN
        assert status.tx_id == journal.signatures()[0] and len(journal.rows) == 1
        down["on"] = False
        env.rpc_proxy.hooks.clear()
        booked = await venue.status("i-1")
        assert booked.state is OrderState.FILLED
        assert await lamports(env, wallet) == before - int(booked.quote_amount.scaleb(9))
        assert len(journal.rows) == 1 and len(set(env.rpc_proxy.sent_signatures())) == 1


async def test_a_lossy_network_still_lands_each_swap_once() -> None:
    """With the sandbox dropping 70 % of sends (seeded), three buys and a sell each land
    exactly once: more broadcasts than signatures, one journaled attempt per intent, and
    the wallet's SOL and BONK equal the sum of the booked amounts."""
    async with jupiter_env(drop_rate=0.7, seed=7) as env:
        wallet = await env.wallet(10)
        bonk = env.mint("BONK")
        journal = Journal(env.events)
        venue = build_venue(env, wallet, journal, SlotClock(env.sandbox))
        start = await lamports(env, wallet)
        spent = Decimal(0)
        bought = Decimal(0)
        for n in range(3):
            status = await venue.submit(intent(wallet, Side.BUY, bonk, "0.5", f"b{n}"))
            assert status.state is OrderState.FILLED, status.reason
            spent += status.quote_amount
            bought += status.base_amount
        sold = await venue.submit(intent(wallet, Side.SELL, bonk, str(bought / 2), "s"))
        assert sold.state is OrderState.FILLED, sold.reason
        assert len(journal.rows) == 4
        assert len(env.rpc_proxy.sent_signatures()) > 4
        assert await lamports(env, wallet) == start - int((spent - sold.quote_amount).scaleb(9))
        assert token_units(env, wallet, bonk) == int((bought - sold.base_amount).scaleb(5))
