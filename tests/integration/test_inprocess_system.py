"""The one-process trading system backtests run on, and its buffered store, on a real
PostgreSQL (no Ray: everything is called directly in this process)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from tests.integration.conftest import fresh_database
from valux.backtest.inprocess import Exit, InProcessSystem
from valux.config.settings import load_settings
from valux.persistence.buffered import BufferedStore
from valux.persistence.journal import Commit, Event, RowWrite
from valux.persistence.store import Query
from valux.schema.messages import Signal
from valux.system.runtime import prepare_database

TRAIL = {
    "stopLoss": {"enabled": True, "defaultPercentage": -5, "mode": "trailing",
                 "trailingPercentage": 5},
    "staleTrade": {"enabled": False},
    "positionCalculator": {"randomization": {"enabled": False}},
}  # fmt: skip
UPSERT = (
    "INSERT INTO risk_states (scope, state, reason, updated_at) VALUES ($1, $2, $3, now())"
    " ON CONFLICT (scope) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason"
)
BY_SCOPE = Query(
    "risk_by_scope",
    "SELECT scope, state FROM risk_states WHERE scope = ANY($1::text[])",
    keys=lambda scopes: (("risk_states", s) for s in scopes),
)


@pytest.fixture
async def database(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    with fresh_database(server_urls[0]) as url:
        settings = load_settings(env={}, overrides={"database.url": url})
        _, pool = await prepare_database(settings)
        await pool.close()
        yield url


def _commit(stream: str, seq: int, scope: str, state: str) -> Commit:
    return Commit(
        events=[Event(stream, seq, "noted", {"state": state})],
        rows=[RowWrite(UPSERT, ("risk_states", scope), (scope, state, None))],
    )


async def test_buffered_store_answers_at_once_and_writes_in_order(database: str) -> None:
    """Commits return without a write; a group is written when ``max_pending`` is reached
    and before any read; a row's last write wins even when commits pile up behind a write
    in flight; everything buffered is written by ``close``."""
    store = await BufferedStore.open(database, max_pending=3)
    check = await asyncpg.connect(database)
    try:
        await store.commit(_commit("s:1", 1, "a", "ACTIVE"))
        await store.commit(_commit("s:1", 2, "a", "REDUCING"))
        assert await check.fetchval("SELECT count(*) FROM journal") == 0
        await asyncio.gather(*(store.commit(_commit("s:1", n, "a", f"S{n}")) for n in range(3, 9)))
        rows = await store.fetch(BY_SCOPE, ["a"])  # a read flushes first
        assert [dict(r) for r in rows] == [{"scope": "a", "state": "S8"}]
        seqs = [r["seq"] for r in await check.fetch("SELECT seq FROM journal ORDER BY seq")]
        assert seqs == list(range(1, 9))
        await store.commit(_commit("s:2", 1, "b", "HALTED"))
    finally:
        await store.close()
        assert await check.fetchval("SELECT state FROM risk_states WHERE scope = 'b'") == "HALTED"
        await check.close()


async def test_sole_writer_skips_reads_of_rows_it_never_wrote(database: str) -> None:
    """A sole-writer store answers a keyed query empty, with no flush and no round trip,
    when it wrote none of the rows; a row it did write (still buffered) is read back."""
    store = await BufferedStore.open(database, max_pending=100, sole_writer=True)
    try:
        await store.commit(_commit("s:1", 1, "a", "ACTIVE"))
        assert await store.fetch(BY_SCOPE, ["zz"]) == []
        assert store.writes == 0 and store.skipped_reads == 1  # nothing was flushed
        rows = await store.fetch(BY_SCOPE, ["a", "zz"])
        assert [r["state"] for r in rows] == ["ACTIVE"] and store.writes == 1
    finally:
        await store.close()


async def test_in_process_system_buys_trails_sells_and_leaves_the_record(database: str) -> None:
    """The production hosts in one process: a signal buys (filled and armed on return), a
    5 % trailing stop follows the peak, the tick 5 % below it sells at that tick (the
    batch is cut there, and the exit hook hears of it with that tick); the journal, the
    positions and trades read models and the wallet agree once the system is closed."""
    settings = load_settings(
        env={},
        overrides={"logging.level": "error", "venue.paper.fee_bps": 0,
                   "venue.paper.slippage_bps_per_unit": 0.0, "venue.paper.network_fee": "0"},
    )  # fmt: skip
    system = await InProcessSystem.start(settings, database)
    heard: list[tuple[list[Exit], tuple[str, float, float]]] = []

    async def on_exits(exits: list[Exit], tick: tuple[str, float, float]) -> None:
        heard.append((exits, tick))

    try:
        await system.add_agent("a1", TRAIL, Decimal(100))
        await system.ticks([("TKN", 10.0, 1.0)])
        signal = Signal(id="s1", token="TKN", strength=5, type="t", size=Decimal(1),
                        received_at=time.time(), agents=("a1",))  # fmt: skip
        (bought,) = await system.signal(signal)
        assert bought["status"] == "bought" and bought["armed"] is True
        prices = [10.5, 12.0, 11.5, 11.41, 11.39, 13.0]  # stop 0.95 × 12 = 11.4
        report = await system.ticks([("TKN", p, 2.0 + i) for i, p in enumerate(prices)], on_exits)
        assert report.exits == [("a1", bought["position_id"], "stop_loss")]
        assert [tick for _, tick in heard] == [("TKN", 11.39, 6.0)]
        assert report.stops == 1 and report.ticks == len(prices)
        wallet = (await system.wallets.describe(["w-a1"]))[0]
        assert wallet is not None and "TKN" not in wallet["balances"]
    finally:
        await system.close()
    conn = await asyncpg.connect(database)
    try:
        position = await conn.fetchrow("SELECT * FROM positions WHERE id = $1",
                                       bought["position_id"])  # fmt: skip
        assert position["status"] == "closed" and position["exit_reason"] == "stop_loss"
        sides = [r["side"] for r in await conn.fetch("SELECT side FROM trades ORDER BY ts")]
        assert sides == ["buy", "sell"]
        sale = await conn.fetchrow("SELECT price, extract(epoch FROM ts) AS ts FROM trades"
                                   " WHERE side = 'sell'")  # fmt: skip
        assert math.isclose(float(sale["price"]), 11.39) and float(sale["ts"]) == 6.0
        events = await conn.fetchval("SELECT count(*) FROM journal WHERE stream_id = 'agent:a1'")
        assert events >= 4  # created, buy intended, opened, exit intended, closed
    finally:
        await conn.close()


async def test_the_pipeline_closes_every_position_where_the_bare_book_does(
    server_urls: tuple[str, str],
) -> None:
    """The benchmark against NautilusTrader, its valux half: the whole pipeline (agents
    buying on signals, sales through wallet and exchange, the journal) enters and closes
    every 5 % trailing-stop position of every slot at exactly the ticks the evaluator's
    bare book does, re-entering at each close (24 closes at six different ticks)."""
    from bench.nautilus import random_walk, run_kernel, run_pipeline

    prices = random_walk(20_000, seed=5)
    pipeline = await run_pipeline(prices, k=12, stride=97, admin_url=server_urls[0])
    kernel = run_kernel(prices, k=12, stride=97)
    assert pipeline.slots == kernel.slots
    assert kernel.closes() == 24
