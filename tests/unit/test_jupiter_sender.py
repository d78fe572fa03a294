"""The Solana sender on its own (signing, journal-before-send, landed/pending/expired by
signature) against the sandbox's ledger and RPC, and the pure pieces of the Jupiter venue:
booking from transaction metadata, compute budgets, error texts, journal round trips."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.null_signer import NullSigner
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from tests.unit.jupiter_support import Journal, SlotClock, jupiter_env
from valux.sandbox.ledger import Commitment
from valux.sandbox.spl import NATIVE_MINT
from valux.sandbox.spl import associated_token_address as sandbox_ata
from valux.venues.jupiter import (
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    WSOL_MINT,
    Attempt,
    JupiterUnavailable,
    Landing,
    ResignRefused,
    RpcError,
    SenderSettings,
    SignatureMissing,
    SignerMismatch,
    SolanaRpc,
    SolanaSender,
    associated_token_address,
    compute_budget,
    read_holdings,
    should_retry,
    swap_flows,
    tx_error_reason,
)
from valux.venues.jupiter.errors import JUPITER_PROGRAM_ID


def _unsigned(payer: Pubkey, ixs: list[Instruction], blockhash: Hash, *others: Keypair) -> str:
    message = MessageV0.try_compile(payer, ixs, [], blockhash)
    signers: list[Any] = [NullSigner(payer), *others]
    return base64.b64encode(bytes(VersionedTransaction(message, signers))).decode()


def _pay(source: Pubkey, lamports: int = 1_000_000) -> Instruction:
    return transfer(
        TransferParams(from_pubkey=source, to_pubkey=Keypair().pubkey(), lamports=lamports)
    )


def test_program_ids_parse() -> None:
    """Every program id the venue names is a valid public key."""
    for key in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM, WSOL_MINT, JUPITER_PROGRAM_ID):
        assert str(Pubkey.from_string(key)) == key
    owner = Keypair().pubkey()
    assert associated_token_address(str(owner), WSOL_MINT) == str(sandbox_ata(owner, NATIVE_MINT))


async def test_signing_keeps_other_signatures_and_refuses_what_cannot_land() -> None:
    """The wallet's slot is filled and a co-signer's signature kept (both verify); a
    transaction paid by someone else, one missing a co-signer's signature, or a signer
    for another key is refused before anything is journaled."""
    async with jupiter_env() as env:
        wallet, pool = Keypair(), Keypair()
        journal = Journal(env.events)
        sender = SolanaSender(
            env.rpc(), address=str(wallet.pubkey()), on_attempt=journal.on_attempt
        )
        blockhash, last_valid = env.ledger.latest_blockhash()
        both = _unsigned(
            wallet.pubkey(), [_pay(wallet.pubkey()), _pay(pool.pubkey())], blockhash, pool
        )
        attempt = sender.sign("i", both, wallet, last_valid_block_height=last_valid)
        tx = VersionedTransaction.from_bytes(attempt.raw)
        assert tx.verify_with_results() == [True, True]
        original = VersionedTransaction.from_bytes(base64.b64decode(both))
        assert tx.signatures[1] == original.signatures[1]
        assert str(tx.signatures[0]) == attempt.signature

        someone = Keypair()
        paid_by_other = _unsigned(someone.pubkey(), [_pay(someone.pubkey())], blockhash)
        with pytest.raises(SignatureMissing, match="paid by"):
            sender.sign("i", paid_by_other, wallet, last_valid_block_height=last_valid)
        message = MessageV0.try_compile(
            wallet.pubkey(), [_pay(wallet.pubkey()), _pay(pool.pubkey())], [], blockhash
        )
        unsigned_pool = VersionedTransaction(
            message, [NullSigner(wallet.pubkey()), NullSigner(pool.pubkey())]
        )
        with pytest.raises(SignatureMissing, match=str(pool.pubkey())):
            sender.sign("i", bytes(unsigned_pool), wallet, last_valid_block_height=last_valid)
        with pytest.raises(SignerMismatch):
            sender.sign("i", both, Keypair(), last_valid_block_height=last_valid)
        with pytest.raises(SignatureMissing, match="decoded"):
            sender.sign("i", "not base64!", wallet, last_valid_block_height=last_valid)
        assert journal.rows == []


async def test_landed_means_confirmed_and_an_error_is_reported() -> None:
    """A sent transaction is PENDING while only processed, LANDED once confirmed; with
    landed_commitment=finalized it waits for finalization. A transaction that lands with
    an instruction error is LANDED with that error."""
    async with jupiter_env() as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        sender = SolanaSender(
            env.rpc(), address=str(wallet.pubkey()), on_attempt=journal.on_attempt
        )
        blockhash, last_valid = env.ledger.latest_blockhash()
        await sender.send_new(
            "a",
            _unsigned(wallet.pubkey(), [_pay(wallet.pubkey())], blockhash),
            wallet,
            last_valid_block_height=last_valid,
        )
        assert (await sender.resolve("a")).state is Landing.PENDING  # type: ignore[union-attr]
        env.ledger.advance(1)
        found = await sender.resolve("a")
        assert found is not None and found.succeeded and found.confirmation == "confirmed"

        strict = SolanaSender(
            env.rpc(),
            address=str(wallet.pubkey()),
            on_attempt=journal.on_attempt,
            attempts=[Attempt.from_journal(*journal.rows[0])],
            settings=SenderSettings(landed_commitment="finalized"),
        )
        assert (await strict.resolve("a")).state is Landing.PENDING  # type: ignore[union-attr]
        env.ledger.advance(32)
        assert (await strict.resolve("a")).state is Landing.LANDED  # type: ignore[union-attr]

        too_much = _pay(wallet.pubkey(), 10**12)
        skip = SolanaSender(
            env.rpc(),
            address=str(wallet.pubkey()),
            on_attempt=journal.on_attempt,
            settings=SenderSettings(skip_preflight=True),
        )
        blockhash, last_valid = env.ledger.latest_blockhash()
        await skip.send_new(
            "b",
            _unsigned(wallet.pubkey(), [too_much], blockhash),
            wallet,
            last_valid_block_height=last_valid,
        )
        env.ledger.advance(1)
        failed = await skip.resolve("b")
        assert failed is not None and failed.state is Landing.LANDED and not failed.succeeded
        assert "instruction 0" in tx_error_reason(failed.err)


async def test_expiry_waits_for_the_finalized_height_and_the_blockhash_check() -> None:
    """A dropped transaction is PENDING until the *finalized* block height passes its
    lastValidBlockHeight, then EXPIRED; a lastValidBlockHeight given too low does not
    fool it while the node still accepts the blockhash. A new transaction for the intent
    is refused (ResignRefused, nothing journaled) until the old one is expired."""
    async with jupiter_env(drop_rate=1.0) as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        sender = SolanaSender(
            env.rpc(), address=str(wallet.pubkey()), on_attempt=journal.on_attempt
        )
        blockhash, last_valid = env.ledger.latest_blockhash(Commitment.CONFIRMED)
        tx = _unsigned(wallet.pubkey(), [_pay(wallet.pubkey())], blockhash)
        await sender.send_new("x", tx, wallet, last_valid_block_height=last_valid)
        fresh, fresh_valid = env.ledger.latest_blockhash()
        again = _unsigned(wallet.pubkey(), [_pay(wallet.pubkey())], fresh)
        with pytest.raises(ResignRefused):
            await sender.send_new("x", again, wallet, last_valid_block_height=fresh_valid)
        assert len(journal.rows) == 1

        env.ledger.advance(last_valid - env.ledger.block_height + 1)  # processed height passed
        assert env.ledger.block_height == last_valid + 1
        assert (await sender.resolve("x")).state is Landing.PENDING  # type: ignore[union-attr]
        env.ledger.advance(32)  # now the finalized height passed it too
        assert env.ledger.block_height_at(Commitment.FINALIZED) > last_valid
        assert (await sender.resolve("x")).state is Landing.EXPIRED  # type: ignore[union-attr]

        lying = SolanaSender(env.rpc(), address=str(wallet.pubkey()), on_attempt=journal.on_attempt)
        current, _ = env.ledger.latest_blockhash()
        await lying.send_new(
            "y",
            _unsigned(wallet.pubkey(), [_pay(wallet.pubkey())], current),
            wallet,
            last_valid_block_height=1,
        )
        assert (await lying.resolve("y")).state is Landing.PENDING  # type: ignore[union-attr]

        env.ledger.drop_rate = 0.0
        fresh, fresh_valid = env.ledger.latest_blockhash()
        second = await sender.send_new(
            "x",
            _unsigned(wallet.pubkey(), [_pay(wallet.pubkey())], fresh),
            wallet,
            last_valid_block_height=fresh_valid,
        )
        assert second.number == 2 and second.fields["replaces"] == journal.rows[0][1]


async def test_wait_rebroadcasts_only_at_its_interval_and_never_signs() -> None:
    """While a transaction is dropped, wait() sends the same bytes again every
    rebroadcast_interval_s (not every poll) and stops once it landed; no new signature."""
    async with jupiter_env(drop_rate=1.0) as env:
        wallet = await env.wallet(10)
        journal = Journal(env.events)
        clock = SlotClock(env.sandbox)
        sender = SolanaSender(
            env.rpc(),
            address=str(wallet.pubkey()),
            on_attempt=journal.on_attempt,
            settings=SenderSettings(poll_interval_s=0.5, rebroadcast_interval_s=2.0),
            clock=clock.clock,
            sleep=clock.sleep,
        )
        blockhash, last_valid = env.ledger.latest_blockhash()
        await sender.send_new(
            "r",
            _unsigned(wallet.pubkey(), [_pay(wallet.pubkey())], blockhash),
            wallet,
            last_valid_block_height=last_valid,
        )
        result = await sender.wait("r", timeout_s=6.0)
        assert result.state is Landing.PENDING
        sends = env.rpc_proxy.sent_signatures()
        assert len(sends) == 4 and len(set(sends)) == 1  # first send + every 2 s of 6 s
        env.ledger.drop_rate = 0.0
        assert (await sender.wait("r")).succeeded
        assert len(journal.rows) == 1


def test_journal_entries_round_trip_through_json() -> None:
    """An attempt rebuilt from what on_attempt received (after a JSON round trip, as a
    journal stores it) equals the original, its raw bytes included."""
    fields = {
        "kind": "swap",
        "raw": base64.b64encode(b"\x01" * 100).decode(),
        "number": 2,
        "replaces": "sig-1",
        "fee_payer": "w",
        "signed_at": 1.5,
        "context": {"side": "buy", "amount_in": "123"},
    }
    attempt = Attempt(
        intent_id="i", signature="sig-2", blockhash="bh", last_valid_block_height=7, fields=fields
    )
    stored = json.loads(json.dumps(attempt.journal_entry()))
    back = Attempt.from_journal(*stored)
    assert back == attempt and back.raw == b"\x01" * 100
    assert back.number == 2 and back.context["amount_in"] == "123"


def test_compute_budget_reads_limit_and_price_or_the_defaults() -> None:
    """The limit and µlamport price come from the compute-budget instructions; without
    them the runtime's defaults apply (200,000 units per other instruction, price 0)."""
    payer = Keypair().pubkey()
    blockhash = Hash.default()
    with_budget = MessageV0.try_compile(
        payer,
        [set_compute_unit_limit(36_994), set_compute_unit_price(200_005), _pay(payer)],
        [],
        blockhash,
    )
    assert compute_budget(with_budget) == (36_994, 200_005)
    plain = MessageV0.try_compile(payer, [_pay(payer), _pay(payer)], [], blockhash)
    assert compute_budget(plain) == (400_000, 0)


