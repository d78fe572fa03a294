"""The inputs of a backtest: the signals file, the merged timeline, and sweep grids.

Pure code (no Ray, no I/O beyond reading the files named), unit-tested on its own.

Signals file: CSV with a header naming ``ts``, ``id``, ``token``, ``strength``,
``type`` and optionally ``size`` (any order, other columns ignored, names
case-insensitive). Each row is validated exactly as ``POST /api/v1/signals``
validates its body (:class:`~valux.api.models.SignalIn`); ``ts`` obeys the replay
file's rules (unix seconds, or ISO-8601 with a UTC offset). Bad rows raise one
:class:`SignalFileError` naming each row and column.

Timeline: price ticks grouped by timestamp (one batch per distinct ``ts``) and
signals, in time order; at equal timestamps the ticks come first, so a signal
sees the price of its own moment.

Grid: a JSON object mapping dotted config paths (the agent config's camelCase
names, ``"stopLoss.defaultPercentage"``) to lists of values; the sweep runs the
cartesian product, in the order the keys and values are written.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from valux.api.models import SignalIn
from valux.errors import FieldError, InvalidRequest
from valux.feeds.replay import ReplayFeed, timestamp_from_text
from valux.feeds.ticks import Tick, ts_problem

__all__ = [
    "SIGNAL_COLUMNS",
    "GridError",
    "SignalFileError",
    "TimedSignal",
    "apply_overrides",
    "expand_grid",
    "label_of",
    "load_grid",
    "read_signals",
    "timeline",
]

SIGNAL_COLUMNS = ("ts", "id", "token", "strength", "type")
OPTIONAL_SIGNAL_COLUMNS = ("size",)
_MAX_LISTED = 10


class SignalFileError(InvalidRequest, ValueError):
    """A signals file is unreadable or has bad rows; the message says where."""


class GridError(InvalidRequest, ValueError):
    """A sweep grid is not an object of non-empty value lists."""


@dataclass(frozen=True, slots=True)
class TimedSignal:
    """A signal and the (simulated) time at which it is posted."""

    ts: float
    signal: SignalIn


def parse_ts(raw: str) -> float:
    """Unix seconds, or ISO-8601 with a UTC offset (as the replay file reads ``ts``)."""
    try:
        value = timestamp_from_text(raw)
    except ValueError as exc:
        raise ValueError(f"{exc} (got {raw!r})") from None
    if problem := ts_problem(value):
        raise ValueError(f"{problem} (got {raw!r})")
    return value


def read_signals(path: Path) -> list[TimedSignal]:
    """Load and validate ``path``; signals sorted by ``ts`` (equal ``ts`` keep file order)."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SignalFileError(
            f"{path}: {exc.strerror or exc}", [FieldError("file", str(exc))]
        ) from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        positions = {name.strip().lower(): i for i, name in enumerate(header)}
        missing = [c for c in SIGNAL_COLUMNS if c not in positions]
        if missing:
            raise SignalFileError(
                f"{path}: row 1: missing column(s) {', '.join(missing)} (header must name "
                f"{', '.join(SIGNAL_COLUMNS)}[, size])",
                [FieldError(f"column {c!r}", "missing") for c in missing],
            )
        errors: list[FieldError] = []
        out: list[TimedSignal] = []
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            row = reader.line_num

            def cell(name: str, fields: list[str] = fields) -> str:
                i = positions.get(name)
                return "" if i is None or i >= len(fields) else fields[i].strip()

            problems: list[FieldError] = []
            ts = math.nan
            try:
                ts = parse_ts(cell("ts"))
            except ValueError as exc:
                problems.append(FieldError(f"row {row}, column 'ts'", str(exc)))
            strength = cell("strength")
            body: dict[str, Any] = {
                "id": cell("id"),
                "token": cell("token"),
                "strength": int(strength) if strength.isdigit() else strength,
                "type": cell("type"),
            }
            if cell("size"):
                body["size"] = cell("size")
            try:
                signal = SignalIn.model_validate(body)
            except ValidationError as exc:
                for error in exc.errors():
                    column = ".".join(str(p) for p in error["loc"]) or "row"
                    problems.append(FieldError(f"row {row}, column {column!r}", error["msg"]))
            else:
                if not problems:
                    out.append(TimedSignal(ts, signal))
            errors.extend(problems)
    if errors:
        listed = "; ".join(f"{e.field}: {e.message}" for e in errors[:_MAX_LISTED])
        more = f"; and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise SignalFileError(f"{path}: {len(errors)} bad values: {listed}{more}", errors)
    ids = [s.signal.id for s in out]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise SignalFileError(
            f"{path}: duplicate signal ids: {', '.join(duplicates[:_MAX_LISTED])} "
            "(a repeated id is answered from the first result, so it would never trade)",
            [FieldError("id", f"duplicate {d!r}") for d in duplicates],
        )
    return sorted(out, key=lambda s: s.ts)


def timeline(prices: ReplayFeed, signals: Sequence[TimedSignal]) -> Iterator[list[Tick] | SignalIn]:
    """Tick batches (one per distinct ``ts``) and signals, in time order, ticks first on ties."""
    pending = sorted(signals, key=lambda s: s.ts)
    i = 0
    for batch in prices.batches(max_batch=1_000_000):
        ts = batch[0].ts
        while i < len(pending) and pending[i].ts < ts:
            yield pending[i].signal
            i += 1
        yield batch
    for rest in pending[i:]:
        yield rest.signal


# ------------------------------------------------------------------------- grids


def load_grid(path: Path) -> dict[str, list[Any]]:
    """Read a grid file (JSON object: dotted path → list of values) and check its shape."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GridError(f"{path}: {exc}", [FieldError("file", str(exc))]) from None
    return check_grid(data, str(path))


def check_grid(data: Any, where: str = "grid") -> dict[str, list[Any]]:
    if not isinstance(data, Mapping) or not data:
        raise GridError(
            f"{where}: must be a non-empty JSON object of config path → list of values",
            [FieldError("grid", "must be a non-empty object")],
        )
    errors = [
        FieldError(str(key), "must be a non-empty list of values")
        for key, values in data.items()
        if not isinstance(values, list) or not values
    ]
    errors += [
        FieldError(str(key), "must be a dotted path such as 'stopLoss.mode'")
        for key in data
        if not isinstance(key, str) or not all(key.split("."))
    ]
    if errors:
        listed = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise GridError(f"{where}: {listed}", errors)
    return {str(k): list(v) for k, v in data.items()}


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def apply_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with each dotted path set to its value (tables created)."""
    out: dict[str, Any] = deepcopy(dict(config))
    for path, value in overrides.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = deepcopy(value)
    return out


def label_of(overrides: Mapping[str, Any]) -> str:
    """``stopLoss.mode=fixed stopLoss.defaultPercentage=-10``: a run's name in tables."""
    return " ".join(f"{k}={_show(v)}" for k, v in overrides.items()) or "base"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)
