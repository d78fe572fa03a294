"""Replay recorded prices from a CSV or Parquet file, in timestamp order.

File format (both kinds): columns ``ts``, ``token``, ``price`` (any order,
other columns ignored, names case-insensitive).

- ``ts``: unix seconds (a number, or a string that parses as one), or an
  ISO-8601 string *with* a UTC offset (``2024-05-01T12:00:00Z``,
  ``...+00:00``); a naive timestamp is rejected (DESIGN.md bans naive
  datetimes). A string that parses as a number is always unix seconds. In
  Parquet, a ``timestamp`` column must carry a time zone.
- ``token``: 1–64 characters; ``price``: a finite number > 0.

Contract:

- Loading validates every row. Bad rows raise :class:`ReplayFileError` (both an
  :class:`~valux.errors.InvalidRequest` and a :class:`ValueError`) whose message
  names the file and, for each bad value, the row and column — e.g.
  ``data.csv: 2 bad rows: row 7, column 'price': must be a finite number > 0
  (got 'abc'); ...``. CSV rows are numbered as lines of the file (the header
  is row 1); Parquet rows from 1 for the first data row. A file with no rows
  is an error too.
- Ticks are sorted by ``ts``; rows with equal ``ts`` keep file order.
- :meth:`ReplayFeed.batches` groups ticks by time window and never reorders
  them; :meth:`ReplayFeed.paced` yields the same batches, paced against the
  recorded timestamps. Neither reads the wall clock unless told to, so a
  backtest's simulated clock can simply follow ``batch[-1].ts``.
"""

from __future__ import annotations

import asyncio
import csv
import math
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from valux.errors import FieldError, InvalidRequest
from valux.feeds.ticks import Tick, price_problem, token_problem, ts_problem

__all__ = ["ReplayFeed", "ReplayFileError"]

COLUMNS = ("ts", "token", "price")
_MAX_LISTED = 10  # bad values spelled out in the message; all of them are in ``errors``
_MAX_ERRORS = 1000  # stop collecting after this many (a wholly wrong file)

Sleep = Callable[[float], Awaitable[None]]


class ReplayFileError(InvalidRequest, ValueError):
    """A replay file is unreadable or has bad rows; the message says where."""