def _tx_json(
    keys: list[Any],
    pre: list[int],
    post: list[int],
    pre_tokens: list[dict[str, Any]],
    post_tokens: list[dict[str, Any]],
    *,
    fee: int,
    loaded: dict[str, list[str]] | None = None,
    err: Any = None,
) -> dict[str, Any]:
    return {
        "slot": 9,
        "blockTime": 1,
        "transaction": {
            "message": {
                "accountKeys": keys,
                "instructions": [{"programIdIndex": 3, "accounts": [], "data": ""}],
            },
            "signatures": ["s"],
        },
        "meta": {
            "fee": fee,
            "err": err,
            "preBalances": pre,
            "postBalances": post,
            "preTokenBalances": pre_tokens,
            "postTokenBalances": post_tokens,
            "loadedAddresses": loaded or {"writable": [], "readonly": []},
        },
    }


def _tb(index: int, mint: str, owner: str, amount: int, decimals: int) -> dict[str, Any]:
    return {
        "accountIndex": index,
        "mint": mint,
        "owner": owner,
        "programId": TOKEN_PROGRAM,
        "uiTokenAmount": {"amount": str(amount), "decimals": decimals},
    }


def test_swap_flows_split_debit_into_swap_fee_and_rent() -> None:
    """A buy that creates the token account (rent 2,039,280) and whose token account sits
    in a lookup table (jsonParsed-style keys): debit = swap + fee + rent exactly; the
    pool's accounts (other owners) are not the wallet's."""
    wallet, mint, pool = "W", "M", "P"
    keys = [
        {"pubkey": wallet, "signer": True},
        {"pubkey": pool},
        {"pubkey": "vault"},
        {"pubkey": "prog"},
    ]
    loaded = {"writable": ["ata"], "readonly": []}
    pre = [10_000_000_000, 0, 5, 1, 0]
    post = [10_000_000_000 - 1_000_000_000 - 12_000 - 2_039_280, 0, 5, 1, 2_039_280]
    flows = swap_flows(
        _tx_json(
            keys,
            pre,
            post,
            [_tb(2, mint, pool, 900, 5)],
            [_tb(2, mint, pool, 400, 5), _tb(4, mint, wallet, 500, 5)],
            fee=12_000,
            loaded=loaded,
        ),
        wallet,
    )
    assert flows.token_delta(mint) == 500
    assert -flows.liquid_delta == 1_000_000_000 + 12_000 + 2_039_280
    assert flows.rent_delta == 2_039_280 and flows.swap_lamports == 1_000_000_000
    assert flows.decimals[mint] == 5 and flows.programs == ("prog",)


