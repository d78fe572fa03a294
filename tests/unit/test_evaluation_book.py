"""The armed-position book: lifecycle, batches, and exact agreement with the scalar rules.

The property tests are the contract of :mod:`valux.evaluation.book`: for any
positions and tick paths, the book's triggers and updates equal those of
running :func:`valux.rules.stop_loss.evaluate_stop` position by position, tick
by tick, feeding back what it persists — and, for positions armed with exit
parameters, then checking :func:`valux.evaluation.book.exit_reason` (take
profit, stale trade, DCA in ORCH-3 order) when the stop did not fire.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valux.evaluation.book import ArmedBook, BatchResult, ExitTrigger
from valux.rules.armed import ArmedPosition, ExitParams, exit_reason
from valux.rules.stop_loss import (
    StopLossParams,
    evaluate_stop,
    initial_stop,
    peak_change_percent,
    stop_price,
)

FIXED = StopLossParams(True, -32.0, "fixed")
ZONES = StopLossParams(True, -32.0, "zones")
EXPO = StopLossParams(True, -32.0, "exponential")


def pos(
    pid: str,
    purchase: float = 100.0,
    *,
    token: str = "SOLX",
    params: StopLossParams = FIXED,
    peak: float | None = None,
    pct: float | None = None,
    agent: str = "agent-1",
    host: int = 0,
) -> ArmedPosition:
    return ArmedPosition(pid, agent, host, token, purchase, params, peak, pct)


def ids(triggers: list[ExitTrigger]) -> list[str]:
    return [t.position_id for t in triggers]


# -- lifecycle -------------------------------------------------------------------


def test_arm_applies_sl1_and_reports_state() -> None:
    """Arming a fresh position applies SL-1 (stop = default, peak = purchase); queries see it."""
    book = ArmedBook()
    book.arm([pos("p1", 2.0), pos("p2", 3.0, token="OTHER")])
    assert book.armed_count() == 2
    assert sorted(book.tokens()) == ["OTHER", "SOLX"]
    assert book.is_armed("p1") and not book.is_armed("nope")
    state = book.state("p1")
    assert state is not None and state.peak == 2.0 and state.stop_pct == -32.0
    assert book.state("nope") is None


def test_arm_keeps_restored_state() -> None:
    """Restored peak and stop are used as they are (no SL-1 over them)."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0, peak=150.0, pct=40.0)])
    res = book.on_ticks([("SOLX", 139.0, 1.0)])
    assert ids(res.triggers) == ["p1"]
    assert res.triggers[0].stop_pct == 40.0 and res.triggers[0].stop_price == 140.0


def test_trigger_is_inclusive_and_carries_the_position() -> None:
    """SL-11 through the book: purchase 100, stop -32 → a tick at 68 triggers, with the
    position's agent, host, token, reason, price, ts, pct and stop price."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0, agent="a7", host=3)])
    assert book.on_ticks([("SOLX", math.nextafter(68.0, 99.0), 1.0)]).triggers == []
    res = book.on_ticks([("SOLX", 68.0, 2.0)])
    assert res.triggers == [ExitTrigger("p1", "a7", 3, "SOLX", "stop_loss", 68.0, 2.0, -32.0, 68.0)]


def test_triggered_position_fires_once_until_released() -> None:
    """Exactly-once: a triggered position is exiting and silent until release; after a
    release it is live again and triggers again."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    assert ids(book.on_ticks([("SOLX", 50.0, 1.0)]).triggers) == ["p1"]
    assert book.is_exiting("p1")
    res = book.on_ticks([("SOLX", 40.0, 2.0), ("SOLX", 30.0, 3.0)])
    assert res.triggers == [] and res.evaluated == 0
    book.release(["p1", "unknown"])
    assert not book.is_exiting("p1")
    assert ids(book.on_ticks([("SOLX", 45.0, 4.0)]).triggers) == ["p1"]


def test_release_of_a_live_position_is_a_no_op() -> None:
    """Releasing a position that is not exiting changes nothing."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    book.release(["p1"])
    res = book.on_ticks([("SOLX", 90.0, 1.0)])
    assert res.triggers == [] and res.evaluated == 1


def test_disarm_counts_and_silences() -> None:
    """Disarm returns how many were armed; a disarmed (closed) position is never
    evaluated again (SL-13: a position that is gone gives no trigger)."""
    book = ArmedBook()
    book.arm([pos("p1"), pos("p2"), pos("p3")])
    assert book.disarm(["p2", "p2", "ghost"]) == 1
    res = book.on_ticks([("SOLX", 1.0, 1.0)])
    assert sorted(ids(res.triggers)) == ["p1", "p3"]
    assert book.disarm(["p1", "p3"]) == 2
    assert book.armed_count() == 0 and book.tokens() == []


def test_rearm_replaces_state_from_the_argument() -> None:
    """Idempotent arm: re-arming an id replaces it, state taken from the argument."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    book.on_ticks([("SOLX", 150.0, 1.0)])  # ratchets to 40
    state = book.state("p1")
    assert state is not None and state.stop_pct == 40.0
    book.arm([pos("p1", 100.0, peak=110.0, pct=-10.0)])
    state = book.state("p1")
    assert state is not None and (state.peak, state.stop_pct) == (110.0, -10.0)
    assert book.armed_count() == 1
    assert ids(book.on_ticks([("SOLX", 89.0, 2.0)]).triggers) == ["p1"]


def test_rearm_can_move_a_position_to_another_token() -> None:
    """Re-arming with a different token moves the position; the old token forgets it."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    book.arm([pos("p1", 100.0, token="NEW")])
    assert book.tokens() == ["NEW"]
    assert book.on_ticks([("SOLX", 1.0, 1.0)]).triggers == []
    assert ids(book.on_ticks([("NEW", 1.0, 2.0)]).triggers) == ["p1"]


def test_rearm_keeps_an_exiting_position_exiting() -> None:
    """A re-arm is a state refresh, not a release: an exiting position stays silent."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    book.on_ticks([("SOLX", 10.0, 1.0)])
    book.arm([pos("p1", 100.0)])
    assert book.is_exiting("p1")
    assert book.on_ticks([("SOLX", 10.0, 2.0)]).triggers == []
    book.release(["p1"])
    assert ids(book.on_ticks([("SOLX", 10.0, 3.0)]).triggers) == ["p1"]


