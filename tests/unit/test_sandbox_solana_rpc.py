"""The sandbox's Solana JSON-RPC, driven by solana-py's AsyncClient as production drives it.

Time is the ledger's manual slot clock (``advance``) unless a test runs the real one, so
every expectation about landing, expiry and confirmation is exact.
"""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
)

from tests.unit.sandbox_support import (
    SOL,
    fresh_blockhash,
    funded,
    raw_rpc,
    rpc_env,
    signed,
    status_of,
    transfer_tx,
)
from valux.sandbox.ledger import LedgerConfig, SolanaLedger
from valux.sandbox.spl import b58encode, compute_budget_of, memo

NO_PREFLIGHT = TxOpts(skip_preflight=True)


async def test_airdrop_lands_and_balance_reads_it() -> None:
    """requestAirdrop returns a real signature whose status is known and the balance moved."""
    async with rpc_env() as env:
        wallet = Keypair()
        sig = (await env.client.request_airdrop(wallet.pubkey(), 3 * SOL)).value
        status = await status_of(env.client, sig)
        assert status is not None and status.err is None
        assert (await env.client.get_balance(wallet.pubkey())).value == 3 * SOL
        assert await env.client.is_connected()


async def test_transfer_confirms_through_the_commitment_levels() -> None:
    """A landed transfer is processed, then confirmed one slot later, finalized 32 later."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        sig = (await env.client.send_transaction(transfer_tx(payer, to, SOL, blockhash))).value
        status = await status_of(env.client, sig)
        assert status.confirmation_status == TransactionConfirmationStatus.Processed
        assert status.confirmations == 0
        env.ledger.advance(1)
        status = await status_of(env.client, sig)
        assert status.confirmation_status == TransactionConfirmationStatus.Confirmed
        env.ledger.advance(31)
        status = await status_of(env.client, sig)
        assert status.confirmation_status == TransactionConfirmationStatus.Finalized
        assert status.confirmations is None
        assert (await env.client.get_balance(to)).value == SOL
        assert (await env.client.get_balance(payer.pubkey())).value == 9 * SOL - 5_000


async def test_get_transaction_reports_fee_and_balances_only_once_confirmed() -> None:
    """getTransaction is null while only processed, then carries fee and pre/post balances;
    a v0 transaction needs maxSupportedTransactionVersion (-32015 without it)."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        sig = (await env.client.send_transaction(transfer_tx(payer, to, SOL, blockhash))).value
        assert (await env.client.get_transaction(sig, "json", Confirmed, 0)).value is None
        env.ledger.advance(1)
        got = (await env.client.get_transaction(sig, "json", Confirmed, 0)).value
        assert got is not None
        assert (await env.client.get_transaction(sig, "json", Finalized, 0)).value is None
        meta = got.transaction.meta
        assert meta.fee == 5_000 and meta.err is None
        assert meta.pre_balances[:2] == [10 * SOL, 0]
        assert meta.post_balances[:2] == [9 * SOL - 5_000, SOL]
        assert got.transaction.version == 0
        as_base64 = await raw_rpc(
            env.rpc.url,
            "getTransaction",
            [
                str(sig),
                {
                    "encoding": "base64",
                    "commitment": "confirmed",
                    "maxSupportedTransactionVersion": 0,
                },
            ],
        )
        data, encoding = as_base64["result"]["transaction"]
        assert encoding == "base64"
        assert VersionedTransaction.from_bytes(base64.b64decode(data)).signatures[0] == sig
        raw = await raw_rpc(env.rpc.url, "getTransaction", [str(sig), {"commitment": "confirmed"}])
        assert raw["error"]["code"] == -32015
        processed = await raw_rpc(
            env.rpc.url,
            "getTransaction",
            [str(sig), {"commitment": "processed", "maxSupportedTransactionVersion": 0}],
        )
        assert processed["error"]["code"] == -32602


