"""The backtest driver: a real valux trading system in one process, on simulated time.

One backtest = one :class:`~valux.backtest.inprocess.InProcessSystem` — the production
agent host, wallet host with the paper venue, paper exchange and stop-loss evaluator,
called directly in this process (no Ray hop) — on its own fresh PostgreSQL database
(created on the admin URL, migrated exactly as ``valux`` migrates it, dropped at the
end), journaling through a buffered store. Every trading decision is made by the same
classes as in a live run:

- the agent is created as the API creates one (config validated, a paper wallet with the
  starting balance);
- the timeline (:func:`~valux.backtest.data.timeline`) is replayed in order: tick batches
  go to the evaluator, each evaluated up to every tick that triggers an exit, whose sale
  (or take profit, DCA buy, stale-trade close) is executed, journaled and re-armed before
  the next tick; a signal goes to the agent host, which answers once the buy is filled
  and armed;
- nothing waits on the wall clock, so it runs as fast as the trading code goes.

Only the wiring, the store and the clock differ from a live run: the agents see the
replayed ticks' timestamps (stale-trade age, DCA cooldown), and fills are stamped with
market-data time (``venue.paper.simulated_clock``), so positions' ``opened_at`` /
``closed_at`` and the trades carry simulated time.

Determinism: with ``failure_rate = unknown_rate = 0`` (the default) and signals that
carry a ``size`` (or an agent config with ``positionCalculator.randomization``
disabled), a backtest gives the same trades every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from valux.api.models import SignalIn
from valux.backtest.data import TimedSignal, timeline
from valux.backtest.inprocess import InProcessSystem
from valux.backtest.report import Fill, equity_curve, holdings, summarise
from valux.config.settings import Settings
from valux.feeds.replay import ReplayFeed
from valux.ops.scratch_db import scratch_database
from valux.schema.messages import Signal, TokenMetricsIn
from valux.system.runtime import prepare_database

__all__ = [
    "AGENT_ID",
    "BacktestInput",
    "BacktestResult",
    "admin_database_url",
    "backtest_settings",
    "run_backtest",
]

AGENT_ID = "backtest"
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class BacktestInput:
    """What one backtest replays, and with which agent."""

    prices: ReplayFeed
    signals: tuple[TimedSignal, ...]
    config: Mapping[str, Any]
    balance: Decimal = Decimal(10)
    label: str = "backtest"
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BacktestResult:
    """The report (``summary``) and the series it was computed from."""

    summary: dict[str, Any]
    curve: list[tuple[float, float]]
    fills: list[Fill]
    positions: list[dict[str, Any]]


# ---------------------------------------------------------------- settings


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def backtest_settings(base: Settings, database_url: str, namespace: str) -> Settings:
    """``base`` with what a backtest must have: its database and namespace, no Redis,
    no feeds of their own (the file is the feed), simulated clock."""
    data = base.model_dump()
    for key, value in {
        "ray.namespace": namespace,
        "database.url": database_url,
        "redis.url": None,
        "feeds.simulated.enabled": False,
        "feeds.manual.enabled": True,
        "feeds.replay.path": None,
        "feeds.on_silent": "keep",
        "venue.paper.simulated_clock": True,
    }.items():
        _set(data, key, value)
    return Settings.model_validate(data)


def admin_database_url(settings: Settings, say: Say = _quiet) -> str:
    """Where backtests create their databases: ``database.url`` (``DATABASE_URL``) used
    as an admin connection, else the embedded PostgreSQL under ``data_dir``."""
    from valux.ops.embedded import resolve_database_url

    url, description = resolve_database_url(settings)
    say(f"database server: {description}")
    return url


def fresh_database(admin_url: str) -> contextlib.AbstractAsyncContextManager[str]:
    """A new, empty database ``valux_bt_<hex>`` on the admin URL's server; dropped after."""
    return scratch_database(admin_url, "valux_bt")