def test_duplicate_ids_in_one_arm_call_last_wins() -> None:
    """Within one arm call, the last position of an id wins."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0), pos("p1", 200.0)])
    assert book.armed_count() == 1
    state = book.state("p1")
    assert state is not None and state.purchase_price == 200.0


def test_swap_remove_keeps_other_slots_intact() -> None:
    """Disarming from the middle of a grown token book (capacity doubling, swap-remove)
    leaves every other position with its own state and trigger price."""
    book = ArmedBook()
    book.arm([pos(f"p{i}", 100.0 + i) for i in range(100)])
    book.disarm([f"p{i}" for i in range(0, 100, 3)])
    kept = [i for i in range(100) if i % 3]
    for i in kept:
        state = book.state(f"p{i}")
        assert state is not None and state.purchase_price == 100.0 + i
    # stop price of p_i is (100 + i) × 0.68; a tick at 114 × 0.68 hits every i ≥ 14.
    res = book.on_ticks([("SOLX", stop_price(114.0, -32.0), 1.0)])
    assert sorted(ids(res.triggers)) == sorted(f"p{i}" for i in kept if i >= 14)


# -- ticks and batches -----------------------------------------------------------


def test_trigger_on_first_tick_fires_even_if_next_recovers() -> None:
    """Several ticks of a token are applied in order: a dip below the stop on tick 1
    triggers although tick 2 recovers."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    res = book.on_ticks([("SOLX", 60.0, 1.0), ("SOLX", 120.0, 2.0)])
    assert ids(res.triggers) == ["p1"] and res.triggers[0].ts == 1.0


def test_ratchet_sees_every_tick_of_a_batch() -> None:
    """The peak of tick 1 (150 → stop 40) decides tick 2 (130 ≤ 140 triggers)."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    res = book.on_ticks([("SOLX", 150.0, 1.0), ("SOLX", 130.0, 2.0)])
    assert [(u.peak, u.stop_pct, u.ts) for u in res.updates] == [(150.0, 40.0, 1.0)]
    assert [(t.stop_pct, t.stop_price, t.ts) for t in res.triggers] == [(40.0, 140.0, 2.0)]


def test_new_peak_exactly_at_the_stop_price_triggers() -> None:
    """SL-11 is inclusive on the rising side too: a restored stop of 30 % with an older
    peak of 110; a tick at exactly 100 × 1.3 is a new peak (written) and triggers."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0, peak=110.0, pct=30.0)])
    at = stop_price(100.0, 30.0)
    res = book.on_ticks([("SOLX", at, 1.0)])
    assert [(u.peak, u.stop_pct) for u in res.updates] == [(at, 30.0)]
    assert [(t.price, t.stop_pct, t.stop_price) for t in res.triggers] == [(at, 30.0, at)]


def test_update_is_emitted_exactly_when_persisted() -> None:
    """SL-12 through the book: a 1e-6 token rising 10 % is not persisted (no update, the
    stored peak stays); rising 30 % is (one update with the decimal-exact values)."""
    book = ArmedBook()
    book.arm([pos("p1", 1e-6)])
    res = book.on_ticks([("SOLX", 1.1e-6, 1.0)])
    assert res.updates == []
    state = book.state("p1")
    assert state is not None and state.peak == 1e-6
    res = book.on_ticks([("SOLX", 1.3e-6, 2.0)])
    assert [(u.peak, u.stop_pct) for u in res.updates] == [
        (1.3e-6, peak_change_percent(1e-6, 1.3e-6) - 10)
    ]


def test_disabled_and_guarded_positions_never_act() -> None:
    """SL-14 and SL-3 through the book: disabled or sub-1e-15 positions neither trigger
    nor update, and are not counted as evaluated."""
    book = ArmedBook()
    book.arm(
        [
            pos("off", 1.0, params=StopLossParams(False, -32.0, "fixed")),
            pos("tiny", 1e-16),
            pos("zero", 0.0),
        ]
    )
    state = book.state("off")
    assert state is not None and (state.peak, state.stop_pct) == (None, None)
    res = book.on_ticks([("SOLX", 1e-20, 1.0), ("SOLX", 1e9, 2.0)])
    assert res.triggers == [] and res.updates == [] and res.evaluated == 0


def test_invalid_ticks_are_rejected_and_last_price_kept() -> None:
    """Ticks with a non-finite or non-positive price are counted as rejected and change
    nothing; last_price reports the last valid tick of a token."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    bad = [("SOLX", p, 1.0) for p in (math.nan, math.inf, -math.inf, 0.0, -5.0)]
    res = book.on_ticks([*bad, ("SOLX", 99.0, 2.0), ("ZZZ", 3.0, 3.0)])
    assert res.rejected == 5 and res.triggers == [] and res.evaluated == 1
    assert book.last_price("SOLX") == (99.0, 2.0)
    assert book.last_price("ZZZ") == (3.0, 3.0)
    assert book.last_price("none") is None
    assert book.last_prices() == {"SOLX": (99.0, 2.0), "ZZZ": (3.0, 3.0)}
    assert book.armed_ids() == ["p1"]


def test_partial_restored_state_is_evaluated_exactly() -> None:
    """A restored position with only a stop (peak null) is written on its first tick
    (SL-12: null peak) and then behaves normally."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0, pct=-20.0)])
    res = book.on_ticks([("SOLX", 90.0, 1.0)])
    assert [(u.peak, u.stop_pct) for u in res.updates] == [(100.0, -20.0)]
    assert ids(book.on_ticks([("SOLX", 80.0, 2.0)]).triggers) == ["p1"]


