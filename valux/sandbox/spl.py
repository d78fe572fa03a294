"""SPL Token, ATA, compute-budget and memo building blocks shared by the sandbox services.

Contract:

- Program ids and account sizes are mainnet's. The token program is classic SPL Token
  (``Tokenkeg…``; LiteSVM loads p-token at that id); Token-2022 accounts are *read* (balances,
  jsonParsed) but the sandbox never creates them.
- Instruction builders produce byte-exact instructions of the real programs (the layouts
  of SPL Token's ``TransferChecked`` = 12, ``MintTo`` = 7, ``CloseAccount`` = 9,
  ``SyncNative`` = 17, and the ATA program's ``CreateIdempotent`` = 1).
- Amounts are integer base units everywhere; :func:`ui_amount_string` renders one the way
  the RPC's ``uiAmountString`` does (trailing zeros trimmed), with no float on the way.
- :func:`parse_token_account` and :func:`parse_mint` read account data as the token
  programs lay it out and answer ``None`` for anything that is not an initialised one.
- :func:`b58encode` / :func:`b58decode` are Bitcoin-alphabet base58, used for the
  ``base58`` transaction encoding and instruction data in ``json`` encoded transactions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from solders.account import Account
from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.instruction import AccountMeta, CompiledInstruction, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint, TokenAccount, TokenAccountState

__all__ = [
    "ASSOCIATED_TOKEN_PROGRAM_ID",
    "COMPUTE_BUDGET_PROGRAM_ID",
    "DEFAULT_COMPUTE_UNITS_PER_INSTRUCTION",
    "LAMPORTS_PER_SIGNATURE",
    "MAX_COMPUTE_UNITS",
    "MEMO_PROGRAM_ID",
    "MINT_SIZE",
    "NATIVE_MINT",
    "SYSTEM_PROGRAM_ID",
    "TOKEN_2022_PROGRAM_ID",
    "TOKEN_ACCOUNT_SIZE",
    "TOKEN_PROGRAM_ID",
    "ComputeBudgetRequest",
    "associated_token_address",
    "b58decode",
    "b58encode",
    "burn",
    "close_account",
    "compute_budget_of",
    "create_ata_idempotent",
    "initialize_account3",
    "initialize_mint2",
    "memo",
    "mint_data",
    "mint_to",
    "parse_mint",
    "parse_token_account",
    "priority_fee_lamports",
    "sync_native",
    "token_account_data",
    "transfer_checked",
    "ui_amount_string",
    "ui_token_amount",
]

TOKEN_PROGRAM_ID: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID: Final = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ASSOCIATED_TOKEN_PROGRAM_ID: Final = Pubkey.from_string(
    "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
)
MEMO_PROGRAM_ID: Final = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
NATIVE_MINT: Final = Pubkey.from_string("So11111111111111111111111111111111111111112")
"""Wrapped SOL: the mint of SPL token accounts that hold lamports (9 decimals)."""

MINT_SIZE: Final = 82
TOKEN_ACCOUNT_SIZE: Final = 165
LAMPORTS_PER_SIGNATURE: Final = 5_000
DEFAULT_COMPUTE_UNITS_PER_INSTRUCTION: Final = 200_000
MAX_COMPUTE_UNITS: Final = 1_400_000

_TOKEN_PROGRAMS: Final = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)
_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}


# ------------------------------------------------------------------ base58


def b58encode(data: bytes) -> str:
    """``data`` in base58 (leading zero bytes become leading ``1``s)."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_B58_ALPHABET[rest])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The bytes a base58 string stands for; :class:`ValueError` on a foreign character."""
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


# ------------------------------------------------------------------ amounts


def ui_amount_string(amount: int, decimals: int) -> str:
    """``amount`` base units as a decimal string with trailing zeros trimmed (RPC style)."""
    if decimals == 0:
        return str(amount)
    whole, frac = divmod(amount, 10**decimals)
    frac_text = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def ui_token_amount(amount: int, decimals: int, *, null_zero: bool = False) -> dict[str, Any]:
    """The RPC's ``UiTokenAmount`` object.

    ``uiAmount`` is a float rendering (``uiAmountString`` is the exact one). Transaction
    token balances come from the blockstore, which stores a zero ``uiAmount`` as absent:
    pass ``null_zero=True`` there to answer ``null`` as mainnet does.
    """
    text = ui_amount_string(amount, decimals)
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": None if null_zero and amount == 0 else float(text),
        "uiAmountString": text,
    }


# ------------------------------------------------------------------ accounts


def associated_token_address(
    owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM_ID
) -> Pubkey:
    """The associated token account of ``owner`` for ``mint``."""
    return get_associated_token_address(owner, mint, token_program)


def parse_token_account(account: Account | None) -> TokenAccount | None:
    """``account`` as an initialised SPL token account, or ``None``."""
    if account is None or account.owner not in _TOKEN_PROGRAMS:
        return None
    data = bytes(account.data)
    if len(data) < TOKEN_ACCOUNT_SIZE:
        return None
    if len(data) > TOKEN_ACCOUNT_SIZE and data[TOKEN_ACCOUNT_SIZE] != 2:
        return None  # Token-2022 extension marker: 2 = account, 1 = mint
    try:
        parsed = TokenAccount.from_bytes(data[:TOKEN_ACCOUNT_SIZE])
    except ValueError:
        return None
    if parsed.state == TokenAccountState.Uninitialized:
        return None
    return parsed