async def test_replay_of_a_landed_transaction_is_refused() -> None:
    """Sending the same signed bytes again fails preflight with AlreadyProcessed; with
    preflight skipped it is accepted but never lands twice."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        tx = transfer_tx(payer, to, SOL, blockhash)
        await env.client.send_transaction(tx)
        with pytest.raises(RPCException) as caught:
            await env.client.send_transaction(tx)
        failure = caught.value.args[0]
        assert failure.message == (
            "Transaction simulation failed: This transaction has already been processed"
        )
        assert failure.data.err == TransactionErrorFieldless.AlreadyProcessed
        await env.client.send_transaction(tx, NO_PREFLIGHT)
        env.ledger.advance(2)
        assert (await env.client.get_balance(to)).value == SOL


async def test_blockhash_is_valid_for_150_blocks_then_refused() -> None:
    """A blockhash is accepted up to its lastValidBlockHeight and refused one block later with
    BlockhashNotFound; getLatestBlockhash's lastValidBlockHeight says exactly when."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, last_valid = await fresh_blockhash(env.client)
        height = (await env.client.get_block_height(Processed)).value
        assert last_valid == height + 150
        env.ledger.advance(150)
        assert (await env.client.get_block_height(Processed)).value == last_valid
        valid = await raw_rpc(env.rpc.url, "isBlockhashValid", [str(blockhash)])
        assert valid["result"]["value"] is True
        await env.client.send_transaction(transfer_tx(payer, to, SOL, blockhash))
        env.ledger.advance(1)
        valid = await raw_rpc(env.rpc.url, "isBlockhashValid", [str(blockhash)])
        assert valid["result"]["value"] is False
        with pytest.raises(RPCException) as caught:
            await env.client.send_transaction(transfer_tx(payer, to, 2 * SOL, blockhash))
        failure = caught.value.args[0]
        assert failure.message == "Transaction simulation failed: Blockhash not found"
        assert failure.data.err == TransactionErrorFieldless.BlockhashNotFound
        assert (await env.client.get_balance(to)).value == SOL


async def test_finalized_blockhash_lags_the_processed_one() -> None:
    """getLatestBlockhash at finalized answers the block 32 behind, with its own validity."""
    async with rpc_env() as env:
        env.ledger.advance(40)
        processed = (await env.client.get_latest_blockhash(Processed)).value
        finalized = (await env.client.get_latest_blockhash(Finalized)).value
        assert processed.blockhash != finalized.blockhash
        assert processed.last_valid_block_height - finalized.last_valid_block_height == 32
        slot = (await env.client.get_slot(Processed)).value
        assert (await env.client.get_slot(Finalized)).value == slot - 32