def test_mixed_modes_on_one_token() -> None:
    """One tick batch over fixed, zones, exponential and custom positions of one token
    gives each its own mode's ratchet."""
    book = ArmedBook()
    custom = StopLossParams(True, -32.0, "custom", ((100.0, 70.0), (30.0, 10.0)))
    book.arm(
        [
            pos("f", 100.0, params=FIXED),
            pos("z", 100.0, params=ZONES),
            pos("e", 100.0, params=EXPO),
            pos("c", 100.0, params=custom),
        ]
    )
    res = book.on_ticks([("SOLX", 200.0, 1.0)])
    got = {u.position_id: u.stop_pct for u in res.updates}
    assert got == {"f": 90.0, "z": 70.0, "e": 90.0, "c": 70.0}


def test_custom_levels_wider_than_before_are_supported() -> None:
    """A params set with more levels than any before widens the level table."""
    book = ArmedBook()
    book.arm([pos("a", 100.0, params=StopLossParams(True, -32.0, "custom", ((10.0, 1.0),)))])
    many = tuple((float(c), float(c) / 2) for c in range(10, 200, 10))
    book.arm([pos("b", 100.0, params=StopLossParams(True, -32.0, "custom", many))])
    res = book.on_ticks([("SOLX", 275.0, 1.0)])  # change 175: level 170
    got = {u.position_id: u.stop_pct for u in res.updates}
    assert got == {"a": 1.0, "b": 85.0}


@pytest.mark.parametrize("first", [2.1e-6, 2e-6])
def test_restored_state_below_its_own_target_is_not_forgotten(first: float) -> None:
    """R0 (book docstring): a restored stop below the target of its own stored peak
    (custom levels 50 → 40, 100 → 10; peak 50 %, stored 20 %) must ratchet as soon as a
    tick sees that peak. A first tick above the peak whose own target (10) does not
    ratchet writes nothing — kernel path (2.1e-6) or scalar path on a level boundary
    (2e-6) — and must not hide the pending ratchet: the next tick at or below the peak
    ratchets to 40, exactly as the scalar rules do."""
    params = StopLossParams(True, -32.0, "custom", ((50.0, 40.0), (100.0, 10.0)))
    position = pos("p1", 1e-6, params=params, peak=1.5e-6, pct=20.0)
    batches = [[("SOLX", first, 1.0)], [("SOLX", 1.45e-6, 2.0)]]
    _run_steps([("arm", [position]), ("ticks", batches[0]), ("ticks", batches[1])])
    book = ArmedBook()
    book.arm([position])
    assert book.on_ticks(batches[0]).updates == []
    res = book.on_ticks(batches[1])
    assert [(u.peak, u.stop_pct) for u in res.updates] == [(1.5e-6, 40.0)]
    assert res.triggers == []


def test_on_ticks_restores_the_garbage_collector_state() -> None:
    """pause_gc pauses the collector only during on_ticks and restores whatever state
    the process had (enabled stays enabled, disabled stays disabled)."""
    book = ArmedBook()
    book.arm([pos("p1", 100.0)])
    was = gc.isenabled()
    try:
        gc.enable()
        book.on_ticks([("SOLX", 150.0, 1.0)])
        assert gc.isenabled()
        gc.disable()
        book.on_ticks([("SOLX", 160.0, 2.0)])
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_stop_writes_are_marked_coalesced_and_taken_once() -> None:
    book = ArmedBook(record_updates=False)
    book.arm([pos("a"), pos("b", peak=100.0, pct=-32.0)])  # a: SL-1; b: restored
    first = book.take_stop_writes(now=7.0)
    assert first.rows() == [("a", 100.0, -32.0, 7.0)]
    assert not book.has_stop_writes() and len(book.take_stop_writes(now=8.0)) == 0
    res = book.on_ticks([("SOLX", 150.0, 1.0), ("SOLX", 160.0, 2.0)])
    assert res.updates == [] and res.stop_writes == 4  # two positions, two ticks
    rows = sorted(book.take_stop_writes(now=9.0).rows())
    assert rows == [("a", 160.0, 50.0, 2.0), ("b", 160.0, 50.0, 2.0)]  # the last values


def test_stop_write_marks_survive_a_rearm_and_go_with_a_disarm() -> None:
    book = ArmedBook(record_updates=False)
    book.arm([pos("a", peak=100.0, pct=-32.0), pos("b", peak=100.0, pct=-32.0)])
    book.on_ticks([("SOLX", 150.0, 1.0)])
    book.arm([pos("a", peak=150.0, pct=40.0)])  # re-armed before the flush: still marked
    book.disarm(["b"])  # closed: its pending write is dropped
    book.arm([pos("c", peak=100.0, pct=-30.0)], persist={"c": 5.0})  # a reset stop
    assert sorted(book.take_stop_writes(now=9.0).rows()) == [
        ("a", 150.0, 40.0, 1.0),
        ("c", 100.0, -30.0, 5.0),
    ]


def test_a_failed_write_is_marked_again_unless_newer_or_gone() -> None:
    book = ArmedBook(record_updates=False)
    book.arm([pos("a"), pos("b"), pos("c")])
    failed = book.take_stop_writes(now=1.0)
    book.on_ticks([("SOLX", 150.0, 2.0)])  # newer marks for a, b and c
    book.take_stop_writes(now=2.0)
    book.arm([pos("d")])
    book.disarm(["c"])
    book.mark_for_write(failed.position_ids, failed.ts)
    rows = sorted(book.take_stop_writes(now=3.0).rows())
    assert rows == [("a", 150.0, 40.0, 1.0), ("b", 150.0, 40.0, 1.0), ("d", 100.0, -32.0, 3.0)]


