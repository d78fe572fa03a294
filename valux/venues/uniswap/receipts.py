"""What a mined transaction moved, read from its receipt's logs (never from a quote).

- ERC-20 ``Transfer(from, to, value)`` (three topics; ERC-721's four-topic Transfer is
  skipped): per token, what left ``wallet`` (``sent``) and what reached it
  (``received``). A transfer from the wallet to itself counts on both sides.
- WETH9 ``Deposit(dst, wad)`` and ``Withdrawal(src, wad)``, from the WETH contract only:
  per address, what was wrapped and unwrapped — SwapRouter02 wraps the ETH a swap pays
  with and unwraps the WETH it pays out as ETH, so the router's withdrawal is the ETH the
  wallet received (the router forwards it whole in the same call).
- Gas: ``gasUsed × effectiveGasPrice`` wei, paid in ETH whatever the swap did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address

from valux.schema.evm_abi import DEPOSIT_TOPIC, TRANSFER_TOPIC, WITHDRAWAL_TOPIC

__all__ = ["TokenFlows", "gas_paid_wei", "token_flows"]


@dataclass(frozen=True, slots=True)
class TokenFlows:
    """Base-unit amounts a transaction moved for one wallet (checksummed address keys)."""

    sent: Mapping[str, int] = field(default_factory=dict)
    received: Mapping[str, int] = field(default_factory=dict)
    deposits: Mapping[str, int] = field(default_factory=dict)
    """WETH wrapped, by the address that wrapped (``Deposit.dst``)."""
    withdrawals: Mapping[str, int] = field(default_factory=dict)
    """WETH unwrapped, by the address that unwrapped (``Withdrawal.src``)."""

    def net(self, token: str) -> int:
        """Received minus sent of ``token``."""
        key = to_checksum_address(token)
        return self.received.get(key, 0) - self.sent.get(key, 0)


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text if text.startswith("0x") else "0x" + text


def _topic_address(topic: Any) -> str:
    return to_checksum_address("0x" + _hex(topic)[-40:])


def _data_int(data: Any) -> int | None:
    text = _hex(data)[2:]
    if len(text) != 64:
        return None
    return int(text, 16)


def token_flows(logs: Iterable[Mapping[str, Any]], wallet: str, *, weth: str | None) -> TokenFlows:
    """The :class:`TokenFlows` of ``wallet`` in a receipt's ``logs``."""
    me = to_checksum_address(wallet)
    weth_address = to_checksum_address(weth) if weth else None
    sent: dict[str, int] = {}
    received: dict[str, int] = {}
    deposits: dict[str, int] = {}
    withdrawals: dict[str, int] = {}
    for log in logs:
        topics = [_hex(t).lower() for t in log.get("topics") or ()]
        if not topics:
            continue
        token = to_checksum_address(log["address"])
        amount = _data_int(log.get("data", b""))
        if amount is None:
            continue
        if topics[0] == TRANSFER_TOPIC and len(topics) == 3:
            source, target = _topic_address(topics[1]), _topic_address(topics[2])
            if source == me:
                sent[token] = sent.get(token, 0) + amount
            if target == me:
                received[token] = received.get(token, 0) + amount
        elif token == weth_address and len(topics) == 2:
            who = _topic_address(topics[1])
            if topics[0] == DEPOSIT_TOPIC:
                deposits[who] = deposits.get(who, 0) + amount
            elif topics[0] == WITHDRAWAL_TOPIC:
                withdrawals[who] = withdrawals.get(who, 0) + amount
    return TokenFlows(sent, received, deposits, withdrawals)


def gas_paid_wei(receipt: Mapping[str, Any]) -> int:
    """ETH the transaction's sender paid for gas: ``gasUsed × effectiveGasPrice``."""
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
