"""Parameter sweeps: one backtest per grid point, as Ray tasks on the attached cluster.

Each grid point (:func:`~valux.backtest.data.expand_grid`) is the base agent config
with some dotted paths replaced; every one is validated before anything starts (one
error lists every bad point). Each runs as a ``@ray.remote`` task that runs a whole
backtest in the task's own process (:func:`~valux.backtest.engine.run_backtest`: the
trading system in one process, its own database), at most ``parallel`` at a time; the
cluster schedules the tasks on any node with a free CPU. The price series
travels once through the object store. The results are ranked by realised P&L, then
by max drawdown (:func:`~valux.backtest.report.rank`).

On a multi-node cluster every node must reach the PostgreSQL server (``DATABASE_URL``);
the embedded server listens on a Unix socket of the driver's machine only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import ray

from valux.backtest.data import TimedSignal, apply_overrides, label_of
from valux.backtest.engine import BacktestInput, run_backtest
from valux.backtest.report import rank
from valux.config.settings import Settings
from valux.errors import FieldError, InvalidRequest
from valux.feeds.replay import ReplayFeed
from valux.rules.config import load_agent_config

__all__ = ["SweepPoint", "plan_sweep", "run_sweep"]

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


SweepPoint = tuple[str, dict[str, Any], dict[str, Any]]  # label, overrides, config


def plan_sweep(
    base_config: Mapping[str, Any], points: Sequence[Mapping[str, Any]]
) -> list[SweepPoint]:
    """(label, overrides, config) per point; raises one error naming every invalid point."""
    planned: list[SweepPoint] = []
    errors: list[FieldError] = []
    for overrides in points:
        label = label_of(overrides)
        config = apply_overrides(base_config, overrides)
        try:
            load_agent_config(config)
        except InvalidRequest as exc:
            errors.extend(FieldError(f"[{label}] {e.field}", e.message) for e in exc.errors)
            continue
        planned.append((label, dict(overrides), config))
    if errors:
        listed = "; ".join(f"{e.field}: {e.message}" for e in errors[:10])
        raise InvalidRequest(f"invalid sweep configs: {listed}", errors)
    return planned


def _one(
    prices: ReplayFeed,
    signals: tuple[TimedSignal, ...],
    point: SweepPoint,
    balance: Decimal,
    base: Settings,
    admin_url: str,
) -> dict[str, Any]:
    label, overrides, config = point
    spec = BacktestInput(prices, signals, config, balance, label, overrides)
    result = asyncio.run(run_backtest(spec, base, admin_url))
    return {**result.summary, "curve": result.curve}


_remote_one: Any = None


def _task() -> Any:
    global _remote_one
    if _remote_one is None:
        # One CPU per backtest: the task runs the whole trading system in its own process.
        _remote_one = ray.remote(num_cpus=1, max_retries=0)(_one)
    return _remote_one


def run_sweep(
    prices: ReplayFeed,
    signals: Sequence[TimedSignal],
    points: Sequence[SweepPoint],
    *,
    balance: Decimal,
    base: Settings,
    admin_url: str,
    parallel: int,
    progress: bool = False,
    say: Say = _quiet,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every point (at most ``parallel`` at once); (ranked results, failed runs)."""
    prices_ref = ray.put(prices)
    frozen = tuple(signals)
    remote = _task()
    queue = list(points)
    running: dict[Any, str] = {}
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(queue), desc="sweep", unit="run", file=sys.stderr)
    started = time.perf_counter()
    try:
        while queue or running:
            while queue and len(running) < max(1, parallel):
                point = queue.pop(0)
                ref = remote.remote(prices_ref, frozen, point, balance, base, admin_url)
                running[ref] = point[0]
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                label = running.pop(ref)
                try:
                    results.append(ray.get(ref))
                except Exception as exc:
                    failures.append({"label": label, "error": f"{type(exc).__name__}: {exc}"})
                    say(f"sweep: {label} failed: {exc}")
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for ref in running:
            ray.cancel(ref, force=True)
    say(f"sweep: {len(results)} runs in {time.perf_counter() - started:.1f}s")
    return [dict(r) for r in rank(results)], failures