def test_long_custom_ladder_equals_the_scalar_rule() -> None:
    """A 5 % trail as a custom ladder of ~2,200 levels (bench/nautilus.py): the flat,
    searchsorted level lookup decides exactly what evaluate_stop decides."""
    levels = []
    ratio = 1 / 0.95
    while ratio < 3.0:
        ratio *= 1.0005
        levels.append(((ratio - 1) * 100, (0.95 * ratio - 1) * 100))
    ladder = StopLossParams(True, -5.0, "custom", tuple(reversed(levels)))
    book = ArmedBook()
    book.arm([pos(f"p{i}", 100.0 + i * 0.37, params=ladder) for i in range(40)])
    model = {f"p{i}": (100.0 + i * 0.37, None, None) for i in range(40)}
    model = {k: (q, *initial_stop(q, ladder)[::-1]) for k, (q, _, _) in model.items()}
    price, closed = 100.0, 0
    for step in range(1, 400):
        price *= 0.96 if step % 90 == 0 else 1.004 if step % 7 else 0.985
        res = book.on_ticks([("SOLX", price, float(step))])
        fired = set()
        for pid, (q, peak, pct) in list(model.items()):
            d = evaluate_stop(
                purchase_price=q, stored_peak=peak, stored_pct=pct, price=price, params=ladder
            )
            if d.updated:
                model[pid] = (q, d.peak, d.stop_pct)
            if d.triggered:
                fired.add(pid)
                del model[pid]
        assert set(ids(res.triggers)) == fired
        closed += len(fired)
        book.disarm(fired)
        for pid in fired:  # re-enter at this price, as the bench's slots do
            book.arm([pos(f"{pid}+", price, params=ladder)])
            model[f"{pid}+"] = (price, *initial_stop(price, ladder)[::-1])
        for pid, (_, peak, pct) in model.items():
            state = book.state(pid)
            assert state is not None and (state.peak, state.stop_pct) == (peak, pct)
    assert closed >= 40  # the drops close positions (and their re-entries)


def test_batch_result_defaults() -> None:
    """An empty batch evaluates nothing."""
    assert ArmedBook().on_ticks([]) == BatchResult()


# -- the property: book == scalar rules ------------------------------------------

Tick = tuple[str, float, float]
Step = tuple[str, Any]  # ("arm", [ArmedPosition]) | ("ticks", [Tick]) | ("release"|"disarm", [id])


@dataclass
class _ModelPos:
    spec: ArmedPosition
    peak: float | None
    pct: float | None
    exiting: bool = False


