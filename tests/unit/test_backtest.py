"""The pure parts of backtests: the signals file, the timeline, grids, the report's maths."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from valux.backtest.data import (
    GridError,
    SignalFileError,
    TimedSignal,
    apply_overrides,
    check_grid,
    expand_grid,
    label_of,
    load_grid,
    read_signals,
    timeline,
)
from valux.backtest.engine import backtest_settings
from valux.backtest.report import (
    Fill,
    equity_curve,
    final_equity,
    format_ranking,
    format_table,
    holdings,
    max_drawdown,
    plot_equity,
    rank,
    summarise,
    win_rate,
)
from valux.backtest.sample import write_sample
from valux.backtest.sweep import plan_sweep
from valux.config.settings import load_settings
from valux.errors import InvalidRequest
from valux.feeds.replay import ReplayFeed
from valux.feeds.ticks import Tick
from valux.hosting.peers import LocalPeers
from valux.venues.paper.prices import PriceLookup

T0 = 1_700_000_000.0


def _write(tmp_path: Path, text: str, name: str = "signals.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ signals file


def test_signals_file_is_read_validated_and_sorted_by_ts(tmp_path: Path) -> None:
    """Columns in any order, ISO or unix ts, optional size; equal ts keep file order."""
    path = _write(
        tmp_path,
        "Type,ts,id,token,strength,size,extra\n"
        "breakout,1700000060,b,SOL,4,1.5,x\n"
        "volume,2023-11-14T22:13:20Z,a,BONK,5,,y\n"
        "\n"
        "momentum,1700000060,c,SOL,1,0.25,z\n",
    )
    signals = read_signals(path)
    assert [(s.ts, s.signal.id) for s in signals] == [(T0, "a"), (T0 + 60, "b"), (T0 + 60, "c")]
    first = signals[0].signal
    assert (first.token, first.strength, first.type, first.size) == ("BONK", 5, "volume", None)
    assert signals[1].signal.size == Decimal("1.5")


def test_signals_file_errors_name_each_row_and_column(tmp_path: Path) -> None:
    """Every bad value is reported with its CSV line number, as the API would reject it."""
    path = _write(
        tmp_path,
        "ts,id,token,strength,type,size\n"
        "1700000000,ok,SOL,3,t,1\n"
        "2023-11-14T22:13:20,n1,SOL,3,t,1\n"
        "1700000000,n2,SOL,9,t,1\n"
        "1700000000,n3,SOL,3,t,-1\n"
        "1700000000000,n4,,3,t,1\n",
    )
    with pytest.raises(SignalFileError) as info:
        read_signals(path)
    fields = [e.field for e in info.value.errors]
    assert fields == [
        "row 3, column 'ts'",
        "row 4, column 'strength'",
        "row 5, column 'size'",
        "row 6, column 'ts'",
        "row 6, column 'token'",
    ]
    assert "UTC offset" in info.value.errors[0].message
    assert "milliseconds" in info.value.errors[3].message
    assert isinstance(info.value, InvalidRequest)


def test_signals_file_needs_its_columns_and_unique_ids(tmp_path: Path) -> None:
    missing = _write(tmp_path, "ts,id,token\n1,a,SOL\n")
    with pytest.raises(SignalFileError, match="missing column"):
        read_signals(missing)
    twice = _write(tmp_path, "ts,id,token,strength,type\n1,a,SOL,3,t\n2,a,SOL,3,t\n", "two.csv")
    with pytest.raises(SignalFileError, match="duplicate signal ids: a"):
        read_signals(twice)
    with pytest.raises(SignalFileError, match="No such file"):
        read_signals(tmp_path / "absent.csv")


def _signal(ts: float, sid: str) -> TimedSignal:
    from valux.api.models import SignalIn

    return TimedSignal(ts, SignalIn(id=sid, token="SOL", strength=3, type="t"))


def test_timeline_puts_ticks_first_on_equal_timestamps() -> None:
    """One batch per distinct ts; a signal follows the ticks of its own moment."""
    prices = ReplayFeed(
        [Tick("SOL", 1.0, T0), Tick("BONK", 2.0, T0), Tick("SOL", 1.1, T0 + 60)],
    )
    signals = [_signal(T0 + 60, "at-60"), _signal(T0 - 5, "early"), _signal(T0 + 30, "mid"),
               _signal(T0 + 99, "late")]  # fmt: skip
    steps = list(timeline(prices, signals))
    shown = [s.id if hasattr(s, "id") else [t.ts for t in s] for s in steps]
    assert shown == ["early", [T0, T0], "mid", [T0 + 60], "at-60", "late"]


# ------------------------------------------------------------------------ grids


def test_grid_expands_to_the_cartesian_product_in_written_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        json.dumps({"stopLoss.mode": ["fixed", "zones"], "stopLoss.defaultPercentage": [-5, -15]}),
        "grid.json",
    )
    points = expand_grid(load_grid(path))
    assert points == [
        {"stopLoss.mode": "fixed", "stopLoss.defaultPercentage": -5},
        {"stopLoss.mode": "fixed", "stopLoss.defaultPercentage": -15},
        {"stopLoss.mode": "zones", "stopLoss.defaultPercentage": -5},
        {"stopLoss.mode": "zones", "stopLoss.defaultPercentage": -15},
    ]
    assert label_of(points[1]) == "stopLoss.mode=fixed stopLoss.defaultPercentage=-15"
    assert label_of({"takeProfit.levels": [{"a": 1}]}) == 'takeProfit.levels=[{"a":1}]'


def test_grid_shape_errors() -> None:
    cases: list[object] = [{}, [], {"a": []}, {"a": 3}, {"a..b": [1]}]
    for bad in cases:
        with pytest.raises(GridError):
            check_grid(bad)


def test_overrides_set_dotted_paths_without_touching_the_base() -> None:
    base = {"stopLoss": {"enabled": True, "mode": "fixed"}, "dca": 5}
    out = apply_overrides(base, {"stopLoss.mode": "zones", "takeProfit.mode": "aggressive",
                                 "dca.enabled": True})  # fmt: skip
    assert out == {
        "stopLoss": {"enabled": True, "mode": "zones"},
        "takeProfit": {"mode": "aggressive"},
        "dca": {"enabled": True},
    }
    assert base == {"stopLoss": {"enabled": True, "mode": "fixed"}, "dca": 5}


def test_plan_sweep_validates_every_point_first() -> None:
    """Every invalid grid point is named before any backtest starts."""
    points = expand_grid({"stopLoss.mode": ["fixed", "bogus"], "stopLoss.defaultPercentage": [-5]})
    with pytest.raises(InvalidRequest) as info:
        plan_sweep({}, points)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].field.startswith("[stopLoss.mode=bogus stopLoss.defaultPercentage")
    planned = plan_sweep({"dca": {"enabled": False}}, points[:1])
    assert planned == [
        (
            "stopLoss.mode=fixed stopLoss.defaultPercentage=-5",
            {"stopLoss.mode": "fixed", "stopLoss.defaultPercentage": -5},
            {"dca": {"enabled": False}, "stopLoss": {"mode": "fixed", "defaultPercentage": -5}},
        )
    ]


# ----------------------------------------------------------------- report maths


def _batches(*rows: tuple[float, dict[str, float]]) -> list[list[Tick]]:
    return [[Tick(token, price, ts) for token, price in prices.items()] for ts, prices in rows]


def test_equity_curve_books_fills_at_their_tick_and_marks_holdings() -> None:
    """Cash + holdings × latest price after each batch; a fill belongs to the tick it
    carries (a microsecond late, as PostgreSQL returns it, still counts)."""
    batches = _batches(
        (T0, {"A": 1.0, "B": 2.0}),
        (T0 + 60, {"A": 1.5}),
        (T0 + 120, {"A": 0.5, "B": 4.0}),
        (T0 + 180, {"A": 0.8}),
    )
    fills = [
        Fill(T0 + 0.0000004, "A", "buy", Decimal(2), Decimal(2)),
        Fill(T0 + 60, "B", "buy", Decimal("0.5"), Decimal(1)),
        Fill(T0 + 120, "A", "sell", Decimal(2), Decimal("0.9"), "stop_loss"),
    ]
    curve = equity_curve(Decimal(10), fills, batches)
    assert curve == [
        (T0, 10.0),  # 8 cash + 2 A × 1.0
        (T0 + 60, 11.0),  # 7 cash + 2 A × 1.5 + 0.5 B × 2.0 (B's last price)
        (T0 + 120, 9.9),  # 7.9 cash + 0.5 B × 4.0
        (T0 + 180, 9.9),
    ]
    assert holdings(Decimal(10), fills) == {"": Decimal("7.9"), "A": 0, "B": Decimal("0.5")}
    assert final_equity(Decimal(10), fills, {"A": 0.8, "B": 4.0}) == Decimal("9.9")


def test_max_drawdown_and_win_rate() -> None:
    assert max_drawdown([]) == (0.0, 0.0)
    assert max_drawdown([10, 11, 12]) == (0.0, 0.0)
    fall, fraction = max_drawdown([10, 12, 9, 11, 8, 13, 12])
    assert fall == 4 and fraction == pytest.approx(4 / 12)
    assert win_rate([]) is None
    assert win_rate([Decimal("0.1"), Decimal(0), Decimal("-0.2"), Decimal("0.3")]) == 0.5


def test_summary_rank_and_tables() -> None:
    fills = [
        Fill(T0, "A", "buy", Decimal(2), Decimal(2), "signal", Decimal("0.01")),
        Fill(T0 + 60, "A", "sell", Decimal(2), Decimal("2.2"), "take_profit", Decimal("0.01")),
        Fill(T0 + 60, "B", "buy", Decimal(1), Decimal(1), "signal"),
    ]
    curve = [(T0, 10.0), (T0 + 60, 10.2), (T0 + 120, 9.7)]
    s = summarise(
        initial=Decimal(10),
        fills=fills,
        realized=[Decimal("0.2")],
        open_positions=1,
        curve=curve,
        last_prices={"A": 1.0, "B": 0.5},
    )
    assert s["final_equity"] == Decimal("9.7")
    assert s["realized_pnl"] == Decimal("0.2") and s["unrealized_pnl"] == Decimal("-0.5")
    assert s["trades_by_reason"] == {"buy signal": 2, "sell take_profit": 1}
    assert s["fees"] == Decimal("0.02") and s["win_rate"] == 1.0
    assert s["max_drawdown"] == pytest.approx(0.5)
    assert s["max_drawdown_pct"] == pytest.approx(0.5 / 10.2 * 100)
    runs = [
        {**s, "label": "b", "realized_pnl": "0.2", "max_drawdown_pct": 5.0},
        {**s, "label": "a", "realized_pnl": "0.2", "max_drawdown_pct": 2.0},
        {**s, "label": "c", "realized_pnl": "0.3", "max_drawdown_pct": 9.0},
    ]
    assert [r["label"] for r in rank(runs)] == ["c", "a", "b"]
    table = format_ranking(rank(runs))
    assert table.splitlines()[2].startswith("| 1 | c ")
    assert "| realised P&L |" in format_table([("realised P&L", Decimal("0.2"))])


def test_equity_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "equity.png"
    plot_equity([(T0, 10.0), (T0 + 60, 9.0), (T0 + 120, 10.5)], path, title="t", initial=10.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------- settings, sample


def test_backtest_settings_force_manual_feed_and_simulated_clock() -> None:
    base = load_settings(env={}, overrides={"venue.paper.fee_bps": 0, "hosting.evaluators": 3})
    s = backtest_settings(base, "postgresql://h/db", "ns-1")
    assert (s.ray.namespace, s.database.url, s.redis.url) == ("ns-1", "postgresql://h/db", None)
    assert not s.feeds.simulated.enabled and s.feeds.manual.enabled
    assert s.feeds.on_silent == "keep" and s.venue.paper.simulated_clock
    assert s.venue.paper.fee_bps == 0 and s.hosting.evaluators == 3
    assert not base.venue.paper.simulated_clock  # live default: wall time


def test_market_time_lookup_keeps_no_cache_and_follows_the_newest_price() -> None:
    """In simulated-clock mode the venue's clock is the newest market timestamp seen."""
    lookup = PriceLookup(1, LocalPeers(), market_time=True)
    lookup.remember("A", 1.0, T0 + 60)
    lookup.remember("B", 2.0, T0)
    assert lookup.market_time() == T0 + 60
    assert lookup._cache == {}  # a replayed price's freshness is not the wall clock's
    live = PriceLookup(1, LocalPeers())
    live.remember("A", 1.0)
    assert "A" in live._cache


def test_sample_files_are_deterministic_and_valid(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "one", steps=50, signals=8)
    second = write_sample(tmp_path / "two", steps=50, signals=8)
    for key in first:
        assert first[key].read_bytes() == second[key].read_bytes(), key
    prices = ReplayFeed.from_file(first["prices"])
    assert len(prices) == 150 and len(prices.tokens) == 3
    assert len(read_signals(first["signals"])) == 8
    config = json.loads(first["config"].read_text())
    assert len(plan_sweep(config, expand_grid(load_grid(first["grid"])))) == 8


def test_committed_sample_data_loads() -> None:
    """bench/data is what the docstring's example runs on."""
    data = Path(__file__).resolve().parents[2] / "bench" / "data"
    prices = ReplayFeed.from_file(data / "prices.csv")
    assert len(prices) == 6000
    assert len(read_signals(data / "signals.csv")) == 40
    config = json.loads((data / "agent.json").read_text())
    assert len(plan_sweep(config, expand_grid(load_grid(data / "grid.json")))) == 8
