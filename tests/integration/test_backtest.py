"""A backtest through the production hosts on a hand-computable path, and a two-point sweep.

The venue charges no fee and no slippage, so every fill is at the tick's price. One
agent, config: fixed stop loss −10 %, stale trade after 60 min within −5 %..+5 %.

==========  =========  ========  ==========================================================
time        T          U         what happens
==========  =========  ========  ==========================================================
t0          1.0        2.0       signal s1 (T, size 1): buys 1 T at 1.0, opened at t0
t0+60       1.05       2.0       signal s2 (U, size 1): buys 0.5 U at 2.0, opened at t0+60
t0+90                            signal s3 (T): fails, a position in T is open
t0+120      0.95       2.02
t0+180      0.89                 T ≤ 0.9 (−10 %): stop loss sells 1 T for 0.89 (−0.11)
t0+3600     0.9        2.02      U held 59 min: not stale yet
t0+3660                2.02      U held 60 min at +1 %: stale trade sells 0.5 U for 1.01
t0+3720                2.5       nothing left to sell
==========  =========  ========  ==========================================================

Realised −0.11 + 0.01 = −0.10; equity 10 → 10.05 (peak, t0+60) → 9.96 → 9.90: max
drawdown 0.15 (1.4925 % of the peak). The stale trade fires an hour of *simulated* time
after the buy although the whole replay takes a second of wall time: positions carry the
replayed clock. With a −4 % stop (the second sweep point) T is sold at 0.95 (t0+120)
instead: realised −0.05 + 0.01 = −0.04, which ranks first.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.conftest import make_settings
from valux.api.models import SignalIn
from valux.backtest.data import TimedSignal, expand_grid
from valux.backtest.engine import BacktestInput, run_backtest, write_outputs
from valux.backtest.sweep import plan_sweep, run_sweep
from valux.config.settings import Settings
from valux.feeds.replay import ReplayFeed
from valux.feeds.ticks import Tick

T0 = 1_700_000_000.0
CONFIG = {
    "stopLoss": {"enabled": True, "mode": "fixed", "defaultPercentage": -10},
    "staleTrade": {
        "enabled": True,
        "minHoldTimeMinutes": 60,
        "minProfitPercent": -5,
        "maxProfitPercent": 5,
    },
    "takeProfit": {"enabled": False},
    "dca": {"enabled": False},
}
PATH = [
    (0, {"T": 1.0, "U": 2.0}),
    (60, {"T": 1.05, "U": 2.0}),
    (120, {"T": 0.95, "U": 2.02}),
    (180, {"T": 0.89, "U": 2.02}),
    (3600, {"T": 0.9, "U": 2.02}),
    (3660, {"U": 2.02}),
    (3720, {"U": 2.5}),
]


def _signal(offset: float, sid: str, token: str) -> TimedSignal:
    return TimedSignal(
        T0 + offset, SignalIn(id=sid, token=token, strength=4, type="t", size=Decimal(1))
    )


def _inputs() -> tuple[ReplayFeed, tuple[TimedSignal, ...]]:
    prices = ReplayFeed(
        Tick(token, price, T0 + offset) for offset, row in PATH for token, price in row.items()
    )
    signals = (_signal(0, "s1", "T"), _signal(60, "s2", "U"), _signal(90, "s3", "T"))
    return prices, signals


@pytest.fixture(scope="module")
def base(data_dir: Path, server_urls: tuple[str, str], redis_url: str) -> Settings:
    return make_settings(
        data_dir,
        server_urls[0],
        redis_url,
        "valux-backtest",
        **{
            "venue.paper.fee_bps": 0,
            "venue.paper.slippage_bps_per_unit": 0,
            "venue.paper.network_fee": "0",
        },
    )


async def test_backtest_through_the_real_actors(
    base: Settings, server_urls: tuple[str, str], tmp_path: Path
) -> None:
    """The hand-computed path above, replayed through the production hosts in one process
    (no Ray): every fill, P&L, simulated time stamp, the equity curve and the outputs."""
    prices, signals = _inputs()
    spec = BacktestInput(prices, signals, CONFIG, Decimal(10), "hand")
    result = await run_backtest(spec, base, server_urls[0])
    s = result.summary

    assert [(f.ts - T0, f.token, f.side, f.base_amount, f.quote_amount, f.reason)
            for f in result.fills] == [
        (0, "T", "buy", 1, 1, "signal"),
        (60, "U", "buy", Decimal("0.5"), 1, "signal"),
        (180, "T", "sell", 1, Decimal("0.89"), "stop_loss"),
        (3660, "U", "sell", Decimal("0.5"), Decimal("1.01"), "stale_trade"),
    ]  # fmt: skip
    by_token = {p["token"]: p for p in result.positions}
    assert by_token["T"]["realized_pnl"] == Decimal("-0.11")
    assert by_token["U"]["realized_pnl"] == Decimal("0.01")
    assert by_token["U"]["exit_reason"] == "stale_trade"
    # simulated time: opened and closed on the replayed clock, an hour apart
    assert float(by_token["U"]["opened_at"]) == T0 + 60
    assert float(by_token["U"]["closed_at"]) == T0 + 3660

    assert s["realized_pnl"] == Decimal("-0.10")
    assert s["final_equity"] == Decimal("9.9") and s["unrealized_pnl"] == 0
    assert s["trades"] == 4
    assert s["trades_by_reason"] == {"buy signal": 2, "sell stale_trade": 1, "sell stop_loss": 1}
    assert (s["closed_positions"], s["open_positions"], s["win_rate"]) == (2, 0, 0.5)
    assert s["signal_outcomes"] == {"bought": 2, "failed: POSITION_EXISTS": 1}
    assert s["max_drawdown"] == pytest.approx(0.15)
    assert s["max_drawdown_pct"] == pytest.approx(0.15 / 10.05 * 100)
    assert s["wallet_matches_fills"] is True
    assert [round(v, 9) for _, v in result.curve] == [10.0, 10.05, 9.96, 9.9, 9.9, 9.9, 9.9]
    assert (s["ticks"], s["batches"]) == (12, 7)

    paths = write_outputs(result, tmp_path, title="hand")
    assert paths["equity"].read_bytes()[:4] == b"\x89PNG"
    report = json.loads(paths["report"].read_text())
    assert Decimal(report["realized_pnl"]) == Decimal("-0.1") and report["trades"] == 4


def test_sweep_runs_as_ray_tasks_and_ranks(
    base: Settings, server_urls: tuple[str, str], ray_session: str
) -> None:
    """Each point of the grid is one in-process backtest in a Ray task; the runs are
    ranked by realised P&L (the −4 % stop sells T earlier and loses less)."""
    prices, signals = _inputs()
    points = plan_sweep(CONFIG, expand_grid({"stopLoss.defaultPercentage": [-10, -4]}))
    ranked, failures = run_sweep(
        prices,
        signals,
        points,
        balance=Decimal(10),
        base=base,
        admin_url=server_urls[0],
        parallel=2,
    )
    assert failures == []
    assert [(r["label"], r["realized_pnl"]) for r in ranked] == [
        ("stopLoss.defaultPercentage=-4", Decimal("-0.04")),
        ("stopLoss.defaultPercentage=-10", Decimal("-0.10")),
    ]
    assert ranked[0]["trades_by_reason"] == {
        "buy signal": 2,
        "sell stale_trade": 1,
        "sell stop_loss": 1,
    }