class _Model:
    """The reference: ``evaluate_stop`` per position and tick, persisting when ``updated``."""

    def __init__(self) -> None:
        self.positions: dict[str, _ModelPos] = {}

    def arm(self, positions: list[ArmedPosition], release: bool = False) -> None:
        for p in positions:
            old = self.positions.pop(p.position_id, None)
            peak, pct = p.peak, p.stop_pct
            if peak is None and pct is None:
                pct, peak = initial_stop(p.purchase_price, p.stop)  # SL-1
            exiting = old is not None and old.exiting and not release
            self.positions[p.position_id] = _ModelPos(p, peak, pct, exiting)

    def disarm(self, ids: list[str]) -> int:
        return sum(self.positions.pop(i, None) is not None for i in set(ids))

    def release(self, ids: list[str]) -> None:
        for i in ids:
            if i in self.positions:
                self.positions[i].exiting = False

    def ticks(self, batch: list[Tick]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
        """Triggers, updates and the number of evaluations that can act (not exiting, and
        a stop enabled with a purchase not guarded by SL-3, or exits armed). A position
        whose stop did not fire is then checked for its exits (ORCH-3 order)."""
        triggers: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        evaluated = 0
        for token, price, ts in batch:
            for pid, m in self.positions.items():
                if m.spec.token != token or m.exiting:
                    continue
                q = m.spec.purchase_price
                has_exits = m.spec.exits is not None and q > 0
                evaluated += (m.spec.stop.enabled and not (q == 0 or q < 1e-15)) or has_exits
                d = evaluate_stop(
                    purchase_price=m.spec.purchase_price,
                    stored_peak=m.peak,
                    stored_pct=m.pct,
                    price=price,
                    params=m.spec.stop,
                )
                if d.updated:
                    m.peak, m.pct = d.peak, d.stop_pct
                    update = (pid, m.spec.agent_id, m.spec.host, token, d.peak, d.stop_pct, ts)
                    updates.append(update)
                spec = m.spec
                if d.triggered:
                    m.exiting = True
                    trigger = (pid, spec.agent_id, spec.host, token, "stop_loss", price, ts)
                    triggers.append((*trigger, d.stop_pct, d.stop_price))
                elif has_exits and spec.exits is not None:
                    reason = exit_reason(spec.exits, q, price, ts)
                    if reason is not None:
                        m.exiting = True
                        px = None if m.pct is None else stop_price(q, m.pct)
                        trigger = (pid, spec.agent_id, spec.host, token, reason, price, ts)
                        triggers.append((*trigger, m.pct, px))
        return sorted(triggers, key=_order), sorted(updates), evaluated


def _order(t: tuple[Any, ...]) -> tuple[str, float]:
    return (t[0], t[6])


def _nan_to_none(t: tuple[Any, ...]) -> tuple[Any, ...]:
    """The book reports a missing stop as NaN; the model as None."""
    return tuple(None if isinstance(x, float) and math.isnan(x) else x for x in t)


_TAKE_NOW = 1e9  # the "now" of take_stop_writes in the property test


def _run_steps(steps: list[Step]) -> None:
    """Run ``steps`` on a book and on the model in lockstep; after every step the
    emitted triggers/updates and every position's state must be equal.

    A second book built as the evaluator actor builds it (``record_updates``
    off) runs the same steps: same triggers and state, and every third step its
    :meth:`~ArmedBook.take_stop_writes` must return exactly the positions the
    model persisted since the last take (SL-12 updates; SL-1 of a fresh arm,
    stamped with the take's time), with their current state."""
    book = ArmedBook()
    fast = ArmedBook(record_updates=False)
    model = _Model()
    seen: set[str] = set()
    pending: dict[str, float] = {}  # position id -> ts the write carries
    for index, (kind, arg) in enumerate(steps):
        if kind in ("arm", "arm_release"):
            book.arm(arg, release=kind == "arm_release")
            fast.arm(arg, release=kind == "arm_release")
            model.arm(arg, release=kind == "arm_release")
            seen.update(p.position_id for p in arg)
            for p in {p.position_id: p for p in arg}.values():  # the last of an id wins
                m = model.positions[p.position_id]
                if m.peak is None or m.pct is None:  # no complete state to write
                    pending.pop(p.position_id, None)
                elif p.peak is None and p.stop_pct is None:  # SL-1
                    pending.setdefault(p.position_id, math.nan)
        elif kind == "disarm":
            assert book.disarm(arg) == model.disarm(arg)
            fast.disarm(arg)
            for pid in arg:
                pending.pop(pid, None)
        elif kind == "release":
            book.release(arg)
            fast.release(arg)
            model.release(arg)
        else:
            res = book.on_ticks(arg)
            got_triggers = sorted((_nan_to_none(tuple(t)) for t in res.triggers), key=_order)
            got_updates = sorted(tuple(u) for u in res.updates)
            assert (got_triggers, got_updates, res.evaluated) == model.ticks(arg)
            assert res.stop_writes == len(res.updates)
            quick = fast.on_ticks(arg)
            assert [_nan_to_none(tuple(t)) for t in quick.triggers] == [
                _nan_to_none(tuple(t)) for t in res.triggers
            ]
            assert quick.updates == []
            assert quick.stop_writes == res.stop_writes
            for u in res.updates:  # in tick order: the last write of a position wins
                pending[u.position_id] = u.ts
        if index % 3 == 2:
            taken = fast.take_stop_writes(_TAKE_NOW)
            got = {row[0]: row[1:] for row in taken.rows()}
            assert len(got) == len(taken)
            expected = {}
            for pid, ts in pending.items():
                m = model.positions[pid]
                expected[pid] = (m.peak, m.pct, _TAKE_NOW if math.isnan(ts) else ts)
            assert got == expected
            pending.clear()
            assert not fast.has_stop_writes()
        assert book.armed_count() == len(model.positions)
        assert sorted(book.tokens()) == sorted({m.spec.token for m in model.positions.values()})
        for pid in seen:
            m = model.positions.get(pid)
            state = book.state(pid)
            assert fast.state(pid) == state
            if m is None:
                assert state is None and not book.is_armed(pid)
                continue
            expected_state = replace(m.spec, peak=m.peak, stop_pct=m.pct)
            assert state == expected_state
            assert book.is_exiting(pid) == m.exiting


_BOUNDARIES = [0.0, 10.0, 20.0, 25.0, 50.0, 85.0, 100.0, 200.0, -32.0, -10.0, 30.0, 60.0]
_PURCHASES = [1.0, 0.001, 1e-7, 1e-15, 5e-16, 0.0, 123.456, 0.0000805, 2e-9]

levels_st = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([20.0, 25.0, 30.0, 50.0, 60.0, 100.0]), st.floats(0.01, 400)),
        st.one_of(st.sampled_from([0.0, 10.0, 40.0]), st.floats(-5, 300)),
    ),
    max_size=5,
)
params_st = st.builds(
    StopLossParams,
    enabled=st.sampled_from([True, True, True, False]),
    default_percentage=st.one_of(st.sampled_from([-32.0, -10.0, 0.0, -100.0]), st.floats(-100, 0)),
    mode=st.sampled_from(
        ["fixed", "exponential", "zones", "custom", "", "trailing", "trailing", "trailing?"]
    ),
    trailing_levels=levels_st.map(tuple),
    trailing_percentage=st.one_of(st.sampled_from([5.0, 10.0, 50.0]), st.floats(0.01, 99.99)),
    activation_percentage=st.one_of(st.sampled_from([0.0, 3.0, 20.0]), st.floats(0, 300)),
)


@st.composite
def position_st(draw: st.DrawFn, index: int) -> ArmedPosition:
    # Low prices matter most: there a new peak alone is not persisted (SL-12), so only
    # the exact ratchet decision separates "update" from "nothing".
    purchase = draw(
        st.one_of(st.sampled_from(_PURCHASES), st.floats(1e-12, 1e-4), st.floats(1e-4, 1e4))
    )
    restored = draw(st.sampled_from(["fresh", "fresh", "full", "peak-only", "pct-only"]))
    peak = draw(st.floats(0.5, 4.0)) * purchase if restored in ("full", "peak-only") else None
    pct = draw(st.floats(-60, 250)) if restored in ("full", "pct-only") else None
    return ArmedPosition(
        f"p{index}",
        f"agent{index % 3}",
        index % 2,
        draw(st.sampled_from(["TOK-A", "TOK-B"])),
        purchase,
        draw(params_st),
        peak,
        pct,
    )


@st.composite
def tick_st(draw: st.DrawFn, pool: list[ArmedPosition], ts: float) -> Tick:
    """A tick of a pool position's token, placed where decisions change."""
    anchor = draw(st.sampled_from(pool))
    base = anchor.purchase_price or 1e-9
    kind = draw(st.sampled_from(["boundary", "boundary", "walk", "near-peak", "ratio", "stop"]))
    if kind == "stop":  # exactly at a stop price (SL-11 is inclusive)
        pct = anchor.stop_pct if anchor.stop_pct is not None else anchor.stop.default_percentage
        price = stop_price(base, draw(st.sampled_from([pct, 10.0, 20.0, 40.0])))
    elif kind == "boundary":  # exactly on a mode's branch point, or one ulp off
        edges = [*_BOUNDARIES, anchor.stop.activation_percentage]
        edges += [c for c, _ in anchor.stop.trailing_levels]
        price = base * (1 + draw(st.sampled_from(edges)) / 100)
        price = draw(
            st.sampled_from([price, price, math.nextafter(price, 0.0), math.nextafter(price, 1.0)])
        )
    elif kind == "near-peak":  # tiny rises above a stored peak (SL-12 threshold)
        price = (anchor.peak or base) + draw(st.sampled_from([0.0, 5e-5, 1e-4, 2e-4]))
    elif kind == "ratio":
        price = base * draw(st.floats(0.3, 12.0))
    else:
        price = base * math.exp(draw(st.floats(-0.5, 0.5)))
    if not (price > 0 and math.isfinite(price)):
        price = 1.0
    return (anchor.token, price, ts)


