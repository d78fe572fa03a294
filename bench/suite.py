"""``python -m bench``: run all benchmarks, some by name, or the quick smoke of each.

Prints the machine and versions, then one table per benchmark, and merges the
results into ``bench/results/latest.json`` and ``latest.md``. Commands that
start Ray must run under the machine-wide lock::

    flock /tmp/valux-ray.lock python -m bench --quick
    flock /tmp/valux-ray.lock python -m bench signal_latency fanout
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench import (
    api_load,
    evaluator,
    fanout,
    journal,
    kill_switch,
    live_swap,
    nautilus,
    recovery,
    scale,
    signal_latency,
    tick_to_exit,
)
from bench.common import (
    RESULTS_DIR,
    BenchEnv,
    Benchmark,
    BenchResult,
    Row,
    now_iso,
    render_environment,
    render_table,
    write_results,
)

BENCHMARKS: dict[str, Benchmark] = {
    spec.name: spec
    for spec in (
        signal_latency.SPEC,
        fanout.SPEC,
        evaluator.SPEC,
        tick_to_exit.SPEC,
        nautilus.SPEC,
        scale.SPEC,
        journal.SPEC,
        recovery.SPEC,
        api_load.SPEC,
        kill_switch.SPEC,
        live_swap.SPEC,
    )
}


async def run_suite(names: Sequence[str], *, quick: bool, results_dir: Path | None) -> int:
    env = BenchEnv.from_environment()
    failures = 0
    try:
        print(render_environment(await env.environment()), flush=True)
        for name in names:
            spec = BENCHMARKS[name]
            try:
                result = await spec.measure(env, quick=quick)
            except Exception as exc:
                failures += 1
                traceback.print_exc()
                result = BenchResult(name, spec.title, quick, {}, started_at=now_iso())
                result.add(Row("error", "", note=f"{type(exc).__name__}: {exc}"))
                result.notes.append(f"the benchmark failed: {type(exc).__name__}: {exc}")
                print(f"== {name}: FAILED: {exc}", flush=True)
                continue
            print(render_table(result), flush=True)
            if results_dir is not None:
                write_results([result], results_dir)
    finally:
        env.close()
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="the seconds-long smoke of each")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    code = asyncio.run(
        run_suite(names, quick=args.quick, results_dir=None if args.no_write else args.results)
    )
    print(f"done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return code
