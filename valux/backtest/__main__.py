"""Backtests and parameter sweeps on the real valux actors, with simulated time.

Usage::

    python -m valux.backtest run   --prices prices.csv --signals signals.csv
                                   [--config agent.json] [--balance 10] [--out DIR]
    python -m valux.backtest sweep --prices prices.csv --signals signals.csv --grid grid.json
                                   [--config agent.json] [--balance 10] [--parallel N]
                                   [--out DIR]
    python -m valux.backtest sample [--out bench/data] [--seed 7] [--steps 2000]

Out of the box, on the sample data in ``bench/data`` (``sample`` writes it again)::

    python -m valux.backtest run --prices bench/data/prices.csv \\
        --signals bench/data/signals.csv --config bench/data/agent.json
    python -m valux.backtest sweep --prices bench/data/prices.csv \\
        --signals bench/data/signals.csv --config bench/data/agent.json \\
        --grid bench/data/grid.json

What runs: the production trading classes — agent host, wallet host with the paper
venue, paper exchange, stop-loss evaluator — in this one process, called directly (no
Ray hop per batch), journaling in large batches into a fresh PostgreSQL database
(dropped afterwards). The price file is replayed in timestamp order straight into the
evaluator; every tick that triggers an exit has its exit executed and journaled before
the next tick is evaluated. Signals reach the agent host at their timestamps (after the
ticks of the same timestamp). Live and backtest share every line of trading code: only
the wiring (in-process calls, a buffered journal), the clock (the ticks' timestamps) and
the venue's clock (``venue.paper.simulated_clock``: fills carry market-data time) differ.

Inputs:

- ``--prices``: CSV or Parquet of ``ts,token,price``, as the replay feed reads it
  (``ts`` in unix seconds or ISO-8601 with an offset).
- ``--signals``: CSV of ``ts,id,token,strength,type[,size]``; each row is validated as
  ``POST /api/v1/signals`` validates a body. Without ``size`` the agent sizes the
  position itself — randomly unless the config disables
  ``positionCalculator.randomization``.
- ``--config``: the agent's trading config (JSON, the reference's camelCase shape, as
  ``POST /api/v1/agents`` takes it); production defaults when omitted.
- ``--balance``: the agent's starting paper balance in the quote asset (default 10).
- ``--grid`` (sweep): a JSON object of dotted config paths to value lists, e.g.
  ``{"stopLoss.mode": ["fixed", "exponential"], "stopLoss.defaultPercentage": [-5, -15],
  "takeProfit.mode": ["aggressive", "conservative"]}``; the cartesian product runs.
- ``--settings FILE`` / ``--set KEY=VALUE``: valux settings (TOML file, then dotted
  overrides, e.g. ``--set venue.paper.fee_bps=0``); the environment applies as for
  ``valux``. A backtest uses one evaluator unless ``hosting.evaluators`` is set.

Where it runs: PostgreSQL from ``DATABASE_URL`` (used as an admin connection to create
and drop the backtest databases), else the embedded server under ``data_dir``; no Redis.
``run`` needs no Ray. A sweep runs one backtest per Ray task on the cluster from
``RAY_ADDRESS`` / ``ray.address``, else the cluster ``ray start`` left on this machine,
else a local instance for the length of the command, at most ``--parallel`` at once
(default: the cluster's CPU count); on several nodes, ``DATABASE_URL`` must be reachable
from all.

Output: ``run`` prints a table (trades per reason, realised and unrealised P&L, win
rate, max drawdown, final equity, signal outcomes, speed) and writes ``report.json``,
``equity.png`` (equity and drawdown over simulated time), ``trades.csv`` and
``positions.csv`` into ``--out`` (default ``backtest-out``); a progress bar runs on
stderr (``--no-progress`` to silence it). ``sweep`` prints the runs ranked by realised
P&L, then max drawdown, and writes ``sweep.json`` and ``sweep.png`` (the best runs'
equity curves). Exit code 0, or 1 when a run failed, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from valux.config.settings import Settings, load_settings
from valux.errors import ValuxError


def _say(message: str) -> None:
    print(f"backtest: {message}", file=sys.stderr)


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"backtest: error: --set wants KEY=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _settings(args: argparse.Namespace) -> Settings:
    overrides = _parse_set(args.set or [])
    settings = load_settings(config_file=args.settings, env=os.environ, overrides=overrides)
    defaults: dict[str, Any] = {}
    if settings.source_of("hosting.evaluators") == "default":
        defaults["hosting.evaluators"] = 1  # fewer processes; a backtest has few tokens
    if settings.source_of("logging.level") == "default":
        defaults["logging.level"] = "warning"
    if defaults:
        settings = load_settings(
            config_file=args.settings, env=os.environ, overrides={**defaults, **overrides}
        )
    return settings


def _balance(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"backtest: error: --config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"backtest: error: --config {path}: must be a JSON object")
    return data


def _connect(settings: Settings) -> bool:
    """Attach to Ray (address, `ray start` cluster, or a local instance); True if local."""
    import ray

    from valux.system.ray_connect import running_cluster_address, use_cluster_token

    if ray.is_initialized():
        return False
    address = settings.ray.address
    if not address:
        address, stale = running_cluster_address()
        if stale:
            _say(f"warning: {stale}")
    if address:
        use_cluster_token()
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        _say(f"ray: cluster at {address}")
        return False
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    _say("ray: local Ray instance")
    return True


def _inputs(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from valux.backtest.data import read_signals
    from valux.feeds.replay import ReplayFeed

    if not args.prices.exists():
        raise SystemExit(f"backtest: error: --prices {args.prices}: no such file")
    prices = ReplayFeed.from_file(args.prices)
    signals = tuple(read_signals(args.signals))
    config = _load_config(args.config)
    return prices, signals, config


def _cmd_run(args: argparse.Namespace) -> int:
    from valux.backtest.engine import (
        BacktestInput,
        admin_database_url,
        run_backtest,
        write_outputs,
    )
    from valux.backtest.report import format_table
    from valux.ops.embedded import embedded_for_this_run
    from valux.rules.config import load_agent_config

    settings = _settings(args)
    prices, signals, config = _inputs(args)
    load_agent_config(config)
    label = args.config.stem if args.config else "defaults"
    _say(
        f"{len(prices)} ticks of {len(prices.tokens)} tokens, {len(signals)} signals, "
        f"balance {args.balance}"
    )
    with embedded_for_this_run(settings):
        admin_url = admin_database_url(settings, _say)
        spec = BacktestInput(prices, signals, config, args.balance, label)
        result = asyncio.run(
            run_backtest(spec, settings, admin_url, progress=not args.no_progress, say=_say)
        )
    s = result.summary
    rows: list[tuple[str, Any]] = [
        ("period (simulated)", f"{s['start']} → {s['end']}"),
        ("ticks / batches", f"{s['ticks']} / {s['batches']}"),
        ("signals", s["signals"]),
        *((f"  signals: {k}", v) for k, v in s["signal_outcomes"].items()),
        ("trades", s["trades"]),
        *((f"  trades: {k}", v) for k, v in s["trades_by_reason"].items()),
        ("fees paid", s["fees"]),
        ("positions closed / open", f"{s['closed_positions']} / {s['open_positions']}"),
        ("win rate", s["win_rate"]),
        ("realised P&L", s["realized_pnl"]),
        ("unrealised P&L", s["unrealized_pnl"]),
        ("initial balance", s["initial_balance"]),
        ("final equity", s["final_equity"]),
        ("return %", s["return_pct"]),
        ("max drawdown", s["max_drawdown"]),
        ("max drawdown %", s["max_drawdown_pct"]),
        ("wallet matches fills", s["wallet_matches_fills"]),
        ("replay seconds (wall)", s["replay_seconds"]),
        ("batches / second", s["batches_per_second"]),
        ("total seconds (wall)", s["wall_seconds"]),
    ]
    print(format_table(rows))
    paths = write_outputs(result, args.out, title=f"valux backtest: {label}")
    _say("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import ray

    from valux.backtest.data import expand_grid, load_grid
    from valux.backtest.engine import admin_database_url
    from valux.backtest.report import format_ranking, plot_curves, write_json
    from valux.backtest.sweep import plan_sweep, run_sweep
    from valux.ops.embedded import embedded_for_this_run

    settings = _settings(args)
    prices, signals, config = _inputs(args)
    points = plan_sweep(config, expand_grid(load_grid(args.grid)))
    with embedded_for_this_run(settings):
        admin_url = admin_database_url(settings, _say)
        owns = _connect(settings)
        try:
            resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
            cpus = int(resources.get("CPU", 1))
            parallel = args.parallel or max(1, min(cpus, len(points)))
            _say(
                f"{len(points)} runs, {parallel} at a time on a cluster of {cpus} CPUs; "
                f"{len(prices)} ticks, {len(signals)} signals each"
            )
            started = time.perf_counter()
            ranked, failures = run_sweep(
                prices,
                signals,
                points,
                balance=args.balance,
                base=settings,
                admin_url=admin_url,
                parallel=parallel,
                progress=not args.no_progress,
                say=_say,
            )
            elapsed = time.perf_counter() - started
        finally:
            if owns:
                ray.shutdown()
    print(format_ranking(ranked))
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {r["label"]: r.pop("curve") for r in ranked}
    write_json(
        args.out / "sweep.json",
        {
            "grid": load_grid(args.grid),
            "parallel": parallel,
            "wall_seconds": round(elapsed, 3),
            "ranked": ranked,
            "failed": failures,
        },
    )
    if ranked:
        best = list(curves.items())[:5]
        plot_curves(best, args.out / "sweep.png", title="valux sweep: best runs",
                    initial=float(args.balance))  # fmt: skip
    _say(f"{len(ranked)} runs in {elapsed:.1f}s; wrote {args.out / 'sweep.json'}")
    for failure in failures:
        _say(f"failed: {failure['label']}: {failure['error']}")
    return 1 if failures else 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from valux.backtest.sample import write_sample

    paths = write_sample(args.out, seed=args.seed, steps=args.steps)
    _say("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m valux.backtest",
        description="Backtests and parameter sweeps on the real valux actors.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("--prices", type=Path, required=True, help="CSV/Parquet ts,token,price")
        p.add_argument(
            "--signals", type=Path, required=True, help="CSV ts,id,token,strength,type[,size]"
        )
        p.add_argument("--config", type=Path, help="agent config (JSON)")
        p.add_argument("--balance", type=_balance, default=Decimal(10), help="starting balance")
        p.add_argument("--out", type=Path, default=Path(out), help=f"output dir ({out})")
        p.add_argument("--settings", type=Path, help="valux settings (TOML)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a valux setting")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="one backtest")
    common(run, "backtest-out")
    run.set_defaults(func=_cmd_run)
    sweep = sub.add_parser("sweep", help="a parameter sweep as Ray tasks")
    common(sweep, "backtest-out/sweep")
    sweep.add_argument("--grid", type=Path, required=True, help="JSON: config path → values")
    sweep.add_argument("--parallel", type=int, default=0, help="runs at once (cluster CPUs)")
    sweep.set_defaults(func=_cmd_sweep)
    sample = sub.add_parser("sample", help="write sample inputs")
    sample.add_argument("--out", type=Path, default=Path("bench/data"))
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--steps", type=int, default=2000)
    sample.set_defaults(func=_cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValuxError as exc:
        print(f"backtest: error: {exc.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
