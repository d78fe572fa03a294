"""Sample backtest inputs: seeded random-walk prices, signals, an agent config, a grid.

``python -m valux.backtest sample --out bench/data`` writes ``prices.csv``,
``signals.csv``, ``agent.json`` and ``grid.json``; the same seed always writes the
same files. Prices follow the simulated feed's geometric Brownian motion
(:class:`~valux.feeds.simulated.SimulatedFeed`, one tick per token per step).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from valux.feeds.simulated import SimTokenSpec, SimulatedFeed

__all__ = ["SAMPLE_CONFIG", "SAMPLE_GRID", "SAMPLE_TOKENS", "write_sample"]

START_TS = 1_704_067_200.0  # 2024-01-01T00:00:00Z
SAMPLE_TOKENS = (
    # symbol, start price (SOL), annualised drift, annualised volatility
    ("ALPHA", 0.0125, 0.0, 6.0),
    ("BRAVO", 0.0031, 2.0, 8.0),
    ("CHARLIE", 0.00047, -1.0, 5.0),
)

SAMPLE_CONFIG: dict[str, Any] = {
    "stopLoss": {"enabled": True, "mode": "fixed", "defaultPercentage": -10},
    "takeProfit": {"enabled": True, "mode": "moderate"},
    "staleTrade": {
        "enabled": True,
        "minHoldTimeMinutes": 240,
        "minProfitPercent": -2,
        "maxProfitPercent": 3,
    },
    "dca": {"enabled": False},
    "positionCalculator": {"randomization": {"enabled": False}},
}

SAMPLE_GRID: dict[str, list[Any]] = {
    "stopLoss.mode": ["fixed", "exponential"],
    "stopLoss.defaultPercentage": [-5, -15],
    "takeProfit.mode": ["aggressive", "conservative"],
}


def write_sample(
    out: Path, *, seed: int = 7, steps: int = 2000, interval_s: float = 60.0, signals: int = 40
) -> dict[str, Path]:
    """Write the four sample files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    feed = SimulatedFeed(
        [SimTokenSpec(sym, price, drift, vol) for sym, price, drift, vol in SAMPLE_TOKENS],
        seed=seed,
        interval_s=interval_s,
    )
    paths = {
        "prices": out / "prices.csv",
        "signals": out / "signals.csv",
        "config": out / "agent.json",
        "grid": out / "grid.json",
    }
    with paths["prices"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ts", "token", "price"])
        for step in range(steps):
            for tick in feed.next_batch(START_TS + step * interval_s):
                writer.writerow([f"{tick.ts:.0f}", tick.token, f"{tick.price:.10g}"])
    rng = random.Random(seed)
    span = steps * interval_s
    times = sorted(rng.uniform(0, span * 0.9) for _ in range(signals))
    with paths["signals"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ts", "id", "token", "strength", "type", "size"])
        for i, offset in enumerate(times):
            token = rng.choice(SAMPLE_TOKENS)[0]
            writer.writerow(
                [
                    f"{START_TS + offset:.0f}",
                    f"sig-{i:03d}",
                    token,
                    rng.randint(2, 5),
                    rng.choice(["breakout", "momentum", "volume"]),
                    "1",
                ]
            )
    paths["config"].write_text(json.dumps(SAMPLE_CONFIG, indent=2) + "\n", encoding="utf-8")
    paths["grid"].write_text(json.dumps(SAMPLE_GRID, indent=2) + "\n", encoding="utf-8")
    return paths
