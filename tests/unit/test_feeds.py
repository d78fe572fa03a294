"""Price sources as plain classes: tick validation, simulated GBM, replay, manual."""

from __future__ import annotations

import dataclasses
import math
import pickle
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from valux.errors import Conflict, FieldError, InvalidRequest
from valux.feeds.manual import ManualFeed
from valux.feeds.replay import ReplayFeed, ReplayFileError
from valux.feeds.simulated import SECONDS_PER_YEAR, SimTokenSpec, SimulatedFeed
from valux.feeds.ticks import Tick, parse_ticks

FIXTURE = Path(__file__).parent.parent / "fixtures" / "replay_small.csv"
T0 = 1714564800.0  # 2024-05-01T12:00:00Z


# ---------------------------------------------------------------- parse_ticks


def test_parse_ticks_accepts_valid_items_and_defaults_ts_to_now() -> None:
    """Valid items become Ticks in order; a missing ts takes one ``now()`` reading."""
    calls: list[int] = []

    def now() -> float:
        calls.append(1)
        return 123.5

    ticks = parse_ticks(
        [{"token": "SOL", "price": 150}, {"token": "ETH", "price": 3000.5, "ts": 99.0}],
        now=now,
    )
    assert ticks == [Tick("SOL", 150.0, 123.5), Tick("ETH", 3000.5, 99.0)]
    assert isinstance(ticks[0].price, float)
    assert len(calls) == 1


def test_parse_ticks_lists_every_bad_field_of_every_bad_item() -> None:
    """One InvalidRequest names each bad field as ``ticks[i].<field>``; nothing partial."""
    items = [
        {"token": "SOL", "price": 1.0},
        {"token": "", "price": -1},
        {"token": "X" * 65, "price": float("nan"), "ts": float("inf")},
        {"token": "OK", "price": True},
        "not an object",
        {"token": "MS", "price": 2.0, "ts": 1714564800000},
        {"token": "S", "price": "1.5"},
    ]
    with pytest.raises(InvalidRequest) as caught:
        parse_ticks(items)  # type: ignore[arg-type]  # the bad item is the point
    fields = [e.field for e in caught.value.errors]
    assert fields == [
        "ticks[1].token",
        "ticks[1].price",
        "ticks[2].token",
        "ticks[2].price",
        "ticks[2].ts",
        "ticks[3].price",
        "ticks[4]",
        "ticks[5].ts",
        "ticks[6].price",
    ]
    assert FieldError("ticks[1].price", "must be a finite number > 0") in caught.value.errors
    assert "milliseconds" in next(
        e.message for e in caught.value.errors if e.field == "ticks[5].ts"
    )
    assert caught.value.message == "6 of 7 ticks are invalid"


def test_tick_is_immutable_and_picklable() -> None:
    """Ticks are frozen value objects that survive a trip across processes."""
    tick = Tick("SOL", 1.5, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tick.price = 2.0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(tick)) == tick


# ---------------------------------------------------------------- simulated


def _specs() -> list[SimTokenSpec]:
    return [
        SimTokenSpec("SOL", 150.0, 0.1, 0.8),
        SimTokenSpec("ETH", 3000.0, 0.05, 0.6),
        SimTokenSpec("BONK", 0.00002, 0.0, 1.5),
    ]


def _run(feed: SimulatedFeed, times: list[float]) -> list[list[Tick]]:
    return [feed.next_batch(t) for t in times]


def test_simulated_is_deterministic_for_a_seed() -> None:
    """Same seed and same ``now`` sequence give identical ticks; another seed differs."""
    times = [T0 + i * 0.5 for i in range(50)]
    first = _run(SimulatedFeed(_specs(), seed=7, interval_s=0.5), times)
    again = _run(SimulatedFeed(_specs(), seed=7, interval_s=0.5), times)
    other = _run(SimulatedFeed(_specs(), seed=8, interval_s=0.5), times)
    assert first == again
    assert first != other


def test_simulated_batches_hold_every_token_stamped_now() -> None:
    """Each batch has one tick per token, in order, at ``now``; the first is the start price."""
    feed = SimulatedFeed(_specs(), seed=1, interval_s=1.0)
    batch = feed.next_batch(T0)
    assert [t.token for t in batch] == ["SOL", "ETH", "BONK"]
    assert [t.price for t in batch] == [150.0, 3000.0, 0.00002]
    assert {t.ts for t in batch} == {T0}
    later = feed.next_batch(T0 + 60)
    assert [t.token for t in later] == ["SOL", "ETH", "BONK"]
    assert all(t.ts == T0 + 60 and t.price > 0 for t in later)
    assert feed.latest() == {t.token: t for t in later}
    assert feed.tokens == ("SOL", "ETH", "BONK")


