"""Smoke of every benchmark: its quick entry point, in-process with tiny sizes, on the session's
real Ray, PostgreSQL and Redis. Asserts only that each produced well-formed results — a
benchmark measures; it never asserts a machine-dependent time."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.common import BenchEnv, BenchResult, render_table, write_results
from bench.suite import BENCHMARKS

TINY: dict[str, dict[str, Any]] = {
    "signal_latency": {"signals": 3, "warmup": 1},
    "fanout": {"agents": 4, "agents_per_host": 2, "signals": 2},
    "evaluator": {"positions": 1_000, "batches": 10, "warmup": 2},
    "tick_to_exit": {"samples": 3, "warmup": 1},
    "nautilus": {"ticks": 2_000, "ks": [1, 3]},
    "scale": {"agents": 6, "agents_per_host": 3},
    "journal": {"events": 200, "committers": 20},
    "recovery": {"agents": 2, "positions_per_agent": 2, "kills": 1},
    "api_load": {"duration": 1.0, "clients": 5, "connections": 4},
    "kill_switch": {"hosts": 2, "toggles": 2},
    "live_swap": {"signals": 2, "slot_ms": 100.0},
}


@pytest.fixture(scope="module")
def bench_env(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> BenchEnv:
    return BenchEnv(server_urls[0], redis_url, data_dir, f"{ray_session}-bench")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_every_benchmark_has_tiny_sizes() -> None:
    """The smoke below covers all eleven benchmarks of the suite."""
    assert set(TINY) == set(BENCHMARKS)
    assert len(BENCHMARKS) == 11


NEEDS_BENCH_EXTRA = {"nautilus"}
"""Benchmarks whose comparison engine comes from ``pip install -e '.[bench]'`` (not in the
suite's install): their smoke runs under ``-m slow``, deselected rather than skipped."""


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in NEEDS_BENCH_EXTRA else n for n in TINY],
)
async def test_quick_entry_point_produces_well_formed_results(
    name: str, bench_env: BenchEnv, tmp_path: Path
) -> None:
    """Each benchmark's quick run yields named rows with finite values or distributions,
    targets judged met or missed (never an exception), a table, and JSON that round-trips
    into the results files."""
    spec = BENCHMARKS[name]
    result = await spec.measure(bench_env, quick=True, overrides=TINY[name])
    assert result.name == name and result.quick
    assert result.rows, "no rows"
    for row in result.rows:
        assert row.metric and isinstance(row.unit, str)
        if row.stats is not None:
            assert row.stats["n"] > 0, row
            assert all(_finite(v) for v in row.stats.values()), row
        else:
            assert _finite(row.value), row
        assert row.verdict() in (True, False, None)
    assert any(row.targets for row in result.rows), "no target reported"
    assert result.environment["machine"]["cores"]
    assert "python" in result.environment["versions"]
    assert name in render_table(result)
    path = write_results([result], tmp_path)
    doc = json.loads(path.read_text())
    again = BenchResult.from_json(doc["benchmarks"][name])
    assert [r.metric for r in again.rows] == [r.metric for r in result.rows]
    assert name in (tmp_path / "latest.md").read_text()


def test_results_merge_per_benchmark(tmp_path: Path) -> None:
    """Writing one benchmark's result keeps the others already in latest.json."""
    first = BenchResult("journal", "j", True, {})
    second = BenchResult("evaluator", "e", True, {})
    write_results([first], tmp_path)
    write_results([second], tmp_path)
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert set(doc["benchmarks"]) == {"journal", "evaluator"}
