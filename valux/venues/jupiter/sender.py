"""One wallet's Solana transactions: sign, journal, send, rebroadcast, resolve by signature.

The wallet is the single writer of its key (DESIGN.md, "Exactly once"); the wallet host
owns one :class:`SolanaSender` per Solana wallet and every Solana venue of that wallet
sends through it. Solana has no nonce: what makes a swap land at most once is the rule
that an intent never has two transactions that could both land.

Contract:

- **Signing.** :meth:`SolanaSender.send_new` takes a swap transaction as Jupiter returns
  it (base64 of a v0 ``VersionedTransaction``; unsigned, as mainnet Jupiter sends it, or
  already signed by a pool authority, as the sandbox sends it), checks that this
  wallet is its fee payer and one of its signers and that the signer handed over is this
  wallet's key, fills the wallet's signature slot with solders and keeps every other
  signature. A transaction whose other signatures are missing or invalid (it could
  never land) is refused before anything is journaled (:class:`SignatureMissing`).
- **Journal before send.** The signature (the transaction id) is known once signed.
  ``await on_attempt(intent_id, signature, blockhash, last_valid_block_height,
  raw_fields)`` is called *before* the transaction is sent; if it raises, nothing is
  sent and the error propagates. ``raw_fields`` is JSON- and msgpack-safe: ``kind``
  (``"swap"``), ``raw`` (base64 of the signed transaction — public once broadcast, no
  secret), ``number`` (1 for an intent's first attempt), ``replaces`` (the previous
  attempt's signature or ``None``), ``fee_payer``, ``signed_at`` (unix seconds) and the
  caller's ``context`` (what the venue needs to book the outcome after a restart). The
  wallet journals these and hands them back on restart (:meth:`Attempt.from_journal`,
  ``attempts=``). Because ``raw`` is journaled, an attempt journaled and never sent
  (a crash in between) is simply broadcast after the restart.
- **Sending.** The first send runs the node's preflight (``skip_preflight=False`` by
  default, at ``processed`` commitment, the most recent bank — a blockhash from Jupiter's
  node is then least likely to be unknown to ours): a swap that would fail (insufficient
  funds, an expired quote, Jupiter's slippage error) is refused for free instead of
  landing as a failed transaction that still pays its fee. A preflight refusal raises
  :class:`PreflightRefused` (the node does not forward a transaction that failed
  preflight, so nothing can land; the attempt stays journaled, and after a restart it
  resolves like any other — PENDING until its blockhash expires, then EXPIRED — unless a
  ``wait`` rebroadcasts it); ``BlockhashNotFound`` and ``AlreadyProcessed`` are
  not refusals (a lagging node; one of our own sends landed) and the attempt is
  followed like any other. Every send passes ``maxRetries: 0``: the node does not
  retry on its own, this sender rebroadcasts. A send whose answer is lost (connection
  error, timeout) counts as sent.
- **Rebroadcast.** :meth:`SolanaSender.wait` polls every ``poll_interval_s`` and sends
  the *same signed bytes* again (``skipPreflight: true``) every
  ``rebroadcast_interval_s`` until an attempt has landed or every attempt is expired,
  or ``confirm_timeout_s`` passed (then PENDING: ask again). The same bytes carry the
  same signature, so a rebroadcast can never make a second swap.
- **Landed** means a ``getSignatureStatuses`` status at ``landed_commitment``
  (``confirmed`` by default: a supermajority voted on the block; on mainnet no
  optimistically confirmed block has ever been rolled back, and ``finalized`` would add
  ~13 s to every trade; ``finalized`` can be chosen). A landed transaction with ``err``
  is a failed swap (its fee was paid, nothing else moved). A status below that level
  (``processed``) is PENDING.
- **Expired** (provably never landing) needs all of: the block height at
  ``expiry_commitment`` (``finalized`` by default) is past every attempt's
  ``lastValidBlockHeight`` — no block that could still hold one of them is undecided —
  *then*, asked afterwards, ``getSignatureStatuses`` with ``searchTransactionHistory``
  finds none of the signatures, and ``isBlockhashValid`` is false for every attempt's
  blockhash (so a wrong ``lastValidBlockHeight`` from Jupiter cannot fool it).
  Resolution over all attempts of an intent (:meth:`SolanaSender.lookup`):
  LANDED (one landed, with or without ``err``), EXPIRED (none landed and all expired:
  safe to sign a new transaction, or to report FAILED, as the caller decides), else
  PENDING.
- **Re-signing.** :meth:`SolanaSender.send_new` for an intent that already has attempts
  first resolves them and signs only when they are EXPIRED; otherwise it raises
  :class:`~valux.venues.jupiter.errors.ResignRefused` with nothing signed. One intent's
  sends are serialised by a lock; different intents proceed concurrently (no nonce).
- RPC trouble raises :class:`~valux.venues.jupiter.errors.JupiterUnavailable` from
  :meth:`lookup`; :meth:`wait` retries it until its timeout. Clock and sleep are
  injectable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from valux.venues.base import OrderRejected
from valux.venues.jupiter.chain import RpcError, SolanaRpc
from valux.venues.jupiter.errors import (
    JupiterUnavailable,
    ResignRefused,
    SignerMismatch,
    tx_error_reason,
)

__all__ = [
    "Attempt",
    "Landing",
    "OnAttempt",
    "PreflightRefused",
    "Resolution",
    "SenderSettings",
    "SignatureMissing",
    "SolanaSender",
    "decode_transaction",
    "program_ids",
]

OnAttempt = Callable[[str, str, str, int, dict[str, Any]], Awaitable[None]]
"""``await on_attempt(intent_id, signature, blockhash, last_valid_block_height,
raw_fields)``: journal one signed attempt before it is sent."""

Commitment = Literal["processed", "confirmed", "finalized"]

_log = logging.getLogger("valux.venues.jupiter.sender")
_LANDED_LEVELS: Final[dict[str, tuple[str, ...]]] = {
    "confirmed": ("confirmed", "finalized"),
    "finalized": ("finalized",),
}
_NOT_REFUSALS: Final = frozenset({"BlockhashNotFound", "AlreadyProcessed"})
_PREFLIGHT_CODES: Final = frozenset({-32002, -32003})


class SenderSettings(BaseModel):
    """How the sender sends and waits (module contract). Frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    skip_preflight: bool = False
    """Skip the node's preflight on the *first* send (rebroadcasts always skip it)."""
    preflight_commitment: Commitment = "processed"
    landed_commitment: Literal["confirmed", "finalized"] = "confirmed"
    expiry_commitment: Literal["confirmed", "finalized"] = "finalized"
    poll_interval_s: float = Field(default=0.5, gt=0)
    rebroadcast_interval_s: float = Field(default=2.0, gt=0)
    confirm_timeout_s: float = Field(default=120.0, gt=0)
    """How long :meth:`SolanaSender.wait` follows before answering PENDING (mainnet: a
    blockhash lives ~60–90 s, and expiry is judged at ``finalized``, ~13 s later)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One signed transaction of an intent (see the module contract for ``fields``)."""

    intent_id: str
    signature: str
    blockhash: str
    last_valid_block_height: int
    fields: Mapping[str, Any]

    @classmethod
    def from_journal(
        cls,
        intent_id: str,
        signature: str,
        blockhash: str,
        last_valid_block_height: int,
        raw_fields: Mapping[str, Any],
    ) -> Attempt:
        """An attempt as ``on_attempt`` reported it (what the wallet journaled)."""
        return cls(
            intent_id=intent_id,
            signature=str(signature),
            blockhash=str(blockhash),
            last_valid_block_height=int(last_valid_block_height),
            fields=dict(raw_fields),
        )

    def journal_entry(self) -> tuple[str, str, str, int, dict[str, Any]]:
        """The ``on_attempt`` arguments that describe this attempt."""
        return (
            self.intent_id,
            self.signature,
            self.blockhash,
            self.last_valid_block_height,
            dict(self.fields),
        )

    @property
    def raw(self) -> bytes:
        """The signed transaction's bytes (what is broadcast)."""
        return base64.b64decode(str(self.fields["raw"]))

    @property
    def number(self) -> int:
        """1 for the intent's first attempt, 2 for the first re-signed one, …"""
        return int(self.fields.get("number", 1))

    @property
    def context(self) -> Mapping[str, Any]:
        """The caller's context recorded with it."""
        ctx = self.fields.get("context")
        return ctx if isinstance(ctx, Mapping) else {}