def test_simulated_zero_volatility_and_drift_keeps_price_constant() -> None:
    """σ = 0 and μ = 0 leave the price exactly where it started, whatever Δt."""
    feed = SimulatedFeed([SimTokenSpec("FLAT", 42.0, 0.0, 0.0)], seed=3, interval_s=1.0)
    prices = [feed.next_batch(T0 + dt)[0].price for dt in (0, 1, 3600, 86400 * 30)]
    assert prices == [42.0] * 4


def test_simulated_pure_drift_follows_the_exact_gbm_step() -> None:
    """σ = 0: one year at μ = 0.1 multiplies the price by exactly e^0.1 (Δt in years)."""
    feed = SimulatedFeed([SimTokenSpec("D", 100.0, 0.1, 0.0)], seed=3, interval_s=1.0)
    feed.next_batch(T0)
    assert feed.next_batch(T0 + SECONDS_PER_YEAR)[0].price == pytest.approx(100 * math.e**0.1)


def test_simulated_log_returns_have_gbm_mean_and_spread() -> None:
    """Across many independent tokens, one-day log returns ~ N((μ−σ²/2)Δt, σ²Δt)."""
    mu, sigma, n = 0.5, 0.9, 20_000
    specs = [SimTokenSpec(f"T{i}", 10.0, mu, sigma) for i in range(n)]
    feed = SimulatedFeed(specs, seed=11, interval_s=1.0)
    feed.next_batch(T0)
    day = 86400.0
    prices = np.array([t.price for t in feed.next_batch(T0 + day)])
    log_returns = np.log(prices / 10.0)
    dt = day / SECONDS_PER_YEAR
    assert log_returns.mean() == pytest.approx(
        (mu - sigma**2 / 2) * dt, abs=4 * sigma * dt**0.5 / n**0.5
    )
    assert log_returns.std() == pytest.approx(sigma * dt**0.5, rel=0.03)


def test_simulated_time_going_backwards_does_not_move_prices() -> None:
    """A ``now`` earlier than the last tick is a zero step, not an error or a jump."""
    feed = SimulatedFeed([SimTokenSpec("V", 5.0, 0.0, 2.0)], seed=5, interval_s=1.0)
    feed.next_batch(T0)
    moved = feed.next_batch(T0 + 10)[0].price
    assert feed.next_batch(T0 + 5)[0].price == moved


def test_simulated_add_token_starts_at_its_start_price() -> None:
    """An added token ticks from the next batch on, at its start price; duplicates conflict."""
    feed = SimulatedFeed(_specs()[:1], seed=2, interval_s=1.0)
    feed.next_batch(T0)
    feed.add_token(SimTokenSpec("NEW", 9.0, 0.0, 0.5))
    batch = feed.next_batch(T0 + 1)
    assert [t.token for t in batch] == ["SOL", "NEW"]
    assert batch[1].price == 9.0
    with pytest.raises(Conflict):
        feed.add_token(SimTokenSpec("NEW", 1.0, 0.0, 0.0))


def test_simulated_rejects_bad_specs_naming_each_field() -> None:
    """Invalid specs and interval raise one InvalidRequest listing every bad field."""
    with pytest.raises(InvalidRequest) as caught:
        SimulatedFeed(
            [
                SimTokenSpec("", -1.0, float("nan"), -0.1),
                SimTokenSpec("A", 1, 0, 0),
                SimTokenSpec("A", 1.0, 0.0, 0.0),
            ],
            seed=1,
            interval_s=0,
        )
    assert [e.field for e in caught.value.errors] == [
        "tokens[0].symbol",
        "tokens[0].start_price",
        "tokens[0].drift",
        "tokens[0].volatility",
        "tokens[2].symbol",
        "interval_s",
    ]


# ---------------------------------------------------------------- replay


def test_replay_csv_fixture_is_sorted_with_iso_and_unix_timestamps() -> None:
    """The fixture mixes unix and ISO-8601 times; ticks come out sorted, ties in file order."""
    feed = ReplayFeed.from_file(FIXTURE)
    assert len(feed) == 6
    assert feed.tokens == ("BONK", "ETH", "SOL")
    assert feed.start_ts == T0
    assert feed.end_ts == T0 + 3
    ticks = [t for batch in feed.batches() for t in batch]
    assert [(t.token, t.ts) for t in ticks] == [
        ("SOL", T0),
        ("BONK", T0),
        ("ETH", T0),
        ("SOL", T0 + 1.5),
        ("BONK", T0 + 1.5),
        ("SOL", T0 + 3),
    ]
    assert ticks[1].price == 0.0000231