@st.composite
def steps_st(draw: st.DrawFn) -> list[Step]:
    """Arm (in chunks, with re-arms and token moves), tick batches, releases, disarms."""
    n = draw(st.integers(1, 12))
    pool = [draw(position_st(i)) for i in range(n)]
    pool += [
        replace(draw(position_st(i)), position_id=f"p{i}") for i in range(draw(st.integers(0, 3)))
    ]
    ids_st = st.lists(st.sampled_from([p.position_id for p in pool] + ["ghost"]), max_size=4)
    steps: list[Step] = [("arm", draw(st.lists(st.sampled_from(pool), min_size=1, max_size=n + 2)))]
    ts = 0.0
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["ticks", "ticks", "ticks", "arm", "release", "disarm"]))
        if kind == "ticks":
            batch = []
            for _ in range(draw(st.integers(1, 5))):
                ts += 1.0
                batch.append(draw(tick_st(pool, ts)))
            steps.append(("ticks", batch))
        elif kind == "arm":
            steps.append(("arm", draw(st.lists(st.sampled_from(pool), max_size=4))))
        else:
            steps.append((kind, draw(ids_st)))
    return steps


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_st())
def test_book_equals_scalar_rules_tick_by_tick(steps: list[Step]) -> None:
    """Property: for random positions (four modes, valux's trailing mode with random
    distance and activation, plus empty/unknown, random custom levels, tiny and guarded
    purchase prices, restored or partial state), armed in chunks with re-arms, and
    random tick batches (on branch points, ±1 ulp, near the peak,
    walks) interleaved with releases and disarms, the book's triggers and updates —
    which position, at which tick, with which stop pct, stop price and peak — and every
    position's stored state equal the scalar rules applied tick by tick."""
    _run_steps(steps)


def test_book_equals_scalar_rules_on_branch_points_grid() -> None:
    """Exactness where float and decimal disagree: for low purchase prices (where a new
    peak alone is not persisted, SL-12) and every mode's branch points ±1 ulp, the float
    peak change often lands on the other side of the branch (1e-7 → 1.2e-7 is 20 in
    decimal, 19.999999999999996 in float); the book still decides as the scalar rules."""
    custom = StopLossParams(True, -32.0, "custom", ((20.0, 5.0), (50.0, 30.0), (85.0, 60.0)))
    trailing = StopLossParams(True, -5.0, "trailing", (), 5.0, 25.0)
    modes = [FIXED, ZONES, EXPO, custom, StopLossParams(True, -32.0, ""), trailing]
    purchases = [1e-7, 2e-9, 0.0000805, 3.3e-6, 7.7e-8, 1e-15, 4.2e-5]
    edges = [0.0, 20.0, 25.0, 50.0, 85.0, 100.0, 200.0]
    steps: list[Step] = []
    ts = 0.0
    for q in purchases:
        for m, params in enumerate(modes):
            token = f"T{q}-{m}"
            steps.append(("arm", [pos(f"{token}-fresh", q, token=token, params=params)]))
            batch: list[Tick] = []
            for edge in edges:
                price = q * (1 + edge / 100)
                for p in (math.nextafter(price, 0.0), price, math.nextafter(price, 1.0)):
                    ts += 1.0
                    batch.append((token, p, ts))
            steps.append(("ticks", batch))
    _run_steps(steps)


# -- exits: take profit, stale trade, DCA (module docstring, "Exit detection") ------------


def xpos(
    pid: str,
    exits: ExitParams,
    purchase: float = 100.0,
    *,
    params: StopLossParams = FIXED,
    token: str = "SOLX",
) -> ArmedPosition:
    return ArmedPosition(pid, "agent-1", 0, token, purchase, params, exits=exits)


OFF = StopLossParams(False, -32.0, "fixed")


def reasons(res: BatchResult) -> list[tuple[str, str, float]]:
    return [(t.position_id, t.reason, t.ts) for t in res.triggers]


def test_take_profit_detection_is_inclusive_and_exiting_until_released() -> None:
    """gain ≥ tp_target fires ``take_profit`` (inclusive; 149.99… does not), carrying the
    position's current stop; the position is exiting until re-armed with release."""
    book = ArmedBook()
    book.arm([xpos("p1", ExitParams(tp_target=50.0))])
    assert book.on_ticks([("SOLX", math.nextafter(150.0, 0), 1.0)]).triggers == []
    res = book.on_ticks([("SOLX", 150.0, 2.0)])
    assert res.triggers == [
        ExitTrigger("p1", "agent-1", 0, "SOLX", "take_profit", 150.0, 2.0, 40.0, 140.0)
    ]
    assert book.is_exiting("p1")
    assert book.on_ticks([("SOLX", 200.0, 3.0)]).triggers == []
    book.arm([xpos("p1", ExitParams(tp_target=150.0))])  # a plain re-arm keeps it exiting
    assert book.is_exiting("p1")
    book.arm([xpos("p1", ExitParams(tp_target=150.0))], release=True)
    assert not book.is_exiting("p1")
    assert book.on_ticks([("SOLX", 249.0, 4.0)]).triggers == []
    assert reasons(book.on_ticks([("SOLX", 250.0, 5.0)])) == [("p1", "take_profit", 5.0)]


def test_take_profit_ceiling_bounds_the_band() -> None:
    """tp_ceiling: take profit fires only for gains in [target, ceiling); a price above the
    ceiling that falls back into the band fires then."""
    book = ArmedBook()
    book.arm([xpos("p1", ExitParams(tp_target=50.0, tp_ceiling=100.0), params=OFF)])
    assert book.on_ticks([("SOLX", 200.0, 1.0), ("SOLX", 250.0, 2.0)]).triggers == []
    assert reasons(book.on_ticks([("SOLX", 199.0, 3.0)])) == [("p1", "take_profit", 3.0)]