class Landing(StrEnum):
    """Where the attempts of one intent stand."""

    LANDED = "landed"
    """One attempt is in a block at ``landed_commitment`` (with or without ``err``)."""
    EXPIRED = "expired"
    """None landed and none ever can (module contract)."""
    PENDING = "pending"
    """Neither yet."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What :meth:`SolanaSender.lookup` found for an intent's attempts."""

    state: Landing
    attempt: Attempt | None = None
    """The landed attempt (LANDED only)."""
    err: Any = None
    """The landed transaction's error as the RPC renders it (``None``: it succeeded)."""
    slot: int | None = None
    confirmation: str | None = None
    block_height: int | None = None
    """The block height (at ``expiry_commitment``) the decision was made at."""

    @property
    def succeeded(self) -> bool:
        """Landed without an error."""
        return self.state is Landing.LANDED and self.err is None


class SignatureMissing(OrderRejected):
    """The transaction needs a signature this wallet cannot give (another signer's slot
    is empty or invalid), or is not paid by this wallet: it could never land."""

    code = "SOLANA_SIGNATURE_MISSING"


class PreflightRefused(Exception):
    """The node's preflight refused the first send of ``attempt``: it was not forwarded
    and cannot land. ``err`` is the simulation's error (RPC JSON), ``logs`` its logs."""

    def __init__(
        self, attempt: Attempt, message: str, err: Any = None, logs: Sequence[str] = ()
    ) -> None:
        super().__init__(attempt, message, err, list(logs))
        self.attempt = attempt
        self.message = message
        self.err = err
        self.logs = list(logs)

    @property
    def reason(self) -> str:
        """A readable reason (the simulation's error when there is one)."""
        if self.err is not None:
            programs = program_ids(VersionedTransaction.from_bytes(self.attempt.raw))
            return f"refused at preflight, not sent: {tx_error_reason(self.err, programs)}"
        return f"refused at preflight, not sent: {self.message}"