def test_replay_csv_header_order_and_case_do_not_matter(tmp_path: Path) -> None:
    """Columns are found by name (any order, any case, extra columns ignored)."""
    path = tmp_path / "prices.csv"
    path.write_text("Price,extra,TOKEN,Ts\n2.5,x, SOL ,10\n")
    feed = ReplayFeed.from_file(path)
    assert [t for b in feed.batches() for t in b] == [Tick("SOL", 2.5, 10.0)]


def test_replay_csv_bad_rows_are_reported_with_file_row_and_column(tmp_path: Path) -> None:
    """Every bad value is named by row (file line) and column; the message names the file."""
    path = tmp_path / "bad.csv"
    path.write_text(
        "ts,token,price\n"
        "1,SOL,1.0\n"
        "2,SOL,abc\n"
        "2024-05-01T12:00:00,SOL,1.0\n"
        "yesterday,,0\n"
        "1714564800000,SOL,1\n"
        "5,SOL\n"
    )
    with pytest.raises(ReplayFileError) as caught:
        ReplayFeed.from_file(path)
    exc = caught.value
    assert isinstance(exc, ValueError) and isinstance(exc, InvalidRequest)
    assert str(path) in exc.message
    assert "row 3, column 'price': must be a finite number > 0 (got 'abc')" in exc.message
    assert [e.field for e in exc.errors] == [
        "row 3, column 'price'",
        "row 4, column 'ts'",
        "row 5, column 'ts'",
        "row 5, column 'token'",
        "row 5, column 'price'",
        "row 6, column 'ts'",
        "row 7, column 'price'",
    ]
    assert "UTC offset" in exc.errors[1].message
    assert "milliseconds" in exc.errors[5].message
    assert exc.errors[6].message == "missing value"
    assert pickle.loads(pickle.dumps(exc)).errors == exc.errors


def test_replay_rejects_missing_columns_empty_files_and_unknown_types(tmp_path: Path) -> None:
    """A missing column, a file without rows or an unknown suffix is a clear error."""
    missing = tmp_path / "missing.csv"
    missing.write_text("ts,symbol,price\n1,SOL,1\n")
    with pytest.raises(ReplayFileError, match=r"missing\.csv: row 1: missing column\(s\) token"):
        ReplayFeed.from_file(missing)
    empty = tmp_path / "empty.csv"
    empty.write_text("ts,token,price\n\n")
    with pytest.raises(ReplayFileError, match="no data rows"):
        ReplayFeed.from_file(empty)
    with pytest.raises(ReplayFileError, match=r"use \.csv or \.parquet"):
        ReplayFeed.from_file(tmp_path / "prices.json")
    with pytest.raises(FileNotFoundError):
        ReplayFeed.from_file(tmp_path / "absent.parquet")


def test_replay_parquet_with_numeric_and_utc_timestamp_columns(tmp_path: Path) -> None:
    """Parquet files load the same way: numeric unix seconds or a tz-aware timestamp column."""
    numeric = tmp_path / "numeric.parquet"
    pq.write_table(
        pa.table({"ts": [T0 + 2, T0, T0 + 1], "token": ["B", "A", "A"], "price": [1.0, 2.0, 3.0]}),
        numeric,
    )
    feed = ReplayFeed.from_file(numeric)
    assert [(t.token, t.ts, t.price) for b in feed.batches() for t in b] == [
        ("A", T0, 2.0),
        ("A", T0 + 1, 3.0),
        ("B", T0 + 2, 1.0),
    ]

    stamped = tmp_path / "stamped.parquet"
    times = [
        datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC),
        datetime(2024, 5, 1, 12, tzinfo=UTC),
    ]
    pq.write_table(
        pa.table(
            {
                "ts": pa.array(times, type=pa.timestamp("ns", tz="UTC")),
                "token": ["A", "B"],
                "price": [1.5, 2.5],
            }
        ),
        stamped,
    )
    feed = ReplayFeed.from_file(stamped)
    assert [(t.token, t.ts) for b in feed.batches() for t in b] == [("B", T0), ("A", T0 + 0.5)]


