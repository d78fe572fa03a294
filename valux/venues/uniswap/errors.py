"""The EVM venue's own refusals, and revert data turned into a reason a person can read."""

from __future__ import annotations

from typing import Any, Final

from eth_abi.abi import decode
from web3.exceptions import ContractLogicError, Web3RPCError

from valux.venues.base import OrderRejected, VenueUnavailable

__all__ = [
    "ChainIdMismatch",
    "NotStarted",
    "SendRejected",
    "SignerMismatch",
    "decode_revert",
    "explain",
    "revert_reason",
    "unavailable",
]

_ERROR_SELECTOR: Final = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR: Final = bytes.fromhex("4e487b71")  # Panic(uint256)

_PANICS: Final = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function",
}

_EXPLAINED: Final = {
    "Too little received": "the output fell below amountOutMinimum (slippage bound)",
    "STF": "the router could not take the input tokens (balance or allowance too small)",
    "Transaction too old": "the deadline passed before the transaction was mined",
    "SPL": "the price limit was crossed",
    "AS": "amountSpecified is zero",
    "LOK": "the pool is locked (reentrancy)",
    "Insufficient WETH9": "the router held too little WETH to unwrap",
}
"""Uniswap's short revert strings (periphery TransferHelper, SwapRouter02, pools)."""


class ChainIdMismatch(OrderRejected):
    """The node's ``eth_chainId`` is not the configured chain id: nothing is signed for it."""

    code = "CHAIN_ID_MISMATCH"


class NotStarted(OrderRejected):
    """The sender has not checked the node's chain id yet (call ``start()``)."""

    code = "EVM_SENDER_NOT_STARTED"


class SignerMismatch(OrderRejected):
    """The signer handed over signs for another address than the wallet's."""

    code = "EVM_SIGNER_MISMATCH"


class SendRejected(OrderRejected):
    """The node refused a signed transaction for good (insufficient funds for gas, gas
    above the block limit, …): it is not in the mempool and its nonce stays free."""

    code = "EVM_SEND_REJECTED"


def decode_revert(data: bytes | str | None) -> str:
    """A reason from revert return data: ``Error(string)``'s text, a named ``Panic``, a
    custom error's selector, or ``"reverted without a reason"``."""
    if isinstance(data, str):
        text = data[2:] if data.startswith(("0x", "0X")) else data
        try:
            data = bytes.fromhex(text)
        except ValueError:
            return text.strip() or "reverted without a reason"
    if not data:
        return "reverted without a reason"
    selector, body = data[:4], data[4:]
    if selector == _ERROR_SELECTOR:
        try:
            (message,) = decode(["string"], body)
        except Exception:  # malformed payload: show what it is
            return f"Error(string) with undecodable data 0x{body.hex()}"
        return str(message)
    if selector == _PANIC_SELECTOR:
        try:
            (code,) = decode(["uint256"], body)
        except Exception:
            return f"Panic with undecodable data 0x{body.hex()}"
        return f"panic 0x{code:02x} ({_PANICS.get(code, 'unknown panic code')})"
    return f"custom error 0x{selector.hex()}" + (f" (data 0x{body.hex()})" if body else "")


def explain(reason: str) -> str:
    """``reason`` with a gloss when it is one of Uniswap's terse revert strings."""
    gloss = _EXPLAINED.get(reason)
    return f"{reason} ({gloss})" if gloss else reason


def revert_reason(exc: BaseException) -> str | None:
    """The decoded reason when ``exc`` says a call or estimate reverted, else ``None``
    (a connection error, a rate limit … are not reverts)."""
    if isinstance(exc, ContractLogicError):
        data: Any = exc.data
        if isinstance(data, bytes | str) and data not in ("", "0x", b""):
            return decode_revert(data)
        message = exc.message or str(exc)
        return _strip_prefix(message)
    if isinstance(exc, Web3RPCError):
        text = exc.message or str(exc)
        if "revert" in text.lower():
            return _strip_prefix(text)
    return None


def _strip_prefix(message: str) -> str:
    for prefix in ("execution reverted: ", "execution reverted", "revert: "):
        if message.startswith(prefix):
            rest = message[len(prefix) :].strip()
            return rest or "reverted without a reason"
    return message.strip() or "reverted without a reason"


def unavailable(what: str, exc: BaseException, venue: str = "uniswap") -> VenueUnavailable:
    """The :class:`VenueUnavailable` for a node call that failed without a revert."""
    detail = str(exc) or type(exc).__name__
    return VenueUnavailable(f"{venue}: {what}: {detail}", venue)
