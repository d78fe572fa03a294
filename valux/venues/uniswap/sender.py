"""One wallet's transactions on one EVM chain: the nonce, signing, journaling, replacing.

The wallet is the single writer of its key (DESIGN.md, "Exactly once"); a wallet host
owns one :class:`TxSender` per wallet and chain, and every venue of that wallet sends
through it.

Contract:

- **Chain id first.** :meth:`TxSender.start` asks the node's ``eth_chainId`` and refuses
  with :class:`~valux.venues.uniswap.errors.ChainIdMismatch` when it is not the configured
  ``chain_id``. Until a start succeeded, nothing is signed: every send raises
  (:class:`~valux.venues.uniswap.errors.NotStarted`, or the mismatch again). Every
  transaction is EIP-1559 (type 2) with ``chainId`` = the verified id.
- **Nonces.** Sends are serialised by one lock: allocate the next nonce, sign, journal,
  send, advance. Concurrent intents therefore get consecutive nonces in the order they
  reached the lock. A send the node refuses for good (:class:`SendRejected`) does not use
  its nonce up; a "nonce too low" answer (someone else used the key, or the journal was
  behind) resynchronises with ``eth_getTransactionCount(address, "pending")`` and signs
  again at the new nonce (a new attempt, journaled like any other).
- **Journal before send.** Every signed transaction — first attempt, replacement, gap
  filler — is handed to ``await on_attempt(intent_id, tx_hash, nonce, raw_fields)``
  *before* it is sent; if that raises, nothing is sent and the error propagates.
  ``raw_fields`` is a JSON- and msgpack-safe dict (wei and token amounts as decimal
  strings: they exceed 64 bits) with the transaction fields, the signed raw transaction
  (``raw``, public once broadcast), ``kind`` (``swap``, ``approve``, ``wrap``, ``unwrap``,
  ``cancel``), ``replaces`` (the hash it replaces, or ``None``), ``sent_block`` and
  ``signed_at``, plus the caller's ``context`` (what a venue needs to book the outcome
  after a restart). The wallet journals these and hands them back on restart as
  ``attempts`` (:meth:`Attempt.from_journal`).
- **Stuck transactions.** :meth:`TxSender.wait` polls the receipts of every hash of the
  nonce. When none is mined ``replace_after_blocks`` blocks after the last attempt was
  sent (or ``replace_after_s`` seconds, for a chain whose blocks stopped), it signs the
  same call at the same nonce with fees ≥ 10 % higher (:func:`~.fees.bumped`) and sends
  that, up to ``max_replacements`` times. A replacement whose fee would pass
  ``max_fee_cap_wei`` is not sent.
- **Outcomes by hash.** An attempt group (one nonce) is *mined* when one of its hashes
  has a receipt — exactly one can, they share a nonce; it is *dropped* when the account's
  mined nonce passed it and none of its hashes has a receipt (another transaction took the
  nonce: nothing of this group ran); otherwise it is *pending*.
- **Restart.** :meth:`TxSender.start` compares the journaled attempts with
  ``eth_getTransactionCount(address, "latest" / "pending")``: nonces below ``latest`` are
  settled (mined or dropped), those up to ``pending`` are in the node's mempool, and
  journaled nonces at or above ``pending`` are **gaps** — signed and journaled, unknown to
  the node (a crash between journal and send, or a node that lost them). The next nonce is
  ``pending``, so a new send reuses the first gap (the old attempt then resolves as
  dropped); :meth:`TxSender.fill_gaps` instead fills every gap with a zero-value transfer
  to itself, journaled under the gap's intent, so those intents resolve as dropped at
  once.
- Clock and sleep are injectable; RPC failures (connection, timeout) raise
  :class:`~valux.venues.base.VenueUnavailable` before anything was signed, and are
  retried by the waiting loop afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Protocol

import aiohttp
from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3Exception, Web3RPCError

from valux.venues.base import VenueUnavailable
from valux.venues.uniswap.errors import (
    ChainIdMismatch,
    NotStarted,
    SendRejected,
    SignerMismatch,
    unavailable,
)
from valux.venues.uniswap.fees import Fees, FeeSettings, bumped, fees_from_history

__all__ = [
    "Attempt",
    "GroupState",
    "Lookup",
    "OnAttempt",
    "RecoveryReport",
    "SenderSettings",
    "TxCall",
    "TxSender",
    "TxSigner",
]

OnAttempt = Callable[[str, str, int, dict[str, Any]], Awaitable[None]]
"""``await on_attempt(intent_id, tx_hash, nonce, raw_fields)``: journal one signed attempt."""

NODE_ERRORS: Final = (Web3Exception, aiohttp.ClientError, OSError, TimeoutError)
"""What a node call raises when the node is unreachable, slow or answers an error."""

_CANCEL_GAS: Final = 21_000


class TxSigner(Protocol):
    """What signs: an ``eth_account`` ``LocalAccount`` (or anything shaped like one)."""

    @property
    def address(self) -> Any: ...

    def sign_transaction(self, transaction_dict: Any) -> Any: ...


class SenderSettings(BaseModel):
    """Timing of waits and replacements, and the fee choice. Frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fees: FeeSettings = FeeSettings()
    replace_after_blocks: int = Field(default=3, ge=1)
    replace_after_s: float | None = Field(default=30.0, gt=0)
    max_replacements: int = Field(default=10, ge=0)
    poll_interval_s: float = Field(default=0.25, gt=0)
    receipt_timeout_s: float = Field(default=300.0, gt=0)
    """How long :meth:`TxSender.wait` waits before answering UNRESOLVED (not a failure:
    the transaction may still land; ask again)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TxCall:
    """What one transaction does: call ``to`` with ``data``, paying ``value`` wei, with a
    gas limit of ``gas``."""

    to: str
    data: str
    value: int = 0
    gas: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One signed transaction of an intent (see the module docstring for ``fields``)."""

    intent_id: str
    tx_hash: str
    nonce: int
    fields: Mapping[str, Any]

    @classmethod
    def from_journal(
        cls, intent_id: str, tx_hash: str, nonce: int, raw_fields: Mapping[str, Any]
    ) -> Attempt:
        """An attempt as ``on_attempt`` reported it (what the wallet journaled)."""
        return cls(
            intent_id=intent_id, tx_hash=tx_hash.lower(), nonce=int(nonce), fields=raw_fields
        )

    def journal_entry(self) -> tuple[str, str, int, dict[str, Any]]:
        """The ``on_attempt`` arguments that describe this attempt."""
        return (self.intent_id, self.tx_hash, self.nonce, dict(self.fields))

    @property
    def kind(self) -> str:
        """``swap``, ``approve``, ``wrap``, ``unwrap`` or ``cancel``."""
        return str(self.fields.get("kind", ""))

    @property
    def fees(self) -> Fees:
        """The fee pair it was signed with."""
        return Fees(
            int(self.fields["max_fee_per_gas"]), int(self.fields["max_priority_fee_per_gas"])
        )

    @property
    def call(self) -> TxCall:
        """The call it makes."""
        f = self.fields
        return TxCall(to=f["to"], data=f["data"], value=int(f["value"]), gas=int(f["gas"]))

    @property
    def context(self) -> Mapping[str, Any]:
        """The caller's context recorded with it."""
        ctx = self.fields.get("context")
        return ctx if isinstance(ctx, Mapping) else {}