def test_stale_detection_needs_age_and_band() -> None:
    """stale: ts ≥ stale_after_ts (the tick's ts is the clock) and min ≤ gain ≤ max, both
    inclusive; an inverted band never fires."""
    book = ArmedBook()
    exits = ExitParams(stale_after_ts=100.0, stale_min=1.0, stale_max=10.0)
    book.arm(
        [
            xpos("p1", exits),
            xpos("inv", replace(exits, stale_min=10.0, stale_max=1.0)),
        ]
    )
    assert book.on_ticks([("SOLX", 105.0, 99.0)]).triggers == []
    assert book.on_ticks([("SOLX", 111.0, 100.0), ("SOLX", 100.5, 101.0)]).triggers == []
    assert reasons(book.on_ticks([("SOLX", 110.0, 102.0)])) == [("p1", "stale_trade", 102.0)]
    assert book.on_ticks([("SOLX", 105.0, 1e6)]).triggers == []


def test_dca_detection_after_cooldown() -> None:
    """dca: gain ≤ dca_drop (inclusive) once ts ≥ dca_ready_ts."""
    book = ArmedBook()
    book.arm([xpos("p1", ExitParams(dca_drop=-20.0, dca_ready_ts=50.0), params=OFF)])
    assert book.on_ticks([("SOLX", 70.0, 49.0), ("SOLX", 80.5, 50.0)]).triggers == []
    assert reasons(book.on_ticks([("SOLX", 80.0, 50.0)])) == [("p1", "dca", 50.0)]


def test_reason_is_the_first_in_orch_order() -> None:
    """Several conditions at once: take_profit before stale_trade before dca."""
    book = ArmedBook()
    everything = ExitParams(
        tp_target=-50.0, stale_after_ts=0.0, stale_min=-60.0, stale_max=0.0, dca_drop=-5.0
    )
    book.arm(
        [
            xpos("all", everything, params=OFF),
            xpos("stale+dca", replace(everything, tp_target=math.inf), params=OFF),
            xpos("dca", replace(everything, tp_target=math.inf, stale_after_ts=9.0), params=OFF),
        ]
    )
    res = book.on_ticks([("SOLX", 90.0, 1.0)])
    assert sorted(reasons(res)) == [
        ("all", "take_profit", 1.0),
        ("dca", "dca", 1.0),
        ("stale+dca", "stale_trade", 1.0),
    ]


def test_stop_trigger_comes_first_on_the_same_tick() -> None:
    """ORCH-3: a tick that triggers the stop emits only the stop trigger, even if a DCA
    level or the stale band is also met."""
    book = ArmedBook()
    book.arm([xpos("p1", ExitParams(dca_drop=-20.0, stale_after_ts=0.0, stale_min=-50.0))])
    res = book.on_ticks([("SOLX", 60.0, 1.0)])
    assert reasons(res) == [("p1", "stop_loss", 1.0)]


def test_exit_only_positions_are_live_and_purchase_zero_has_no_exits() -> None:
    """A position with its stop disabled but exits armed is evaluated (counted) and fires;
    a purchase price ≤ 0 never acts on its exits (as the scalar rules)."""
    book = ArmedBook()
    book.arm(
        [
            xpos("off", ExitParams(tp_target=10.0), params=OFF),
            xpos("zero", ExitParams(tp_target=-100.0, dca_drop=0.0), purchase=0.0, params=OFF),
        ]
    )
    res = book.on_ticks([("SOLX", 105.0, 1.0)])
    assert res.evaluated == 1 and res.triggers == []
    assert reasons(book.on_ticks([("SOLX", 110.0, 2.0)])) == [("off", "take_profit", 2.0)]
    assert exit_reason(ExitParams(tp_target=-100.0), 0.0, 1.0, 0.0) is None


def test_exit_params_reject_nan_and_non_finite_ts_is_rejected() -> None:
    """ExitParams refuse NaN; a tick with a non-finite ts (the exits' clock) is rejected."""
    with pytest.raises(ValueError):
        ExitParams(stale_min=math.nan)
    book = ArmedBook()
    book.arm([xpos("p1", ExitParams(stale_after_ts=0.0, stale_min=-100.0, stale_max=1e9))])
    res = book.on_ticks([("SOLX", 100.0, math.inf), ("SOLX", 100.0, math.nan)])
    assert res.rejected == 2 and res.triggers == []


def test_ticks_that_cross_no_gate_skip_the_exit_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """O(1): after a position's first check, a tick that crosses none of its exit gates
    (below the TP price, above the DCA price, before its stale age) runs no exit pass; a
    tick reaching the stale age does."""
    calls: list[float] = []
    original = ArmedBook._exit_pass

    def counting(self: ArmedBook, tb: Any, price: float, ts: float, *rest: Any) -> None:
        calls.append(ts)
        original(self, tb, price, ts, *rest)

    monkeypatch.setattr(ArmedBook, "_exit_pass", counting)
    book = ArmedBook()
    exits = ExitParams(
        tp_target=50.0, dca_drop=-20.0, stale_after_ts=100.0, stale_min=1.0, stale_max=10.0
    )
    book.arm([xpos(f"p{i}", exits, purchase=100.0 + i) for i in range(50)])
    book.on_ticks([("SOLX", 120.0, 1.0)])  # the forced first check
    assert calls == [1.0]
    book.on_ticks([("SOLX", 125.0, 2.0), ("SOLX", 130.0, 3.0), ("SOLX", 121.0, 99.0)])
    assert calls == [1.0]
    res = book.on_ticks([("SOLX", 121.0, 100.0)])  # aged: re-check, some enter the band
    assert calls == [1.0, 100.0]
    assert {t.reason for t in res.triggers} == {"stale_trade"}


# -- the property: book exits == stop first, then exit_reason -----------------------------