async def test_dropped_transaction_vanishes_until_rebroadcast() -> None:
    """With drop rate 1 a sent transaction is acknowledged and never lands; rebroadcasting
    the same bytes once drops stop lands it, under the same signature."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        tx = transfer_tx(payer, to, SOL, blockhash)
        env.ledger.drop_rate = 1.0
        sig = (await env.client.send_transaction(tx)).value
        env.ledger.advance(10)
        assert await status_of(env.client, sig) is None
        assert (await env.client.get_balance(to)).value == 0
        env.ledger.drop_rate = 0.0
        again = (await env.client.send_transaction(tx)).value
        assert again == sig
        assert (await status_of(env.client, sig)).err is None
        assert (await env.client.get_balance(to)).value == SOL


async def test_partial_drop_rate_is_deterministic_under_the_seed() -> None:
    """Two ledgers with the same seed drop the same sends; a rebroadcast loop gets through."""

    async def pattern(seed: int) -> list[bool]:
        async with rpc_env(seed=seed, drop_rate=0.5) as env:
            payer = await funded(env)
            blockhash, _ = await fresh_blockhash(env.client)
            landed: list[bool] = []
            for i in range(12):
                tx = transfer_tx(
                    payer, Keypair.from_seed(bytes([i + 1] * 32)).pubkey(), SOL // 100, blockhash
                )
                sig = (await env.client.send_transaction(tx)).value
                landed.append(await status_of(env.client, sig) is not None)
            return landed

    first, second = await pattern(7), await pattern(7)
    assert first == second
    assert any(first) and not all(first)

    async with rpc_env(seed=3, drop_rate=0.5) as env:
        payer = await funded(env)
        blockhash, _ = await fresh_blockhash(env.client)
        tx = transfer_tx(payer, Keypair().pubkey(), SOL, blockhash)
        for _attempt in range(30):
            sig = (await env.client.send_transaction(tx, NO_PREFLIGHT)).value
            if await status_of(env.client, sig) is not None:
                break
        else:
            pytest.fail("30 rebroadcasts at drop rate 0.5 never landed")


async def test_landing_delay_makes_a_transaction_visible_after_n_slots() -> None:
    """With a landing delay of 3 slots the status stays null for 2 slots and the transaction
    lands in the third, in that slot."""
    async with rpc_env(landing_delay_slots=3) as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        sent_at = env.ledger.slot
        sig = (await env.client.send_transaction(transfer_tx(payer, to, SOL, blockhash))).value
        assert env.ledger.pending_count() == 1
        env.ledger.advance(2)
        assert await status_of(env.client, sig) is None
        env.ledger.advance(1)
        status = await status_of(env.client, sig)
        assert status is not None and status.slot == sent_at + 3
        assert (await env.client.get_balance(to)).value == SOL


async def test_transaction_in_flight_past_its_blockhash_never_lands() -> None:
    """A transaction whose blockhash expires before its landing slot is silently dropped."""
    async with rpc_env(landing_delay_slots=10) as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        env.ledger.advance(145)  # the blockhash has 5 blocks left, the landing needs 10
        assert env.ledger.is_blockhash_valid(blockhash)
        sig = (await env.client.send_transaction(transfer_tx(payer, to, SOL, blockhash))).value
        assert env.ledger.pending_count() == 1
        env.ledger.advance(20)
        assert await status_of(env.client, sig) is None
        assert env.ledger.pending_count() == 0
        assert (await env.client.get_balance(to)).value == 0


async def test_failed_execution_lands_with_its_error_and_fee_when_preflight_is_skipped() -> None:
    """Preflight refuses an overdraft with -32002 and the program logs; with preflight
    skipped it lands, charges the fee and reports err as the RPC does."""
    async with rpc_env() as env:
        payer = await funded(env, SOL)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        tx = transfer_tx(payer, to, 5 * SOL, blockhash)
        with pytest.raises(RPCException) as caught:
            await env.client.send_transaction(tx)
        failure = caught.value.args[0]
        assert failure.message == (
            "Transaction simulation failed: "
            "Error processing Instruction 0: custom program error: 0x1"
        )
        assert any("insufficient lamports" in line for line in failure.data.logs)
        sig = (await env.client.send_transaction(tx, NO_PREFLIGHT)).value
        raw = await raw_rpc(env.rpc.url, "getSignatureStatuses", [[str(sig)]])
        entry = raw["result"]["value"][0]
        assert entry["err"] == {"InstructionError": [0, {"Custom": 1}]}
        assert entry["status"] == {"Err": {"InstructionError": [0, {"Custom": 1}]}}
        assert (await env.client.get_balance(payer.pubkey())).value == SOL - 5_000


async def test_wrong_signature_is_refused_with_32003() -> None:
    """A transaction signed by the wrong key fails preflight signature verification."""
    async with rpc_env() as env:
        payer = await funded(env)
        blockhash, _ = await fresh_blockhash(env.client)
        message = MessageV0.try_compile(
            payer.pubkey(),
            [
                transfer(
                    TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1)
                )
            ],
            [],
            blockhash,
        )
        forged = VersionedTransaction.populate(message, [Keypair().sign_message(bytes(message))])
        raw = await raw_rpc(
            env.rpc.url,
            "sendTransaction",
            [base64.b64encode(bytes(forged)).decode(), {"encoding": "base64"}],
        )
        assert raw["error"]["code"] == -32003


async def test_base58_encoding_is_accepted_and_is_the_default() -> None:
    """sendTransaction without an encoding takes base58, as the real RPC does."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        tx = transfer_tx(payer, to, SOL, blockhash)
        raw = await raw_rpc(env.rpc.url, "sendTransaction", [b58encode(bytes(tx))])
        assert raw["result"] == str(tx.signatures[0])
        assert (await env.client.get_balance(to)).value == SOL


async def test_statuses_age_out_of_the_cache_but_history_search_finds_them() -> None:
    """After 300 slots a status is null unless searchTransactionHistory is set."""
    async with rpc_env() as env:
        payer = await funded(env)
        blockhash, _ = await fresh_blockhash(env.client)
        sig = (
            await env.client.send_transaction(
                transfer_tx(payer, Keypair().pubkey(), 1_000_000, blockhash)
            )
        ).value
        env.ledger.advance(301)
        assert (await env.client.get_signature_statuses([sig])).value[0] is None
        status = (await env.client.get_signature_statuses([sig], True)).value[0]
        assert status.confirmation_status == TransactionConfirmationStatus.Finalized


async def test_fee_for_message_counts_signatures_and_priority_fee() -> None:
    """getFeeForMessage = 5,000 per signature + ceil(limit × price / 1e6); null once the
    message's blockhash expired. Landing charges exactly that."""
    async with rpc_env() as env:
        payer = await funded(env)
        env.ledger.advance(1)  # the airdrop (price 0) wrote the payer in the slot before
        blockhash, _ = await fresh_blockhash(env.client)
        ixs = [
            set_compute_unit_limit(10_000),
            set_compute_unit_price(1_500),
            transfer(
                TransferParams(
                    from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL
                )
            ),
        ]
        tx = signed(payer, ixs, blockhash)
        assert (await env.client.get_fee_for_message(tx.message, Processed)).value == 5_015
        budget = compute_budget_of(tx.message.account_keys, tx.message.instructions)
        assert budget.unit_limit == 10_000 and budget.micro_lamports_per_unit == 1_500
        before = (await env.client.get_balance(payer.pubkey())).value
        await env.client.send_transaction(tx)
        assert (await env.client.get_balance(payer.pubkey())).value == before - SOL - 5_015
        fees = (await env.client.get_recent_prioritization_fees([payer.pubkey()])).value
        assert fees[-1].prioritization_fee == 1_500
        env.ledger.advance(151)
        assert (await env.client.get_fee_for_message(tx.message, Processed)).value is None


