"""The numbers of a backtest, from its fills and its price series, and how they are shown.

Pure code (matplotlib only for the PNG), unit-tested on its own.

- **Equity** after each tick batch at time ``t``: cash plus every token held,
  marked at its latest price at ``t``; cash and holdings come from the fills
  stamped at or before ``t`` (fills carry simulated time: an exit fills at the
  timestamp of the tick that triggered it, a buy at that of the price it used).
  Starting cash is the agent's balance; the wallet starts with nothing else.
- **Max drawdown**: the largest fall of equity from its running peak, in quote
  units and as a fraction of that peak.
- **Realised P&L**: the sum over closed positions of proceeds − invested (the
  engine's PNL-1, fees included), read from PostgreSQL; **unrealised**: the rest
  of the change in equity (open positions marked at the last price).
- **Win rate**: closed positions with realised P&L > 0 over closed positions
  (``None`` when none closed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from valux.feeds.ticks import Tick

__all__ = [
    "Fill",
    "equity_curve",
    "final_equity",
    "format_ranking",
    "format_table",
    "holdings",
    "max_drawdown",
    "plot_curves",
    "plot_equity",
    "rank",
    "summarise",
    "win_rate",
    "write_json",
]


QUANTUM = Decimal("1e-9")
"""Marked-to-market equity is rounded to the quote asset's base unit (SOL: lamports)."""

TS_TOLERANCE = 1e-6
"""PostgreSQL keeps microseconds: a fill stamped with a tick's time may read back a
fraction of a microsecond after it, and still belongs to that tick."""


@dataclass(frozen=True, slots=True)
class Fill:
    """One filled order as the ``trades`` table records it."""

    ts: float
    token: str
    side: str  # "buy" | "sell"
    base_amount: Decimal
    quote_amount: Decimal
    reason: str | None = None
    fee: Decimal = Decimal(0)


def equity_curve(
    initial_cash: Decimal, fills: Sequence[Fill], batches: Iterable[Sequence[Tick]]
) -> list[tuple[float, float]]:
    """``(ts, equity)`` after each batch (see the module docstring)."""
    ordered = sorted(fills, key=lambda f: f.ts)  # stable: equal ts keep booking order
    cash = initial_cash
    held: dict[str, Decimal] = {}
    last: dict[str, float] = {}
    curve: list[tuple[float, float]] = []
    i = 0
    ts = 0.0
    for batch in batches:
        if not batch:
            continue
        for tick in batch:
            last[tick.token] = tick.price
        ts = batch[-1].ts
        while i < len(ordered) and ordered[i].ts <= ts + TS_TOLERANCE:
            cash = _apply(ordered[i], cash, held)
            i += 1
        curve.append((ts, _mark(cash, held, last)))
    if i < len(ordered):  # fills after the last tick (not expected): book them at the end
        while i < len(ordered):
            cash = _apply(ordered[i], cash, held)
            i += 1
        curve.append((max(ts, ordered[-1].ts), _mark(cash, held, last)))
    return curve


def _apply(fill: Fill, cash: Decimal, held: dict[str, Decimal]) -> Decimal:
    sign = 1 if fill.side == "buy" else -1
    held[fill.token] = held.get(fill.token, Decimal(0)) + sign * fill.base_amount
    return cash - sign * fill.quote_amount


def _mark(cash: Decimal, held: Mapping[str, Decimal], last: Mapping[str, float]) -> float:
    return float(cash) + sum(float(amount) * last.get(token, 0.0) for token, amount in held.items())


def holdings(initial_cash: Decimal, fills: Iterable[Fill]) -> dict[str, Decimal]:
    """Balances per asset after ``fills`` (the quote asset under ``""``), exactly."""
    cash = initial_cash
    held: dict[str, Decimal] = {}
    for fill in fills:
        cash = _apply(fill, cash, held)
    return {"": cash, **held}


def final_equity(
    initial_cash: Decimal, fills: Iterable[Fill], last_prices: Mapping[str, float]
) -> Decimal:
    """Cash plus holdings at their last price, in Decimal (prices via their shortest repr)."""
    balances = holdings(initial_cash, fills)
    cash = balances.pop("")
    return cash + sum(
        (amount * Decimal(repr(last_prices.get(token, 0.0))) for token, amount in balances.items()),
        Decimal(0),
    )


def max_drawdown(equity: Iterable[float]) -> tuple[float, float]:
    """(largest fall from a running peak, that fall as a fraction of the peak)."""
    peak = -float("inf")
    worst = worst_fraction = 0.0
    for value in equity:
        peak = max(peak, value)
        fall = peak - value
        if fall > worst:
            worst = fall
        if peak > 0 and fall / peak > worst_fraction:
            worst_fraction = fall / peak
    return worst, worst_fraction


def win_rate(realized: Sequence[Decimal]) -> float | None:
    """Share of closed positions with realised P&L > 0; ``None`` if none closed."""
    if not realized:
        return None
    return sum(1 for pnl in realized if pnl > 0) / len(realized)