def test_replay_parquet_bad_values_and_naive_timestamps_are_named(tmp_path: Path) -> None:
    """Parquet nulls and bad prices name row and column; naive timestamp columns are refused."""
    bad = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"ts": [1.0, None], "token": ["A", "B"], "price": [1.0, -2.0]}),
        bad,
    )
    with pytest.raises(ReplayFileError) as caught:
        ReplayFeed.from_file(bad)
    assert [e.field for e in caught.value.errors] == ["row 2, column 'ts'", "row 2, column 'price'"]
    assert "bad.parquet" in caught.value.message

    naive = tmp_path / "naive.parquet"
    pq.write_table(
        pa.table(
            {
                "ts": pa.array([datetime(2024, 5, 1)], type=pa.timestamp("us")),  # noqa: DTZ001 — the naive value is the point
                "token": ["A"],
                "price": [1.0],
            }
        ),
        naive,
    )
    with pytest.raises(ReplayFileError, match="without a time zone"):
        ReplayFeed.from_file(naive)


def _feed(stamps: list[float]) -> ReplayFeed:
    return ReplayFeed(Tick(f"T{i}", 1.0 + i, ts) for i, ts in enumerate(stamps))


def test_replay_batches_group_equal_timestamps_and_split_at_max_batch() -> None:
    """window_s = 0 groups ticks with the same ts; a group above max_batch is split in order."""
    feed = _feed([0, 0, 0, 1, 2, 2])
    assert [[t.ts for t in b] for b in feed.batches()] == [[0, 0, 0], [1], [2, 2]]
    assert [[t.token for t in b] for b in feed.batches(max_batch=2)] == [
        ["T0", "T1"],
        ["T2"],
        ["T3"],
        ["T4", "T5"],
    ]


def test_replay_batches_by_time_window_keep_every_tick_once_in_order() -> None:
    """A window starts at its first tick and holds ticks with ts < start + window_s."""
    stamps = [0.0, 0.4, 0.99, 1.0, 1.2, 5.0, 5.5, 7.0]
    feed = _feed(stamps)
    batches = list(feed.batches(window_s=1.0))
    assert [[t.ts for t in b] for b in batches] == [[0.0, 0.4, 0.99], [1.0, 1.2], [5.0, 5.5], [7.0]]
    assert [t.ts for b in batches for t in b] == stamps
    with pytest.raises(ValueError, match="max_batch"):
        list(feed.batches(max_batch=0))


async def test_replay_paced_sleeps_the_recorded_gaps_divided_by_speed() -> None:
    """At speed 2 the waits are half the recorded gaps; at speed 0 only sleep(0) yields."""
    feed = _feed([10.0, 10.0, 11.0, 15.0])
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    batches = [b async for b in feed.paced(2.0, sleep=fake_sleep)]
    assert [len(b) for b in batches] == [2, 1, 1]
    assert slept == [0.5, 2.0]

    slept.clear()
    assert len([b async for b in feed.paced(0, sleep=fake_sleep)]) == 3
    assert slept == [0, 0]


async def test_replay_paced_with_a_clock_does_not_drift() -> None:
    """With a clock, a batch is due at start + (ts − start_ts)/speed: slow consumers catch up."""
    feed = _feed([0.0, 1.0, 2.0, 3.0])
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async for _batch in feed.paced(1.0, sleep=fake_sleep, clock=lambda: now[0]):
        now[0] += 0.25  # the consumer takes a quarter second per batch
    assert slept == [0.75, 0.75, 0.75]
    with pytest.raises(ValueError, match="speed"):
        _ = [b async for b in feed.paced(-1.0)]


# ---------------------------------------------------------------- manual


def test_manual_drain_returns_pushed_ticks_once_in_order() -> None:
    """drain() returns everything pushed since the previous drain, in push order, once."""
    feed = ManualFeed()
    assert feed.push([Tick("A", 1.0, 1.0), Tick("B", 2.0, 1.0)]) == 2
    assert feed.push([Tick("A", 1.5, 2.0)]) == 1
    assert feed.pending == 3
    assert feed.drain() == [Tick("A", 1.0, 1.0), Tick("B", 2.0, 1.0), Tick("A", 1.5, 2.0)]
    assert feed.drain() == []


def test_manual_latest_is_newest_by_timestamp() -> None:
    """latest() keeps the greatest ts per token; a late, older tick does not roll it back."""
    feed = ManualFeed()
    feed.push([Tick("A", 1.0, 5.0), Tick("A", 0.5, 4.0), Tick("B", 3.0, 1.0), Tick("B", 3.5, 1.0)])
    feed.drain()
    assert feed.latest() == {"A": Tick("A", 1.0, 5.0), "B": Tick("B", 3.5, 1.0)}


def test_manual_bounded_buffer_drops_oldest_and_counts() -> None:
    """With max_pending, the oldest undrained ticks are dropped and counted."""
    feed = ManualFeed(max_pending=2)
    feed.push([Tick("A", float(i + 1), float(i)) for i in range(5)])
    assert feed.dropped == 3
    assert [t.price for t in feed.drain()] == [4.0, 5.0]
