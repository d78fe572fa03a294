"""The EVM venue's pure parts: fees, replacement bumps, revert decoding, log parsing,
journal records and configuration (no node needed)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgpack
import pytest
from eth_abi.abi import encode
from eth_account import Account
from pydantic import ValidationError
from web3 import AsyncHTTPProvider, AsyncWeb3

from valux.schema.evm_abi import DEPOSIT_TOPIC, TRANSFER_TOPIC, WITHDRAWAL_TOPIC
from valux.venues.uniswap import (
    Attempt,
    Fees,
    FeeSettings,
    NotStarted,
    SenderSettings,
    SignerMismatch,
    TxSender,
    UniswapConfig,
    bumped,
    decode_revert,
    fees_from_history,
    token_flows,
)
from valux.venues.uniswap.errors import explain
from valux.venues.uniswap.fees import gas_with_margin

GWEI = 10**9
WALLET = "0x1111111111111111111111111111111111111111"
OTHER = "0x2222222222222222222222222222222222222222"
TOKEN = "0x3333333333333333333333333333333333333333"
WETH = "0x4444444444444444444444444444444444444444"


def test_fees_take_the_median_tip_and_twice_the_next_base_fee() -> None:
    """Priority = median of the per-block percentile rewards (floored); max fee = 2 × the
    next block's base fee (the extra last entry of baseFeePerGas) + priority. Hex strings
    (raw RPC) and ints (web3-formatted) read the same."""
    history = {
        "baseFeePerGas": [GWEI, GWEI, 2 * GWEI],
        "reward": [[hex(3 * GWEI)], [hex(1 * GWEI)], [hex(2 * GWEI)]],
    }
    fees = fees_from_history(history, FeeSettings())
    assert fees == Fees(4 * GWEI + 2 * GWEI, 2 * GWEI)
    as_ints = {"baseFeePerGas": [GWEI, 2 * GWEI], "reward": [[3 * GWEI], [GWEI], [2 * GWEI]]}
    assert fees_from_history(as_ints, FeeSettings()) == fees
    quiet = {"baseFeePerGas": ["0x5"], "reward": [[0], [0]]}
    floor = FeeSettings().min_priority_fee_wei
    assert fees_from_history(quiet, FeeSettings()) == Fees(10 + floor, floor)
    capped = FeeSettings(max_priority_fee_wei=GWEI // 2)
    assert fees_from_history(history, capped).max_priority_fee_per_gas == GWEI // 2
    with pytest.raises(ValueError):
        fees_from_history({"baseFeePerGas": []}, FeeSettings())


def test_a_replacement_raises_both_fees_by_at_least_ten_percent() -> None:
    """bumped(): each fee ≥ 110 % of the previous (rounded up, +1 wei at least) and never
    below fresh fees; the tip never exceeds the max fee."""
    previous = Fees(100 * GWEI, 3 * GWEI)
    low_fresh = Fees(GWEI, GWEI)
    again = bumped(previous, low_fresh)
    assert again == Fees(110 * GWEI, 3 * GWEI + 3 * GWEI // 10)
    high_fresh = Fees(300 * GWEI, 5 * GWEI)
    assert bumped(previous, high_fresh) == high_fresh
    tiny = bumped(Fees(1, 1), Fees(1, 1))
    assert tiny.max_fee_per_gas >= 2 and tiny.max_priority_fee_per_gas >= 2
    assert tiny.max_priority_fee_per_gas <= tiny.max_fee_per_gas
    with pytest.raises(ValidationError):
        FeeSettings(replacement_bump=Decimal("0.05"))
    with pytest.raises(ValueError):
        Fees(1, 2)


def test_the_gas_limit_carries_the_margin() -> None:
    """estimate × (1 + margin), rounded up; a non-positive estimate is refused."""
    assert gas_with_margin(100_000, Decimal("0.25")) == 125_000
    assert gas_with_margin(3, Decimal("0.25")) == 4
    with pytest.raises(ValueError):
        gas_with_margin(0, Decimal("0.25"))


def test_revert_data_is_decoded_into_a_reason() -> None:
    """Error(string) gives its text; Panic names its code; a custom error shows its
    selector; empty data says so; Uniswap's terse strings get a gloss."""
    error = "0x08c379a0" + encode(["string"], ["Too little received"]).hex()
    assert decode_revert(error) == "Too little received"
    assert decode_revert(bytes.fromhex(error[2:])) == "Too little received"
    panic = "0x4e487b71" + encode(["uint256"], [0x11]).hex()
    assert decode_revert(panic) == "panic 0x11 (arithmetic overflow or underflow)"
    assert decode_revert("0xdeadbeef") == "custom error 0xdeadbeef"
    assert decode_revert("0x") == "reverted without a reason"
    assert decode_revert(None) == "reverted without a reason"
    assert "undecodable" in decode_revert("0x08c379a0ff")
    assert "balance or allowance" in explain("STF")
    assert explain("something else") == "something else"


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address[2:].lower()


def _log(address: str, topics: list[str], data: str) -> dict[str, Any]:
    return {"address": address, "topics": topics, "data": data}