def parse_mint(account: Account | None) -> Mint | None:
    """``account`` as an initialised SPL mint, or ``None``."""
    if account is None or account.owner not in _TOKEN_PROGRAMS:
        return None
    data = bytes(account.data)
    if len(data) < MINT_SIZE:
        return None
    if len(data) > MINT_SIZE and (len(data) <= TOKEN_ACCOUNT_SIZE or data[165] != 1):
        return None
    try:
        parsed = Mint.from_bytes(data[:MINT_SIZE])
    except ValueError:
        return None
    return parsed if parsed.is_initialized else None


def mint_data(*, authority: Pubkey | None, supply: int, decimals: int) -> bytes:
    """The 82 bytes of an initialised mint without a freeze authority."""
    return bytes(Mint(authority, supply, decimals, True, None))


def token_account_data(
    *, mint: Pubkey, owner: Pubkey, amount: int, native_reserve: int | None = None
) -> bytes:
    """The 165 bytes of an initialised token account (wrapped SOL when ``native_reserve``)."""
    return bytes(
        TokenAccount(
            mint, owner, amount, None, TokenAccountState.Initialized, native_reserve, 0, None
        )
    )


# ------------------------------------------------------------------ instructions


def create_ata_idempotent(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    """ATA program ``CreateIdempotent``: create ``owner``'s ATA for ``mint`` if missing."""
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM_ID,
        bytes([1]),
        [
            AccountMeta(payer, True, True),
            AccountMeta(associated_token_address(owner, mint), False, True),
            AccountMeta(owner, False, False),
            AccountMeta(mint, False, False),
            AccountMeta(SYSTEM_PROGRAM_ID, False, False),
            AccountMeta(TOKEN_PROGRAM_ID, False, False),
        ],
    )


def transfer_checked(
    *,
    source: Pubkey,
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    amount: int,
    decimals: int,
) -> Instruction:
    """SPL Token ``TransferChecked`` of ``amount`` base units signed by ``authority``."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BQB", 12, amount, decimals),
        [
            AccountMeta(source, False, True),
            AccountMeta(mint, False, False),
            AccountMeta(destination, False, True),
            AccountMeta(authority, True, False),
        ],
    )


def mint_to(*, mint: Pubkey, destination: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    """SPL Token ``MintTo``: ``amount`` new base units into ``destination``."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BQ", 7, amount),
        [
            AccountMeta(mint, False, True),
            AccountMeta(destination, False, True),
            AccountMeta(authority, True, False),
        ],
    )


def burn(*, account: Pubkey, mint: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    """SPL Token ``Burn``: destroy ``amount`` base units held by ``account``."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BQ", 8, amount),
        [
            AccountMeta(account, False, True),
            AccountMeta(mint, False, True),
            AccountMeta(authority, True, False),
        ],
    )


def initialize_mint2(*, mint: Pubkey, decimals: int, authority: Pubkey) -> Instruction:
    """SPL Token ``InitializeMint2`` without a freeze authority."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BB", 20, decimals) + bytes(authority) + b"\0",
        [AccountMeta(mint, False, True)],
    )


def initialize_account3(*, account: Pubkey, mint: Pubkey, owner: Pubkey) -> Instruction:
    """SPL Token ``InitializeAccount3``: ``account`` holds ``mint`` for ``owner``."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        bytes([18]) + bytes(owner),
        [AccountMeta(account, False, True), AccountMeta(mint, False, False)],
    )


def sync_native(account: Pubkey) -> Instruction:
    """SPL Token ``SyncNative``: a wrapped-SOL account's amount follows its lamports."""
    return Instruction(TOKEN_PROGRAM_ID, bytes([17]), [AccountMeta(account, False, True)])


def close_account(*, account: Pubkey, destination: Pubkey, authority: Pubkey) -> Instruction:
    """SPL Token ``CloseAccount``: lamports (and wrapped SOL) go to ``destination``."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        bytes([9]),
        [
            AccountMeta(account, False, True),
            AccountMeta(destination, False, True),
            AccountMeta(authority, True, False),
        ],
    )


def memo(text: str, signers: Sequence[Pubkey] = ()) -> Instruction:
    """Memo program instruction carrying ``text`` (UTF-8)."""
    return Instruction(
        MEMO_PROGRAM_ID, text.encode(), [AccountMeta(s, True, False) for s in signers]
    )


# ------------------------------------------------------------------ compute budget


@dataclass(frozen=True, slots=True)
class ComputeBudgetRequest:
    """What a message asks of the compute-budget program."""

    unit_limit: int
    """Requested units, or the runtime default (200,000 per other instruction, ≤ 1.4 M)."""
    micro_lamports_per_unit: int
    """The ``SetComputeUnitPrice`` value, 0 when absent."""


def compute_budget_of(
    account_keys: Sequence[Pubkey], instructions: Sequence[CompiledInstruction]
) -> ComputeBudgetRequest:
    """The compute-unit limit and price ``instructions`` set, with the runtime's defaults."""
    limit: int | None = None
    price = 0
    others = 0
    for ix in instructions:
        program = account_keys[ix.program_id_index]
        data = bytes(ix.data)
        if program != COMPUTE_BUDGET_PROGRAM_ID:
            others += 1
        elif data[:1] == b"\x02" and len(data) >= 5:
            limit = struct.unpack_from("<I", data, 1)[0]
        elif data[:1] == b"\x03" and len(data) >= 9:
            price = struct.unpack_from("<Q", data, 1)[0]
    if limit is None:
        limit = DEFAULT_COMPUTE_UNITS_PER_INSTRUCTION * others
    return ComputeBudgetRequest(min(limit, MAX_COMPUTE_UNITS), price)


def priority_fee_lamports(request: ComputeBudgetRequest) -> int:
    """Lamports the priority fee costs: ``ceil(limit × price / 1,000,000)``."""
    return -(-request.unit_limit * request.micro_lamports_per_unit // 1_000_000)