class _RowError(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(column, message)
        self.column = column
        self.message = message


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def timestamp_from_text(raw: str) -> float:
    """Unix seconds, or ISO-8601 with a UTC offset; ``ValueError`` saying which it is not.
    (Range checks are the caller's: :func:`valux.feeds.ticks.ts_problem`.)"""
    text = raw.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not unix seconds or an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError("ISO-8601 timestamp needs a UTC offset such as 'Z'")
    return parsed.timestamp()


def _parse_ts(raw: object) -> float:
    if raw is None or raw == "":
        raise _RowError("ts", "missing value")
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise _RowError("ts", "timestamp has no time zone; use UTC")
        value: object = raw.timestamp()
    elif isinstance(raw, str):
        try:
            value = timestamp_from_text(raw)
        except ValueError as exc:
            raise _RowError("ts", f"{exc} (got {_show(raw)})") from None
    else:
        value = raw
    if msg := ts_problem(value):
        raise _RowError("ts", f"{msg} (got {_show(raw)})")
    assert isinstance(value, int | float | Decimal)
    return float(value)


def _parse_price(raw: object) -> float:
    if raw is None or raw == "":
        raise _RowError("price", "missing value")
    value: object = raw
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if msg := price_problem(value):
        raise _RowError("price", f"{msg} (got {_show(raw)})")
    assert isinstance(value, int | float | Decimal)
    return float(value)


def _parse_token(raw: object) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise _RowError("token", "missing value")
    if msg := token_problem(raw):
        raise _RowError("token", f"{msg} (got {_show(raw)})")
    assert isinstance(raw, str)
    return raw.strip()


def _parse_rows(path: Path, rows: Iterable[tuple[int, object, object, object]]) -> list[Tick]:
    """Turn ``(row_number, ts, token, price)`` into ticks, or raise with every bad value."""
    ticks: list[Tick] = []
    errors: list[FieldError] = []
    for row, ts_raw, token_raw, price_raw in rows:
        problems: list[_RowError] = []
        ts = token = price = None
        try:
            ts = _parse_ts(ts_raw)
        except _RowError as exc:
            problems.append(exc)
        try:
            token = _parse_token(token_raw)
        except _RowError as exc:
            problems.append(exc)
        try:
            price = _parse_price(price_raw)
        except _RowError as exc:
            problems.append(exc)
        if ts is not None and token is not None and price is not None:
            ticks.append(Tick(token=token, price=price, ts=ts))
        errors.extend(FieldError(f"row {row}, column {e.column!r}", e.message) for e in problems)
        if len(errors) >= _MAX_ERRORS:
            break
    if errors:
        _raise(path, errors)
    if not ticks:
        raise ReplayFileError(f"{path}: no data rows", [FieldError("file", "no data rows")])
    return ticks


def _raise(path: Path, errors: Sequence[FieldError]) -> None:
    listed = "; ".join(f"{e.field}: {e.message}" for e in errors[:_MAX_LISTED])
    more = len(errors) - _MAX_LISTED
    suffix = f"; and {more} more" if more > 0 else ""
    capped = " (stopped counting)" if len(errors) >= _MAX_ERRORS else ""
    raise ReplayFileError(
        f"{path}: {len(errors)}{capped} bad values: {listed}{suffix}", list(errors)
    )


def _header_positions(path: Path, names: Sequence[str]) -> dict[str, int]:
    positions = {name.strip().lower(): i for i, name in enumerate(names)}
    missing = [c for c in COLUMNS if c not in positions]
    if missing:
        found = ", ".join(repr(n) for n in names) or "nothing"
        raise ReplayFileError(
            f"{path}: row 1: missing column(s) {', '.join(missing)} "
            f"(header must name ts, token, price; found {found})",
            [FieldError(f"column {c!r}", "missing") for c in missing],
        )
    return {c: positions[c] for c in COLUMNS}


def _read_csv(path: Path) -> list[Tick]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        pos = _header_positions(path, header or [])
        width = max(pos.values()) + 1

        def rows() -> Iterator[tuple[int, object, object, object]]:
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue  # blank line
                if len(fields) < width:
                    # Report the row with the first column it lacks.
                    fields = fields + [""] * (width - len(fields))
                yield (
                    reader.line_num,
                    fields[pos["ts"]],
                    fields[pos["token"]],
                    fields[pos["price"]],
                )

        return _parse_rows(path, rows())


def _read_parquet(path: Path) -> list[Tick]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReplayFileError(
            f"{path}: not a readable Parquet file: {exc}", [FieldError("file", str(exc))]
        ) from exc
    pos = _header_positions(path, table.column_names)
    columns = {c: table.column(pos[c]) for c in COLUMNS}

    ts_col = columns["ts"]
    if pa.types.is_timestamp(ts_col.type):
        if ts_col.type.tz is None:
            raise ReplayFileError(
                f"{path}: column 'ts' is a timestamp without a time zone; "
                "write it with tz='UTC' or as unix seconds",
                [FieldError("column 'ts'", "timestamp without a time zone")],
            )
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[ts_col.type.unit]
        ints = pc.cast(ts_col, pa.int64())
        ts_values: list[object] = [None if v is None else v / per_second for v in ints.to_pylist()]
    else:
        ts_values = ts_col.to_pylist()
    token_values: list[object] = columns["token"].to_pylist()
    price_values: list[object] = columns["price"].to_pylist()
    rows = (
        (i + 1, ts, token, price)
        for i, (ts, token, price) in enumerate(
            zip(ts_values, token_values, price_values, strict=True)
        )
    )
    return _parse_rows(path, rows)


class ReplayFeed:
    """Recorded ticks in time order, handed out in windows (see the module docstring)."""

    def __init__(self, ticks: Iterable[Tick]) -> None:
        ordered = sorted(ticks, key=lambda t: t.ts)  # stable: equal ts keep input order
        if not ordered:
            raise ValueError("a replay needs at least one tick")
        self._ticks = ordered
        self._ts = [t.ts for t in ordered]
        self._tokens = tuple(sorted({t.token for t in ordered}))

    @classmethod
    def from_file(cls, path: Path) -> ReplayFeed:
        """Load ``path`` (``.csv`` or ``.parquet``/``.pq``), validating every row.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ReplayFileError: wrong suffix, missing columns, bad rows or no rows.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return cls(_read_csv(path))
        if suffix in (".parquet", ".pq"):
            if not path.exists():
                raise FileNotFoundError(path)
            return cls(_read_parquet(path))
        raise ReplayFileError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet",
            [FieldError("file", "must be .csv or .parquet")],
        )

    def __len__(self) -> int:
        return len(self._ticks)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token in the replay, sorted."""
        return self._tokens

    @property
    def start_ts(self) -> float:
        """Timestamp of the first tick."""
        return self._ts[0]

    @property
    def end_ts(self) -> float:
        """Timestamp of the last tick."""
        return self._ts[-1]

    def batches(self, max_batch: int = 1000, window_s: float = 0.0) -> Iterator[list[Tick]]:
        """Yield every tick once, in order, as batches of at most ``max_batch``.

        A batch starts at the first tick not yet yielded (time ``t0``) and holds
        the following ticks with ``ts == t0`` (``window_s == 0``) or
        ``ts < t0 + window_s`` (``window_s > 0``). A window holding more than
        ``max_batch`` ticks is split into consecutive batches. Each batch is a
        new list.
        """
        _check_batching(max_batch, window_s)
        ticks, stamps, n = self._ticks, self._ts, len(self._ticks)
        i = 0
        while i < n:
            t0 = stamps[i]
            end = bisect_right(stamps, t0, lo=i)
            if window_s > 0:
                end = max(end, bisect_left(stamps, t0 + window_s, lo=i))
            end = min(end, i + max_batch)
            yield ticks[i:end]
            i = end

    async def paced(
        self,
        speed: float,
        sleep: Sleep = asyncio.sleep,
        *,
        max_batch: int = 1000,
        window_s: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> AsyncIterator[list[Tick]]:
        """Yield :meth:`batches`, paced at ``speed``× the recorded time.

        ``speed == 0`` runs as fast as possible: no waiting, but ``sleep(0)``
        between batches so other tasks on the loop still run. For ``speed > 0``
        a batch is due ``(batch[0].ts − start_ts) / speed`` seconds after the
        first one. Without ``clock``, pacing sleeps the gap between consecutive
        batches (time spent by the consumer adds up); with ``clock`` (e.g.
        ``loop.time``) it sleeps until each due time, so it does not drift.
        """
        if not math.isfinite(speed) or speed < 0:
            raise ValueError(f"speed must be a finite number ≥ 0, got {speed!r}")
        _check_batching(max_batch, window_s)
        started = clock() if clock is not None else 0.0
        previous_ts: float | None = None
        for batch in self.batches(max_batch=max_batch, window_s=window_s):
            ts = batch[0].ts
            if speed == 0:
                if previous_ts is not None:
                    await sleep(0)
            elif previous_ts is not None:
                if clock is None:
                    delay = (ts - previous_ts) / speed
                else:
                    delay = started + (ts - self.start_ts) / speed - clock()
                await sleep(max(delay, 0.0))
            previous_ts = ts
            yield batch


def _check_batching(max_batch: int, window_s: float) -> None:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an int ≥ 1, got {max_batch!r}")
    if not math.isfinite(window_s) or window_s < 0:
        raise ValueError(f"window_s must be a finite number ≥ 0, got {window_s!r}")
