"""A Solana JSON-RPC 2.0 endpoint over a :class:`~valux.sandbox.ledger.SolanaLedger`.

Production clients (solana-py's ``AsyncClient``, anything that speaks the HTTP JSON-RPC)
talk to it unchanged: requests and responses have mainnet's shapes, field names and
error codes, single or batched, on ``POST /`` of a loopback port.

Contract:

- Methods: ``getHealth``, ``getVersion``, ``getGenesisHash``, ``getSlot``,
  ``getBlockHeight``, ``getEpochInfo``, ``getLatestBlockhash``, ``isBlockhashValid``,
  ``getBalance``, ``getAccountInfo``, ``getMultipleAccounts``, ``getTokenAccountBalance``,
  ``getTokenAccountsByOwner``, ``getMinimumBalanceForRentExemption``, ``getFeeForMessage``,
  ``getRecentPrioritizationFees``, ``sendTransaction``, ``simulateTransaction``,
  ``getSignatureStatuses``, ``getTransaction``, ``getTransactionCount``,
  ``requestAirdrop``. Anything else is ``-32601 Method not found``.
- Result envelopes: methods that read state answer ``{"context": {"slot", "apiVersion"},
  "value": …}`` exactly where mainnet does; the context slot is the slot of the asked
  commitment (default ``finalized``, as on a real node).
- Errors are JSON-RPC errors with mainnet's codes: ``-32700`` parse, ``-32600`` invalid
  request, ``-32601`` unknown method, ``-32602`` invalid params (and undecodable or
  oversize transactions), ``-32002`` "Transaction simulation failed: <validator text>"
  with ``data`` = the simulation result (``err``, ``logs``, ``unitsConsumed`` …),
  ``-32003`` signature verification failure, ``-32015`` a v0 transaction asked for
  without ``maxSupportedTransactionVersion``, ``-32016`` an unreached ``minContextSlot``.
- ``getTransaction`` answers ``json`` or ``base64`` encoding, at ``confirmed`` or
  ``finalized`` only (``processed`` is an error, as on mainnet), and ``null`` until the
  transaction reached the asked commitment. Its ``meta`` carries ``fee``, ``err``,
  ``status``, ``pre/postBalances``, ``pre/postTokenBalances`` (zero ``uiAmount`` as
  ``null``), ``logMessages``, ``innerInstructions``, ``loadedAddresses``,
  ``computeUnitsConsumed`` — enough for a client to compute what a swap moved.
- Account encodings: ``base64`` (default for the token-account queries), ``base58``,
  ``jsonParsed`` (SPL token accounts and mints; other accounts fall back to base64 as on
  mainnet), with ``dataSlice``. ``base64+zstd`` is refused (no zstd in the stdlib).
- ``requestAirdrop`` sends a real faucet transfer that lands at once (never dropped).
- :attr:`SolanaRpcServer.calls` counts requests per method, for tests and diagnostics.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Self

from aiohttp import web
from solders.account import Account
from solders.hash import Hash
from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.state import TokenAccountState
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import InnerInstruction
from solders.transaction_status import TransactionErrorType

from valux.sandbox.ledger import (
    Commitment,
    LedgerError,
    PreflightFailure,
    SignatureVerificationFailure,
    Simulation,
    SolanaLedger,
    TokenBalance,
    TxRecord,
)
from valux.sandbox.spl import (
    TOKEN_2022_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    b58decode,
    b58encode,
    parse_mint,
    parse_token_account,
    ui_token_amount,
)
from valux.sandbox.txerror import error_json, error_message

__all__ = ["API_VERSION", "RpcError", "SolanaRpcServer", "account_json"]

API_VERSION: Final = "2.2.0"
"""What ``getVersion`` and every ``context.apiVersion`` report."""
FEATURE_SET: Final = 3294202862
GENESIS_HASH: Final = b58encode(hashlib.sha256(b"valux-sandbox-genesis").digest())
"""Not mainnet's: a client that recognises clusters by genesis hash must not take the
sandbox for mainnet-beta."""
PACKET_DATA_SIZE: Final = 1232
MAX_SIGNATURES_PER_STATUS_CALL: Final = 256
_TOKEN_PROGRAMS: Final = {TOKEN_PROGRAM_ID: "spl-token", TOKEN_2022_PROGRAM_ID: "spl-token-2022"}
_COMMITMENTS: Final = {
    "processed": Commitment.PROCESSED,
    "recent": Commitment.PROCESSED,
    "confirmed": Commitment.CONFIRMED,
    "single": Commitment.CONFIRMED,
    "singleGossip": Commitment.CONFIRMED,
    "finalized": Commitment.FINALIZED,
    "max": Commitment.FINALIZED,
    "root": Commitment.FINALIZED,
}


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def _invalid(message: str) -> RpcError:
    return RpcError(-32602, message)


# ------------------------------------------------------------------ param helpers


def _param(params: list[Any], index: int, default: Any = None) -> Any:
    return params[index] if len(params) > index and params[index] is not None else default


def _config(params: list[Any], index: int) -> dict[str, Any]:
    value = _param(params, index, {})
    if not isinstance(value, dict):
        raise _invalid(f"Invalid params: expected a config object at position {index}")
    return value


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise _invalid("Invalid param: expected a base-58 public key string")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise _invalid(f"Invalid param: {exc}") from None


def _signature(value: Any) -> Signature:
    if not isinstance(value, str):
        raise _invalid("Invalid param: expected a base-58 signature string")
    try:
        return Signature.from_string(value)
    except ValueError:
        raise _invalid(f"Invalid param: {value!r} is not a signature") from None


def _commitment(config: Mapping[str, Any]) -> Commitment:
    value = config.get("commitment") or "finalized"
    if value not in _COMMITMENTS:
        raise _invalid(f"Invalid params: unknown commitment {value!r}")
    return _COMMITMENTS[value]


def _decode_tx(data: Any, encoding: str) -> VersionedTransaction:
    if not isinstance(data, str):
        raise _invalid("Invalid params: expected an encoded transaction string")
    try:
        raw = base64.b64decode(data, validate=True) if encoding == "base64" else b58decode(data)
    except ValueError as exc:
        raise _invalid(f"invalid {encoding} encoding: {exc}") from None
    if len(raw) > PACKET_DATA_SIZE:
        raise _invalid(
            f"{encoding} encoded solana_transaction::versioned::VersionedTransaction too large: "
            f"{len(raw)} bytes (max: {PACKET_DATA_SIZE} bytes)"
        )
    try:
        tx = VersionedTransaction.from_bytes(raw)
    except ValueError as exc:
        raise _invalid(
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}"
        ) from None
    try:
        tx.sanitize()
    except Exception:  # solders raises its own SanitizeError
        raise _invalid(
            "invalid transaction: Transaction failed to sanitize accounts offsets correctly"
        ) from None
    return tx


# ------------------------------------------------------------------ JSON shapes


def _parsed_account(ledger: SolanaLedger, account: Account) -> dict[str, Any] | None:
    program = _TOKEN_PROGRAMS.get(account.owner)
    if program is None:
        return None
    token = parse_token_account(account)
    if token is not None:
        decimals = ledger.decimals_of(token.mint) or 0
        info: dict[str, Any] = {
            "isNative": token.is_native is not None,
            "mint": str(token.mint),
            "owner": str(token.owner),
            "state": "frozen" if token.state == TokenAccountState.Frozen else "initialized",
            "tokenAmount": ui_token_amount(token.amount, decimals),
        }
        if token.delegate is not None:
            info["delegate"] = str(token.delegate)
            info["delegatedAmount"] = ui_token_amount(token.delegated_amount, decimals)
        if token.is_native is not None:
            info["rentExemptReserve"] = ui_token_amount(token.is_native, decimals)
        if token.close_authority is not None:
            info["closeAuthority"] = str(token.close_authority)
        parsed = {"info": info, "type": "account"}
    else:
        mint = parse_mint(account)
        if mint is None:
            return None
        parsed = {
            "info": {
                "decimals": mint.decimals,
                "freezeAuthority": _opt_str(mint.freeze_authority),
                "isInitialized": mint.is_initialized,
                "mintAuthority": _opt_str(mint.mint_authority),
                "supply": str(mint.supply),
            },
            "type": "mint",
        }
    return {"program": program, "parsed": parsed, "space": len(bytes(account.data))}


def _opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def account_json(
    ledger: SolanaLedger, account: Account, encoding: str, data_slice: Any = None
) -> dict[str, Any]:
    """``account`` as the RPC's ``UiAccount`` in ``encoding``."""
    raw = bytes(account.data)
    data: Any
    parsed = _parsed_account(ledger, account) if encoding == "jsonParsed" else None
    if parsed is not None:
        data = parsed
    else:
        if isinstance(data_slice, dict):
            offset = int(data_slice.get("offset", 0))
            raw = raw[offset : offset + int(data_slice.get("length", len(raw)))]
        if encoding == "base58":
            data = [b58encode(raw), "base58"]
        else:
            data = [base64.b64encode(raw).decode(), "base64"]
    return {
        "data": data,
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": account.rent_epoch,
        "space": len(bytes(account.data)),
    }


