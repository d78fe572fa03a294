"""Transaction errors rendered the way a Solana RPC node renders them.

Contract:

- :func:`error_json` gives the JSON value of ``err`` in ``getSignatureStatuses``,
  ``getTransaction`` and ``simulateTransaction`` (``"BlockhashNotFound"``,
  ``{"InstructionError": [2, {"Custom": 1}]}``, …). It is produced by solders' own
  serialiser (the Rust types of the validator), so it is exactly the wire shape.
- :func:`error_message` gives the validator's ``Display`` text of the error, which the
  RPC puts after ``"Transaction simulation failed: "`` in a preflight failure
  (``"Error processing Instruction 2: custom program error: 0x1"``). Variants without a
  known text fall back to their name split into words.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from solders.transaction_status import TransactionErrorType, TransactionStatus

__all__ = ["error_json", "error_message"]

_TX_MESSAGES: Final[dict[str, str]] = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "UnsupportedVersion": "Transaction version is unsupported",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "TooManyAccountLocks": "Transaction locked too many accounts",
    "AddressLookupTableNotFound": ("Transaction loads an address table account that doesn't exist"),
    "MaxLoadedAccountsDataSizeExceeded": "Transaction exceeded max loaded accounts data size cap",
    "UnbalancedTransaction": "Sum of account balances before and after transaction do not match",
}

_IX_MESSAGES: Final[dict[str, str]] = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "AccountDataTooSmall": "account data too small for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "AccountNotRentExempt": ("An account does not have enough lamports to be rent-exempt"),
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "ProgramFailedToComplete": "Program failed to complete",
    "InvalidAccountOwner": "Invalid account owner",
}


def error_json(err: TransactionErrorType) -> Any:
    """The JSON value of ``err`` as the RPC returns it (a string or a one-key object)."""
    status = TransactionStatus(0, None, err, err, None)
    return json.loads(status.to_json())["err"]


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _instruction_message(value: Any) -> str:
    if isinstance(value, str):
        return _IX_MESSAGES.get(value, _words(value))
    if isinstance(value, dict) and "Custom" in value:
        return f"custom program error: {int(value['Custom']):#x}"
    if isinstance(value, dict) and "BorshIoError" in value:
        return f"Failed to serialize or deserialize account data: {value['BorshIoError']}"
    return str(value)


def error_message(err: TransactionErrorType) -> str:
    """The validator's text for ``err``."""
    value = error_json(err)
    if isinstance(value, str):
        return _TX_MESSAGES.get(value, _words(value))
    if isinstance(value, dict) and len(value) == 1:
        ((name, detail),) = value.items()
        if name == "InstructionError":
            index, inner = detail
            return f"Error processing Instruction {index}: {_instruction_message(inner)}"
        if name == "InsufficientFundsForRent":
            return (
                f"Transaction results in an account ({detail['account_index']}) with "
                "insufficient funds for rent"
            )
        if name == "DuplicateInstruction":
            return f"Transaction contains a duplicate instruction ({detail}) that is not allowed"
        return f"{_words(name)}: {detail}"
    return str(value)
