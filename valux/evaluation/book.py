"""The armed-position book: vectorised exit evaluation over price-tick batches.

A StopLossEvaluator actor owns every armed position of a set of tokens in one
:class:`ArmedBook` and feeds it tick batches. The book decides, for every
(position, tick), exactly what :func:`valux.rules.stop_loss.evaluate_stop`
decides — same triggers, same persisted peaks and percentages, bit for bit —
and detects exactly the ticks at which take profit, stale trade or DCA would
act, with numpy over all positions of a token and no Python loop over
positions on the common path (DESIGN.md, "Hot paths").

Contracts
---------
- **Exactness.** For each tick the book emits an :class:`ExitTrigger` exactly
  when ``evaluate_stop(...).triggered`` and a :class:`StopUpdate` exactly when
  ``evaluate_stop(...).updated`` (SL-12), with the same numbers bit for bit,
  taking the stored state as input and storing ``peak``/``stop_pct`` only when
  updated (what the reference persists is what its next evaluation reads).
  For a position armed with :class:`ExitParams` whose stop did not fire, it
  emits an :class:`ExitTrigger` with reason ``take_profit``, ``stale_trade``
  or ``dca`` exactly when :func:`exit_reason` says so.
- **Exactly-once exits.** A triggered position is *exiting*: it is not
  evaluated again until :meth:`ArmedBook.release` (its sale failed, or the
  agent is done with it), ``arm(..., release=True)`` or
  :meth:`ArmedBook.disarm`. A plain re-arm of an exiting position refreshes
  its state but keeps it exiting (a re-arm is not a release).
- **Order.** Ticks are applied in the order given; several ticks of one token
  in a batch are each evaluated (the ratchet sees every tick, a trigger on one
  tick fires even if the next recovers).
- **Idempotent arm.** Arming an id again replaces it; its state is taken from
  the argument (SL-1 when both ``peak`` and ``stop_pct`` are ``None``).
- **Tick validation.** Ticks whose price is not finite or not > 0 are counted
  in ``BatchResult.rejected`` and ignored (feeds already guarantee this; for
  NaN and +inf it is also what the reference does: no trigger, no write).
  So are ticks whose ``ts`` is not finite: ``ts`` is the clock of the
  time-based exits (the tick's own time, never the wall clock, which makes
  backtests deterministic).
- **No I/O.** Pure in-memory; the actor journals the returned updates.
- **Other exits.** A position armed with :class:`ExitParams` is also watched
  for take-profit, stale-trade and DCA conditions (section "Exit detection"
  below); one armed without (``exits=None``) is watched for its stop alone,
  exactly as before.

Vectorisation (why the fast path is exact)
-----------------------------------------
Per token, positions live in slots of contiguous arrays (purchase, stored
peak, stored pct, cached stop price, two *gates*, params id, state, exiting),
grown by doubling, removed by swap-remove, with an id → slot dict. The
stop-loss parameters are interned in a small :class:`_ParamTable` (default,
mode code, custom levels in one flat sorted index), so a slot only carries an id.

For a settled position with stored peak ``P`` and stored percentage ``s`` we
keep the invariant ``target(peak_change(P)) ≤ s`` ("R0"). It holds after
every update, since then ``s = max(target, previous)``; a freshly armed
(restored) position is *pending* — always sent through the kernel of step 2
— until an evaluation at its own stored peak has established it. At a tick
``p``:

1. ``p ≤ P``: the evaluation's peak is ``P``, so by R0 there is no ratchet and
   no peak write; the only possible event is the trigger ``p ≤ stop price``,
   and the stop price is the cached double ``purchase × (1 + s/100)`` —
   the same IEEE operations as the scalar rule. Exact.
2. ``p > P`` (``gate_hi`` crossed): the *kernel* runs on these slots only.
   It computes the peak change in float64, ``c_f = (p − q)/q × 100``, which
   differs from the decimal SL-2 value ``c_d`` by at most
   ``7e-16 × (100 + |c|)`` (0.5 ulp from seeding each operand from its
   shortest string, three float roundings, 20-digit decimal roundings, one
   conversion; measured worst case 4.4e-16). With
   ``tol_c = 1e-12 × (100 + |c|)`` and ``tol_t = 1e-11 × (100 + |c|)``:

   - if ``c_f`` is within ``tol_c`` of a branch point of the slot's mode
     (0; 20 in fixed, zones and exponential; 25/50/100/200 for zones; 85 for
     the exponential acceleration branch; each custom level's change; the
     activation gain of valux's ``trailing`` mode), the slot is *uncertain*;
   - otherwise ``c_d`` lies in the same branch. There the target is either
     exact (the default, a custom level's stop) — so the ratchet (SL-10),
     the SL-12 write and the SL-11 trigger at the new stop are computed
     exactly, vectorised — or an arithmetic value (fixed ``c − 10``, zones
     ``c × keep``, exponential, trailing ``max(default, (100 + c) × keep −
     100)``) with Lipschitz constant ≤ 3 in ``c``,
     evaluated with at most a few ulps of error. If that value is
     ``< s − tol_t`` the true target is below ``s`` too: no ratchet, and the
     write (peak moved by more than 0.0001, an exact float test) and the
     trigger at the stored stop are exact. If it is ``≥ s − tol_t`` (a
     ratchet is likely: its value depends on every bit of ``c_d``) or
     ``≤ tol_t`` (the SL-5.4 "value ≤ 0 → default" edge, which trailing
     values, often below the purchase price, do not have), the slot is
     uncertain.

   The tolerances are ≥ 1000× the error bounds, so a certain decision is the
   scalar rules' decision; the kernel can only err towards "uncertain".
3. Uncertain slots get the scalar rules with the one inexact step done
   exactly: the decimal SL-2 change per slot (:func:`peak_change_percents_of`
   parses the tick price once; each slot keeps its purchase price's decimal),
   then exact targets — fixed and zones are the same single, correctly
   rounded IEEE operations in numpy as in Python,
   exponential runs the scalar rule (``math.exp``) per element — and the
   ratchet, write and trigger vectorised with the scalar rules' operations.
   Slots whose stored state has a ``None`` run :func:`evaluate_stop` itself.

So per-position Python runs only to build the result tuples, and for the
decimal change when a tick moves an arithmetic-mode stop (a ratchet the
journal must take anyway) or puts a change within 1e-12 of a branch point;
peak-only writes, custom-level ratchets and triggers are vectorised. The
property test in
``tests/unit/test_evaluation_book.py`` checks all of it against
:func:`evaluate_stop` run position by position, tick by tick.

Gates make step 1 two comparisons per tick: ``gate_lo`` is the stop price
(``-inf`` when the slot cannot trigger on the fast path) and ``gate_hi`` the
stored peak (``-inf`` to force the kernel, ``+inf`` for inert or exiting
slots). A per-token cached ``min(gate_hi)`` / ``max(gate_lo)`` makes a tick
that crosses no gate O(1).

Exit detection: take profit, stale trade, DCA
--------------------------------------------
These rules change the position (partial sales, buys, moon bag) and need the
agent's full state, so the book does not decide them: it *detects* the tick at
which the agent's scalar decision
(:func:`valux.rules.orchestration.next_action`) would act, and hands that
over. :func:`valux.rules.orchestration.arm_params` summarises a position's
state as :class:`ExitParams` so that detection is a handful of float
comparisons, the same double operations as the scalar rules
(:func:`exit_reason` is the scalar statement, and the contract)::

    gain      = (price − purchase) / purchase × 100          # TP-3, DCA-6, ST-1
    tp        = tp_target ≤ gain < tp_ceiling
    stale     = ts ≥ stale_after_ts  and  stale_min ≤ gain ≤ stale_max
    dca       = ts ≥ dca_ready_ts    and  gain ≤ dca_drop

evaluated on each tick for every position of the token that did not trigger
its stop on that tick (ORCH-3: the stop comes first) and is not exiting. Any
hit emits one :class:`ExitTrigger` whose ``reason`` is the first of
``take_profit``, ``stale_trade``, ``dca`` that holds (ORCH-3 order; its
``stop_pct``/``stop_price`` are the position's current stop, NaN if it has
none) and makes the position *exiting*, exactly like a stop trigger: the
agent runs its scalar steps, re-arms with fresh parameters and releases
(``arm(..., release=True)``), or disarms if the position closed. A position
with ``purchase_price`` ≤ 0 has no exits (the scalar rules never act on one).

O(1) when nothing is crossed. Per slot there are three exit gates, computed
from the tick at which the slot was last checked: ``x_up`` (a price at or
above which some condition may start to hold: the TP target; the stale
band's lower edge while the price is below the band; ``-inf`` to force a
check after an arm or release), ``x_dn`` (a price at or below which one may:
the DCA level once the cooldown is over; the stale band's upper edge while
the price is above it; the TP ceiling while the gain is above it) and
``x_wait`` (a ``ts`` at which one may: the stale age, the DCA cooldown's end,
while not yet reached). Price gates are the conditions' threshold prices
``purchase × (1 + pct/100)`` widened by a relative 1e-9, ≥ 10⁶ × the rounding
error of the float gain, so a slot whose condition holds always crosses a
gate (the gain is monotone in the price). Per token, cached ``min(x_up)``,
``max(x_dn)`` and ``min(x_wait)`` make a tick that crosses no gate three
comparisons (none on a token without exits); a crossing tick compares only
the gate families the bounds let cross, computes the exact conditions for the
crossing slots only and re-derives their gates from that tick. The property
test ``test_book_exit_triggers_equal_scalar_model`` checks the book against
"evaluate_stop, then exit_reason" position by position, tick by tick; the
orchestration tests check that :func:`exit_reason` of
:func:`~valux.rules.orchestration.arm_params` is exactly the first action of
:func:`~valux.rules.orchestration.next_action`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from valux.rules.armed import EXIT_REASONS, ArmedPosition, ExitParams, exit_reason
from valux.rules.stop_loss import (
    MIN_PURCHASE_PRICE,
    PEAK_PERSIST_THRESHOLD,
    TRAILING_THRESHOLD,
    ZONE_BOUNDS,
    ZONE_TOP_KEEP,
    StopLossParams,
    decimal_operand,
    evaluate_stop,
    initial_stop,
    peak_change_percent,
    peak_change_percents_of,
    target_percentage,
)

__all__ = [
    "EXIT_REASONS",
    "ArmedBook",
    "ArmedPosition",
    "BatchResult",
    "ExitParams",
    "ExitTrigger",
    "StopUpdate",
    "StopWrites",
    "exit_reason",
]

F64 = NDArray[np.float64]
I32 = NDArray[np.int32]
I8 = NDArray[np.int8]
B = NDArray[np.bool_]
IDX = NDArray[np.intp]

STOP_LOSS_REASON: Final = "stop_loss"
_GATE_MARGIN: Final = 1e-9  # relative widening of the exit price gates (module docstring)

# Slot states.
_SETTLED: Final = 0  # R0 holds: p ≤ peak can only trigger
_PENDING: Final = 1  # R0 not yet established: always through the kernel
_FORCE: Final = 2  # stored peak or pct is None: always scalar
_INERT: Final = 3  # disabled (SL-14) or purchase guarded (SL-3): never acts

# Mode codes of the param table.
_FIXED: Final = 0
_EXPONENTIAL: Final = 1
_ZONES: Final = 2
_CUSTOM: Final = 3
_DEFAULT_ONLY: Final = 4  # unknown mode (SL-5.2)
_TRAILING: Final = 5  # valux's trailing mode (no SL-5.4: its values may be ≤ 0)
_MODE_CODES: Final[dict[str, int]] = {
    "": _FIXED,  # SL-5.2: a missing mode means fixed
    "fixed": _FIXED,
    "exponential": _EXPONENTIAL,
    "zones": _ZONES,
    "custom": _CUSTOM,
    "trailing": _TRAILING,
}

# Tolerances of the kernel (module docstring): both ≥ 1000× the error bounds.
_TOL_C: Final = 1e-12
_TOL_T: Final = 1e-11
_C_MAX: Final = 1e300  # |c_f| beyond this (or NaN) → scalar (decimal may overflow)

_ZONE_EDGES: Final = (TRAILING_THRESHOLD, *(b for b, _ in ZONE_BOUNDS))
_EXP_EDGES: Final = (TRAILING_THRESHOLD, TRAILING_THRESHOLD + 65.0)

_INF: Final = math.inf
_NO_EXITS: Final = (_INF, _INF, _INF, -_INF, _INF, -_INF, -_INF)  # ExitParams() as a row


class ExitTrigger(NamedTuple):
    """A position needs its agent now.

    ``reason`` ``stop_loss`` (SL-11/SL-15): sell the whole position; ``stop_pct``
    and ``stop_price`` are the stop that fired. ``take_profit``, ``stale_trade``,
    ``dca``: the first exit condition that holds (module docstring); the agent
    runs its scalar steps; ``stop_pct``/``stop_price`` are the position's current
    stop (NaN if it has none).

    Immutable; a ``NamedTuple`` rather than a frozen dataclass because a
    tick can emit one per position and a tuple builds 3× faster.
    """

    position_id: str
    agent_id: str
    host: int
    token: str
    reason: str
    price: float
    ts: float
    stop_pct: float
    stop_price: float


class StopUpdate(NamedTuple):
    """SL-12: persist this peak and percentage (emitted exactly when ``updated``).

    Immutable; a ``NamedTuple`` for the same reason as :class:`ExitTrigger`
    (a new high can move the peak of every position of a token at once).
    """

    position_id: str
    agent_id: str
    host: int
    token: str
    peak: float
    stop_pct: float
    ts: float


@dataclass(slots=True)
class StopWrites:
    """SL-12 state to store, column-wise (:meth:`ArmedBook.take_stop_writes`)."""

    position_ids: list[str]
    peaks: list[float]
    stop_pcts: list[float]
    ts: list[float]

    def __len__(self) -> int:
        return len(self.position_ids)

    def rows(self) -> list[tuple[str, float, float, float]]:
        return list(zip(self.position_ids, self.peaks, self.stop_pcts, self.ts, strict=True))


@dataclass(slots=True)
class BatchResult:
    """What one tick batch produced.

    ``evaluated`` counts (live position, tick) evaluations; ``fallbacks`` how
    many of them ran the scalar rules; ``rejected`` the ticks ignored as
    invalid; ``stop_writes`` the SL-12 writes decided (one per entry of
    ``updates``, which is only filled by a book built with ``record_updates``);
    ``consumed`` the ticks taken from the batch.
    """

    triggers: list[ExitTrigger] = field(default_factory=list)
    updates: list[StopUpdate] = field(default_factory=list)
    evaluated: int = 0
    fallbacks: int = 0
    rejected: int = 0
    stop_writes: int = 0
    consumed: int = 0
    """Ticks of the batch taken (all of them, unless ``until_trigger`` stopped early)."""


# NamedTuple's generated ``__new__`` is a Python function; building the tuple
# directly is 2× faster, which matters when a tick moves every position's peak.
_new_tuple = tuple.__new__


def _emit_updates(
    tb: _TokenBook, slots: IDX, peaks: F64, pcts: F64, ts: float, out: list[StopUpdate]
) -> None:
    """Append one :class:`StopUpdate` per slot (SL-12 writes decided vectorised)."""
    meta = tb.meta
    token = tb.token
    out.extend(
        [
            _new_tuple(StopUpdate, (m.position_id, m.agent_id, m.host, token, pk, pct, ts))
            for m, pk, pct in zip(
                [meta[s] for s in slots.tolist()], peaks.tolist(), pcts.tolist(), strict=True
            )
        ]
    )


class _ParamTable:
    """Interned :class:`StopLossParams`, as arrays indexed by a params id.

    Custom levels live in one flat index over every ladder (:meth:`_flat_levels`),
    each ladder sorted ascending by ``(change, -input index)``, so the matching
    levels of a change are a prefix and the last of them is the reference's
    choice (largest change, earliest on a tie). Ids are reference-counted and
    reused.
    """

    def __init__(self) -> None:
        self._ids: dict[StopLossParams, int] = {}
        self._params: list[StopLossParams | None] = []
        self._refs: list[int] = []
        self._free: list[int] = []
        self._last: tuple[StopLossParams, int] | None = None
        self.default: F64 = np.zeros(8)
        self.mode: I8 = np.zeros(8, dtype=np.int8)
        self.keep: F64 = np.ones(8)  # trailing: 1 − distance/100
        self.activation: F64 = np.zeros(8)  # trailing: peak gain at which it starts
        self._flat: tuple[NDArray[np.complex128], F64, F64, IDX] | None = None

    def params(self, pid: int) -> StopLossParams:
        p = self._params[pid]
        assert p is not None
        return p

    def acquire(self, params: StopLossParams) -> int:
        last = self._last
        if last is not None and last[0] is params:  # same object: skip hashing
            pid = last[1]
        else:
            found = self._ids.get(params)
            pid = self._add(params) if found is None else found
            self._last = (params, pid)
        self._refs[pid] += 1
        return pid

    def release(self, pid: int) -> None:
        self._refs[pid] -= 1
        if self._refs[pid] == 0:
            params = self._params[pid]
            assert params is not None
            del self._ids[params]
            self._params[pid] = None
            self._free.append(pid)
            if self._last is not None and self._last[1] == pid:
                self._last = None

    def _add(self, params: StopLossParams) -> int:
        if self._free:
            pid = self._free.pop()
        else:
            pid = len(self._params)
            self._params.append(None)
            self._refs.append(0)
            if pid >= self.default.shape[0]:
                self._grow_rows(2 * self.default.shape[0])
        self._params[pid] = params
        self._ids[params] = pid
        self._flat = None
        self.default[pid] = params.default_percentage
        self.mode[pid] = _MODE_CODES.get(params.mode, _DEFAULT_ONLY)
        self.keep[pid] = params.trail_keep
        self.activation[pid] = params.activation_percentage
        return pid

    def _custom_targets(self, j: IDX, pj: I32, cj: F64, tol: F64, target: F64, near: B) -> None:
        """SL-9 for the custom-mode entries ``j`` of :meth:`targets`, in O(log levels) each.

        Every custom ladder lives in one flat array of ``pid + change·i`` keys,
        ascending (numpy orders complex numbers by real, then imaginary part), so
        one ``searchsorted`` finds, per entry, how many levels of its own ladder
        have a change ≤ ``c``: the last of them is the reference's choice, and the
        two levels either side of ``c`` are the only candidates for ``near``."""
        keys, changes, stops, start = self._flat_levels()
        if keys.size == 0:
            return  # no custom ladder has a level: every target is the default
        valid = ~np.isnan(cj)
        probe = np.empty(cj.shape[0], dtype=np.complex128)
        probe.real = pj
        probe.imag = np.where(valid, cj, -_INF)
        hi = np.searchsorted(keys, probe, side="right")
        has_below = hi > start[pj]
        has_above = hi < start[pj + 1]
        below = np.maximum(hi - 1, 0)
        above = np.minimum(hi, keys.shape[0] - 1)
        near[j] |= (has_below & (np.abs(changes[below] - cj) <= tol)) | (
            has_above & (np.abs(changes[above] - cj) <= tol)
        )
        current = target[j]
        stop = stops[below]
        chosen = np.where(stop > 0, stop, current)  # SL-5.4 for a level's stop
        target[j] = np.where(has_below & (cj >= 0), chosen, current)

    def _flat_levels(self) -> tuple[NDArray[np.complex128], F64, F64, IDX]:
        """``(keys, changes, stops, start)``: every custom ladder's levels, flat, in
        params-id then ``(change, -input index)`` order; ladder ``pid`` is
        ``start[pid]:start[pid + 1]``. Rebuilt after a params set is interned."""
        if self._flat is None:
            rows = self.default.shape[0]
            start = np.zeros(rows + 1, dtype=np.intp)
            ids: list[int] = []
            levels: list[tuple[float, float]] = []
            for pid, params in enumerate(self._params):
                if params is not None and self.mode[pid] == _CUSTOM:
                    ladder = params.trailing_levels
                    order = sorted(range(len(ladder)), key=lambda i: (ladder[i][0], -i))
                    levels.extend(ladder[i] for i in order)
                    ids.extend([pid] * len(ladder))
                start[pid + 1] = len(levels)
            np.maximum.accumulate(start, out=start)  # ids past the last ladder
            table = np.array(levels, dtype=np.float64).reshape(-1, 2)
            changes = np.ascontiguousarray(table[:, 0])
            stops = np.ascontiguousarray(table[:, 1])
            keys = np.empty(changes.shape[0], dtype=np.complex128)
            keys.real = ids
            keys.imag = changes
            self._flat = (keys, changes, stops, start)
        return self._flat

    def _grow_rows(self, rows: int) -> None:
        extra = rows - self.default.shape[0]
        self.default = np.concatenate([self.default, np.zeros(extra)])
        self.mode = np.concatenate([self.mode, np.zeros(extra, np.int8)])
        self.keep = np.concatenate([self.keep, np.ones(extra)])
        self.activation = np.concatenate([self.activation, np.zeros(extra)])

    def exact_targets(self, pid: I32, c: F64) -> F64:
        """SL-4/SL-5 targets of *exact* (decimal, SL-2) changes ``c``, bit for bit.

        Fixed ``c − 10`` and zones ``c × keep`` are the same single, correctly
        rounded IEEE operations in numpy as in Python; exponential runs the
        scalar rule (``math.exp``) per element; default and custom stops are
        copied. Then SL-5.4 (a value ≤ 0 gives the default).
        """
        zeros = np.zeros(c.shape[0])
        target, arith, _ = self.targets(pid, c, zeros, zeros, exact=True)
        floor = arith & (self.mode[pid] != _TRAILING)  # SL-5.4, not for trailing values
        out: F64 = np.where(floor & (target <= 0), self.default[pid], target)
        return out

    def targets(
        self, pid: I32, c: F64, tol_c: F64, tol_t: F64, *, exact: bool = False
    ) -> tuple[F64, B, B]:
        """Approximate SL-5 targets of changes ``c`` for params ``pid``.

        Returns ``(target, arith, near)``: ``target`` is exact where ``arith``
        is false (default or a custom level's stop) and within the kernel's
        error bound where it is true; ``near`` flags changes within ``tol_c``
        of a branch point, or arithmetic values ≤ ``tol_t``. With ``exact``,
        exponential targets come from the scalar rule (final, not ``arith``).
        """
        mode = self.mode[pid]
        target = self.default[pid]  # fancy indexing: a fresh copy
        arith = np.zeros(c.shape[0], dtype=np.bool_)
        near = np.abs(c) <= tol_c

        j = np.flatnonzero(mode == _FIXED)
        if j.size:
            cj = c[j]
            near[j] |= np.abs(cj - TRAILING_THRESHOLD) <= tol_c[j]
            on = cj >= TRAILING_THRESHOLD
            target[j] = np.where(on, cj - 10.0, target[j])
            arith[j] = on

        j = np.flatnonzero(mode == _ZONES)
        if j.size:
            cj = c[j]
            tj = tol_c[j]
            for edge in _ZONE_EDGES:
                near[j] |= np.abs(cj - edge) <= tj
            on = cj >= TRAILING_THRESHOLD
            keep = np.full(cj.shape[0], ZONE_TOP_KEEP)
            for bound, k in reversed(ZONE_BOUNDS):
                keep[cj <= bound] = k
            target[j] = np.where(on, cj * keep, target[j])
            arith[j] = on

        j = np.flatnonzero(mode == _EXPONENTIAL)
        if j.size:
            cj = c[j]
            tj = tol_c[j]
            for edge in _EXP_EDGES:
                near[j] |= np.abs(cj - edge) <= tj
            if exact:
                params_of = self.params
                target[j] = [
                    target_percentage(x, params_of(p))
                    for x, p in zip(cj.tolist(), pid[j].tolist(), strict=True)
                ]
            else:
                on = cj > TRAILING_THRESHOLD
                target[j] = np.where(on, _exponential_value(cj), target[j])
                arith[j] = on

        j = np.flatnonzero(mode == _CUSTOM)
        if j.size:
            self._custom_targets(j, pid[j], c[j], tol_c[j], target, near)

        floor = arith.copy()  # arithmetic values that SL-5.4 may replace by the default
        j = np.flatnonzero(mode == _TRAILING)
        if j.size:
            cj = c[j]
            pj = pid[j]
            activation = self.activation[pj]
            near[j] |= np.abs(cj - activation) <= tol_c[j]
            on = cj >= activation
            value = (100.0 + cj) * self.keep[pj] - 100.0  # trailing_value, operation for op.
            default = target[j]
            target[j] = np.where(on, np.where(value > default, value, default), default)
            arith[j] = on

        near |= floor & (target <= tol_t)
        return target, arith, near


def _exponential_value(c: F64) -> F64:
    """SL-7's value (without the ≤ 20 branch), vectorised; approximate exp."""
    x = c - TRAILING_THRESHOLD
    base = 1.0 - np.exp(-x / (100 / 3.2))
    y = (x - 55.0) / 8.0
    keep = np.clip(base - 0.12 * np.exp(-(y * y) / 2.0), 0.0, 0.90)
    accel = np.minimum(0.90, keep + 0.30 * (1.0 - np.exp(-(x - 65.0) / 80.0)))
    keep = np.where(x > 65.0, accel, keep)
    out: F64 = c * keep
    return out


class _TokenBook:
    """The armed positions of one token, as slot-indexed columns."""

    _COLUMNS: Final = (
        "purchase",
        "peak",
        "pct",
        "stop_px",
        "gate_lo",
        "gate_hi",
        "pid",
        "state",
        "exiting",
        # exits (module docstring, "Exit detection")
        "has_exit",
        "tp_lo",
        "tp_hi",
        "st_after",
        "st_min",
        "st_max",
        "dca_drop",
        "dca_ready",
        "g_tp",
        "g_tpc",
        "g_slo",
        "g_shi",
        "g_dca",
        "x_up",
        "x_dn",
        "x_wait",
        # SL-12 persistence: stored state not yet taken by the journaling side
        "dirty",
        "dirty_ts",
        "id_col",
        "qdec",
        "qdec_ok",
    )

    def __init__(self, token: str, capacity: int = 16) -> None:
        self.token = token
        self.n = 0
        self.live = 0  # slots not exiting and with a stop to evaluate or exits armed
        self.exit_count = 0  # slots with exits armed (exiting or not)
        self.purchase: F64 = np.empty(capacity)
        self.peak: F64 = np.empty(capacity)  # stored peak, NaN = None
        self.pct: F64 = np.empty(capacity)  # stored stop pct, NaN = None
        self.stop_px: F64 = np.empty(capacity)  # SL-11 price of the stored pct
        self.gate_lo: F64 = np.empty(capacity)
        self.gate_hi: F64 = np.empty(capacity)
        self.pid: I32 = np.empty(capacity, dtype=np.int32)
        self.state: I8 = np.empty(capacity, dtype=np.int8)
        self.exiting: B = np.empty(capacity, dtype=np.bool_)
        # Exits: parameters, their price gates (fixed per arm), the live gates.
        self.has_exit: B = np.empty(capacity, dtype=np.bool_)
        self.tp_lo: F64 = np.empty(capacity)
        self.tp_hi: F64 = np.empty(capacity)
        self.st_after: F64 = np.empty(capacity)
        self.st_min: F64 = np.empty(capacity)
        self.st_max: F64 = np.empty(capacity)
        self.dca_drop: F64 = np.empty(capacity)
        self.dca_ready: F64 = np.empty(capacity)
        self.g_tp: F64 = np.empty(capacity)  # up: gain ≥ tp_lo possible at or above
        self.g_tpc: F64 = np.empty(capacity)  # down: gain < tp_hi possible at or below
        self.g_slo: F64 = np.empty(capacity)  # up: gain ≥ stale_min possible at or above
        self.g_shi: F64 = np.empty(capacity)  # down: gain ≤ stale_max possible at or below
        self.g_dca: F64 = np.empty(capacity)  # down: gain ≤ dca_drop possible at or below
        self.x_up: F64 = np.empty(capacity)
        self.x_dn: F64 = np.empty(capacity)
        self.x_wait: F64 = np.empty(capacity)
        self.dirty: B = np.empty(capacity, dtype=np.bool_)  # peak/pct changed, not yet taken
        self.dirty_ts: F64 = np.empty(capacity)  # the tick time of that change
        self.id_col: NDArray[np.object_] = np.empty(capacity, dtype=object)  # position ids
        self.qdec: NDArray[np.object_] = np.empty(capacity, dtype=object)  # SL-2 seeds
        self.qdec_ok: B = np.empty(capacity, dtype=np.bool_)  # qdec filled in
        self.meta: list[ArmedPosition] = []
        self.slot_of: dict[str, int] = {}
        self.min_hi = -_INF
        self.max_lo = _INF
        self.bounds_stale = True
        self.x_min_up = -_INF
        self.x_max_dn = _INF
        self.x_min_wait = -_INF
        self.x_bounds_stale = True

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        cap = self.purchase.shape[0]
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        for name in self._COLUMNS:
            old: NDArray[Any] = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def swap_remove(self, slot: int) -> None:
        last = self.n - 1
        if slot != last:
            for name in self._COLUMNS:
                col: NDArray[Any] = getattr(self, name)
                col[slot] = col[last]
            self.meta[slot] = self.meta[last]
            self.slot_of[self.id_col[slot]] = slot
        self.id_col[last] = None
        self.qdec[last] = None
        self.meta.pop()
        self.n = last
        self.bounds_stale = True
        self.x_bounds_stale = True

    def refresh_gates(self, slots: IDX) -> None:
        """Recompute gates of ``slots`` from state (see the module docstring)."""
        st = self.state[slots]
        ex = self.exiting[slots]
        evaluable = ~ex & ((st == _SETTLED) | (st == _PENDING))
        self.gate_lo[slots] = np.where(evaluable, self.stop_px[slots], -_INF)
        off = ex | (st == _INERT)
        self.gate_hi[slots] = np.where(off, _INF, np.where(st == _SETTLED, self.peak[slots], -_INF))
        self.bounds_stale = True
        if ex.any():  # exiting: no exit detection either
            gone = slots[ex]
            self.x_up[gone] = _INF
            self.x_dn[gone] = -_INF
            self.x_wait[gone] = _INF
            self.x_bounds_stale = True

    def purchase_decimals(self, slots: IDX) -> list[Any]:
        """The SL-2 decimal seeds of these slots' purchase prices, made on first use."""
        todo = slots[~self.qdec_ok[slots]]
        if todo.size:
            self.qdec[todo] = [decimal_operand(q) for q in self.purchase[todo].tolist()]
            self.qdec_ok[todo] = True
        out: list[Any] = self.qdec[slots].tolist()
        return out

    def slot_is_live(self, slot: int) -> bool:
        """:meth:`is_live` of one slot."""
        return not self.exiting[slot] and (self.state[slot] != _INERT or bool(self.has_exit[slot]))

    def is_live(self, slots: IDX) -> B:
        """Not exiting, and a stop to evaluate or exits armed."""
        out: B = ~self.exiting[slots] & ((self.state[slots] != _INERT) | self.has_exit[slots])
        return out

    def force_exit_check(self, slots: IDX) -> None:
        """Exit gates after an arm or a release: check live exit slots at the next tick."""
        on = self.has_exit[slots] & ~self.exiting[slots]
        self.x_up[slots] = np.where(on, -_INF, _INF)
        self.x_dn[slots] = -_INF
        self.x_wait[slots] = _INF
        self.x_bounds_stale = True

    def exit_gates(self, slots: IDX, gain: F64, ts: float) -> None:
        """Exit gates of live exit slots checked at a tick (gain, ts) without a hit."""
        tp_above = gain >= self.tp_hi[slots]  # above the TP band: it may fall back in
        up = np.where(tp_above, _INF, self.g_tp[slots])
        dn = np.where(tp_above, self.g_tpc[slots], -_INF)
        wait = np.full(slots.shape[0], _INF)

        st_after = self.st_after[slots]
        st_on = st_after < _INF
        aged = st_on & (ts >= st_after)
        below = gain < self.st_min[slots]
        above = gain > self.st_max[slots]
        up = np.where(aged & below, np.minimum(up, self.g_slo[slots]), up)
        dn = np.where(aged & above, np.maximum(dn, self.g_shi[slots]), dn)
        up = np.where(aged & ~below & ~above, -_INF, up)  # in band yet no hit: never, but safe
        wait = np.where(st_on & ~aged, np.minimum(wait, st_after), wait)

        ready_ts = self.dca_ready[slots]
        dca_on = self.dca_drop[slots] > -_INF
        ready = ts >= ready_ts
        dn = np.where(dca_on & ready, np.maximum(dn, self.g_dca[slots]), dn)
        wait = np.where(dca_on & ~ready, np.minimum(wait, ready_ts), wait)

        self.x_up[slots] = up
        self.x_dn[slots] = dn
        self.x_wait[slots] = wait
        self.x_bounds_stale = True


def _up_gate(purchase: F64, pct: F64) -> F64:
    """A price at or below the smallest price whose float gain is ≥ ``pct`` (widened by
    ``_GATE_MARGIN``); +inf when ``pct`` is +inf, -inf (always check) if not finite."""
    with np.errstate(all="ignore"):
        x = purchase * (1 + pct / 100)
        gate = x - (np.abs(x) + purchase * np.abs(pct) / 100) * _GATE_MARGIN
    out: F64 = np.where(np.isfinite(gate), gate, np.where(pct == _INF, _INF, -_INF))
    return out


def _down_gate(purchase: F64, pct: F64) -> F64:
    """A price at or above the largest price whose float gain is ≤ ``pct`` (widened by
    ``_GATE_MARGIN``); -inf when ``pct`` is -inf, +inf (always check) if not finite."""
    with np.errstate(all="ignore"):
        x = purchase * (1 + pct / 100)
        gate = x + (np.abs(x) + purchase * np.abs(pct) / 100) * _GATE_MARGIN
    out: F64 = np.where(np.isfinite(gate), gate, np.where(pct == -_INF, -_INF, _INF))
    return out


class ArmedBook:
    """All armed positions of an evaluator, by token (see the module docstring).

    ``pause_gc`` (default on): the cyclic garbage collector is paused for the
    duration of :meth:`on_ticks` (and restored to its previous state). A tick
    that moves the peak of every position of a token creates one result per
    position; with a million armed positions alive, the collector's passes
    triggered by that burst cost as much as the evaluation itself. Nothing the
    book allocates forms reference cycles.
    """

    def __init__(self, *, pause_gc: bool = True, record_updates: bool = True) -> None:
        self._pause_gc = pause_gc
        self._record = record_updates
        self._dirty = False
        self._books: dict[str, _TokenBook] = {}
        self._token_of: dict[str, str] = {}
        self._params = _ParamTable()
        self._last: dict[str, tuple[float, float]] = {}

    # -- queries ----------------------------------------------------------------

    def armed_count(self) -> int:
        return len(self._token_of)

    def tokens(self) -> list[str]:
        return list(self._books)

    def is_armed(self, position_id: str) -> bool:
        return position_id in self._token_of

    def is_exiting(self, position_id: str) -> bool:
        """Whether the position triggered and awaits :meth:`release` or :meth:`disarm`."""
        token = self._token_of.get(position_id)
        if token is None:
            return False
        tb = self._books[token]
        return bool(tb.exiting[tb.slot_of[position_id]])

    def last_price(self, token: str) -> tuple[float, float] | None:
        """``(price, ts)`` of the last valid tick seen for ``token``."""
        return self._last.get(token)

    def last_prices(self) -> dict[str, tuple[float, float]]:
        """``token → (price, ts)`` of the last valid tick of every token seen."""
        return dict(self._last)

    def armed_ids(self) -> list[str]:
        """Ids of every armed position (live or exiting)."""
        return list(self._token_of)

    def state(self, position_id: str) -> ArmedPosition | None:
        """The position with its current stored ``peak`` and ``stop_pct``."""
        token = self._token_of.get(position_id)
        if token is None:
            return None
        tb = self._books[token]
        slot = tb.slot_of[position_id]
        peak = float(tb.peak[slot])
        pct = float(tb.pct[slot])
        return replace(
            tb.meta[slot],
            peak=None if math.isnan(peak) else peak,
            stop_pct=None if math.isnan(pct) else pct,
        )

    # -- persistence ------------------------------------------------------------

    def _stored(
        self, tb: _TokenBook, slots: IDX, peaks: F64, pcts: F64, ts: float, out: BatchResult
    ) -> None:
        """SL-12 writes decided vectorised: mark them for :meth:`take_stop_writes` and,
        when recording, emit one :class:`StopUpdate` each."""
        tb.dirty[slots] = True
        tb.dirty_ts[slots] = ts
        out.stop_writes += int(slots.size)
        self._dirty = True
        if self._record:
            _emit_updates(tb, slots, peaks, pcts, ts, out.updates)

    def has_stop_writes(self) -> bool:
        """Whether some position may be marked for :meth:`take_stop_writes`."""
        return self._dirty

    def take_stop_writes(self, now: float) -> StopWrites:
        """The stored peak/percentage of every position marked since the last take
        (coalesced: the current values, with the time of the last change; NaN times,
        from :meth:`arm`, become ``now``), and clear the marks. Positions disarmed
        in between are gone with their marks."""
        out = StopWrites([], [], [], [])
        if not self._dirty:
            return out
        for tb in self._books.values():
            slots = np.flatnonzero(tb.dirty[: tb.n])
            if not slots.size:
                continue
            tb.dirty[slots] = False
            ts = tb.dirty_ts[slots]
            out.position_ids.extend(tb.id_col[slots].tolist())
            out.peaks.extend(tb.peak[slots].tolist())
            out.stop_pcts.extend(tb.pct[slots].tolist())
            out.ts.extend(np.where(np.isnan(ts), now, ts).tolist())
        self._dirty = False
        return out

    def mark_for_write(self, position_ids: Iterable[str], ts: Iterable[float]) -> None:
        """Mark these positions again (a write of them failed); a position marked since
        keeps its newer mark, one no longer armed is skipped."""
        for position_id, at in zip(position_ids, ts, strict=True):
            token = self._token_of.get(position_id)
            if token is None:
                continue
            tb = self._books[token]
            slot = tb.slot_of[position_id]
            if not tb.dirty[slot]:
                tb.dirty[slot] = True
                tb.dirty_ts[slot] = at
                self._dirty = True

    # -- arming -----------------------------------------------------------------

    def arm(
        self,
        positions: Iterable[ArmedPosition],
        *,
        release: bool = False,
        persist: Mapping[str, float] | None = None,
    ) -> None:
        """Arm (or re-arm, replacing) positions; the last of duplicate ids wins.

        A re-arm keeps an exiting position exiting unless ``release``: the agent
        re-arms with fresh parameters after acting on a trigger and releases in
        the same call.

        Persistence (:meth:`take_stop_writes`): a fresh position (SL-1 applied
        here) is marked for writing, as is every id in ``persist`` (id → the
        time to store with it, NaN: the time of the take), and a re-armed
        position keeps a pending mark of the state it replaces.
        """
        latest: dict[str, ArmedPosition] = {}
        for pos in positions:
            latest.pop(pos.position_id, None)
            latest[pos.position_id] = pos
        marks = dict(persist) if persist else {}
        by_token: dict[str, list[tuple[ArmedPosition, bool]]] = {}
        for pos in latest.values():
            exiting = False
            old_token = self._token_of.get(pos.position_id)
            if old_token is not None:
                old = self._books[old_token]
                slot = old.slot_of[pos.position_id]
                exiting = bool(old.exiting[slot]) and not release
                if old.dirty[slot]:
                    marks.setdefault(pos.position_id, float(old.dirty_ts[slot]))
                self._remove(pos.position_id)
            by_token.setdefault(pos.token, []).append((pos, exiting))
        for token, items in by_token.items():
            self._append(token, items, marks)

    def _append(
        self, token: str, items: list[tuple[ArmedPosition, bool]], marks: dict[str, float]
    ) -> None:
        tb = self._books.get(token)
        if tb is None:
            tb = self._books[token] = _TokenBook(token)
        k = len(items)
        tb.reserve(k)
        start = tb.n
        nan = math.nan
        purchase: list[float] = []
        peak: list[float] = []
        pct: list[float] = []
        pid: list[int] = []
        state: list[int] = []
        exiting: list[bool] = []
        has_exit: list[bool] = []
        exit_rows: list[tuple[float, ...]] = []
        ids: list[str] = []
        dirty: list[bool] = []
        dirty_ts: list[float] = []
        acquire = self._params.acquire
        for pos, ex in items:
            params = pos.stop
            q = pos.purchase_price
            p, s = pos.peak, pos.stop_pct
            mark = marks.get(pos.position_id)
            if p is None and s is None:
                s, p = initial_stop(q, params)  # SL-1
                if mark is None:
                    mark = nan
            purchase.append(q)
            peak.append(nan if p is None else p)
            pct.append(nan if s is None else s)
            pid.append(acquire(params))
            if not params.enabled or q == 0 or q < MIN_PURCHASE_PRICE:
                state.append(_INERT)  # SL-14 / SL-3: evaluate_stop never acts
            elif p is None or s is None:
                state.append(_FORCE)
            else:
                state.append(_PENDING)
            exiting.append(ex)
            exits = pos.exits
            if exits is not None and q > 0:  # the scalar rules never act on q ≤ 0
                has_exit.append(True)
                exit_rows.append(
                    (
                        exits.tp_target,
                        exits.tp_ceiling,
                        exits.stale_after_ts,
                        exits.stale_min,
                        exits.stale_max,
                        exits.dca_drop,
                        exits.dca_ready_ts,
                    )
                )
            else:
                has_exit.append(False)
                exit_rows.append(_NO_EXITS)
            tb.slot_of[pos.position_id] = len(tb.meta)  # meta is slot-aligned
            tb.meta.append(pos)
            ids.append(pos.position_id)
            dirty.append(mark is not None and p is not None and s is not None)
            dirty_ts.append(nan if mark is None else mark)
            self._token_of[pos.position_id] = token
        sl = slice(start, start + k)
        tb.purchase[sl] = purchase
        tb.peak[sl] = peak
        tb.pct[sl] = pct
        tb.pid[sl] = pid
        tb.state[sl] = state
        tb.exiting[sl] = exiting
        tb.has_exit[sl] = has_exit
        tb.id_col[sl] = ids
        tb.qdec_ok[sl] = False
        tb.dirty[sl] = dirty
        tb.dirty_ts[sl] = dirty_ts
        if any(dirty):
            self._dirty = True
        cols = np.array(exit_rows, dtype=np.float64).reshape(k, 7)
        tb.tp_lo[sl] = cols[:, 0]
        tb.tp_hi[sl] = cols[:, 1]
        tb.st_after[sl] = cols[:, 2]
        tb.st_min[sl] = cols[:, 3]
        tb.st_max[sl] = cols[:, 4]
        tb.dca_drop[sl] = cols[:, 5]
        tb.dca_ready[sl] = cols[:, 6]
        qs = tb.purchase[sl]
        tb.g_tp[sl] = _up_gate(qs, cols[:, 0])
        tb.g_tpc[sl] = _down_gate(qs, cols[:, 1])
        tb.g_slo[sl] = _up_gate(qs, cols[:, 3])
        tb.g_shi[sl] = _down_gate(qs, cols[:, 4])
        tb.g_dca[sl] = _down_gate(qs, cols[:, 5])
        with np.errstate(all="ignore"):
            tb.stop_px[sl] = tb.purchase[sl] * (1 + tb.pct[sl] / 100)  # SL-11, as scalar
        tb.n = start + k
        new = np.arange(start, start + k)
        tb.live += int(tb.is_live(new).sum())
        tb.refresh_gates(new)
        added = sum(has_exit)
        if added:
            tb.exit_count += added
            tb.force_exit_check(new)
        else:  # exit gates off; the token's exit bounds stay valid
            tb.x_up[sl] = _INF
            tb.x_dn[sl] = -_INF
            tb.x_wait[sl] = _INF

    def disarm(self, position_ids: Iterable[str]) -> int:
        """Forget positions (closed elsewhere); returns how many were armed."""
        removed = 0
        for position_id in position_ids:
            if position_id in self._token_of:
                self._remove(position_id)
                removed += 1
        return removed

    def _remove(self, position_id: str) -> None:
        token = self._token_of.pop(position_id)
        tb = self._books[token]
        slot = tb.slot_of.pop(position_id)
        if tb.slot_is_live(slot):
            tb.live -= 1
        if tb.has_exit[slot]:
            tb.exit_count -= 1
        self._params.release(int(tb.pid[slot]))
        tb.swap_remove(slot)
        if tb.n == 0:
            del self._books[token]

    def release(self, position_ids: Iterable[str]) -> None:
        """Make exiting positions live again (their sale failed). Others: no-op."""
        for position_id in position_ids:
            token = self._token_of.get(position_id)
            if token is None:
                continue
            tb = self._books[token]
            slot = tb.slot_of[position_id]
            if tb.exiting[slot]:
                tb.exiting[slot] = False
                one = np.array([slot], dtype=np.intp)
                if tb.slot_is_live(slot):
                    tb.live += 1
                tb.refresh_gates(one)
                if tb.has_exit[slot]:
                    tb.force_exit_check(one)

    def force_exit(self, token: str, reason: str, ts: float) -> list[ExitTrigger]:
        """Trigger every live position of ``token`` now, at its last price (feed-silent
        policy ``exit``); they turn exiting exactly as a stop that fired."""
        tb = self._books.get(token)
        last = self._last.get(token)
        if tb is None or last is None or tb.n == 0:
            return []
        slots = np.flatnonzero(~tb.exiting[: tb.n])
        if slots.size == 0:
            return []
        price = last[0]
        triggers = [
            ExitTrigger(m.position_id, m.agent_id, m.host, token, reason, price, ts, pct, px)
            for m, pct, px in zip(
                [tb.meta[s] for s in slots.tolist()],
                tb.pct[slots].tolist(),
                tb.stop_px[slots].tolist(),
                strict=True,
            )
        ]
        live = int(np.count_nonzero(tb.is_live(slots)))
        tb.exiting[slots] = True
        tb.live -= live
        tb.refresh_gates(slots)
        return triggers

    def armed_per_token(self) -> dict[str, int]:
        """How many positions are armed on each token."""
        return {token: tb.n for token, tb in self._books.items()}

    # -- evaluation -------------------------------------------------------------

    def on_ticks(
        self, ticks: Sequence[tuple[str, float, float]], *, until_trigger: bool = False
    ) -> BatchResult:
        """Evaluate a batch of ``(token, price, ts)`` ticks, in order.

        ``until_trigger``: stop after the first tick that triggers anything (every trigger
        of that tick is in the result; ``consumed`` says how many ticks were taken), so a
        caller that acts on triggers — a backtest re-entering at the tick a position
        closed — evaluates the rest of the batch against the book its actions leave."""
        out = BatchResult()
        paused = self._pause_gc and gc.isenabled()
        if paused:
            gc.disable()
        taken = 0
        try:
            for token, raw_price, raw_ts in ticks:
                taken += 1
                price = float(raw_price)
                ts = float(raw_ts)
                if not (math.isfinite(price) and price > 0 and math.isfinite(ts)):
                    out.rejected += 1
                    continue
                self._last[token] = (price, ts)
                tb = self._books.get(token)
                if tb is None or tb.live == 0:
                    continue
                out.evaluated += tb.live
                self._tick(tb, price, ts, out)
                if until_trigger and out.triggers:
                    break
        finally:
            if paused:
                gc.enable()
        out.consumed = taken
        return out

    def _tick(self, tb: _TokenBook, price: float, ts: float, out: BatchResult) -> None:
        n = tb.n
        if tb.bounds_stale:
            tb.min_hi = float(tb.gate_hi[:n].min())
            tb.max_lo = float(tb.gate_lo[:n].max())
            tb.bounds_stale = False
        if price > tb.min_hi or price <= tb.max_lo:
            self._stop_pass(tb, price, ts, out)
        # else: no stop gate crossed, no stop can act (module docstring, step 1)
        if not tb.exit_count:
            return  # no exits armed on this token
        if tb.x_bounds_stale:
            tb.x_min_up = float(tb.x_up[:n].min())
            tb.x_max_dn = float(tb.x_dn[:n].max())
            tb.x_min_wait = float(tb.x_wait[:n].min())
            tb.x_bounds_stale = False
        up, dn, wait = price >= tb.x_min_up, price <= tb.x_max_dn, ts >= tb.x_min_wait
        if up or dn or wait:
            self._exit_pass(tb, price, ts, up, dn, wait, out)

    def _exit_pass(
        self,
        tb: _TokenBook,
        price: float,
        ts: float,
        up: bool,
        dn: bool,
        wait: bool,
        out: BatchResult,
    ) -> None:
        """Take-profit, stale-trade and DCA detection on the slots whose exit gates the
        tick crossed (module docstring, "Exit detection"); ``up``/``dn``/``wait`` say
        which gate families the token's bounds let cross. Stop-triggered and exiting
        slots have their gates off."""
        n = tb.n
        masks: list[B] = []
        if up:
            masks.append(tb.x_up[:n] <= price)
        if dn:
            masks.append(tb.x_dn[:n] >= price)
        if wait:
            masks.append(tb.x_wait[:n] <= ts)
        crossed = masks[0]
        for mask in masks[1:]:
            crossed |= mask
        cand = np.flatnonzero(crossed)
        if not cand.size:
            return
        with np.errstate(all="ignore"):
            q = tb.purchase[cand]
            gain = (price - q) / q * 100.0  # the scalar rules' double operations
            tp = (gain >= tb.tp_lo[cand]) & (gain < tb.tp_hi[cand])
            stale = (
                (ts >= tb.st_after[cand]) & (tb.st_min[cand] <= gain) & (gain <= tb.st_max[cand])
            )
            dca = (ts >= tb.dca_ready[cand]) & (gain <= tb.dca_drop[cand])
        hit = tp | stale | dca
        if hit.any():
            fired = cand[hit]
            code = np.where(tp[hit], 0, np.where(stale[hit], 1, 2)).tolist()
            meta = tb.meta
            token = tb.token
            reasons = EXIT_REASONS
            out.triggers.extend(
                [
                    _new_tuple(
                        ExitTrigger,
                        (m.position_id, m.agent_id, m.host, token, reasons[c], price, ts, pct, px),
                    )
                    for m, c, pct, px in zip(
                        [meta[s] for s in fired.tolist()],
                        code,
                        tb.pct[fired].tolist(),
                        tb.stop_px[fired].tolist(),
                        strict=True,
                    )
                ]
            )
            tb.exiting[fired] = True
            tb.live -= int(fired.size)
            tb.refresh_gates(fired)
            miss = ~hit
            if miss.any():
                tb.exit_gates(cand[miss], gain[miss], ts)
        else:
            tb.exit_gates(cand, gain, ts)

    def _stop_pass(self, tb: _TokenBook, price: float, ts: float, out: BatchResult) -> None:
        """The stop-loss decisions of a tick that crossed a stop gate (steps 1–3)."""
        n = tb.n
        hi = np.flatnonzero(tb.gate_hi[:n] < price)
        lo = np.flatnonzero(tb.gate_lo[:n] >= price)
        if hi.size:
            self._peak_side(tb, hi, price, ts, out)
            if lo.size:  # every slot of ``hi`` has been fully decided
                lo = lo[np.isin(lo, hi, assume_unique=True, invert=True)]
        if lo.size:
            self._direct_triggers(tb, lo, price, ts, out)

    def _peak_side(
        self, tb: _TokenBook, hi: IDX, price: float, ts: float, out: BatchResult
    ) -> None:
        """Decide the slots whose ``gate_hi`` the price crossed (module docstring, step 2).

        The kernel computes, per slot, whether the decision is certain in
        float64 (``scalar`` false) and if so the new percentage exactly: the
        target is then either exact (default, a custom level's stop) or
        certainly below the stored percentage. Certain slots are applied here,
        vectorised — persisted when SL-12 says so, triggered at the stop price
        of the new percentage; the others run the scalar rules.
        """
        with np.errstate(all="ignore"):
            q = tb.purchase[hi]
            p0 = tb.peak[hi]
            cur = tb.pct[hi]
            st = tb.state[hi]
            peak = np.maximum(p0, price)
            c = (peak - q) / q * 100.0
            ac = np.abs(c)
            base = 100.0 + ac
            tol_t = base * _TOL_T
            target, arith, near = self._params.targets(tb.pid[hi], c, base * _TOL_C, tol_t)
            scalar = (st == _FORCE) | ~(ac < _C_MAX) | near | (arith & (target >= cur - tol_t))
            new = np.where(arith, cur, np.maximum(target, cur))  # SL-10, where certain
            updated = (new != cur) | ((peak - p0) > PEAK_PERSIST_THRESHOLD)  # SL-12
        vector = ~scalar
        write = vector & updated
        changed = []
        if write.any():
            slots = hi[write]
            w_peak = peak[write]
            w_pct = new[write]
            tb.peak[slots] = w_peak
            tb.pct[slots] = w_pct
            tb.stop_px[slots] = tb.purchase[slots] * (1 + w_pct / 100)  # SL-11, as scalar
            tb.state[slots] = _SETTLED
            changed.append(slots)
            self._stored(tb, slots, w_peak, w_pct, ts, out)
        # A pending slot evaluated at its own stored peak with nothing to write: R0 holds.
        settle = hi[vector & ~updated & (st == _PENDING) & (price <= p0)]
        if settle.size:
            tb.state[settle] = _SETTLED
            changed.append(settle)
        if changed:
            tb.refresh_gates(np.concatenate(changed))
        decided = hi[vector]
        fire = decided[price <= tb.stop_px[decided]]
        if fire.size:
            self._direct_triggers(tb, fire, price, ts, out)
        if scalar.any():
            force = scalar & (st == _FORCE)
            if force.any():
                self._scalar(tb, hi[force], price, ts, out)
            exact = scalar & ~force
            if exact.any():
                self._exact(tb, hi[exact], peak[exact], price, ts, out)

    def _exact(
        self, tb: _TokenBook, slots: IDX, peak: F64, price: float, ts: float, out: BatchResult
    ) -> None:
        """The scalar rules on slots with complete state, with the one inexact step done
        exactly: the decimal SL-2 change per slot; the rest (SL-4/5 exact targets,
        SL-10 ratchet, SL-11 stop price and trigger, SL-12 write) is vectorised with
        the same IEEE operations as :func:`evaluate_stop`.
        """
        out.fallbacks += int(slots.size)
        q = tb.purchase[slots]
        p0 = tb.peak[slots]
        cur = tb.pct[slots]
        rises = peak > p0  # the evaluation's peak is the tick price
        c = np.empty(slots.shape[0])
        if rises.any():
            c[rises] = peak_change_percents_of(tb.purchase_decimals(slots[rises]), price)
        if not rises.all():
            # At its own purchase price (a fresh position's SL-1 peak) the decimal
            # change is exactly 0: (K − K) / K × 100.
            at_entry = ~rises & (p0 == q)
            c[at_entry] = 0.0
            keep = ~rises & ~at_entry
            if keep.any():
                c[keep] = [
                    peak_change_percent(a, b)
                    for a, b in zip(q[keep].tolist(), p0[keep].tolist(), strict=True)
                ]
        with np.errstate(all="ignore"):
            ok = np.isfinite(c)  # SL-3: otherwise no trigger, nothing written
            target = self._params.exact_targets(tb.pid[slots], c)
            new = np.where(target > cur, target, cur)  # SL-10
            updated = ok & ((new != cur) | ((peak - p0) > PEAK_PERSIST_THRESHOLD))  # SL-12
            stop = q * (1 + new / 100)  # SL-11
            fire = ok & (price <= stop)
        changed = []
        if updated.any():
            w = slots[updated]
            w_peak = peak[updated]
            w_pct = new[updated]
            tb.peak[w] = w_peak
            tb.pct[w] = w_pct
            tb.stop_px[w] = stop[updated]
            tb.state[w] = _SETTLED
            changed.append(w)
            self._stored(tb, w, w_peak, w_pct, ts, out)
        settle = slots[ok & ~updated & (tb.state[slots] == _PENDING) & ~rises]
        if settle.size:
            tb.state[settle] = _SETTLED  # evaluated at its own stored peak: R0 holds
            changed.append(settle)
        if changed:
            tb.refresh_gates(np.concatenate(changed))
        if fire.any():
            self._direct_triggers(tb, slots[fire], price, ts, out)

    def _scalar(
        self, tb: _TokenBook, slots: IDX, price: float, ts: float, out: BatchResult
    ) -> None:
        """Run :func:`evaluate_stop` on ``slots`` and apply its decisions."""
        out.fallbacks += int(slots.size)
        params_of = self._params.params
        token = tb.token
        updates = out.updates if self._record else None
        triggers = out.triggers
        upd_slots: list[int] = []
        upd_peak: list[float] = []
        upd_pct: list[float] = []
        upd_px: list[float] = []
        settled: list[int] = []
        fired: list[int] = []
        for slot, q, p0, s0, st, pid in zip(
            slots.tolist(),
            tb.purchase[slots].tolist(),
            tb.peak[slots].tolist(),
            tb.pct[slots].tolist(),
            tb.state[slots].tolist(),
            tb.pid[slots].tolist(),
            strict=True,
        ):
            d = evaluate_stop(
                purchase_price=q,
                stored_peak=None if p0 != p0 else p0,  # NaN encodes None
                stored_pct=None if s0 != s0 else s0,
                price=price,
                params=params_of(pid),
            )
            meta = tb.meta[slot]
            if d.updated:
                peak, pct, px = d.peak, d.stop_pct, d.stop_price
                assert peak is not None and pct is not None and px is not None
                upd_slots.append(slot)
                upd_peak.append(peak)
                upd_pct.append(pct)
                upd_px.append(px)
                if updates is not None:
                    updates.append(
                        StopUpdate(meta.position_id, meta.agent_id, meta.host, token, peak, pct, ts)
                    )
            elif st == _PENDING and not price > p0:
                settled.append(slot)  # evaluated at its own stored peak: R0 holds
            if d.triggered:
                assert d.stop_pct is not None and d.stop_price is not None
                fired.append(slot)
                triggers.append(
                    ExitTrigger(
                        meta.position_id,
                        meta.agent_id,
                        meta.host,
                        token,
                        STOP_LOSS_REASON,
                        price,
                        ts,
                        d.stop_pct,
                        d.stop_price,
                    )
                )
        if upd_slots:
            idx = np.array(upd_slots, dtype=np.intp)
            tb.peak[idx] = upd_peak
            tb.pct[idx] = upd_pct
            tb.stop_px[idx] = upd_px
            tb.state[idx] = _SETTLED
            tb.dirty[idx] = True
            tb.dirty_ts[idx] = ts
            out.stop_writes += len(upd_slots)
            self._dirty = True
        if settled:
            tb.state[np.array(settled, dtype=np.intp)] = _SETTLED
        if fired:
            tb.exiting[np.array(fired, dtype=np.intp)] = True
            tb.live -= len(fired)
        if upd_slots or settled or fired:
            tb.refresh_gates(np.unique(np.array(upd_slots + settled + fired, dtype=np.intp)))

    def _direct_triggers(
        self, tb: _TokenBook, slots: IDX, price: float, ts: float, out: BatchResult
    ) -> None:
        """Trigger settled slots at or below their cached stop price (step 1)."""
        meta = tb.meta
        token = tb.token
        out.triggers.extend(
            [
                _new_tuple(
                    ExitTrigger,
                    (
                        m.position_id,
                        m.agent_id,
                        m.host,
                        token,
                        STOP_LOSS_REASON,
                        price,
                        ts,
                        pct,
                        px,
                    ),
                )
                for m, pct, px in zip(
                    [meta[s] for s in slots.tolist()],
                    tb.pct[slots].tolist(),
                    tb.stop_px[slots].tolist(),
                    strict=True,
                )
            ]
        )
        tb.exiting[slots] = True
        tb.live -= int(slots.size)
        tb.refresh_gates(slots)