def summarise(
    *,
    initial: Decimal,
    fills: Sequence[Fill],
    realized: Sequence[Decimal],
    open_positions: int,
    curve: Sequence[tuple[float, float]],
    last_prices: Mapping[str, float],
) -> dict[str, Any]:
    """The report's numbers (JSON-ready apart from Decimals, see :func:`write_json`)."""
    equity = [value for _, value in curve]
    drawdown, drawdown_fraction = max_drawdown([float(initial), *equity])
    final = final_equity(initial, fills, last_prices).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
    realized_pnl = sum(realized, Decimal(0))
    rate = win_rate(realized)
    per_reason = Counter(f"{f.side} {f.reason or '-'}" for f in fills)
    return {
        "initial_balance": initial,
        "final_equity": final,
        "return_pct": float((final - initial) / initial * 100) if initial else None,
        "realized_pnl": realized_pnl,
        "unrealized_pnl": final - initial - realized_pnl,
        "trades": len(fills),
        "trades_by_reason": dict(sorted(per_reason.items())),
        "fees": sum((f.fee for f in fills), Decimal(0)),
        "closed_positions": len(realized),
        "open_positions": open_positions,
        "wins": sum(1 for pnl in realized if pnl > 0),
        "win_rate": rate,
        "max_drawdown": drawdown,
        "max_drawdown_pct": drawdown_fraction * 100,
    }


def rank(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best first: highest realised P&L, then smallest max drawdown, then label."""
    return sorted(
        results,
        key=lambda r: (
            -Decimal(str(r["realized_pnl"])),
            float(r["max_drawdown_pct"]),
            str(r.get("label", "")),
        ),
    )


# ---------------------------------------------------------------------- display


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column markdown table."""
    cells = [(key, _fmt(value)) for key, value in rows]
    width = max(len(k) for k, _ in cells)
    vwidth = max(5, *(len(v) for _, v in cells))
    lines = [f"| {'metric'.ljust(width)} | {'value'.rjust(vwidth)} |"]
    lines.append(f"|{'-' * (width + 2)}|{'-' * (vwidth + 1)}:|")
    lines += [f"| {k.ljust(width)} | {v.rjust(vwidth)} |" for k, v in cells]
    return "\n".join(lines)


def format_ranking(results: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's ranked table (already ranked)."""
    header = ("#", "run", "realised P&L", "max DD %", "win rate", "trades", "final equity")
    rows = [
        (
            str(i),
            str(r.get("label", "")),
            f"{Decimal(str(r['realized_pnl'])):.6f}",
            f"{float(r['max_drawdown_pct']):.2f}",
            "-" if r.get("win_rate") is None else f"{float(r['win_rate']):.2f}",
            str(r["trades"]),
            f"{Decimal(str(r['final_equity'])):.6f}",
        )
        for i, r in enumerate(results, 1)
    ]
    widths = [max(len(h), *(len(row[c]) for row in rows)) for c, h in enumerate(header)]
    left = {1}

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(widths[j]) if j in left else c.rjust(widths[j]) for j, c in enumerate(cells)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 2)) if j in left else ("-" * (w + 1) + ":")
                          for j, w in enumerate(widths)) + "|"  # fmt: skip
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"  # no exponent: 0.000000000, not 0E-9
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON; Decimals as strings (money stays exact)."""
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n", encoding="utf-8")


def _times(curve: Sequence[tuple[float, float]]) -> Any:
    """Unix seconds as numpy datetimes (matplotlib draws them as dates)."""
    import numpy as np

    millis = np.array([ts * 1000 for ts, _ in curve], dtype=np.float64)
    return millis.astype("int64").astype("datetime64[ms]")


def plot_equity(
    curve: Sequence[tuple[float, float]], path: Path, *, title: str, initial: float
) -> None:
    """Equity over (simulated) time and its drawdown from the running peak, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (servers, CI, Ray workers)
    import matplotlib.pyplot as plt

    times = _times(curve)
    equity = [value for _, value in curve]
    peaks: list[float] = []
    peak = initial
    for value in equity:
        peak = max(peak, value)
        peaks.append(peak)
    drawdown = [(v - p) / p * 100 if p > 0 else 0.0 for v, p in zip(equity, peaks, strict=True)]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(times, equity, linewidth=1.2, color="tab:blue", label="equity")
    top.axhline(initial, color="grey", linewidth=0.8, linestyle="--", label="initial balance")
    top.set_ylabel("equity (quote)")
    top.set_title(title)
    top.legend(loc="best")
    top.grid(alpha=0.3)
    bottom.fill_between(times, drawdown, 0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown %")
    bottom.set_xlabel("simulated time (UTC)")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(
    curves: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    path: Path,
    *,
    title: str,
    initial: float,
) -> None:
    """Several runs' equity curves in one PNG (a sweep's best runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for label, curve in curves:
        ax.plot(_times(curve), [value for _, value in curve], linewidth=1.0, label=label)
    ax.axhline(initial, color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(title)
    ax.set_ylabel("equity (quote)")
    ax.set_xlabel("simulated time (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