def _status_json(err: TransactionErrorType | None) -> dict[str, Any]:
    return {"Ok": None} if err is None else {"Err": error_json(err)}


def _inner_instruction_json(inner: InnerInstruction) -> dict[str, Any]:
    ix = inner.instruction()
    return {
        "accounts": list(bytes(ix.accounts)),
        "data": b58encode(bytes(ix.data)),
        "programIdIndex": ix.program_id_index,
        "stackHeight": inner.stack_height(),
    }


def _inner_json(inner: list[list[InnerInstruction]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, group in enumerate(inner):
        if not group:
            continue
        out.append(
            {
                "index": index,
                "instructions": [_inner_instruction_json(i) for i in group],
            }
        )
    return out


def _return_data_json(value: tuple[Pubkey, bytes] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"programId": str(value[0]), "data": [base64.b64encode(value[1]).decode(), "base64"]}


def _simulation_json(
    ledger: SolanaLedger,
    sim: Simulation,
    *,
    accounts: list[Pubkey] | None = None,
    accounts_encoding: str = "base64",
    inner: bool = False,
    replacement: tuple[Hash, int] | None = None,
) -> dict[str, Any]:
    accounts_value: list[Any] | None = None
    if accounts is not None:
        accounts_value = []
        for key in accounts:
            account = sim.post_accounts.get(key) or ledger.account(key)
            accounts_value.append(
                None
                if account is None or account.lamports == 0
                else account_json(ledger, account, accounts_encoding)
            )
    return {
        "err": None if sim.err is None else error_json(sim.err),
        "logs": sim.logs,
        "accounts": accounts_value,
        "unitsConsumed": sim.units_consumed,
        "returnData": _return_data_json(sim.return_data),
        "innerInstructions": _inner_json(sim.inner_instructions) if inner else None,
        "replacementBlockhash": (
            None
            if replacement is None
            else {"blockhash": str(replacement[0]), "lastValidBlockHeight": replacement[1]}
        ),
        "loadedAccountsDataSize": sum(
            len(bytes(a.data)) for k in sim.account_keys if (a := ledger.account(k)) is not None
        ),
    }


def _token_balance_json(balance: TokenBalance) -> dict[str, Any]:
    return {
        "accountIndex": balance.account_index,
        "mint": str(balance.mint),
        "owner": str(balance.owner),
        "programId": str(balance.program_id),
        "uiTokenAmount": ui_token_amount(balance.amount, balance.decimals, null_zero=True),
    }


def _message_json(message: Message | MessageV0) -> dict[str, Any]:
    header = message.header
    body: dict[str, Any] = {
        "accountKeys": [str(k) for k in message.account_keys],
        "header": {
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
            "numRequiredSignatures": header.num_required_signatures,
        },
        "instructions": [
            {
                "accounts": list(bytes(ix.accounts)),
                "data": b58encode(bytes(ix.data)),
                "programIdIndex": ix.program_id_index,
                "stackHeight": None,
            }
            for ix in message.instructions
        ],
        "recentBlockhash": str(message.recent_blockhash),
    }
    if isinstance(message, MessageV0):
        body["addressTableLookups"] = [
            {
                "accountKey": str(lookup.account_key),
                "writableIndexes": list(lookup.writable_indexes),
                "readonlyIndexes": list(lookup.readonly_indexes),
            }
            for lookup in message.address_table_lookups
        ]
    return body


def transaction_json(record: TxRecord, encoding: str) -> dict[str, Any]:
    """``getTransaction``'s result for ``record`` in ``json`` or ``base64`` encoding."""
    tx = record.transaction
    message = tx.message
    assert isinstance(message, Message | MessageV0)  # the ledger lands nothing else
    transaction: Any
    if encoding == "base64":
        transaction = [base64.b64encode(bytes(tx)).decode(), "base64"]
    else:
        transaction = {
            "message": _message_json(message),
            "signatures": [str(s) for s in tx.signatures],
        }
    meta: dict[str, Any] = {
        "computeUnitsConsumed": record.units_consumed,
        "err": None if record.err is None else error_json(record.err),
        "fee": record.fee,
        "innerInstructions": _inner_json(record.inner_instructions),
        "loadedAddresses": {
            "readonly": [str(k) for k in record.loaded_readonly],
            "writable": [str(k) for k in record.loaded_writable],
        },
        "logMessages": record.logs,
        "postBalances": record.post_balances,
        "postTokenBalances": [_token_balance_json(b) for b in record.post_token_balances],
        "preBalances": record.pre_balances,
        "preTokenBalances": [_token_balance_json(b) for b in record.pre_token_balances],
        "rewards": [],
        "status": _status_json(record.err),
    }
    if record.return_data is not None:
        meta["returnData"] = _return_data_json(record.return_data)
    return {
        "blockTime": record.block_time,
        "meta": meta,
        "slot": record.slot,
        "transaction": transaction,
        "version": 0 if isinstance(message, MessageV0) else "legacy",
    }


# ------------------------------------------------------------------ the server

Handler = Callable[[list[Any]], Any]


class SolanaRpcServer:
    """An aiohttp JSON-RPC server on ``host``:``port`` (0 = a free port) over ``ledger``.

    Use as ``async with SolanaRpcServer(ledger) as rpc: rpc.url`` or ``start``/``stop``.
    It does not start or stop the ledger's clock: whoever owns the ledger does.
    """

    def __init__(self, ledger: SolanaLedger, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ledger = ledger
        self.host = host
        self.port = port
        self.calls: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._methods: dict[str, Handler] = {
            "getHealth": lambda _p: "ok",
            "getVersion": lambda _p: {"solana-core": API_VERSION, "feature-set": FEATURE_SET},
            "getGenesisHash": lambda _p: GENESIS_HASH,
            "getSlot": self._get_slot,
            "getBlockHeight": self._get_block_height,
            "getEpochInfo": self._get_epoch_info,
            "getTransactionCount": lambda _p: self.ledger.epoch_info()["transactionCount"],
            "getLatestBlockhash": self._get_latest_blockhash,
            "isBlockhashValid": self._is_blockhash_valid,
            "getBalance": self._get_balance,
            "getAccountInfo": self._get_account_info,
            "getMultipleAccounts": self._get_multiple_accounts,
            "getTokenAccountBalance": self._get_token_account_balance,
            "getTokenAccountsByOwner": self._get_token_accounts_by_owner,
            "getMinimumBalanceForRentExemption": self._get_minimum_balance,
            "getFeeForMessage": self._get_fee_for_message,
            "getRecentPrioritizationFees": self._get_recent_prioritization_fees,
            "sendTransaction": self._send_transaction,
            "simulateTransaction": self._simulate_transaction,
            "getSignatureStatuses": self._get_signature_statuses,
            "getTransaction": self._get_transaction,
            "requestAirdrop": self._request_airdrop,
        }

    # ------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        """The aiohttp application (``POST /``)."""
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/", self._handle)
        return app

    async def start(self) -> str:
        """Listen and return the URL (``http://host:port``)."""
        if self._runner is not None:
            assert self._url is not None
            return self._url
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The URL clients connect to; only after :meth:`start`."""
        if self._url is None:
            raise RuntimeError("the RPC server is not started")
        return self._url

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ dispatch

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(
                {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
            )
        if isinstance(body, list):
            if not body:
                return web.json_response(_error_envelope(RpcError(-32600, "Invalid request"), None))
            return web.json_response([self.dispatch(item) for item in body])
        return web.json_response(self.dispatch(body))

    def dispatch(self, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request object (already decoded)."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error_envelope(RpcError(-32600, "Invalid request"), None)
        request_id = request.get("id")
        method = request["method"]
        self.calls[method] += 1
        handler = self._methods.get(method)
        if handler is None:
            return _error_envelope(RpcError(-32601, "Method not found"), request_id)
        params = request.get("params") or []
        if not isinstance(params, list):
            return _error_envelope(_invalid("Invalid params: expected an array"), request_id)
        try:
            result = handler(params)
        except RpcError as exc:
            return _error_envelope(exc, request_id)
        except Exception as exc:  # a bug or an input no check caught: answer, do not 500
            return _error_envelope(RpcError(-32603, f"Internal error: {exc}"), request_id)
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    def _context(self, config: Mapping[str, Any]) -> dict[str, Any]:
        commitment = _commitment(config)
        slot = self.ledger.slot_at(commitment)
        min_slot = config.get("minContextSlot")
        if isinstance(min_slot, int) and min_slot > slot:
            raise RpcError(
                -32016, "Minimum context slot has not been reached", {"contextSlot": slot}
            )
        return {"slot": slot, "apiVersion": API_VERSION}

    # ------------------------------------------------------------ cluster

    def _get_slot(self, params: list[Any]) -> int:
        config = _config(params, 0)
        self._context(config)
        return self.ledger.slot_at(_commitment(config))

    def _get_block_height(self, params: list[Any]) -> int:
        config = _config(params, 0)
        self._context(config)
        return self.ledger.block_height_at(_commitment(config))

    def _get_epoch_info(self, params: list[Any]) -> dict[str, int]:
        self._context(_config(params, 0))
        return self.ledger.epoch_info()

    def _get_latest_blockhash(self, params: list[Any]) -> dict[str, Any]:
        config = _config(params, 0)
        context = self._context(config)
        blockhash, last_valid = self.ledger.latest_blockhash(_commitment(config))
        return {
            "context": context,
            "value": {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid},
        }

    def _is_blockhash_valid(self, params: list[Any]) -> dict[str, Any]:
        config = _config(params, 1)
        try:
            blockhash = Hash.from_string(str(_param(params, 0, "")))
        except ValueError:
            raise _invalid("Invalid param: not a blockhash") from None
        return {
            "context": self._context(config),
            "value": self.ledger.is_blockhash_valid(blockhash),
        }

    def _get_minimum_balance(self, params: list[Any]) -> int:
        size = _param(params, 0)
        if not isinstance(size, int) or size < 0:
            raise _invalid("Invalid params: expected a data length")
        return self.ledger.rent_exempt(size)

    def _get_fee_for_message(self, params: list[Any]) -> dict[str, Any]:
        config = _config(params, 1)
        context = self._context(config)
        try:
            message = from_bytes_versioned(base64.b64decode(str(_param(params, 0, ""))))
        except ValueError as exc:
            raise _invalid(f"invalid message: {exc}") from None
        if not isinstance(message, Message | MessageV0):
            raise _invalid("invalid message: unsupported version")
        valid = self.ledger.is_blockhash_valid(message.recent_blockhash)
        return {"context": context, "value": self.ledger.fee_of(message) if valid else None}

    def _get_recent_prioritization_fees(self, params: list[Any]) -> list[dict[str, int]]:
        addresses = _param(params, 0, [])
        if not isinstance(addresses, list) or len(addresses) > 128:
            raise _invalid("Invalid params: expected at most 128 account addresses")
        fees = self.ledger.recent_prioritization_fees(_pubkey(a) for a in addresses)
        return [{"slot": slot, "prioritizationFee": fee} for slot, fee in fees]

    # ------------------------------------------------------------ accounts

    def _get_balance(self, params: list[Any]) -> dict[str, Any]:
        address = _pubkey(_param(params, 0))
        context = self._context(_config(params, 1))
        return {"context": context, "value": self.ledger.balance(address)}

    def _encoding(self, config: Mapping[str, Any], default: str) -> str:
        encoding = config.get("encoding") or default
        if encoding not in ("base64", "base58", "jsonParsed"):
            raise _invalid(f"Invalid params: unsupported encoding {encoding!r}")
        return str(encoding)

    def _get_account_info(self, params: list[Any]) -> dict[str, Any]:
        address = _pubkey(_param(params, 0))
        config = _config(params, 1)
        context = self._context(config)
        encoding = self._encoding(config, "base58")
        account = self.ledger.account(address)
        value = (
            None
            if account is None
            else account_json(self.ledger, account, encoding, config.get("dataSlice"))
        )
        return {"context": context, "value": value}

    def _get_multiple_accounts(self, params: list[Any]) -> dict[str, Any]:
        addresses = _param(params, 0, [])
        if not isinstance(addresses, list) or len(addresses) > 100:
            raise _invalid("Invalid params: expected at most 100 addresses")
        config = _config(params, 1)
        context = self._context(config)
        encoding = self._encoding(config, "base64")
        values: list[Any] = []
        for address in addresses:
            account = self.ledger.account(_pubkey(address))
            values.append(
                None
                if account is None
                else account_json(self.ledger, account, encoding, config.get("dataSlice"))
            )
        return {"context": context, "value": values}

    def _get_token_account_balance(self, params: list[Any]) -> dict[str, Any]:
        address = _pubkey(_param(params, 0))
        context = self._context(_config(params, 1))
        token = parse_token_account(self.ledger.account(address))
        if token is None:
            raise _invalid("Invalid param: not a Token account")
        decimals = self.ledger.decimals_of(token.mint) or 0
        return {"context": context, "value": ui_token_amount(token.amount, decimals)}

    def _get_token_accounts_by_owner(self, params: list[Any]) -> dict[str, Any]:
        owner = _pubkey(_param(params, 0))
        selector = _param(params, 1)
        config = _config(params, 2)
        context = self._context(config)
        encoding = self._encoding(config, "base64")
        mint: Pubkey | None = None
        if isinstance(selector, dict) and "mint" in selector:
            mint = _pubkey(selector["mint"])
            mint_account = self.ledger.account(mint)
            if parse_mint(mint_account) is None or mint_account is None:
                raise _invalid("Invalid param: could not find mint")
            program = mint_account.owner
        elif isinstance(selector, dict) and "programId" in selector:
            program = _pubkey(selector["programId"])
            if program not in _TOKEN_PROGRAMS:
                raise _invalid("Invalid param: unrecognized Token program id")
        else:
            raise _invalid("Invalid params: expected {mint} or {programId}")
        found: list[dict[str, Any]] = []
        for address, account in sorted(
            self.ledger.token_accounts(program), key=lambda p: str(p[0])
        ):
            token = parse_token_account(account)
            if token is None or token.owner != owner or (mint is not None and token.mint != mint):
                continue
            found.append(
                {
                    "pubkey": str(address),
                    "account": account_json(
                        self.ledger, account, encoding, config.get("dataSlice")
                    ),
                }
            )
        return {"context": context, "value": found}

    # ------------------------------------------------------------ transactions

    def _send_transaction(self, params: list[Any]) -> str:
        config = _config(params, 1)
        encoding = config.get("encoding") or "base58"
        if encoding not in ("base58", "base64"):
            raise _invalid(f"Invalid params: unsupported encoding: {encoding}")
        tx = _decode_tx(_param(params, 0), encoding)
        if config.get("preflightCommitment") is not None:
            _commitment({"commitment": config["preflightCommitment"]})
        try:
            signature = self.ledger.submit(tx, skip_preflight=bool(config.get("skipPreflight")))
        except SignatureVerificationFailure:
            raise RpcError(-32003, "Transaction signature verification failure") from None
        except PreflightFailure as failure:
            sim = failure.simulation
            assert sim.err is not None
            raise RpcError(
                -32002,
                f"Transaction simulation failed: {error_message(sim.err)}",
                _simulation_json(self.ledger, sim),
            ) from None
        return str(signature)

    def _simulate_transaction(self, params: list[Any]) -> dict[str, Any]:
        config = _config(params, 1)
        context = self._context(config)
        encoding = config.get("encoding") or "base58"
        if encoding not in ("base58", "base64"):
            raise _invalid(f"Invalid params: unsupported encoding: {encoding}")
        tx = _decode_tx(_param(params, 0), encoding)
        sig_verify = bool(config.get("sigVerify"))
        replace = bool(config.get("replaceRecentBlockhash"))
        if sig_verify and replace:
            raise _invalid("sigVerify may not be used with replaceRecentBlockhash")
        if sig_verify and not all(tx.verify_with_results()):
            raise RpcError(-32003, "Transaction signature verification failure")
        try:
            sim = self.ledger.simulate(tx, sig_verify=sig_verify, replace_blockhash=replace)
        except PreflightFailure as failure:
            sim = failure.simulation
        accounts_config = config.get("accounts")
        accounts: list[Pubkey] | None = None
        accounts_encoding = "base64"
        if isinstance(accounts_config, dict):
            accounts = [_pubkey(a) for a in accounts_config.get("addresses", [])]
            accounts_encoding = self._encoding(accounts_config, "base64")
        value = _simulation_json(
            self.ledger,
            sim,
            accounts=accounts,
            accounts_encoding=accounts_encoding,
            inner=bool(config.get("innerInstructions")),
            replacement=self.ledger.latest_blockhash() if replace else None,
        )
        return {"context": context, "value": value}

    def _get_signature_statuses(self, params: list[Any]) -> dict[str, Any]:
        signatures = _param(params, 0, [])
        if not isinstance(signatures, list) or len(signatures) > MAX_SIGNATURES_PER_STATUS_CALL:
            raise _invalid(
                f"Invalid params: expected at most {MAX_SIGNATURES_PER_STATUS_CALL} signatures"
            )
        config = _config(params, 1)
        search = bool(config.get("searchTransactionHistory"))
        values: list[Any] = []
        for text in signatures:
            status = self.ledger.signature_status(_signature(text), search_history=search)
            if status is None:
                values.append(None)
                continue
            values.append(
                {
                    "slot": status.slot,
                    "confirmations": status.confirmations,
                    "err": None if status.err is None else error_json(status.err),
                    "status": _status_json(status.err),
                    "confirmationStatus": str(status.confirmation_status),
                }
            )
        return {"context": {"slot": self.ledger.slot, "apiVersion": API_VERSION}, "value": values}

    def _get_transaction(self, params: list[Any]) -> dict[str, Any] | None:
        signature = _signature(_param(params, 0))
        config = _param(params, 1, {})
        if isinstance(config, str):  # the deprecated positional encoding form
            config = {"encoding": config}
        if not isinstance(config, dict):
            raise _invalid("Invalid params: expected a config object")
        commitment = _commitment(config)
        if commitment is Commitment.PROCESSED:
            raise _invalid("Method does not support commitment below `confirmed`")
        encoding = config.get("encoding") or "json"
        if encoding not in ("json", "base64"):
            raise _invalid(f"Invalid params: unsupported encoding {encoding!r}")
        record = self.ledger.record(signature)
        if record is None:
            return None
        level = self.ledger.commitment_of(record)
        if commitment is Commitment.FINALIZED and level is not Commitment.FINALIZED:
            return None
        if level is Commitment.PROCESSED:
            return None
        max_version = config.get("maxSupportedTransactionVersion")
        if isinstance(record.transaction.message, MessageV0) and max_version is None:
            raise RpcError(
                -32015,
                "Transaction version (0) is not supported by the requesting client. Please try "
                "the request again with the following configuration parameter: "
                '"maxSupportedTransactionVersion": 0',
            )
        return transaction_json(record, encoding)

    def _request_airdrop(self, params: list[Any]) -> str:
        address = _pubkey(_param(params, 0))
        lamports = _param(params, 1)
        if not isinstance(lamports, int) or not 0 < lamports < 2**64:
            raise _invalid("Invalid params: lamports must be a positive 64-bit integer")
        try:
            return str(self.ledger.airdrop(address, lamports).signature)
        except LedgerError as exc:
            raise RpcError(-32603, f"airdrop request failed: {exc.message}") from None


def _error_envelope(error: RpcError, request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.as_json(), "id": request_id}