def test_swap_flows_count_wrapped_sol_and_closed_accounts() -> None:
    """A sell paid out in wrapped SOL into the wallet's existing wSOL account, which is
    then closed (its rent and balance return to the wallet): credit = swap − fee, the
    closed account's rent nets to zero."""
    wallet = "W"
    keys = [wallet, "wsol", "tok", "prog"]
    rent = 2_039_280
    pre = [1_000_000, rent + 300, rent, 1]
    post = [1_000_000 + rent + 300 + 700_000 - 5_000, 0, rent, 1]
    flows = swap_flows(
        _tx_json(
            keys,
            pre,
            post,
            [_tb(1, WSOL_MINT, wallet, 300, 9), _tb(2, "M", wallet, 50, 6)],
            [_tb(2, "M", wallet, 0, 6)],
            fee=5_000,
        ),
        wallet,
    )
    assert flows.token_delta("M") == -50
    assert flows.wsol_delta == -300
    # the wallet's liquid SOL (lamports + wSOL) rose by the swap's output minus the fee
    assert flows.liquid_delta == 700_000 - 5_000 + rent
    assert flows.rent_delta == -rent  # the closed account's rent came back
    assert flows.swap_lamports == 700_000


def test_swap_flows_refuse_answers_that_do_not_fit() -> None:
    """No metadata, the wallet absent, or balances that do not match the keys are errors,
    not a wrong booking."""
    good = _tx_json(["W", "x", "y", "p"], [1, 1, 1, 1], [1, 1, 1, 1], [], [], fee=0)
    with pytest.raises(ValueError):
        swap_flows({**good, "meta": None}, "W")
    with pytest.raises(ValueError):
        swap_flows(good, "Z")
    bad = json.loads(json.dumps(good))
    bad["meta"]["postBalances"] = [1]
    with pytest.raises(ValueError):
        swap_flows(bad, "W")


