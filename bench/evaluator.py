"""evaluator: per-batch stop-loss evaluation time of the armed book, in-process (no Ray, no I/O).

The loop of :mod:`bench.bench_evaluator` (whose position and config helpers it
imports): ``positions`` positions on one token, trailing stops in the four modes
(fixed, exponential, zones, custom; 1,000 agent configs), armed in an
:class:`~valux.evaluation.book.ArmedBook`; then ``batches`` tick batches of
``ticks`` ticks from a seeded geometric random walk, each timed around
:meth:`ArmedBook.on_ticks`. Triggered positions are replaced between batches
(untimed) so the population stays constant. ``scan`` is the cost of a tick
that crosses some gate and so pays the full numpy passes over all positions
(forced by arming one fresh position before it); most ticks cross none and
cost O(1).
"""

from __future__ import annotations

import gc
import math
import random
import time

from bench.bench_evaluator import TOKEN, agent_configs, make_position
from bench.common import BenchEnv, Benchmark, BenchResult, Row, Target, distribution
from valux.evaluation.book import ArmedBook


def measure(
    positions: int, batches: int, ticks: int, vol: float, warmup: int, seed: int
) -> dict[str, object]:
    rng = random.Random(seed)
    configs = agent_configs(1000, rng)
    price = 1.0
    book = ArmedBook()
    t0 = time.perf_counter()
    book.arm(make_position(i, price, configs, rng) for i in range(positions))
    arm_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()
    next_id = positions
    times: list[float] = []
    fallbacks = triggers = updates = 0
    ts = 0.0
    try:
        for b in range(warmup + batches):
            batch = []
            for _ in range(ticks):
                price *= math.exp(rng.gauss(0.0, vol))
                ts += 1.5
                batch.append((TOKEN, price, ts))
            started = time.perf_counter_ns()
            res = book.on_ticks(batch)
            elapsed_ms = (time.perf_counter_ns() - started) / 1e6
            if b >= warmup:
                times.append(elapsed_ms)
                fallbacks += res.fallbacks
                triggers += len(res.triggers)
                updates += len(res.updates)
            if res.triggers:
                book.disarm(t.position_id for t in res.triggers)
                fresh = [
                    make_position(next_id + k, price, configs, rng)
                    for k in range(len(res.triggers))
                ]
                next_id += len(fresh)
                book.arm(fresh)
        scans: list[float] = []
        for _ in range(min(50, batches)):
            book.arm([make_position(next_id, price, configs, rng)])
            next_id += 1
            ts += 1.5
            started = time.perf_counter_ns()
            book.on_ticks([(TOKEN, price, ts)])
            scans.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        gc.unfreeze()
    n = max(1, len(times))
    return {
        "batch_ms": times,
        "scan_ms": scans,
        "arm_s": arm_s,
        "fallbacks_per_batch": fallbacks / n,
        "triggers_per_batch": triggers / n,
        "updates_per_batch": updates / n,
    }


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
    m = measure(positions, batches, ticks, vol, warmup, seed)
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
    for key in ("triggers_per_batch", "updates_per_batch", "fallbacks_per_batch"):
        result.add(Row(key.replace("_", " "), "", value=float(m[key])))  # type: ignore[arg-type]
    result.notes.append(
        f"one token, mixed modes over 1,000 configs, random walk σ={vol} per tick, seed {seed}; "
        "triggered positions replaced between batches (untimed)."
    )


SPEC = Benchmark(
    name="evaluator",
    title="armed-book evaluation per tick batch, in-process",
    needs_ray=False,
    quick={"positions": 10_000, "batches": 50},
    full={"positions": 1_000_000, "batches": 200},
    run=run,
)
