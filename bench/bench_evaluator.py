"""Per-batch stop-loss evaluation time of the armed book (no Ray, no I/O).

    python -m bench.bench_evaluator --positions 100000 --batches 200

Arms N positions on one token with trailing stops in mixed modes (fixed,
exponential, zones, custom; 1,000 agent configs), then feeds batches of ticks
from a geometric random walk and times :meth:`ArmedBook.on_ticks` per batch.
Positions that trigger are replaced between batches (untimed) by fresh ones,
so N stays constant. Columns: p50/p99/max/mean ms per batch; ``scan ms``, the
median cost of a tick that crosses some gate and so pays the full numpy passes
over N (most ticks cross none and cost O(1)); mean scalar (decimal) fallbacks,
triggers and SL-12 stop writes per batch; seconds to arm N. Asserts nothing about time.

    python -m bench.bench_evaluator --all-rules

``--all-rules``: every position also has take-profit, stale-trade and DCA
detection armed (:class:`~valux.evaluation.book.ExitParams`): a TP target of
+25 or +50 %, a stale band of [1, 10] % after an hour (the initial positions
were opened up to two hours ago, so about half are already old enough), a
DCA level of -10 or -20 % with a 30 s cooldown after a recent buy for some.
Any trigger (stop or exit) is replaced by a fresh position, as the agent
would re-arm it. The extra column ``exit/b`` counts the non-stop triggers.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time
from collections.abc import Sequence
from typing import Any

from valux.evaluation.book import ArmedBook
from valux.rules.armed import ArmedPosition, ExitParams
from valux.rules.stop_loss import StopLossParams

TOKEN = "BENCH"
CUSTOM_LEVELS = ((200.0, 150.0), (100.0, 70.0), (50.0, 30.0), (20.0, 10.0))


def agent_configs(count: int, rng: random.Random) -> list[StopLossParams]:
    """``count`` agent stop-loss configs, the four modes in turn, varied defaults."""
    modes = ("fixed", "exponential", "zones", "custom")
    return [
        StopLossParams(
            enabled=True,
            default_percentage=float(rng.choice((-32, -25, -20, -40, -15))),
            mode=modes[i % 4],
            trailing_levels=CUSTOM_LEVELS if modes[i % 4] == "custom" else (),
        )
        for i in range(count)
    ]


def make_position(
    index: int,
    price: float,
    configs: Sequence[StopLossParams],
    rng: random.Random,
    *,
    opened_at: float | None = None,
) -> ArmedPosition:
    """A fresh position bought around ``price`` (±15 % log-normal); with ``opened_at``,
    take-profit, stale-trade and DCA detection are armed too (see ``--all-rules``)."""
    agent = index % len(configs)
    exits = None
    if opened_at is not None:
        last_dca = opened_at - rng.uniform(0.0, 60.0) if agent % 3 == 0 else None
        exits = ExitParams(
            tp_target=25.0 if agent % 2 else 50.0,
            stale_after_ts=opened_at + 3600.0,
            stale_min=1.0,
            stale_max=10.0,
            dca_drop=-10.0 if agent % 2 else -20.0,
            dca_ready_ts=-math.inf if last_dca is None else last_dca + 30.0,
        )
    return ArmedPosition(
        position_id=f"pos-{index}",
        agent_id=f"agent-{agent}",
        host=agent % 32,
        token=TOKEN,
        purchase_price=price * math.exp(rng.gauss(0.0, 0.15)),
        stop=configs[agent],
        exits=exits,
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def measure(
    positions: int,
    batches: int,
    ticks: int,
    vol: float,
    warmup: int,
    seed: int,
    all_rules: bool = False,
) -> dict[str, Any]:
    """Arm, run the timed batches, then the forced full scans; see the module docstring."""
    rng = random.Random(seed)
    configs = agent_configs(1000, rng)
    price = 1.0
    book = ArmedBook(record_updates=False)  # as the evaluator actor runs it

    def opened(now: float, spread: float = 0.0) -> float | None:
        return now - rng.uniform(0.0, spread) if all_rules else None

    t0 = time.perf_counter()
    book.arm(
        make_position(i, price, configs, rng, opened_at=opened(0.0, 7200.0))
        for i in range(positions)
    )
    arm_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()  # the armed population is long-lived: keep it out of GC passes
    next_id = positions
    times: list[float] = []
    fallbacks = triggers = writes = exits = 0
    ts = 0.0
    scans: list[float] = []
    try:
        for b in range(warmup + batches):
            batch = []
            for _ in range(ticks):
                price *= math.exp(rng.gauss(0.0, vol))
                ts += 1.5
                batch.append((TOKEN, price, ts))
            t = time.perf_counter_ns()
            res = book.on_ticks(batch)
            elapsed_ms = (time.perf_counter_ns() - t) / 1e6
            if b >= warmup:
                times.append(elapsed_ms)
                fallbacks += res.fallbacks
                triggers += len(res.triggers)
                writes += res.stop_writes
                exits += sum(1 for t in res.triggers if t.reason != "stop_loss")
            if res.triggers:  # sold / handled by the agent: replace by fresh positions (untimed)
                book.disarm(t.position_id for t in res.triggers)
                fresh = [
                    make_position(next_id + k, price, configs, rng, opened_at=opened(ts))
                    for k in range(len(res.triggers))
                ]
                next_id += len(fresh)
                book.arm(fresh)
            book.take_stop_writes(ts)  # the actor's flush takes them (untimed)
            del res  # free the batch's result outside the timed region
        # Floor cost of a tick that crosses some gate: arming one fresh position
        # (untimed) forces the next tick through the full compare passes over N.
        for _ in range(min(50, batches)):
            book.arm([make_position(next_id, price, configs, rng, opened_at=opened(ts))])
            next_id += 1
            ts += 1.5
            t = time.perf_counter_ns()
            book.on_ticks([(TOKEN, price, ts)])
            scans.append((time.perf_counter_ns() - t) / 1e6)
    finally:
        gc.unfreeze()
    n = max(1, len(times))
    return {
        "batch_ms": times,
        "scan_ms": scans,
        "arm_s": arm_s,
        "fallbacks_per_batch": fallbacks / n,
        "triggers_per_batch": triggers / n,
        "stop_writes_per_batch": writes / n,
        "exit_triggers_per_batch": exits / n,
    }


def report(m: dict[str, Any], positions: int, ticks: int, all_rules: bool) -> None:
    """Print one row of :func:`measure`'s result."""
    times = sorted(m["batch_ms"])
    scans = sorted(m["scan_ms"])
    n = len(times)
    extra_head = f" {'exit/b':>7}" if all_rules else ""
    extra = f" {m['exit_triggers_per_batch']:>7.1f}" if all_rules else ""
    print(
        f"{'positions':>10} {'ticks/batch':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'mean ms':>8} {'scan ms':>8} {'scalar/b':>9} {'trig/b':>7} {'write/b':>7} {'arm s':>6}"
        + extra_head
    )
    p50, p99 = percentile(times, 0.50), percentile(times, 0.99)
    print(
        f"{positions:>10} {ticks:>11} {p50:>8.3f} {p99:>8.3f}"
        f" {times[-1]:>8.3f} {sum(times) / n:>8.3f} {percentile(scans, 0.5):>8.3f}"
        f" {m['fallbacks_per_batch']:>9.1f} {m['triggers_per_batch']:>7.1f}"
        f" {m['stop_writes_per_batch']:>7.1f} {m['arm_s']:>6.2f}" + extra
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=1, help="ticks of the token per batch")
    parser.add_argument("--vol", type=float, default=0.002, help="log-price stdev per tick")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--all-rules",
        action="store_true",
        help="arm take-profit, stale-trade and DCA detection on every position too",
    )
    args = parser.parse_args(argv)
    m = measure(
        args.positions, args.batches, args.ticks, args.vol, args.warmup, args.seed, args.all_rules
    )
    report(m, args.positions, args.ticks, args.all_rules)


if __name__ == "__main__":
    main()
