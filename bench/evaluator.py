"""evaluator: per-batch stop-loss evaluation time of the armed book, in-process (no Ray, no I/O).

:func:`bench.bench_evaluator.measure` with ``--all-rules``: ``positions``
positions on one token, trailing stops in the four modes (fixed, exponential,
zones, custom; 1,000 agent configs) plus take-profit, stale-trade and DCA
detection, armed in an :class:`~valux.evaluation.book.ArmedBook` built as the
evaluator actor builds it (stop writes marked in arrays, taken between
batches, untimed); then ``batches`` tick batches of
``ticks`` ticks from a seeded geometric random walk, each timed around
:meth:`ArmedBook.on_ticks`. Triggered positions are replaced between batches
(untimed) so the population stays constant. ``scan`` is the cost of a tick
that crosses some gate and so pays the full numpy passes over all positions
(forced by arming one fresh position before it); most ticks cross none and
cost O(1).
"""

from __future__ import annotations

from bench.bench_evaluator import measure
from bench.common import BenchEnv, Benchmark, BenchResult, Row, Target, distribution


async def run(
    env: BenchEnv,
    result: BenchResult,
    *,
    positions: int,
    batches: int,
    ticks: int = 1,
    vol: float = 0.002,
    warmup: int = 5,
    seed: int = 1,
) -> None:
    del env  # in-process: no servers
    m = measure(positions, batches, ticks, vol, warmup, seed, all_rules=True)
    result.add(
        Row(
            f"on_ticks per batch, {positions:,} positions, {ticks} tick(s)/batch",
            "ms",
            stats=distribution(m["batch_ms"]),  # type: ignore[arg-type]
            targets=[Target("p99", "<=", 10.0)],
        )
    )
    result.add(
        Row(
            "full scan (a tick crossing some gate)",
            "ms",
            stats=distribution(m["scan_ms"]),  # type: ignore[arg-type]
            targets=[Target("max", "<=", 10.0)],
        )
    )
    result.add(Row(f"arm {positions:,} positions", "s", value=float(m["arm_s"])))  # type: ignore[arg-type]
    labels = {
        "triggers_per_batch": "triggers per batch (stop and exit)",
        "exit_triggers_per_batch": "  of which take-profit / stale-trade / DCA",
        "stop_writes_per_batch": "SL-12 stop writes per batch",
        "fallbacks_per_batch": "exact (decimal SL-2) evaluations per batch",
    }
    for key, label in labels.items():
        result.add(Row(label, "", value=float(m[key])))
    result.notes.append(
        f"one token, mixed modes over 1,000 configs, random walk σ={vol} per tick, seed {seed}; "
        "all rules armed (take profit, stale trade, DCA besides the trailing stop); "
        "triggered positions replaced between batches (untimed). The p99 batches are new "
        "highs that move most peaks: their cost is the exact decimal SL-2 change of every "
        "position whose stop ratchets."
    )


SPEC = Benchmark(
    name="evaluator",
    title="armed-book evaluation per tick batch, in-process",
    needs_ray=False,
    quick={"positions": 10_000, "batches": 50},
    full={"positions": 1_000_000, "batches": 200},
    run=run,
)