def test_transaction_errors_read_like_sentences() -> None:
    """RPC error values become readable reasons; Jupiter's custom codes are named only
    when the failing instruction is Jupiter's program."""
    assert tx_error_reason("BlockhashNotFound") == "blockhash not found"
    assert tx_error_reason({"InstructionError": [2, {"Custom": 1}]}) == (
        "instruction 2 failed: custom program error 1 (0x1)"
    )
    jupiter = tx_error_reason(
        {"InstructionError": [1, {"Custom": 6001}]}, ("ComputeBudget", JUPITER_PROGRAM_ID)
    )
    assert "slippage tolerance exceeded" in jupiter and JUPITER_PROGRAM_ID in jupiter
    other = tx_error_reason({"InstructionError": [0, {"Custom": 6001}]}, ("Other",))
    assert "slippage" not in other
    assert "insufficient funds" in tx_error_reason({"InstructionError": [0, "InsufficientFunds"]})


async def test_rpc_errors_are_told_apart_and_holdings_read_an_empty_wallet() -> None:
    """An unreachable node is JupiterUnavailable (retryable); a JSON-RPC error answer is
    an RpcError from call() and JupiterUnavailable from a read; a funded wallet with no
    token accounts reads as its lamports and nothing else."""
    async with jupiter_env() as env:
        closed = SolanaRpc(AsyncClient("http://127.0.0.1:9", timeout=1))
        with pytest.raises(JupiterUnavailable) as down:
            await closed.block_height()
        assert should_retry(down.value)
        await closed.client.close()
        rpc = env.rpc()
        with pytest.raises(RpcError) as answered:
            await rpc.call("noSuchMethod")
        assert answered.value.code == -32601
        with pytest.raises(JupiterUnavailable):
            await rpc.read("noSuchMethod")
        wallet = await env.wallet("2.5")
        holdings = await read_holdings(rpc, str(wallet.pubkey()))
        assert holdings.lamports == 2_500_000_000 and holdings.tokens == {}
        assert holdings.balances() == {"SOL": Decimal("2.5")}
        assert holdings.sol_with_wrapped == Decimal("2.5")
        assert await rpc.mint_info(str(wallet.pubkey())) is None
        info = await rpc.mint_info(env.mint("WIF"))
        assert info is not None and info.decimals == 6 and info.program == TOKEN_PROGRAM