class GroupState(StrEnum):
    """Where the attempts of one nonce stand."""

    MINED = "mined"
    DROPPED = "dropped"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The state of one nonce's attempts: the mined attempt and its receipt, if any."""

    state: GroupState
    attempt: Attempt | None = None
    receipt: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`TxSender.start` found: the account's nonces and the journal's."""

    chain_id: int
    latest_nonce: int
    pending_nonce: int
    next_nonce: int
    in_mempool: Mapping[int, str] = field(default_factory=dict)
    """Journaled nonces the node holds pending → their intent id."""
    gaps: Mapping[int, str] = field(default_factory=dict)
    """Journaled nonces at or above the pending count → their intent id."""


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text.lower() if text.startswith("0x") else "0x" + text.lower()


def _rpc_message(exc: BaseException) -> str:
    if isinstance(exc, Web3RPCError):
        message = exc.message or str(exc)
        if isinstance(exc.rpc_response, Mapping):
            err = exc.rpc_response.get("error")
            if isinstance(err, Mapping) and isinstance(err.get("message"), str):
                message = err["message"]
        return message
    return str(exc) or type(exc).__name__


def _is_nonce_too_low(message: str) -> bool:
    text = message.lower()
    return "nonce too low" in text or "nonce has already been used" in text


def _is_known(message: str) -> bool:
    text = message.lower()
    return "already known" in text or "known transaction" in text or "already imported" in text


def _is_underpriced(message: str) -> bool:
    return "underpriced" in message.lower()


class _NonceTooLow(Exception):
    pass


class _Underpriced(Exception):
    pass


@dataclass(slots=True)
class PendingTx:
    """The attempts of one nonce while :meth:`TxSender.wait` follows them."""

    intent_id: str
    nonce: int
    kind: str
    call: TxCall
    context: Mapping[str, Any]
    attempts: list[Attempt]
    last_sent_block: int
    last_sent_at: float
    replacements: int = 0


class TxSender:
    """The nonce manager and transaction sender of one wallet on one chain."""

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        *,
        chain_id: int,
        address: str,
        on_attempt: OnAttempt,
        attempts: Iterable[Attempt] = (),
        settings: SenderSettings | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.w3 = w3
        self.chain_id = int(chain_id)
        self.address = to_checksum_address(address)
        self.on_attempt = on_attempt
        self.settings = settings or SenderSettings()
        self.clock = clock
        self.sleep = sleep
        self._lock = asyncio.Lock()
        self._verified_chain_id: int | None = None
        self._refusal: ChainIdMismatch | None = None
        self._next_nonce: int | None = None
        self._by_intent: dict[str, list[Attempt]] = {}
        self._by_nonce: dict[int, list[Attempt]] = {}
        self._hashes: set[str] = set()
        self.report: RecoveryReport | None = None
        for attempt in attempts:
            self._record(attempt)

    # -- state -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the node's chain id was checked and matched."""
        return self._verified_chain_id is not None

    @property
    def next_nonce(self) -> int | None:
        """The nonce the next send will use (``None`` before :meth:`start`)."""
        return self._next_nonce

    def attempts_of(self, intent_id: str, kinds: Iterable[str] | None = None) -> list[Attempt]:
        """Every attempt of ``intent_id`` (of the given kinds), in the order they were made."""
        wanted = None if kinds is None else set(kinds)
        return [a for a in self._by_intent.get(intent_id, []) if wanted is None or a.kind in wanted]

    def attempts_at(self, nonce: int) -> list[Attempt]:
        """Every attempt made at ``nonce``."""
        return list(self._by_nonce.get(nonce, []))

    def _record(self, attempt: Attempt) -> None:
        if attempt.tx_hash in self._hashes:
            return
        self._hashes.add(attempt.tx_hash)
        self._by_intent.setdefault(attempt.intent_id, []).append(attempt)
        self._by_nonce.setdefault(attempt.nonce, []).append(attempt)

    # -- start -----------------------------------------------------------------

    async def start(self) -> RecoveryReport:
        """Check the node's chain id, then line the journal up with the account's nonces.

        Raises:
            ChainIdMismatch: the node serves another chain (nothing will be signed).
            VenueUnavailable: the node could not be asked.
        """
        try:
            node_chain = int(await self.w3.eth.chain_id)
        except NODE_ERRORS as exc:
            raise unavailable("eth_chainId", exc) from exc
        if node_chain != self.chain_id:
            self._refusal = ChainIdMismatch(
                f"the node answers chain id {node_chain}, but this wallet signs for chain "
                f"{self.chain_id} only: refusing to sign anything",
                "uniswap",
            )
            raise self._refusal
        try:
            latest = int(await self.w3.eth.get_transaction_count(self.address, "latest"))
            pending = int(await self.w3.eth.get_transaction_count(self.address, "pending"))
        except NODE_ERRORS as exc:
            raise unavailable("eth_getTransactionCount", exc) from exc
        in_mempool: dict[int, str] = {}
        gaps: dict[int, str] = {}
        for nonce, group in sorted(self._by_nonce.items()):
            owner = group[-1].intent_id
            if latest <= nonce < pending:
                in_mempool[nonce] = owner
            elif nonce >= pending:
                gaps[nonce] = owner
        self._verified_chain_id = node_chain
        self._refusal = None
        self._next_nonce = pending
        self.report = RecoveryReport(node_chain, latest, pending, pending, in_mempool, gaps)
        return self.report

    def check_ready(self, signer: TxSigner) -> int:
        if self._refusal is not None:
            raise self._refusal
        if self._verified_chain_id is None or self._next_nonce is None:
            raise NotStarted(
                "the node's chain id has not been checked: call TxSender.start() before sending",
                "uniswap",
            )
        if to_checksum_address(signer.address) != self.address:
            raise SignerMismatch(
                f"the signer is for {signer.address}, this sender for {self.address}", "uniswap"
            )
        return self._verified_chain_id

    # -- fees ------------------------------------------------------------------

    async def fees(self) -> Fees:
        """Fresh fees for a new transaction (:func:`~.fees.fees_from_history`)."""
        fee_settings = self.settings.fees
        try:
            history = await self.w3.eth.fee_history(
                fee_settings.history_blocks, "latest", [fee_settings.priority_percentile]
            )
        except NODE_ERRORS as exc:
            raise unavailable("eth_feeHistory", exc) from exc
        return fees_from_history(history, fee_settings)

    def _capped(self, fees: Fees) -> bool:
        cap = self.settings.fees.max_fee_cap_wei
        return cap is not None and fees.max_fee_per_gas > cap

    # -- sending ---------------------------------------------------------------

    async def send(
        self,
        intent_id: str,
        call: TxCall,
        signer: TxSigner,
        *,
        kind: str,
        context: Mapping[str, Any] | None = None,
    ) -> PendingTx:
        """Sign ``call`` at the next nonce, journal it, send it; the nonce's attempts.

        Raises (nothing sent, nonce not used): ChainIdMismatch, NotStarted,
        SignerMismatch, SendRejected, VenueUnavailable (no fees or block number), and
        whatever ``on_attempt`` raises. A send whose answer was lost (connection error
        after the request) counts as sent: :meth:`wait` finds out.
        """
        self.check_ready(signer)
        ctx = dict(context or {})
        fees = await self.fees()
        if self._capped(fees):
            raise SendRejected(
                f"maxFeePerGas {fees.max_fee_per_gas} wei is above the cap "
                f"{self.settings.fees.max_fee_cap_wei} wei: not signing",
                "uniswap",
            )
        block = await self._block_number()
        async with self._lock:
            for _ in range(3):
                assert self._next_nonce is not None
                nonce = self._next_nonce
                try:
                    attempt = await self._sign_journal_send(
                        intent_id, kind, call, signer, nonce, fees, ctx, None, block
                    )
                except _NonceTooLow:
                    pending = await self._pending_count()
                    self._next_nonce = max(pending, nonce + 1)
                    continue
                except _Underpriced as exc:
                    raise SendRejected(
                        f"the node refused nonce {nonce} as underpriced: another transaction "
                        f"of this account holds it ({exc})",
                        "uniswap",
                    ) from exc
                self._next_nonce = nonce + 1
                return PendingTx(intent_id, nonce, kind, call, ctx, [attempt], block, self.clock())
        raise SendRejected(
            "the node kept answering 'nonce too low': another process may be using this key",
            "uniswap",
        )

    async def _block_number(self) -> int:
        try:
            return int(await self.w3.eth.block_number)
        except NODE_ERRORS as exc:
            raise unavailable("eth_blockNumber", exc) from exc

    async def _pending_count(self) -> int:
        try:
            return int(await self.w3.eth.get_transaction_count(self.address, "pending"))
        except NODE_ERRORS as exc:
            raise unavailable("eth_getTransactionCount", exc) from exc

    async def _sign_journal_send(
        self,
        intent_id: str,
        kind: str,
        call: TxCall,
        signer: TxSigner,
        nonce: int,
        fees: Fees,
        context: Mapping[str, Any],
        replaces: str | None,
        block: int,
    ) -> Attempt:
        chain_id = self.check_ready(signer)
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "to": to_checksum_address(call.to),
            "data": call.data,
            "value": call.value,
            "gas": call.gas,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        }
        if tx["chainId"] != self.chain_id:  # belt and braces: never another chain's signature
            raise ChainIdMismatch(f"refusing to sign for chain {tx['chainId']}", "uniswap")
        signed = signer.sign_transaction(tx)
        tx_hash = _hex(signed.hash)
        raw = _hex(signed.raw_transaction)
        fields: dict[str, Any] = {
            "kind": kind,
            "chain_id": chain_id,
            "from": self.address,
            "to": tx["to"],
            "data": call.data,
            "value": str(call.value),
            "gas": call.gas,
            "nonce": nonce,
            "type": 2,
            "max_fee_per_gas": str(fees.max_fee_per_gas),
            "max_priority_fee_per_gas": str(fees.max_priority_fee_per_gas),
            "raw": raw,
            "replaces": replaces,
            "sent_block": block,
            "signed_at": self.clock(),
            "context": dict(context),
        }
        attempt = Attempt(intent_id=intent_id, tx_hash=tx_hash, nonce=nonce, fields=fields)
        await self.on_attempt(intent_id, tx_hash, nonce, dict(fields))  # journal first
        self._record(attempt)
        try:
            await self.w3.eth.send_raw_transaction(raw)  # type: ignore[arg-type]
        except Web3RPCError as exc:
            message = _rpc_message(exc)
            if _is_known(message):
                return attempt
            if _is_nonce_too_low(message):
                raise _NonceTooLow(message) from exc
            if _is_underpriced(message):
                raise _Underpriced(message) from exc
            raise SendRejected(f"the node refused the transaction: {message}", "uniswap") from exc
        except NODE_ERRORS:
            # The request may have reached the node: treat as sent, wait() resolves it.
            return attempt
        return attempt

    # -- outcomes --------------------------------------------------------------

    async def _receipt(self, tx_hash: str) -> Mapping[str, Any] | None:
        try:
            receipt: Mapping[str, Any] = await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None
        return receipt

    async def lookup(self, attempts: Iterable[Attempt]) -> Lookup:
        """The state of a group of attempts sharing one nonce (module docstring).

        Raises VenueUnavailable when the node cannot be asked.
        """
        group = list(attempts)
        if not group:
            raise ValueError("no attempt to look up")
        nonce = group[0].nonce
        if any(a.nonce != nonce for a in group):
            raise ValueError("a lookup covers the attempts of one nonce")
        try:
            found = await self._find_mined(group)
            if found is not None:
                return found
            latest = int(await self.w3.eth.get_transaction_count(self.address, "latest"))
            if latest > nonce:
                # the nonce is used: by one of ours (receipt just arrived) or another one
                found = await self._find_mined(group)
                return found if found is not None else Lookup(GroupState.DROPPED)
        except NODE_ERRORS as exc:
            raise unavailable("receipt lookup", exc) from exc
        return Lookup(GroupState.PENDING)

    async def _find_mined(self, group: list[Attempt]) -> Lookup | None:
        receipts = await asyncio.gather(*(self._receipt(a.tx_hash) for a in group))
        for attempt, receipt in zip(group, receipts, strict=True):
            if receipt is not None:
                return Lookup(GroupState.MINED, attempt, receipt)
        return None

    def pending_of(self, attempts: Iterable[Attempt]) -> PendingTx:
        """A :class:`PendingTx` to :meth:`wait` on, from journaled attempts of one nonce."""
        group = sorted(attempts, key=lambda a: float(a.fields.get("signed_at", 0.0)))
        if not group:
            raise ValueError("no attempt to follow")
        last = group[-1]
        return PendingTx(
            last.intent_id,
            last.nonce,
            last.kind,
            last.call,
            dict(last.context),
            group,
            int(last.fields.get("sent_block", 0)),
            float(last.fields.get("signed_at", self.clock())),
        )

    async def wait(self, pending: PendingTx, signer: TxSigner | None) -> Lookup:
        """Follow ``pending`` until one attempt is mined or the nonce is taken by another
        transaction, replacing it while stuck (needs ``signer``; with ``None`` nothing is
        replaced). Answers PENDING after ``receipt_timeout_s`` (ask again later).

        Node errors while waiting are retried until the timeout; nothing is ever sent at
        another nonce.
        """
        settings = self.settings
        deadline = self.clock() + settings.receipt_timeout_s
        while True:
            try:
                found = await self.lookup(pending.attempts)
                if found.state is not GroupState.PENDING:
                    return found
                if signer is not None and pending.replacements < settings.max_replacements:
                    block = int(await self.w3.eth.block_number)
                    now = self.clock()
                    stuck = block - pending.last_sent_block >= settings.replace_after_blocks or (
                        settings.replace_after_s is not None
                        and now - pending.last_sent_at >= settings.replace_after_s
                    )
                    if stuck:
                        await self._replace(pending, signer, block)
            except VenueUnavailable:
                pass  # the node hiccupped: look again after the pause
            except NODE_ERRORS:
                pass
            if self.clock() >= deadline:
                return Lookup(GroupState.PENDING)
            await self.sleep(settings.poll_interval_s)

    async def _replace(self, pending: PendingTx, signer: TxSigner, block: int) -> None:
        previous = pending.attempts[-1]
        fees = bumped(previous.fees, await self.fees(), self.settings.fees.replacement_bump)
        pending.last_sent_block, pending.last_sent_at = block, self.clock()
        if self._capped(fees):
            return  # keep waiting at the fees we have
        async with self._lock:
            try:
                attempt = await self._sign_journal_send(
                    pending.intent_id,
                    pending.kind,
                    pending.call,
                    signer,
                    pending.nonce,
                    fees,
                    pending.context,
                    previous.tx_hash,
                    block,
                )
            except _NonceTooLow:
                return  # one of the attempts was mined: the next lookup sees it
            except (_Underpriced, SendRejected):
                return  # try again, higher, after the next interval
        pending.attempts.append(attempt)
        pending.replacements += 1

    async def fill_gaps(self, signer: TxSigner) -> list[Attempt]:
        """Fill every nonce from the pending count up to the highest journaled one with a
        zero-value transfer to this address (module docstring); the attempts made."""
        self.check_ready(signer)
        fresh = await self.fees()
        block = await self._block_number()
        made: list[Attempt] = []
        async with self._lock:
            pending = await self._pending_count()
            top = max(self._by_nonce, default=-1)
            nonce = pending
            while nonce <= top:
                group = self._by_nonce.get(nonce, [])
                intent_id = group[-1].intent_id if group else f"nonce-gap-{nonce}"
                fees = bumped(group[-1].fees, fresh) if group else fresh
                call = TxCall(to=self.address, data="0x", value=0, gas=_CANCEL_GAS)
                try:
                    attempt = await self._sign_journal_send(
                        intent_id, "cancel", call, signer, nonce, fees, {}, None, block
                    )
                except _NonceTooLow:
                    nonce += 1
                    continue
                made.append(attempt)
                nonce += 1
            self._next_nonce = max(self._next_nonce or 0, nonce)
        return made


def wei_to_eth(wei: int) -> Decimal:
    """Wei as whole ETH."""
    return Decimal(wei).scaleb(-18)