exits_st = st.builds(
    ExitParams,
    tp_target=st.one_of(
        st.sampled_from([math.inf, math.inf, 5.0, 20.0, 50.0, 0.0, -10.0]), st.floats(-50, 300)
    ),
    stale_after_ts=st.one_of(st.sampled_from([math.inf, 0.0, 3.0, 7.5, 12.0]), st.floats(0, 30)),
    stale_min=st.one_of(st.sampled_from([-5.0, 1.0, 10.0, -math.inf]), st.floats(-60, 60)),
    stale_max=st.one_of(st.sampled_from([-1.0, 10.0, 30.0, math.inf]), st.floats(-60, 300)),
    dca_drop=st.one_of(st.sampled_from([-math.inf, -10.0, -20.0, -1.0]), st.floats(-99, 0)),
    dca_ready_ts=st.one_of(st.sampled_from([-math.inf, 0.0, 5.0, 9.5]), st.floats(0, 30)),
    tp_ceiling=st.one_of(st.sampled_from([math.inf, math.inf, 30.0, 100.0]), st.floats(0, 400)),
)


@st.composite
def exit_position_st(draw: st.DrawFn, index: int) -> ArmedPosition:
    base = draw(position_st(index))
    exits = draw(st.one_of(st.none(), exits_st, exits_st))
    return replace(base, exits=exits)


@st.composite
def exit_tick_st(draw: st.DrawFn, pool: list[ArmedPosition], ts: float) -> Tick:
    """A tick placed on an exit threshold (±1 ulp), or a stop-side tick, at a ts that is
    usually the next second and sometimes anywhere (ts need not be monotone)."""
    anchor = draw(st.sampled_from(pool))
    exits = anchor.exits
    if exits is not None and anchor.purchase_price > 0 and draw(st.booleans()):
        pcts = [
            x
            for x in (
                exits.tp_target,
                exits.tp_ceiling,
                exits.stale_min,
                exits.stale_max,
                exits.dca_drop,
            )
            if math.isfinite(x) and x > -100
        ]
        if pcts:
            price = anchor.purchase_price * (1 + draw(st.sampled_from(pcts)) / 100)
            price = draw(
                st.sampled_from([price, math.nextafter(price, 0.0), math.nextafter(price, 9e9)])
            )
        else:
            price = anchor.purchase_price * draw(st.floats(0.3, 3.0))
        if not (price > 0 and math.isfinite(price)):
            price = 1.0
        token = anchor.token
    else:
        token, price, _ = draw(tick_st(pool, ts))
    when = draw(st.sampled_from([ts, ts, ts, ts - 0.5, draw(st.floats(0, 30))]))
    return (token, price, when)


@st.composite
def exit_steps_st(draw: st.DrawFn) -> list[Step]:
    """Arm (plain and with release), tick batches, releases and disarms."""
    n = draw(st.integers(1, 10))
    pool = [draw(exit_position_st(i)) for i in range(n)]
    pool += [draw(exit_position_st(i)) for i in range(draw(st.integers(0, 3)))]  # re-arms
    ids_st = st.lists(st.sampled_from([p.position_id for p in pool] + ["ghost"]), max_size=4)
    steps: list[Step] = [("arm", draw(st.lists(st.sampled_from(pool), min_size=1, max_size=n + 2)))]
    ts = 0.0
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(
            st.sampled_from(["ticks", "ticks", "ticks", "arm", "arm_release", "release", "disarm"])
        )
        if kind == "ticks":
            batch = []
            for _ in range(draw(st.integers(1, 5))):
                ts += 1.0
                batch.append(draw(exit_tick_st(pool, ts)))
            steps.append(("ticks", batch))
        elif kind in ("arm", "arm_release"):
            steps.append((kind, draw(st.lists(st.sampled_from(pool), max_size=4))))
        else:
            steps.append((kind, draw(ids_st)))
    return steps


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exit_steps_st())
def test_book_exit_triggers_equal_scalar_model(steps: list[Step]) -> None:
    """Property: for random positions (all stop modes, restored or fresh state, with or
    without random take-profit bands, stale ages/bands (inverted too) and DCA drops and
    cooldowns), random tick batches on every exit threshold ±1 ulp with monotone or
    jumping ts, interleaved with re-arms (plain and releasing), releases and disarms, the
    book's triggers — which position, which tick, which reason (stop first, then
    take_profit, stale_trade, dca), which stop — its updates, evaluation counts and
    every position's state equal the scalar model: evaluate_stop, then exit_reason."""
    _run_steps(steps)


def test_until_trigger_stops_the_batch_at_the_first_triggering_tick() -> None:
    """``until_trigger``: the batch ends with the first tick that triggers (all of that
    tick's triggers are in the result); ``consumed`` counts the ticks taken, the rest are
    not applied (the last price is the trigger tick's), and a position armed before the
    rest is fed is evaluated on it. Without the flag every tick is taken."""
    book = ArmedBook()
    book.arm([pos("a", 100.0), pos("b", 100.0)])  # fixed, default -32 %: stop at 68
    ticks = [("SOLX", 90.0, 1.0), ("SOLX", 60.0, 2.0), ("SOLX", 50.0, 3.0), ("SOLX", 40.0, 4.0)]
    res = book.on_ticks(ticks, until_trigger=True)
    assert res.consumed == 2
    assert sorted(t.position_id for t in res.triggers) == ["a", "b"]
    assert {t.ts for t in res.triggers} == {2.0}
    assert book.last_price("SOLX") == (60.0, 2.0)
    book.arm([pos("c", 60.0)])  # stop at 40.8: the rest of the batch crosses it at 40
    rest = book.on_ticks(ticks[res.consumed :], until_trigger=True)
    assert (rest.consumed, [(t.position_id, t.ts) for t in rest.triggers]) == (2, [("c", 4.0)])
    assert book.on_ticks([("SOLX", 1.0, 5.0), ("SOLX", 2.0, 6.0)]).consumed == 2