async def test_account_queries_and_rent() -> None:
    """getAccountInfo (base64), getMultipleAccounts and rent exemption answer real values."""
    async with rpc_env() as env:
        payer = await funded(env, 2 * SOL)
        info = (await env.client.get_account_info(payer.pubkey(), Processed)).value
        assert info is not None and info.lamports == 2 * SOL and info.data == b""
        assert (await env.client.get_account_info(Keypair().pubkey())).value is None
        many = (await env.client.get_multiple_accounts([payer.pubkey(), Keypair().pubkey()])).value
        assert many[0].lamports == 2 * SOL and many[1] is None
        assert (await env.client.get_minimum_balance_for_rent_exemption(165)).value == 2_039_280


async def test_simulate_reports_logs_and_units_without_committing() -> None:
    """simulateTransaction runs the transaction, reports logs and units, changes nothing;
    replaceRecentBlockhash lets an expired transaction simulate and names the new hash."""
    async with rpc_env() as env:
        payer = await funded(env)
        to = Keypair().pubkey()
        blockhash, _ = await fresh_blockhash(env.client)
        tx = signed(
            payer,
            [
                memo("hello"),
                transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=SOL)),
            ],
            blockhash,
        )
        sim = (await env.client.simulate_transaction(tx)).value
        assert sim.err is None and sim.units_consumed > 0
        assert any("Memo" in line for line in sim.logs)
        assert (await env.client.get_balance(to)).value == 0
        env.ledger.advance(151)
        expired = (await env.client.simulate_transaction(tx)).value
        assert expired.err == TransactionErrorFieldless.BlockhashNotFound
        replaced = (await env.client.simulate_transaction(tx, replace_recent_blockhash=True)).value
        assert replaced.err is None
        assert replaced.replacement_blockhash is not None


async def test_protocol_errors_and_batches() -> None:
    """Unknown methods answer -32601, bad params -32602, and a batch answers each item."""
    async with rpc_env() as env:
        assert (await raw_rpc(env.rpc.url, "getNoSuchThing"))["error"]["code"] == -32601
        assert (await raw_rpc(env.rpc.url, "getBalance", ["not-a-key"]))["error"]["code"] == -32602
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "getSlot",
                "params": [{"commitment": "processed"}],
            },
        ]
        async with aiohttp.ClientSession() as session:
            async with session.post(env.rpc.url, json=batch) as resp:
                answers = await resp.json()
            async with session.post(env.rpc.url, data=b"{nope") as resp:
                parse_error = await resp.json()
        assert answers[0] == {"jsonrpc": "2.0", "result": "ok", "id": 1}
        assert answers[1]["result"] == env.ledger.slot
        assert parse_error["error"]["code"] == -32700
        assert env.rpc.calls["getHealth"] == 1


async def test_background_clock_confirms_a_send_for_solana_py() -> None:
    """With the slot clock running, send_transaction(skip_confirmation=False) returns once
    the transaction reached the client's commitment, bounded by lastValidBlockHeight."""
    async with rpc_env(slot_ms=5.0) as env:
        client = AsyncClient(env.rpc.url, commitment=Confirmed)
        async with client:
            payer = await funded(env)
            blockhash, last_valid = await fresh_blockhash(client)
            start = env.ledger.slot
            await asyncio.sleep(0.05)
            assert env.ledger.slot > start
            opts = TxOpts(skip_confirmation=False, last_valid_block_height=last_valid)
            to = Keypair().pubkey()
            sig = (
                await client.send_transaction(transfer_tx(payer, to, SOL, blockhash), opts)
            ).value
            status = await status_of(client, sig)
            assert status.confirmation_status in (
                TransactionConfirmationStatus.Confirmed,
                TransactionConfirmationStatus.Finalized,
            )


def test_same_seed_same_keys_and_blockhashes() -> None:
    """Keypairs derived from the seed and the blockhash sequence are reproducible."""
    a = SolanaLedger(LedgerConfig(seed=11, slot_ms=None))
    b = SolanaLedger(LedgerConfig(seed=11, slot_ms=None))
    c = SolanaLedger(LedgerConfig(seed=12, slot_ms=None))
    assert a.keypair("pool").pubkey() == b.keypair("pool").pubkey() != c.keypair("pool").pubkey()
    a.advance(5)
    b.advance(5)
    assert a.latest_blockhash() == b.latest_blockhash()
