"""A Solana cluster in one process: LiteSVM plus the mainnet semantics LiteSVM lacks.

LiteSVM is a real SVM (signatures, fees, rent, SPL programs) but has no slots, no
blockhash ages and no network. :class:`SolanaLedger` adds them, deterministically under a
seed, so a client written for mainnet meets the same situations here.

Contract:

- **Slot clock.** One slot every ``slot_ms`` milliseconds while :meth:`SolanaLedger.start`
  runs (``slot_ms=None``: only :meth:`SolanaLedger.advance` moves it). A produced slot
  is a block: block height +1, a new blockhash (LiteSVM ``expire_blockhash``), the clock
  sysvar set to the slot and wall time, and every transaction due in it lands. With
  ``skip_rate`` > 0 a slot is skipped with that probability: no block, nothing lands.
- **Blockhash window.** LiteSVM runs with its blockhash check off; the ledger remembers
  the blockhashes of the last ``blockhash_window`` (150) blocks. A blockhash issued at
  height ``h`` is valid while the block height is ≤ ``h + 150`` — its
  ``lastValidBlockHeight``. Anything else is refused with ``BlockhashNotFound``.
- **Commitment.** ``processed`` is the newest block; ``confirmed`` is ``confirm_depth``
  blocks behind, ``finalized`` ``finalize_depth`` (32) behind. Blockhashes, slots and
  block heights are answered at the asked commitment; account *state* is always the
  newest (the ledger keeps one bank, not one per commitment). A landed transaction's
  status is ``processed`` in its slot, ``confirmed`` ``confirm_depth`` slots later and
  ``finalized`` ``finalize_depth`` slots later.
- **Sending.** :meth:`SolanaLedger.submit` runs the RPC's preflight unless skipped
  (signature check, blockhash, replay, simulation) and raises :class:`PreflightFailure`
  or :class:`SignatureVerificationFailure`. An accepted transaction is then *dropped*
  with probability ``drop_rate`` (seeded RNG; the caller still gets its signature and it
  never lands — rebroadcast the same bytes) or lands in the first produced slot at least
  ``landing_delay_slots`` after the current one (``0``: at once, in the current slot).
  Each send of the same bytes is an independent attempt; a signature lands at most once.
  At landing time the blockhash is checked again (an expired one is dropped silently,
  as a leader would) and the transaction executes against the then-current state.
- **Landing.** A transaction lands when LiteSVM commits it: on success, or on an
  execution error after the fee was charged (``err`` is then set and the fee is still
  paid, as on mainnet). Errors before fee charging (no fee payer, insufficient funds for
  fee, bad signature) mean it never lands. Every landed transaction is kept for the
  lifetime of the ledger with its pre/post lamports and token balances, so statuses and
  ``getTransaction`` answers survive; a replay of a landed signature is
  ``AlreadyProcessed``.
- **Control-plane transactions** (:meth:`SolanaLedger.execute` — airdrops, mints,
  pool set-up) are real signed transactions that land at once, never dropped or delayed.
- Everything random (drops, skips, every keypair derived by :meth:`SolanaLedger.keypair`)
  comes from ``seed``. Wall-clock fields (``blockTime``) are the only non-determinism.
- Single-threaded: all methods are called from the event loop that runs the clock.
- **Program execution on a thread of its own.** LiteSVM's program runtime (solders 0.29)
  uses the MMX registers without ``EMMS``, leaving the x87 unit of the thread that called
  it unusable: every later ``long double`` result there is NaN, and Ray's C++ core worker,
  which sizes hash tables with ``long double``, aborts its process with ``std::bad_alloc``.
  Simulating and landing transactions therefore run on one dedicated thread (the caller
  waits for it, so the ledger stays sequential); the threads that host a sandbox — a test
  process, a benchmark next to Ray, ``valux sandbox`` — keep a sound FPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import (
    FailedTransactionMetadata,
    InnerInstruction,
    TransactionMetadata,
)
from solders.transaction_status import TransactionErrorFieldless, TransactionErrorType

from valux.sandbox.spl import (
    LAMPORTS_PER_SIGNATURE,
    MINT_SIZE,
    NATIVE_MINT,
    TOKEN_PROGRAM_ID,
    ComputeBudgetRequest,
    compute_budget_of,
    memo,
    mint_data,
    parse_mint,
    parse_token_account,
    priority_fee_lamports,
)
from valux.sandbox.txerror import error_message

__all__ = [
    "SLOTS_PER_EPOCH",
    "Commitment",
    "LedgerConfig",
    "LedgerError",
    "PreflightFailure",
    "SignatureStatus",
    "SignatureVerificationFailure",
    "Simulation",
    "SolanaLedger",
    "TokenBalance",
    "TxRecord",
    "check_network",
]

SLOTS_PER_EPOCH = 432_000
_log = logging.getLogger("valux.sandbox.ledger")
_PROGRAM_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="litesvm-programs")
"""Where LiteSVM executes programs (module docstring: it leaves its thread's x87 unit dirty)."""
_FAUCET_LAMPORTS = 100_000_000 * 10**9  # 100 M SOL for airdrops and control-plane fees


class Commitment(StrEnum):
    """How settled a read must be (mainnet's three levels)."""

    PROCESSED = "processed"
    CONFIRMED = "confirmed"
    FINALIZED = "finalized"


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerConfig:
    """Settings of a :class:`SolanaLedger`; the network knobs can be changed while it runs."""

    seed: int = 0
    slot_ms: float | None = 400.0
    """Milliseconds per slot on the background clock; ``None`` = manual (``advance``)."""
    landing_delay_slots: int = 0
    drop_rate: float = 0.0
    skip_rate: float = 0.0
    blockhash_window: int = 150
    confirm_depth: int = 1
    finalize_depth: int = 32
    status_cache_slots: int = 300
    """``getSignatureStatuses`` without ``searchTransactionHistory`` sees this many slots."""
    start_slot: int = 300_000_000
    start_block_height: int = 280_000_000

    def __post_init__(self) -> None:
        check_network(self.slot_ms, self.landing_delay_slots, self.drop_rate, self.skip_rate)
        if self.blockhash_window < 1 or self.confirm_depth < 0:
            raise ValueError("blockhash_window must be ≥ 1 and confirm_depth ≥ 0")
        if self.finalize_depth < self.confirm_depth:
            raise ValueError("finalize_depth must be ≥ confirm_depth")


def check_network(
    slot_ms: float | None, landing_delay_slots: int, drop_rate: float, skip_rate: float
) -> None:
    """Raise :class:`ValueError` for network settings a ledger cannot run with."""
    if slot_ms is not None and not slot_ms > 0:
        raise ValueError("slot_ms must be > 0 or None")
    if landing_delay_slots < 0:
        raise ValueError("landing_delay_slots must be ≥ 0")
    if not 0.0 <= drop_rate <= 1.0:
        raise ValueError("drop_rate must be within [0, 1]")
    if not 0.0 <= skip_rate < 1.0:
        raise ValueError("skip_rate must be within [0, 1)")


class LedgerError(Exception):
    """A control-plane transaction failed, or the ledger was misused."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignatureVerificationFailure(Exception):
    """Preflight found a missing or wrong signature (RPC code -32003)."""

    def __init__(self, signature: str) -> None:
        super().__init__(signature)
        self.signature = signature


@dataclass(frozen=True, slots=True)
class TokenBalance:
    """One ``preTokenBalances``/``postTokenBalances`` entry, amounts in base units."""

    account_index: int
    mint: Pubkey
    owner: Pubkey
    program_id: Pubkey
    amount: int
    decimals: int


@dataclass(frozen=True, slots=True)
class Simulation:
    """What executing a transaction against the current state would do."""

    err: TransactionErrorType | None
    logs: list[str]
    units_consumed: int
    fee: int
    return_data: tuple[Pubkey, bytes] | None = None
    inner_instructions: list[list[InnerInstruction]] = field(default_factory=list)
    post_accounts: dict[Pubkey, Account] = field(default_factory=dict)
    account_keys: list[Pubkey] = field(default_factory=list)


class PreflightFailure(Exception):
    """Preflight refused a transaction (RPC code -32002, "Transaction simulation failed")."""

    def __init__(self, simulation: Simulation) -> None:
        super().__init__(simulation)
        self.simulation = simulation


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A landed transaction with everything ``getTransaction`` reports about it."""

    signature: Signature
    slot: int
    block_time: int
    transaction: VersionedTransaction
    err: TransactionErrorType | None
    fee: int
    logs: list[str]
    units_consumed: int
    inner_instructions: list[list[InnerInstruction]]
    return_data: tuple[Pubkey, bytes] | None
    account_keys: list[Pubkey]
    """Static keys, then loaded writable, then loaded readonly addresses."""
    loaded_writable: list[Pubkey]
    loaded_readonly: list[Pubkey]
    pre_balances: list[int]
    post_balances: list[int]
    pre_token_balances: list[TokenBalance]
    post_token_balances: list[TokenBalance]
    budget: ComputeBudgetRequest
    writable: frozenset[Pubkey]


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """One ``getSignatureStatuses`` entry."""

    slot: int
    confirmations: int | None
    err: TransactionErrorType | None
    confirmation_status: Commitment


@dataclass(frozen=True, slots=True)
class _Block:
    slot: int
    height: int
    blockhash: Hash


@dataclass(slots=True)
class _Pending:
    transaction: VersionedTransaction
    due_slot: int


def _signature(tx: VersionedTransaction) -> Signature:
    return tx.signatures[0] if tx.signatures else Signature.default()


class SolanaLedger:
    """LiteSVM behind a slot clock, a blockhash window and a lossy, delayed network."""

    def __init__(self, config: LedgerConfig | None = None) -> None:
        self.config = config or LedgerConfig()
        self._rng = random.Random(self.config.seed)
        self._svm = LiteSVM().with_blockhash_check(False)
        self._slot_ms = self.config.slot_ms
        self._landing_delay = self.config.landing_delay_slots
        self._drop_rate = self.config.drop_rate
        self._skip_rate = self.config.skip_rate
        self._slot = self.config.start_slot
        self._epoch_start = int(time.time())
        self._blocks: deque[_Block] = deque(
            maxlen=max(self.config.blockhash_window, self.config.finalize_depth) + 1
        )
        self._hash_heights: dict[Hash, int] = {}
        self._records: dict[Signature, TxRecord] = {}
        self._slot_records: dict[int, list[TxRecord]] = {}
        self._pending: list[_Pending] = []
        self._decimals: dict[Pubkey, int] = {}
        self._control_nonce = 0
        self._clock_task: asyncio.Task[None] | None = None
        self._clock_changed = asyncio.Event()
        self._set_clock()
        self._record_block(self.config.start_block_height)
        self.faucet = self.keypair("faucet")
        """Pays airdrops and control-plane fees; 100 M SOL."""
        self._svm.set_account(
            self.faucet.pubkey(), Account(_FAUCET_LAMPORTS, b"", Pubkey.default(), False, 0)
        )
        # Mainnet's wrapped-SOL mint (LiteSVM does not ship it).
        self._svm.set_account(
            NATIVE_MINT,
            Account(
                self.rent_exempt(MINT_SIZE),
                mint_data(authority=None, supply=0, decimals=9),
                TOKEN_PROGRAM_ID,
                False,
                0,
            ),
        )

    # ------------------------------------------------------------ identity

    def keypair(self, label: str) -> Keypair:
        """A keypair derived from the seed and ``label`` (stable across runs)."""
        digest = hashlib.sha256(f"valux-sandbox:{self.config.seed}:{label}".encode()).digest()
        return Keypair.from_seed(digest)

    @property
    def svm(self) -> LiteSVM:
        """The LiteSVM itself (for set-up that has no transaction form)."""
        return self._svm

    # ------------------------------------------------------------ network knobs

    @property
    def slot_ms(self) -> float | None:
        return self._slot_ms

    @slot_ms.setter
    def slot_ms(self, value: float | None) -> None:
        check_network(value, self._landing_delay, self._drop_rate, self._skip_rate)
        self._slot_ms = value
        self._clock_changed.set()

    @property
    def landing_delay_slots(self) -> int:
        return self._landing_delay

    @landing_delay_slots.setter
    def landing_delay_slots(self, value: int) -> None:
        check_network(self._slot_ms, value, self._drop_rate, self._skip_rate)
        self._landing_delay = value

    @property
    def drop_rate(self) -> float:
        return self._drop_rate

    @drop_rate.setter
    def drop_rate(self, value: float) -> None:
        check_network(self._slot_ms, self._landing_delay, value, self._skip_rate)
        self._drop_rate = value

    @property
    def skip_rate(self) -> float:
        return self._skip_rate

    @skip_rate.setter
    def skip_rate(self, value: float) -> None:
        check_network(self._slot_ms, self._landing_delay, self._drop_rate, value)
        self._skip_rate = value

    # ------------------------------------------------------------ clock

    async def start(self) -> None:
        """Run the slot clock in the background (idempotent)."""
        if self._clock_task is None:
            self._clock_task = asyncio.create_task(self._run_clock(), name="sandbox-slot-clock")

    async def stop(self) -> None:
        """Stop the slot clock (idempotent)."""
        task, self._clock_task = self._clock_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            interval = self._slot_ms
            if interval is None:
                self._clock_changed.clear()
                await self._clock_changed.wait()
                deadline = loop.time()
                continue
            deadline += interval / 1000
            delay = deadline - loop.time()
            if delay < -1.0:  # fell far behind (a paused process): do not burst
                deadline = loop.time()
                delay = 0.0
            self._clock_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clock_changed.wait(), max(delay, 0.0))
                deadline = loop.time()  # slot time changed: restart the schedule
                continue
            try:
                self.advance(1)
            except Exception:  # keep the chain alive; a stuck clock would fail every client
                _log.exception("slot %d could not be produced", self._slot)

    def advance(self, slots: int = 1) -> int:
        """Move ``slots`` slots forward, producing blocks and landing what is due."""
        if slots < 0:
            raise ValueError("slots must be ≥ 0")
        for _ in range(slots):
            self._slot += 1
            if self._skip_rate and self._rng.random() < self._skip_rate:
                continue
            self._svm.expire_blockhash()
            self._set_clock()
            self._record_block(self.block_height + 1)
            self._land_due()
        return self._slot

    def _set_clock(self) -> None:
        epoch = self._slot // SLOTS_PER_EPOCH
        self._svm.set_clock(
            Clock(self._slot, self._epoch_start, epoch, epoch + 1, int(time.time()))
        )

    def _record_block(self, height: int) -> None:
        block = _Block(self._slot, height, self._svm.latest_blockhash())
        if len(self._blocks) == self._blocks.maxlen:
            old = self._blocks[0]
            if self._hash_heights.get(old.blockhash) == old.height:
                del self._hash_heights[old.blockhash]
        self._blocks.append(block)
        self._hash_heights[block.blockhash] = height
        oldest = self._blocks[0].slot
        for slot in [s for s in self._slot_records if s < oldest]:
            del self._slot_records[slot]

    @property
    def slot(self) -> int:
        """The newest (processed) slot."""
        return self._slot

    @property
    def block_height(self) -> int:
        """The newest block height."""
        return self._blocks[-1].height

    def _depth(self, commitment: Commitment) -> int:
        if commitment is Commitment.PROCESSED:
            return 0
        if commitment is Commitment.CONFIRMED:
            return self.config.confirm_depth
        return self.config.finalize_depth

    def _block_at(self, commitment: Commitment) -> _Block:
        index = min(self._depth(commitment), len(self._blocks) - 1)
        return self._blocks[-1 - index]

    def slot_at(self, commitment: Commitment) -> int:
        """The slot a read at ``commitment`` sees."""
        if commitment is Commitment.PROCESSED:
            return self._slot
        return self._block_at(commitment).slot

    def block_height_at(self, commitment: Commitment) -> int:
        """The block height a read at ``commitment`` sees."""
        return self._block_at(commitment).height

    def latest_blockhash(self, commitment: Commitment = Commitment.PROCESSED) -> tuple[Hash, int]:
        """The blockhash at ``commitment`` and its ``lastValidBlockHeight``."""
        block = self._block_at(commitment)
        return block.blockhash, block.height + self.config.blockhash_window

    def last_valid_block_height(self, blockhash: Hash) -> int | None:
        """The last block height at which ``blockhash`` is accepted, if it is known."""
        height = self._hash_heights.get(blockhash)
        return None if height is None else height + self.config.blockhash_window

    def is_blockhash_valid(self, blockhash: Hash) -> bool:
        """Whether a transaction on ``blockhash`` would be accepted now."""
        last = self.last_valid_block_height(blockhash)
        return last is not None and self.block_height <= last

    def epoch_info(self) -> dict[str, int]:
        """Epoch, slot index and counters for ``getEpochInfo``."""
        return {
            "absoluteSlot": self._slot,
            "blockHeight": self.block_height,
            "epoch": self._slot // SLOTS_PER_EPOCH,
            "slotIndex": self._slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": len(self._records),
        }

    # ------------------------------------------------------------ accounts

    def account(self, address: Pubkey) -> Account | None:
        """The account at ``address``; ``None`` when it does not exist (0 lamports)."""
        account = self._svm.get_account(address)
        if account is None or account.lamports == 0:
            return None
        return account

    def balance(self, address: Pubkey) -> int:
        """Lamports held by ``address``."""
        account = self.account(address)
        return 0 if account is None else account.lamports

    def rent_exempt(self, size: int) -> int:
        """Minimum lamports for an account of ``size`` bytes to be rent exempt."""
        return self._svm.minimum_balance_for_rent_exemption(size)

    def decimals_of(self, mint: Pubkey) -> int | None:
        """Decimals of ``mint``, or ``None`` if it is not a mint."""
        if mint not in self._decimals:
            parsed = parse_mint(self.account(mint))
            if parsed is None:
                return None
            self._decimals[mint] = parsed.decimals
        return self._decimals[mint]

    def token_accounts(self, program_id: Pubkey) -> list[tuple[Pubkey, Account]]:
        """Every account the token program ``program_id`` owns."""
        return list(self._svm.get_program_accounts(program_id))

    # ------------------------------------------------------------ transactions

    def _resolve_keys(
        self, message: Message | MessageV0
    ) -> tuple[list[Pubkey], list[Pubkey], list[Pubkey]]:
        static = list(message.account_keys)
        if not isinstance(message, MessageV0):
            return static, [], []
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lookup in message.address_table_lookups:
            table_account = self.account(lookup.account_key)
            if table_account is None:
                continue
            try:
                addresses = AddressLookupTable.deserialize(bytes(table_account.data)).addresses
                writable += [addresses[i] for i in lookup.writable_indexes]
                readonly += [addresses[i] for i in lookup.readonly_indexes]
            except (ValueError, IndexError):
                continue
        return static + writable + readonly, writable, readonly

    @staticmethod
    def _writable(message: Message | MessageV0, loaded_writable: Sequence[Pubkey]) -> set[Pubkey]:
        header = message.header
        keys = list(message.account_keys)
        signed = header.num_required_signatures
        out = set(keys[: signed - header.num_readonly_signed_accounts])
        out.update(keys[signed : len(keys) - header.num_readonly_unsigned_accounts])
        out.update(loaded_writable)
        return out

    def _token_balances(self, keys: Sequence[Pubkey]) -> list[TokenBalance]:
        balances: list[TokenBalance] = []
        for index, key in enumerate(keys):
            account = self.account(key)
            parsed = parse_token_account(account)
            if account is None or parsed is None:
                continue
            decimals = self.decimals_of(parsed.mint)
            balances.append(
                TokenBalance(
                    index, parsed.mint, parsed.owner, account.owner, parsed.amount, decimals or 0
                )
            )
        return balances

    @staticmethod
    def _message(tx: VersionedTransaction) -> Message | MessageV0:
        message = tx.message
        if not isinstance(message, Message | MessageV0):
            raise PreflightFailure(
                Simulation(TransactionErrorFieldless.UnsupportedVersion, [], 0, 0)
            )
        return message

    def fee_of(self, message: Message | MessageV0) -> int:
        """Lamports ``message`` costs: 5,000 per signature plus its priority fee."""
        budget = compute_budget_of(message.account_keys, message.instructions)
        signatures = message.header.num_required_signatures
        return signatures * LAMPORTS_PER_SIGNATURE + priority_fee_lamports(budget)

    def simulate(
        self,
        tx: VersionedTransaction,
        *,
        sig_verify: bool = False,
        replace_blockhash: bool = False,
    ) -> Simulation:
        """Execute ``tx`` against the current state without committing anything."""
        message = self._message(tx)
        if not replace_blockhash and not self.is_blockhash_valid(message.recent_blockhash):
            return Simulation(TransactionErrorFieldless.BlockhashNotFound, [], 0, 0)
        if _signature(tx) in self._records:
            return Simulation(TransactionErrorFieldless.AlreadyProcessed, [], 0, 0)
        keys = self._resolve_keys(message)[0]
        previous = self._svm.get_sigverify()
        self._svm.with_sigverify(sig_verify)
        try:
            result = _PROGRAM_THREAD.submit(self._svm.simulate_transaction, tx).result()
        finally:
            self._svm.with_sigverify(previous)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Simulation(
                result.err(),
                list(meta.logs()),
                meta.compute_units_consumed(),
                meta.fee(),
                _return_data(meta),
                list(meta.inner_instructions()),
                {},
                keys,
            )
        meta = result.meta()
        return Simulation(
            None,
            list(meta.logs()),
            meta.compute_units_consumed(),
            meta.fee(),
            _return_data(meta),
            list(meta.inner_instructions()),
            dict(result.post_accounts()),
            keys,
        )

    def submit(self, tx: VersionedTransaction, *, skip_preflight: bool = False) -> Signature:
        """Accept ``tx`` from a client as ``sendTransaction`` does; see the module contract."""
        message = self._message(tx)
        signature = _signature(tx)
        if not skip_preflight:
            if not all(tx.verify_with_results()):
                raise SignatureVerificationFailure(str(signature))
            simulation = self.simulate(tx, sig_verify=True)
            if simulation.err is not None:
                raise PreflightFailure(simulation)
        if self._drop_rate and self._rng.random() < self._drop_rate:
            return signature
        if self._landing_delay == 0:
            if signature not in self._records and self.is_blockhash_valid(message.recent_blockhash):
                self._land(tx)
            return signature
        due = self._slot + self._landing_delay
        for pending in self._pending:
            if _signature(pending.transaction) == signature:
                pending.due_slot = min(pending.due_slot, due)
                return signature
        self._pending.append(_Pending(tx, due))
        return signature

    def _land_due(self) -> None:
        due = [p for p in self._pending if p.due_slot <= self._slot]
        if not due:
            return
        self._pending = [p for p in self._pending if p.due_slot > self._slot]
        for pending in due:
            tx = pending.transaction
            if _signature(tx) in self._records:
                continue
            if not self.is_blockhash_valid(self._message(tx).recent_blockhash):
                continue  # expired while in flight: the leader drops it
            self._land(tx)

    def _land(self, tx: VersionedTransaction) -> TxRecord | None:
        message = self._message(tx)
        keys, loaded_w, loaded_r = self._resolve_keys(message)
        pre_balances = [self.balance(k) for k in keys]
        pre_tokens = self._token_balances(keys)
        result = _PROGRAM_THREAD.submit(self._svm.send_transaction, tx).result()
        signature = _signature(tx)
        if self._svm.get_transaction(signature) is None:
            return None  # not committed: no fee charged, the cluster never saw it land
        if isinstance(result, FailedTransactionMetadata):
            meta: TransactionMetadata = result.meta()
            err: TransactionErrorType | None = result.err()
        else:
            meta, err = result, None
        record = TxRecord(
            signature=signature,
            slot=self._slot,
            block_time=int(time.time()),
            transaction=tx,
            err=err,
            fee=meta.fee(),
            logs=list(meta.logs()),
            units_consumed=meta.compute_units_consumed(),
            inner_instructions=list(meta.inner_instructions()),
            return_data=_return_data(meta),
            account_keys=keys,
            loaded_writable=loaded_w,
            loaded_readonly=loaded_r,
            pre_balances=pre_balances,
            post_balances=[self.balance(k) for k in keys],
            pre_token_balances=pre_tokens,
            post_token_balances=self._token_balances(keys),
            budget=compute_budget_of(message.account_keys, message.instructions),
            writable=frozenset(self._writable(message, loaded_w)),
        )
        self._records[signature] = record
        self._slot_records.setdefault(self._slot, []).append(record)
        return record

    def execute(self, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> TxRecord:
        """Land a control-plane transaction now (fee payer: the faucet); raise if it fails."""
        self._control_nonce += 1
        ixs = [memo(f"valux sandbox #{self._control_nonce}"), *instructions]
        payer = self.faucet
        blockhash = self._svm.latest_blockhash()
        message = MessageV0.try_compile(payer.pubkey(), ixs, [], blockhash)
        unique = {payer.pubkey(): payer}
        for signer in signers:
            unique.setdefault(signer.pubkey(), signer)
        tx = VersionedTransaction(message, list(unique.values()))
        record = self._land(tx)
        if record is None:
            raise LedgerError("control transaction was not committed (fee payer or signatures)")
        if record.err is not None:
            logs = "; ".join(record.logs)
            raise LedgerError(f"control transaction failed: {error_message(record.err)}; {logs}")
        return record

    def airdrop(self, to: Pubkey, lamports: int) -> TxRecord:
        """Transfer ``lamports`` from the faucet to ``to`` in a transaction that lands now."""
        if not 0 < lamports < 2**64:
            raise LedgerError("airdrop amount must be within 1 .. 2**64 - 1 lamports")
        ix = transfer(
            TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=to, lamports=lamports)
        )
        return self.execute([ix], [])

    # ------------------------------------------------------------ history

    def record(self, signature: Signature) -> TxRecord | None:
        """The landed transaction ``signature``, if any."""
        return self._records.get(signature)

    def pending_count(self) -> int:
        """Transactions accepted and not landed yet (excludes dropped ones)."""
        return len(self._pending)

    def commitment_of(self, record: TxRecord) -> Commitment:
        """How settled the landed ``record`` is now."""
        depth = self._slot - record.slot
        if depth >= self.config.finalize_depth:
            return Commitment.FINALIZED
        if depth >= self.config.confirm_depth:
            return Commitment.CONFIRMED
        return Commitment.PROCESSED

    def signature_status(
        self, signature: Signature, *, search_history: bool = False
    ) -> SignatureStatus | None:
        """The status of ``signature``; ``None`` if it has not landed (or aged out of the
        status cache and ``search_history`` is off)."""
        record = self._records.get(signature)
        if record is None:
            return None
        if not search_history and self._slot - record.slot > self.config.status_cache_slots:
            return None
        level = self.commitment_of(record)
        confirmations = None if level is Commitment.FINALIZED else self._slot - record.slot
        return SignatureStatus(record.slot, confirmations, record.err, level)

    def recent_prioritization_fees(self, accounts: Iterable[Pubkey]) -> list[tuple[int, int]]:
        """``(slot, fee)`` for recent blocks: the lowest compute-unit price (µlamports) of a
        transaction in the slot that write-locks one of ``accounts`` (any, when empty)."""
        wanted = set(accounts)
        out: list[tuple[int, int]] = []
        for block in list(self._blocks)[-self.config.blockhash_window :]:
            prices = [
                r.budget.micro_lamports_per_unit
                for r in self._slot_records.get(block.slot, [])
                if not wanted or wanted & r.writable
            ]
            out.append((block.slot, min(prices) if prices else 0))
        return out


def _return_data(meta: TransactionMetadata) -> tuple[Pubkey, bytes] | None:
    data = meta.return_data()
    if not bytes(data.data):
        return None
    return data.program_id, bytes(data.data)