# ------------------------------------------------------------------ the run


class _Progress:
    """tqdm on stderr when wanted; a no-op otherwise (Ray workers, tests)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=label, unit="batch", file=sys.stderr, dynamic_ncols=True
            )

    def update(self, trades: int) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if self._bar.n % 50 == 0:
                self._bar.set_postfix(trades=trades, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


async def run_backtest(
    spec: BacktestInput,
    base: Settings,
    admin_url: str,
    *,
    progress: bool = False,
    say: Say = _quiet,
) -> BacktestResult:
    """Run one backtest on a fresh system in this process (see the module docstring);
    needs no Ray (a sweep runs this inside a Ray task)."""
    namespace = f"valux-bt-{uuid.uuid4().hex[:8]}"
    wall_started = time.perf_counter()
    async with fresh_database(admin_url) as database_url:
        settings = backtest_settings(base, database_url, namespace)
        _, pool = await prepare_database(settings)
        try:
            started = time.perf_counter()
            system = await InProcessSystem.start(settings, database_url)
            say(f"{spec.label}: trading system up in {time.perf_counter() - started:.2f}s")
            try:
                return await _replay(spec, settings, system, pool, progress, wall_started)
            finally:
                await system.close()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)


def _signal(step: SignalIn) -> Signal:
    """A signal as the agent host gets it (what the API's backend sends, for every agent)."""
    metrics = step.metrics
    return Signal(
        id=step.id,
        token=step.token,
        strength=step.strength,
        type=step.type,
        size=step.size,
        metrics=None
        if metrics is None
        else TokenMetricsIn(
            market_cap=None if metrics.market_cap is None else float(metrics.market_cap),
            liquidity=None if metrics.liquidity is None else float(metrics.liquidity),
            holder_count=metrics.holder_count,
        ),
        agents=(AGENT_ID,),
        received_at=time.time(),
    )


async def _replay(
    spec: BacktestInput,
    settings: Settings,
    system: InProcessSystem,
    pool: asyncpg.Pool,
    progress: bool,
    wall_started: float,
) -> BacktestResult:
    await system.add_agent(AGENT_ID, spec.config, spec.balance, spec.label[:100] or AGENT_ID)
    outcomes: Counter[str] = Counter()
    batches = ticks = 0
    replay_started = time.perf_counter()
    bar = _Progress(_count_batches(spec.prices), spec.label, progress)
    try:
        for step in timeline(spec.prices, spec.signals):
            if isinstance(step, SignalIn):
                for outcome in await system.signal(_signal(step)):
                    outcomes[_outcome_key(outcome)] += 1
                continue
            await system.ticks([(t.token, t.price, t.ts) for t in step])
            batches += 1
            ticks += len(step)
            bar.update(outcomes["bought"])
    finally:
        bar.close()
    await system.store.flush()
    replay_seconds = time.perf_counter() - replay_started
    fills = await _fills(pool)
    positions = [
        dict(r)
        for r in await pool.fetch(
            "SELECT id, token, status, amount, remaining, purchase_price, invested, proceeds,"
            " realized_pnl, exit_reason, signal_id, extract(epoch FROM opened_at) AS opened_at,"
            " extract(epoch FROM closed_at) AS closed_at FROM positions WHERE agent_id = $1"
            " ORDER BY opened_at, id",
            AGENT_ID,
        )
    ]
    (wallet,) = await system.wallets.describe([f"w-{AGENT_ID}"])
    assert wallet is not None
    last_prices = {t.token: t.price for t in _all_ticks(spec.prices)}
    curve = equity_curve(spec.balance, fills, spec.prices.batches(max_batch=1_000_000))
    realized = [p["realized_pnl"] for p in positions if p["status"] == "closed"]
    summary: dict[str, Any] = {"label": spec.label, "overrides": dict(spec.overrides)}
    summary.update(
        summarise(
            initial=spec.balance,
            fills=fills,
            realized=realized,
            open_positions=sum(1 for p in positions if p["status"] == "open"),
            curve=curve,
            last_prices=last_prices,
        )
    )
    summary.update(
        signals=len(spec.signals),
        signal_outcomes=dict(sorted(outcomes.items())),
        ticks=ticks,
        batches=batches,
        start=_iso(spec.prices.start_ts),
        end=_iso(spec.prices.end_ts),
        wallet_matches_fills=_wallet_matches(spec.balance, fills, wallet, settings),
        replay_seconds=round(replay_seconds, 3),
        wall_seconds=round(time.perf_counter() - wall_started, 3),
        batches_per_second=round(batches / replay_seconds, 1) if replay_seconds > 0 else None,
        ticks_per_second=round(ticks / replay_seconds, 1) if replay_seconds > 0 else None,
    )
    return BacktestResult(summary, curve, fills, positions)


async def _fills(pool: asyncpg.Pool) -> list[Fill]:
    rows = await pool.fetch(
        "SELECT extract(epoch FROM ts)::float8 AS ts, token, side, base_amount, quote_amount,"
        " reason, fee + network_fee AS fee FROM trades WHERE agent_id = $1 ORDER BY ts, intent_id",
        AGENT_ID,
    )
    return [
        Fill(
            ts=float(r["ts"]),
            token=r["token"],
            side=r["side"],
            base_amount=r["base_amount"],
            quote_amount=r["quote_amount"],
            reason=r["reason"],
            fee=r["fee"],
        )
        for r in rows
    ]


def _wallet_matches(
    initial: Decimal, fills: list[Fill], wallet: Mapping[str, Any], settings: Settings
) -> bool:
    """The wallet actor's balances equal the starting balance plus the journaled fills."""
    expected = holdings(initial, fills)
    expected[settings.venue.quote_asset] = expected.pop("")
    want = {a: v for a, v in expected.items() if v != 0}
    got = {a: Decimal(str(v)) for a, v in wallet.get("balances", {}).items() if Decimal(str(v))}
    return got == want


def _outcome_key(outcome: Mapping[str, Any]) -> str:
    """``bought``, or the status with the reason's code (``failed: POSITION_EXISTS``)."""
    status = str(outcome.get("status"))
    reason = outcome.get("reason")
    if status == "bought" or not reason:
        return status
    return f"{status}: {str(reason).split(':', 1)[0].strip()[:60]}"


def _count_batches(prices: ReplayFeed) -> int:
    return sum(1 for _ in prices.batches(max_batch=1_000_000))


def _all_ticks(prices: ReplayFeed) -> list[Any]:
    return [t for batch in prices.batches(max_batch=1_000_000) for t in batch]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def write_outputs(result: BacktestResult, out: Path, *, title: str) -> dict[str, Path]:
    """report.json, equity.png, trades.csv and positions.csv in ``out``."""
    import csv

    from valux.backtest.report import plot_equity, write_json

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out / "report.json",
        "equity": out / "equity.png",
        "trades": out / "trades.csv",
        "positions": out / "positions.csv",
    }
    write_json(paths["report"], result.summary)
    plot_equity(
        result.curve,
        paths["equity"],
        title=title,
        initial=float(result.summary["initial_balance"]),
    )
    with paths["trades"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ts", "token", "side", "base_amount", "quote_amount", "fee", "reason"])
        for f in result.fills:
            writer.writerow(
                [_iso(f.ts), f.token, f.side, f.base_amount, f.quote_amount, f.fee,
                 f.reason or ""]
            )  # fmt: skip
    with paths["positions"].open("w", newline="", encoding="utf-8") as handle:
        columns = list(result.positions[0]) if result.positions else ["id"]
        writer = csv.writer(handle)
        writer.writerow(columns)
        for p in result.positions:
            writer.writerow(["" if p.get(c) is None else p.get(c) for c in columns])
    return paths
