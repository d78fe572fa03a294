"""Solana JSON-RPC as the Jupiter venue uses it, and a wallet's on-chain holdings.

Contract:

- :class:`SolanaRpc` carries every request over solana-py's ``AsyncClient`` (its
  transport, timeouts and HTTP/2), with the JSON-RPC bodies written here so that every
  answer — and every error — is read the same way, whatever solders can or cannot
  parse. A node that cannot be reached, times out, answers HTTP 5xx or an unreadable
  body raises :class:`~valux.venues.jupiter.errors.JupiterUnavailable`; a JSON-RPC error
  answer raises :class:`RpcError` (``code``, ``message``, ``data``), which callers that
  expect one (a preflight failure on ``sendTransaction``) handle and others map.
- :func:`read_holdings` reads what the chain says a wallet holds (for reconciliation):
  its lamports (``getBalance``) and every token account it owns under the SPL Token and
  Token-2022 programs (``getTokenAccountsByOwner`` by program id, ``jsonParsed``),
  summed per mint, in base units and as ``Decimal`` whole tokens. Wrapped SOL is a
  token like any other (mint :data:`WSOL_MINT`); :attr:`Holdings.sol_with_wrapped` adds
  it to the lamports. Rent locked in token accounts is *not* in ``lamports`` — it left
  the wallet's balance when the account was created, and the journal books it that way
  (the venue's ``network_fee``).
- Amounts are integers of base units or ``Decimal``; never floats.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import httpx2
from pydantic import ValidationError
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError

from valux.venues.jupiter.errors import JupiterUnavailable

__all__ = [
    "LAMPORTS_PER_SOL",
    "TOKEN_2022_PROGRAM",
    "TOKEN_ACCOUNT_SIZE",
    "TOKEN_PROGRAM",
    "WSOL_MINT",
    "Holdings",
    "MintInfo",
    "RpcError",
    "SolanaRpc",
    "TokenAccount",
    "TokenHolding",
    "lamports_to_sol",
    "read_holdings",
]

LAMPORTS_PER_SOL: Final = 10**9
WSOL_MINT: Final = "So11111111111111111111111111111111111111112"
TOKEN_PROGRAM: Final = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM: Final = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
TOKEN_ACCOUNT_SIZE: Final = 165
_STATUS_BATCH: Final = 256
_TRANSPORT_ERRORS: Final = (
    SolanaRpcException,
    httpx2.HTTPError,
    ValidationError,
    ValueError,
    OSError,
    TimeoutError,
)
"""What solana-py raises when a node is unreachable, slow, answers HTTP errors or an
unreadable body (its transport wraps httpx2's errors in SolanaRpcException)."""


def lamports_to_sol(lamports: int) -> Decimal:
    """Lamports as whole SOL, exactly."""
    return Decimal(lamports).scaleb(-9)


class RpcError(Exception):
    """A JSON-RPC error answer (the node understood the request and refused it)."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(method, code, message, data)
        self.method = method
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.method}: RPC error {self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class MintInfo:
    """A mint's decimals and the token program that owns it."""

    mint: str
    decimals: int
    program: str


@dataclass(frozen=True, slots=True)
class TokenAccount:
    """One SPL token account as ``jsonParsed`` reports it."""

    address: str
    mint: str
    owner: str
    amount: int
    decimals: int
    program: str
    lamports: int


@dataclass(frozen=True, slots=True)
class TokenHolding:
    """A wallet's holding of one mint: base units over all its accounts of that mint."""

    mint: str
    units: int
    decimals: int
    accounts: tuple[str, ...] = ()

    @property
    def amount(self) -> Decimal:
        """Whole tokens."""
        return Decimal(self.units).scaleb(-self.decimals)


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the chain says one wallet holds (module contract)."""

    owner: str
    lamports: int
    tokens: Mapping[str, TokenHolding] = field(default_factory=dict)
    slot: int = 0
    """The context slot of the balance read."""

    @property
    def sol(self) -> Decimal:
        """Native SOL (``getBalance``), whole SOL."""
        return lamports_to_sol(self.lamports)

    @property
    def sol_with_wrapped(self) -> Decimal:
        """Native SOL plus the wallet's wrapped SOL."""
        wrapped = self.tokens.get(WSOL_MINT)
        return self.sol + (wrapped.amount if wrapped else Decimal(0))

    def units_of(self, mint: str) -> int:
        """Base units of ``mint`` held (0 when none)."""
        holding = self.tokens.get(mint)
        return holding.units if holding else 0

    def amount_of(self, mint: str) -> Decimal:
        """Whole tokens of ``mint`` held (0 when none)."""
        holding = self.tokens.get(mint)
        return holding.amount if holding else Decimal(0)

    def balances(self, sol_key: str = "SOL") -> dict[str, Decimal]:
        """``{sol_key: native SOL, mint: whole tokens, …}`` — the shape of the journal's
        balances (wrapped SOL stays under its mint; zero holdings are left out)."""
        out = {sol_key: self.sol}
        for mint, holding in self.tokens.items():
            if holding.units:
                out[mint] = holding.amount
        return out


class SolanaRpc:
    """The RPC calls the venue, its sender and reconciliation make (module contract).

    Timeouts are the ``AsyncClient``'s own (``AsyncClient(url, timeout=…)``); solana-py
    retries a transport error once by itself, which is safe for every call here (a
    repeated ``sendTransaction`` carries the same signature).
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._rent: dict[int, int] = {}

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; its ``result``. Raises RpcError or JupiterUnavailable."""
        request = JsonRpcRequest(method=method, params=list(params))
        try:
            return await self.client.send_rpc_request(request, Any)
        except SolanaJsonRpcError as exc:
            raise RpcError(method, exc.code, exc.message, exc.data) from exc
        except _TRANSPORT_ERRORS as exc:  # transport, HTTP status, unreadable body
            detail = str(exc) or type(exc).__name__
            cause = exc.__cause__
            if cause is not None:
                detail += f" ({type(cause).__name__}: {cause})"
            raise JupiterUnavailable(f"solana rpc {method}: {detail}") from exc

    async def read(self, method: str, params: Sequence[Any] = ()) -> Any:
        """:meth:`call` for a read: an RPC error answer is JupiterUnavailable too."""
        try:
            return await self.call(method, params)
        except RpcError as exc:
            raise JupiterUnavailable(f"solana rpc {exc}") from exc

    # -- cluster ---------------------------------------------------------------------

    async def block_height(self, commitment: str = "confirmed") -> int:
        """``getBlockHeight`` at ``commitment``."""
        return int(await self.read("getBlockHeight", [{"commitment": commitment}]))

    async def is_blockhash_valid(self, blockhash: str, commitment: str = "processed") -> bool:
        """``isBlockhashValid``: whether a transaction on ``blockhash`` could still land."""
        answer = await self.read("isBlockhashValid", [blockhash, {"commitment": commitment}])
        return bool(_value(answer))

    async def rent_exempt(self, size: int) -> int:
        """``getMinimumBalanceForRentExemption(size)`` (cached)."""
        if size not in self._rent:
            self._rent[size] = int(await self.read("getMinimumBalanceForRentExemption", [size]))
        return self._rent[size]

    # -- transactions ----------------------------------------------------------------

    async def send_transaction(
        self,
        raw: bytes,
        *,
        skip_preflight: bool,
        preflight_commitment: str = "processed",
        max_retries: int | None = 0,
    ) -> str:
        """``sendTransaction`` of signed bytes (base64); the signature the node reports.

        Raises RpcError for a refusal (``-32002`` preflight failure with ``data.err``,
        ``-32003`` signature verification) and JupiterUnavailable when the node could
        not be asked — in which case the transaction may or may not have reached it.
        """
        config: dict[str, Any] = {
            "encoding": "base64",
            "skipPreflight": skip_preflight,
            "preflightCommitment": preflight_commitment,
        }
        if max_retries is not None:
            config["maxRetries"] = max_retries
        result = await self.call("sendTransaction", [base64.b64encode(raw).decode(), config])
        return str(result)

    async def signature_statuses(
        self, signatures: Sequence[str], *, history: bool = True
    ) -> list[Mapping[str, Any] | None]:
        """``getSignatureStatuses`` (with ``searchTransactionHistory``), in order."""
        out: list[Mapping[str, Any] | None] = []
        for start in range(0, len(signatures), _STATUS_BATCH):
            batch = list(signatures[start : start + _STATUS_BATCH])
            answer = await self.read(
                "getSignatureStatuses", [batch, {"searchTransactionHistory": history}]
            )
            values = _value(answer)
            if not isinstance(values, list) or len(values) != len(batch):
                raise JupiterUnavailable("solana rpc getSignatureStatuses: a malformed answer")
            out.extend(v if isinstance(v, dict) else None for v in values)
        return out

    async def transaction(
        self, signature: str, commitment: str = "confirmed"
    ) -> Mapping[str, Any] | None:
        """``getTransaction`` (``json`` encoding, v0 allowed); ``None`` until the
        transaction reached ``commitment``."""
        answer = await self.read(
            "getTransaction",
            [
                signature,
                {
                    "encoding": "json",
                    "commitment": commitment,
                    "maxSupportedTransactionVersion": 0,
                },
            ],
        )
        return answer if isinstance(answer, dict) else None

    # -- accounts --------------------------------------------------------------------

    async def balance(self, address: str, commitment: str = "confirmed") -> tuple[int, int]:
        """``(lamports, context slot)`` of ``address``."""
        answer = await self.read("getBalance", [address, {"commitment": commitment}])
        return int(_value(answer)), _slot(answer)

    async def mint_info(self, mint: str) -> MintInfo | None:
        """Decimals and token program of ``mint``; ``None`` when it is not a mint on chain."""
        answer = await self.read(
            "getAccountInfo", [mint, {"encoding": "jsonParsed", "commitment": "confirmed"}]
        )
        account = _value(answer)
        if not isinstance(account, dict):
            return None
        data = account.get("data")
        if not isinstance(data, dict) or account.get("owner") not in (
            TOKEN_PROGRAM,
            TOKEN_2022_PROGRAM,
        ):
            return None
        parsed = data.get("parsed")
        if not isinstance(parsed, dict) or parsed.get("type") != "mint":
            return None
        info = parsed.get("info")
        if not isinstance(info, dict) or not isinstance(info.get("decimals"), int):
            return None
        return MintInfo(mint=mint, decimals=int(info["decimals"]), program=str(account["owner"]))

    async def token_accounts(
        self,
        owner: str,
        *,
        mint: str | None = None,
        programs: Iterable[str] = (TOKEN_PROGRAM, TOKEN_2022_PROGRAM),
        commitment: str = "confirmed",
    ) -> list[TokenAccount]:
        """Every token account ``owner`` owns (of ``mint``, or under ``programs``)."""
        selectors: list[dict[str, str]] = (
            [{"mint": mint}] if mint is not None else [{"programId": p} for p in programs]
        )
        found: list[TokenAccount] = []
        for selector in selectors:
            answer = await self.read(
                "getTokenAccountsByOwner",
                [owner, selector, {"encoding": "jsonParsed", "commitment": commitment}],
            )
            for entry in _value(answer) or []:
                account = _token_account(entry)
                if account is not None:
                    found.append(account)
        return found


def _value(answer: Any) -> Any:
    return answer.get("value") if isinstance(answer, dict) else answer


def _slot(answer: Any) -> int:
    if isinstance(answer, dict) and isinstance(answer.get("context"), dict):
        return int(answer["context"].get("slot", 0))
    return 0


def _token_account(entry: Any) -> TokenAccount | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("account"), dict):
        return None
    account = entry["account"]
    data = account.get("data")
    parsed = data.get("parsed") if isinstance(data, dict) else None
    info = parsed.get("info") if isinstance(parsed, dict) else None
    if not isinstance(info, dict):
        return None
    amount = info.get("tokenAmount")
    if not isinstance(amount, dict):
        return None
    try:
        return TokenAccount(
            address=str(entry["pubkey"]),
            mint=str(info["mint"]),
            owner=str(info["owner"]),
            amount=int(amount["amount"]),
            decimals=int(amount["decimals"]),
            program=str(account.get("owner", "")),
            lamports=int(account.get("lamports", 0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


async def read_holdings(rpc: SolanaRpc, owner: str, commitment: str = "confirmed") -> Holdings:
    """What ``owner`` holds on chain: lamports and token base units per mint."""
    lamports, slot = await rpc.balance(owner, commitment)
    accounts = await rpc.token_accounts(owner, commitment=commitment)
    units: dict[str, int] = {}
    decimals: dict[str, int] = {}
    addresses: dict[str, list[str]] = {}
    for account in accounts:
        units[account.mint] = units.get(account.mint, 0) + account.amount
        decimals[account.mint] = account.decimals
        addresses.setdefault(account.mint, []).append(account.address)
    tokens = {
        mint: TokenHolding(mint, units[mint], decimals[mint], tuple(addresses[mint]))
        for mint in units
    }
    return Holdings(owner=owner, lamports=lamports, tokens=tokens, slot=slot)