def program_ids(tx: VersionedTransaction) -> tuple[str, ...]:
    """The program id of each top-level instruction of ``tx``."""
    keys = list(tx.message.account_keys)
    return tuple(
        str(keys[ix.program_id_index]) if ix.program_id_index < len(keys) else "?"
        for ix in tx.message.instructions
    )


def decode_transaction(transaction: str | bytes | VersionedTransaction) -> VersionedTransaction:
    """A ``VersionedTransaction`` from base64 text, raw bytes or itself."""
    if isinstance(transaction, VersionedTransaction):
        return transaction
    try:
        raw = (
            base64.b64decode(transaction, validate=True)
            if isinstance(transaction, str)
            else bytes(transaction)
        )
        return VersionedTransaction.from_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise SignatureMissing(f"the swap transaction cannot be decoded: {exc}", "jupiter") from exc


class SolanaSender:
    """The signer, journal-before-send sender and resolver of one Solana wallet."""

    def __init__(
        self,
        rpc: SolanaRpc,
        *,
        address: str,
        on_attempt: OnAttempt,
        attempts: Iterable[Attempt] = (),
        settings: SenderSettings | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rpc = rpc
        self.address = str(Pubkey.from_string(address))
        self._pubkey = Pubkey.from_string(address)
        self.on_attempt = on_attempt
        self.settings = settings or SenderSettings()
        self.clock = clock
        self.sleep = sleep
        self._by_intent: dict[str, list[Attempt]] = {}
        self._signatures: set[str] = set()
        self._broadcast_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        for attempt in attempts:
            self._record(attempt)

    # -- state -------------------------------------------------------------------------

    def attempts_of(self, intent_id: str) -> list[Attempt]:
        """Every attempt of ``intent_id``, first first."""
        return sorted(self._by_intent.get(intent_id, []), key=lambda a: a.number)

    def intent_ids(self) -> list[str]:
        """Every intent with at least one attempt."""
        return list(self._by_intent)

    def _record(self, attempt: Attempt) -> None:
        if attempt.signature in self._signatures:
            return
        self._signatures.add(attempt.signature)
        self._by_intent.setdefault(attempt.intent_id, []).append(attempt)

    def lock_for(self, intent_id: str) -> asyncio.Lock:
        """The lock serialising ``intent_id``'s sends."""
        return self._locks.setdefault(intent_id, asyncio.Lock())

    # -- signing -----------------------------------------------------------------------

    def sign(
        self,
        intent_id: str,
        transaction: str | bytes | VersionedTransaction,
        signer: Keypair,
        *,
        last_valid_block_height: int,
        number: int = 1,
        replaces: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Attempt:
        """Fill this wallet's signature slot of ``transaction``; the attempt (not journaled,
        not sent). Raises SignerMismatch or SignatureMissing (module contract)."""
        if signer.pubkey() != self._pubkey:
            raise SignerMismatch(
                f"the signer is for {signer.pubkey()}, this sender for {self.address}", "jupiter"
            )
        tx = decode_transaction(transaction)
        message = tx.message
        required = message.header.num_required_signatures
        signers = list(message.account_keys[:required])
        if not signers or signers[0] != self._pubkey:
            payer = signers[0] if signers else "nobody"
            raise SignatureMissing(
                f"the transaction is paid by {payer}, not by this wallet {self.address}",
                "jupiter",
            )
        signatures = list(tx.signatures)
        if len(signatures) != required:
            raise SignatureMissing("the transaction's signature count is malformed", "jupiter")
        signatures[0] = signer.sign_message(to_bytes_versioned(message))
        signed = VersionedTransaction.populate(message, signatures)
        checks = signed.verify_with_results()
        missing = [str(key) for key, ok in zip(signers, checks, strict=True) if not ok]
        if missing:
            raise SignatureMissing(
                f"the transaction lacks a valid signature of {', '.join(missing)}; it could "
                "never land",
                "jupiter",
            )
        fields: dict[str, Any] = {
            "kind": "swap",
            "raw": base64.b64encode(bytes(signed)).decode(),
            "number": number,
            "replaces": replaces,
            "fee_payer": self.address,
            "version": 0 if isinstance(message, MessageV0) else "legacy",
            "signed_at": self.clock(),
            "context": dict(context or {}),
        }
        return Attempt(
            intent_id=intent_id,
            signature=str(signed.signatures[0]),
            blockhash=str(message.recent_blockhash),
            last_valid_block_height=int(last_valid_block_height),
            fields=fields,
        )

    async def send_new(
        self,
        intent_id: str,
        transaction: str | bytes | VersionedTransaction,
        signer: Keypair,
        *,
        last_valid_block_height: int,
        context: Mapping[str, Any] | None = None,
    ) -> Attempt:
        """Sign a new transaction for ``intent_id``, journal it, send it (module contract).

        Raises, with nothing signed: ResignRefused (an earlier attempt may still land),
        SignerMismatch, SignatureMissing, JupiterUnavailable (the earlier attempts could
        not be resolved); with nothing sent: whatever ``on_attempt`` raises; after
        journaling: PreflightRefused (not forwarded; it cannot land).
        """
        async with self.lock_for(intent_id):
            previous = self.attempts_of(intent_id)
            if previous:
                found = await self.lookup(previous)
                if found.state is not Landing.EXPIRED:
                    raise ResignRefused(
                        f"intent {intent_id} has an attempt that is {found.state.value} "
                        f"({previous[-1].signature}): not signing another",
                        "jupiter",
                    )
            attempt = self.sign(
                intent_id,
                transaction,
                signer,
                last_valid_block_height=last_valid_block_height,
                number=len(previous) + 1,
                replaces=previous[-1].signature if previous else None,
                context=context,
            )
            await self.on_attempt(*attempt.journal_entry())  # journal first
            self._record(attempt)
            await self._first_send(attempt)
            return attempt

    async def _first_send(self, attempt: Attempt) -> None:
        settings = self.settings
        self._broadcast_at[attempt.signature] = self.clock()
        try:
            await self.rpc.send_transaction(
                attempt.raw,
                skip_preflight=settings.skip_preflight,
                preflight_commitment=settings.preflight_commitment,
            )
        except RpcError as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            err = data.get("err")
            if isinstance(err, str) and err in _NOT_REFUSALS:
                _log.info("first send of %s: %s; following it", attempt.signature, err)
                return
            if exc.code in _PREFLIGHT_CODES:
                logs = data.get("logs") if isinstance(data.get("logs"), list) else []
                raise PreflightRefused(attempt, exc.message, err, logs or []) from exc
            _log.warning("first send of %s answered %s; following it", attempt.signature, exc)
        except JupiterUnavailable as exc:
            _log.warning("first send of %s may not have arrived: %s", attempt.signature, exc)

    async def rebroadcast(self, attempt: Attempt) -> bool:
        """Send ``attempt``'s signed bytes again (no preflight); whether the node took them."""
        self._broadcast_at[attempt.signature] = self.clock()
        try:
            await self.rpc.send_transaction(attempt.raw, skip_preflight=True)
        except (RpcError, JupiterUnavailable) as exc:
            _log.info("rebroadcast of %s: %s", attempt.signature, exc)
            return False
        return True

    # -- resolution --------------------------------------------------------------------

    async def lookup(self, attempts: Sequence[Attempt]) -> Resolution:
        """Where ``attempts`` (one intent's) stand (module contract). Raises
        JupiterUnavailable when the node cannot be asked."""
        group = list(attempts)
        if not group:
            raise ValueError("no attempt to look up")
        settings = self.settings
        # Height first, statuses after: a transaction in any block up to the height
        # seen is then in the statuses' answer.
        height = await self.rpc.block_height(settings.expiry_commitment)
        statuses = await self.rpc.signature_statuses([a.signature for a in group])
        landed_levels = _LANDED_LEVELS[settings.landed_commitment]
        seen = False
        for attempt, status in zip(group, statuses, strict=True):
            if status is None:
                continue
            seen = True
            level = status.get("confirmationStatus")
            if level in landed_levels:
                return Resolution(
                    Landing.LANDED,
                    attempt,
                    status.get("err"),
                    _int_or_none(status.get("slot")),
                    str(level),
                    height,
                )
        if seen or any(height <= a.last_valid_block_height for a in group):
            return Resolution(Landing.PENDING, block_height=height)
        for blockhash in {a.blockhash for a in group}:
            if await self.rpc.is_blockhash_valid(blockhash):
                return Resolution(Landing.PENDING, block_height=height)
        return Resolution(Landing.EXPIRED, block_height=height)

    async def resolve(self, intent_id: str) -> Resolution | None:
        """:meth:`lookup` over every attempt of ``intent_id``; ``None`` without attempts."""
        attempts = self.attempts_of(intent_id)
        return await self.lookup(attempts) if attempts else None

    async def wait(self, intent_id: str, timeout_s: float | None = None) -> Resolution:
        """Follow ``intent_id``'s attempts, rebroadcasting, until one landed or all expired;
        PENDING after ``timeout_s`` (default ``confirm_timeout_s``). Never signs."""
        settings = self.settings
        attempts = self.attempts_of(intent_id)
        if not attempts:
            raise ValueError(f"intent {intent_id} has no attempt to follow")
        deadline = self.clock() + (settings.confirm_timeout_s if timeout_s is None else timeout_s)
        last = Resolution(Landing.PENDING)
        while True:
            try:
                last = await self.lookup(attempts)
                if last.state is not Landing.PENDING:
                    return last
                await self._rebroadcast_due(attempts, last.block_height)
            except JupiterUnavailable as exc:
                _log.info("following %s: %s", intent_id, exc)
            if self.clock() >= deadline:
                return last
            await self.sleep(settings.poll_interval_s)

    async def _rebroadcast_due(self, attempts: Sequence[Attempt], height: int | None) -> None:
        now = self.clock()
        interval = self.settings.rebroadcast_interval_s
        for attempt in attempts:
            if height is not None and height > attempt.last_valid_block_height:
                continue  # its blockhash is gone: sending it again cannot land it
            sent = self._broadcast_at.get(attempt.signature)
            if sent is None or now - sent >= interval:
                await self.rebroadcast(attempt)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
