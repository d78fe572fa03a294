"""PostgreSQL unreachable: entries are refused clearly, exits still fire, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.netfault import FaultyProxy
from tests.integration.conftest import fresh_database, make_settings
from tests.integration.helpers import Api, wait_for
from tests.integration.test_restart import kill_namespace
from valux.system.runtime import Runtime


@contextlib.asynccontextmanager
async def _system_behind_proxy(
    server_urls: tuple[str, str],
    redis_url: str,
    data_dir: Path,
    ray_session: str,
    **overrides: Any,
) -> AsyncIterator[tuple[Runtime, FaultyProxy]]:
    """valux on a fresh database reached through a :class:`FaultyProxy`, torn down after."""
    namespace = f"{ray_session}-outage-{uuid.uuid4().hex[:4]}"
    with fresh_database(server_urls[0]) as database_url:
        proxy = FaultyProxy(database_url)
        await proxy.start()
        settings = make_settings(data_dir, proxy.url(), redis_url, namespace, **overrides)
        runtime = Runtime(settings)
        await runtime.start()
        try:
            yield runtime, proxy
        finally:
            kill_namespace(namespace)
            await proxy.restore()  # so the pool can close instead of reconnecting forever
            await runtime.runner.cleanup()  # type: ignore[union-attr]
            await asyncio.wait_for(runtime.pool.close(), 10)  # type: ignore[union-attr]
            await proxy.cut()


async def test_outage_refuses_entries_fires_exits_and_writes_them_back(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    """With the database cut off: a signal is refused with 503 naming the database, ready is
    503 saying what is wrong, and a stop crossed during the outage still sells (the exit's
    events wait in memory). When the database returns the buffered events are written: the
    position is closed in PostgreSQL, the trade is on record and the balances read model
    equals the wallet's state. The agent's and the wallet's hosts write their buffers back
    independently, so the trade may land after the position closes: it is waited for."""
    async with (
        _system_behind_proxy(server_urls, redis_url, data_dir, ray_session) as (runtime, proxy),
        Api(runtime.port) as api,
    ):
        token = f"OUT{uuid.uuid4().hex[:5]}"
        await api.ticks([(token, 1.0)])
        config = {"stopLoss": {"defaultPercentage": -10, "mode": "fixed"}}
        agent = await api.post(
            "/api/v1/agents", {"name": "o", "balance": "10", "config": config}, 201
        )
        sig = {"id": f"s-{uuid.uuid4().hex}", "token": token, "strength": 5,
               "type": "t", "size": "1", "agents": [agent["id"]]}  # fmt: skip
        (bought,) = (await api.post("/api/v1/signals", sig, 201))["outcomes"]
        position_id = bought["position_id"]

        await proxy.cut()
        refused = await api.post("/api/v1/signals", {**sig, "id": f"s-{uuid.uuid4().hex}"}, 503)
        assert "database unreachable" in refused["error"]["message"]
        status, ready = await api.request("GET", "/health/ready")
        assert status == 503 and any("database" in r for r in ready["reasons"])

        await api.ticks([(token, 0.85)])  # below the -10 % stop
        await wait_for(
            lambda: api.request("GET", "/health/ready"),
            lambda r: any("buffered" in reason for reason in r[1]["reasons"]),
        )

        await proxy.restore()
        closed = await wait_for(
            lambda: api.request("GET", f"/api/v1/positions/{position_id}"),
            lambda r: r[0] == 200 and r[1]["status"] == "closed",
            30,
        )
        assert closed[1]["exit_reason"] == "stop_loss"
        # the sale's trade is the wallet's own write-back (its host flushes its buffer
        # on its own schedule, after or before the agent's host closed the position)
        trades = await wait_for(
            lambda: api.get(f"/api/v1/trades?agent={agent['id']}"),
            lambda t: len(t) >= 2,
            30,
        )
        assert sorted(t["side"] for t in trades) == ["buy", "sell"]
        wallet = await api.get(f"/api/v1/agents/{agent['id']}/wallet")
        model = await runtime.pool.fetch(  # type: ignore[union-attr]
            "SELECT asset, amount FROM balances WHERE wallet_id = $1 AND amount <> 0",
            wallet["wallet_id"],
        )
        assert {r["asset"]: r["amount"] for r in model} == {
            k: Decimal(v) for k, v in wallet["balances"].items()
        }
        await wait_for(lambda: api.request("GET", "/health/ready"), lambda r: r[0] == 200, 30)


async def test_a_hung_database_answers_503_within_the_command_timeout(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    """While PostgreSQL hangs (a blackhole: connections open, no byte moves), requests that
    need it answer 503 naming the database within about twice
    ``database.api_command_timeout_s`` (the wait for a connection, then the query) — not
    after the 30 s request timeout, and not in turn behind each other when more arrive at
    once than the pool has connections (one here) — and are served again once it answers."""
    overrides = {"database.api_command_timeout_s": 1.0, "database.pool_max_size": 1}
    system = _system_behind_proxy(server_urls, redis_url, data_dir, ray_session, **overrides)
    async with system as (runtime, proxy), Api(runtime.port) as api:
        agent = await api.post("/api/v1/agents", {"name": "h", "balance": "10"}, 201)
        trades = f"/api/v1/trades?agent={agent['id']}"
        assert await api.get(trades) == []

        await proxy.blackhole()

        async def timed(method: str, path: str, body: Any = None) -> tuple[float, int, str]:
            began = time.monotonic()
            status, answer = await api.request(method, path, body=body)
            return time.monotonic() - began, status, answer["error"]["message"]

        sig = {"id": f"s-{uuid.uuid4().hex}", "token": "HUNG", "strength": 5, "type": "t",
               "size": "1", "agents": [agent["id"]]}  # fmt: skip
        answers = await asyncio.gather(
            timed("POST", "/api/v1/signals", sig), *(timed("GET", trades) for _ in range(5))
        )
        for took, status, message in answers:
            assert status == 503 and message.startswith("database unreachable (no answer in time")
            assert took < 4, answers  # in turn behind one connection: 1, 2, 3 ... 6+ s

        await proxy.restore()
        await wait_for(lambda: api.request("GET", trades), lambda r: r == (200, []), 30)