def test_token_flows_count_what_left_and_reached_the_wallet() -> None:
    """Transfers from and to the wallet are summed per token (a self-transfer on both
    sides); ERC-721 Transfers (4 topics) are skipped; Deposit/Withdrawal count only when
    WETH emitted them."""
    logs = [
        _log(TOKEN, [TRANSFER_TOPIC, _topic(WALLET), _topic(OTHER)], _word(5)),
        _log(TOKEN, [TRANSFER_TOPIC, _topic(WALLET), _topic(OTHER)], _word(7)),
        _log(WETH, [TRANSFER_TOPIC, _topic(OTHER), _topic(WALLET)], _word(11)),
        _log(WETH, [TRANSFER_TOPIC, _topic(WALLET), _topic(WALLET)], _word(1)),
        _log(TOKEN, [TRANSFER_TOPIC, _topic(OTHER), _topic(WALLET), _word(9)], "0x"),
        _log(WETH, [WITHDRAWAL_TOPIC, _topic(OTHER)], _word(13)),
        _log(WETH, [DEPOSIT_TOPIC, _topic(WALLET)], _word(17)),
        _log(TOKEN, [WITHDRAWAL_TOPIC, _topic(OTHER)], _word(99)),  # not WETH: ignored
        _log(TOKEN, [], "0x"),
    ]
    flows = token_flows(logs, WALLET.lower(), weth=WETH)
    checksum = AsyncWeb3.to_checksum_address
    assert flows.sent == {checksum(TOKEN): 12, checksum(WETH): 1}
    assert flows.received == {checksum(WETH): 12}
    assert flows.withdrawals == {checksum(OTHER): 13}
    assert flows.deposits == {checksum(WALLET): 17}
    assert flows.net(WETH) == 11 and flows.net(TOKEN) == -12


def test_an_attempt_round_trips_through_a_msgpack_journal() -> None:
    """The raw_fields a sender reports are msgpack-safe (wei as decimal strings beyond 64
    bits) and Attempt.from_journal reads them back with their fees and call."""
    fields = {
        "kind": "swap",
        "chain_id": 42161,
        "to": OTHER,
        "data": "0xabcdef",
        "value": str(10**21),
        "gas": 200_000,
        "nonce": 7,
        "max_fee_per_gas": str(2 * GWEI),
        "max_priority_fee_per_gas": str(GWEI),
        "raw": "0x02f8",
        "replaces": None,
        "sent_block": 12,
        "signed_at": 1.5,
        "context": {"side": "buy", "amount_in": str(10**21)},
    }
    intent_id, tx_hash, nonce, raw = msgpack.unpackb(msgpack.packb(["i-1", "0xABC", 7, fields]))
    attempt = Attempt.from_journal(intent_id, tx_hash, nonce, raw)
    assert attempt.tx_hash == "0xabc" and attempt.kind == "swap" and attempt.nonce == 7
    assert attempt.fees == Fees(2 * GWEI, GWEI)
    assert attempt.call.value == 10**21 and attempt.call.gas == 200_000
    assert attempt.context["side"] == "buy"
    assert attempt.journal_entry() == ("i-1", "0xabc", 7, raw)


def test_the_config_rejects_what_cannot_work() -> None:
    """Unknown fields, bad addresses, native ETH with a stablecoin quote and bad slippage
    are refused; from_sandbox reads sandbox.json's keys."""
    base = {"router": OTHER, "quoter": OTHER, "weth": WETH, "quote_token": WETH}
    config = UniswapConfig(**base)
    assert config.chain_id == 42161 and config.fee_tiers == (500, 3000, 10000)
    assert config.weth == AsyncWeb3.to_checksum_address(WETH)
    for bad in (
        {"surprise": 1},
        {"router": "0x12"},
        {"native_eth": True, "quote_token": TOKEN},
        {"slippage_bps": 10_000},
        {"fee_tiers": ()},
    ):
        with pytest.raises(ValidationError):
            UniswapConfig(**{**base, **bad})
    description = {
        "chain_id": 42161,
        "router": OTHER,
        "quoter": OTHER,
        "evm_tokens": {"WETH": WETH, "USDC": TOKEN},
        "evm_factory": WALLET,
    }
    usdc = UniswapConfig.from_sandbox(description, quote="USDC", slippage_bps=30)
    assert usdc.quote_symbol == "USDC" and usdc.slippage_bps == 30
    assert usdc.quote_token == AsyncWeb3.to_checksum_address(TOKEN)


def test_a_sender_signs_nothing_before_start_or_for_another_address() -> None:
    """Before start() the sender is not ready (NotStarted); a signer for another address
    is refused (SignerMismatch) — both before any node call."""
    w3 = AsyncWeb3(AsyncHTTPProvider("http://127.0.0.1:9"))
    account = Account.create()
    sender = TxSender(
        w3,
        chain_id=42161,
        address=account.address,
        on_attempt=_never,
        settings=SenderSettings(),
    )
    assert not sender.started and sender.next_nonce is None
    with pytest.raises(NotStarted):
        sender.check_ready(account)
    sender._verified_chain_id, sender._next_nonce = 42161, 0  # as after a start
    with pytest.raises(SignerMismatch):
        sender.check_ready(Account.create())
    assert sender.check_ready(account) == 42161


async def _never(*_: Any) -> None:
    raise AssertionError("nothing may be journaled")
