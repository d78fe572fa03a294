"""In-process fakes of the remote side, for unit tests of hosts without Ray or servers.

- :class:`MemoryStore` implements :class:`valux.persistence.store.Store` over dicts: the
  journal with its ``(stream_id, seq)`` key (a second writer of a seq fails as it does in
  PostgreSQL), read-model rows by key, snapshots, and every named query valux issues
  (an unknown query name fails the test). Events and snapshots go through the real
  msgpack codec, so what cannot be journaled fails here too.
- :class:`FakeEvaluator` records what the agents arm and settle.
- :func:`construct` runs a host's async constructor outside Ray.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg

from valux.persistence.codec import decode, encode
from valux.persistence.journal import (
    Commit,
    Event,
    ForkHandler,
    JournalUnavailable,
    Recovered,
    rebase_fork,
)
from valux.persistence.store import Query

T = TypeVar("T")

_INSERT = re.compile(r"INSERT INTO (\w+) \(([^)]*)\)\s*VALUES\s*\((.*?)\)\s*ON CONFLICT", re.S)
_PARAM = re.compile(r"\$(\d+)")


def _values(expressions: str) -> list[str]:
    """Split a VALUES list at its top-level commas."""
    parts, depth, current = [], 0, ""
    for char in expressions:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    return [*parts, current]


async def construct(cls: type[T], *args: Any, **kwargs: Any) -> T:
    """Build an actor class whose ``__init__`` is async (Ray awaits it; so do we)."""
    obj = cls.__new__(cls)
    await obj.__init__(*args, **kwargs)  # type: ignore[misc]
    return obj


class MemoryStore:
    """A :class:`~valux.persistence.store.Store` in memory (see the module docstring)."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, int], tuple[str, bytes, int]] = {}
        self.snapshots: dict[str, tuple[int, bytes, int]] = {}
        self.tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
        self.commits = 0
        self.down = False
        self._deferred: list[Commit] = []
        self.fail_next: BaseException | None = None
        self.in_doubt = False  # the next refused entry commits after all (a blackhole)
        self.fork_handler: ForkHandler | None = None
        self.forks = 0
        self.queries: dict[str, Callable[..., list[dict[str, Any]]]] = {
            "agent_ids": self._agent_ids,
            "wallet_ids": self._wallet_ids,
            "wallet_intents": self._wallet_intents,
            "signal_decided": self._signal_decided,
            "global_state": self._global_state,
            "wallet_balances": self._wallet_balances,
        }

    # -- Store -----

    @property
    def deferred(self) -> int:
        return len(self._deferred)

    @property
    def last_error(self) -> str | None:
        return "database down (fake)" if self.down else None

    async def commit(self, commit: Commit, *, deferrable: bool = False) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if self.down or self._deferred:  # as the journal: nothing bypasses its buffer
            if not deferrable:
                if self.in_doubt:  # refused, but its transaction was on its way: it commits
                    self.in_doubt = False
                    self._write(commit)
                raise JournalUnavailable("journal unavailable (fake outage); entry refused")
            self._deferred.append(commit)
            return
        self._write(commit)

    def _write(self, commit: Commit) -> None:
        for event in commit.events:
            if (event.stream_id, event.seq) in self.events:
                raise asyncpg.UniqueViolationError(
                    f"duplicate key (stream_id, seq)=({event.stream_id}, {event.seq})"
                )
        for event in commit.events:
            self.events[(event.stream_id, event.seq)] = (
                event.type,
                encode(event.data),
                event.version,
            )
        for row in commit.rows:
            match = _INSERT.search(row.sql)
            assert match, f"unrecognised read-model statement: {row.sql}"
            table, columns = match.group(1), [c.strip() for c in match.group(2).split(",")]
            values: dict[str, Any] = {}
            for column, expression in zip(columns, _values(match.group(3)), strict=True):
                param = _PARAM.search(expression)
                values[column] = row.args[int(param.group(1)) - 1] if param else None
            existing = self.tables[table].get(row.key)
            if "DO NOTHING" in row.sql and existing is not None:
                continue
            if row.additive and existing is not None:
                for column, value in values.items():
                    if isinstance(value, Decimal | int) and not isinstance(value, bool):
                        existing[column] += value
                continue
            self.tables[table][row.key] = values
        for snap in commit.snapshots:
            current = self.snapshots.get(snap.stream_id)
            if current is None or current[0] < snap.seq:
                self.snapshots[snap.stream_id] = (snap.seq, encode(snap.state), snap.version)
        self.commits += 1

    async def up(self) -> None:
        """End the outage: write what was buffered, in order. A commit that meets another
        version of its stream (``in_doubt``) is handed, with the rest of its stream's
        buffer, to the fork handler, whose rebase takes its place (the journal's own
        :func:`~valux.persistence.journal.rebase_fork`)."""
        self.down = False
        while self._deferred:
            commit = self._deferred[0]
            try:
                self._write(commit)
            except asyncpg.UniqueViolationError:
                await rebase_fork(self._deferred, commit, self.fork_handler)
                self.forks += 1
                continue
            self._deferred.pop(0)

    async def write_restored(self) -> int:
        return 0

    async def load_streams(self, stream_ids: Sequence[str]) -> dict[str, Recovered]:
        out: dict[str, Recovered] = {}
        for sid in stream_ids:
            rec = Recovered()
            if sid in self.snapshots:
                rec.snapshot_seq, state, rec.snapshot_version = self.snapshots[sid]
                rec.snapshot = decode(state)
            for (stream, seq), (etype, payload, version) in sorted(self.events.items()):
                if stream == sid and seq > rec.snapshot_seq:
                    try:
                        data = decode(payload)
                    except Exception as exc:
                        rec.error = f"event {seq} ({etype}) does not decode: {exc!r}"
                        break
                    rec.events.append(Event(stream, seq, etype, data, version))
            out[sid] = rec
        return out

    async def fetch(self, query: Query, *args: Any) -> list[Mapping[str, Any]]:
        handler = self.queries.get(query.name)
        assert handler is not None, f"MemoryStore does not implement query {query.name!r}"
        return list(handler(*args))

    async def close(self) -> None:
        return None

    def on_fork(self, handler: ForkHandler) -> None:
        self.fork_handler = handler

    # -- inspection -----

    def stream(self, stream_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The journal of one stream: (seq, type, data)."""
        return [
            (seq, etype, decode(payload))
            for (sid, seq), (etype, payload, _v) in sorted(self.events.items())
            if sid == stream_id
        ]

    def rows(self, table: str) -> list[dict[str, Any]]:
        return list(self.tables[table].values())

    # -- named queries -----

    def _agent_ids(self, slot: int) -> list[dict[str, Any]]:
        return [
            {"id": r["id"]}
            for r in self.rows("agents")
            if r["host_slot"] == slot and r["status"] != "deleted"
        ]

    def _signal_decided(self, signal_id: str, agent_ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(agent_ids)
        return [
            {**r, "ts": 0.0}
            for r in self.rows("signal_outcomes")
            if r["signal_id"] == signal_id and r["agent_id"] in wanted
        ]

    def _wallet_balances(self, wallet_ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(wallet_ids)
        return [r for r in self.rows("balances") if r["wallet_id"] in wanted]

    def _global_state(self) -> list[dict[str, Any]]:
        return [
            {"state": r["state"], "reason": r["reason"], "ts": 0.0}
            for r in self.rows("risk_states")
            if r["scope"] == "global"
        ]

    def _wallet_intents(self, intent_ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(intent_ids)
        return [r for r in self.rows("wallet_intents") if r["intent_id"] in wanted]

    def _wallet_ids(self, slot: int) -> list[dict[str, Any]]:
        return [{"id": r["id"]} for r in self.rows("wallets") if r["host_slot"] == slot]


class FakeEvaluator:
    """Records ``arm`` and ``settle`` calls; answers ``latest_price`` from ``prices``."""

    def __init__(self) -> None:
        self.armed: dict[str, dict[str, Any]] = {}
        self.settled: list[tuple[str, bool]] = []
        self.prices: dict[str, tuple[float, float]] = {}
        self.fail_arm = False

    async def arm(self, specs: list[dict[str, Any]]) -> list[bool]:
        if self.fail_arm:
            raise ConnectionError("evaluator restarting (fake)")
        for spec in specs:
            self.armed[spec["position_id"]] = spec
        return [True] * len(specs)

    async def settle(self, outcomes: list[tuple[str, bool]]) -> list[bool]:
        self.settled.extend(outcomes)
        for pid, closed in outcomes:
            if closed:
                self.armed.pop(pid, None)
        return [True] * len(outcomes)

    async def latest_price(self, token: str) -> tuple[float, float] | None:
        return self.prices.get(token)


def decimal_balances(view: Mapping[str, Any]) -> dict[str, Decimal]:
    """A wallet view's balances as Decimals."""
    return {asset: Decimal(v) for asset, v in view["balances"].items()}


class FakePool:
    """Enough of an asyncpg pool for :class:`~valux.persistence.journal.Journal`: a journal
    table with its ``(stream_id, seq)`` key, transactions that apply all or nothing, and
    the failures a network gives: ``refuse`` (connection refused), ``hang`` (a blackhole:
    the call never returns until ``release()``), ``commit_then_fail`` (the transaction
    commits, then the connection drops before the answer), ``delay`` (every transaction
    takes this long: a busy database)."""

    def __init__(self) -> None:
        self.journal: dict[tuple[str, int], tuple[str, bytes]] = {}
        self.transactions = 0
        self.delay = 0.0
        self.refuse = False
        self.hang = False
        self.commit_then_fail = False
        self._released = asyncio.Event()

    def release(self) -> None:
        """End a hang: calls waiting in it go on."""
        self.hang = False
        self._released.set()
        self._released = asyncio.Event()

    def acquire(self, timeout: float | None = None) -> _FakeConnection:
        return _FakeConnection(self)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        await self._gate()
        keys = set(zip(args[0], args[1], strict=True))
        return [
            {"stream_id": s, "seq": q, "event_type": t, "payload": p}
            for (s, q), (t, p) in self.journal.items()
            if (s, q) in keys
        ]

    async def _gate(self) -> None:
        if self.refuse:
            raise ConnectionRefusedError("connection refused (fake)")
        if self.hang:
            await self._released.wait()


class _FakeConnection:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool
        self.staged: dict[tuple[str, int], tuple[str, bytes]] = {}

    async def __aenter__(self) -> _FakeConnection:
        await self.pool._gate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def transaction(self) -> _FakeTransaction:
        return _FakeTransaction(self)

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        await self.pool._gate()
        if sql.startswith("INSERT INTO journal"):
            for stream_id, seq, event_type, payload, _version in args:
                key = (stream_id, seq)
                if key in self.pool.journal or key in self.staged:
                    raise asyncpg.UniqueViolationError(f"duplicate key {key}")
                self.staged[key] = (event_type, payload)


class _FakeTransaction:
    def __init__(self, conn: _FakeConnection) -> None:
        self.conn = conn

    async def __aenter__(self) -> _FakeTransaction:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.conn.staged.clear()
            return
        await self.conn.pool._gate()
        if self.conn.pool.delay:
            await asyncio.sleep(self.conn.pool.delay)
        self.conn.pool.journal.update(self.conn.staged)
        self.conn.pool.transactions += 1
        if self.conn.pool.commit_then_fail:
            raise ConnectionResetError("connection reset after COMMIT (fake)")
