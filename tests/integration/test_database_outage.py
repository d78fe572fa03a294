"""PostgreSQL unreachable: entries are refused clearly, exits still fire, nothing is lost."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

from bench.netfault import FaultyProxy
from tests.integration.conftest import fresh_database, make_settings
from tests.integration.helpers import Api, wait_for
from tests.integration.test_restart import kill_namespace
from valux.system.runtime import Runtime


async def test_outage_refuses_entries_fires_exits_and_writes_them_back(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    """With the database cut off: a signal is refused with 503 naming the database, ready is
    503 saying what is wrong, and a stop crossed during the outage still sells (the exit's
    events wait in memory). When the database returns the buffered events are written: the
    position is closed in PostgreSQL, the trade is on record and the balances read model
    equals the wallet's state. The agent's and the wallet's hosts write their buffers back
    independently, so the trade may land after the position closes: it is waited for."""
    namespace = f"{ray_session}-outage-{uuid.uuid4().hex[:4]}"
    with fresh_database(server_urls[0]) as database_url:
        proxy = FaultyProxy(database_url)
        await proxy.start()
        settings = make_settings(data_dir, proxy.url(), redis_url, namespace)
        runtime = Runtime(settings)
        await runtime.start()
        token = f"OUT{uuid.uuid4().hex[:5]}"
        try:
            async with Api(runtime.port) as api:
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
                refused = await api.post(
                    "/api/v1/signals", {**sig, "id": f"s-{uuid.uuid4().hex}"}, 503
                )
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
                await wait_for(
                    lambda: api.request("GET", "/health/ready"), lambda r: r[0] == 200, 30
                )
        finally:
            kill_namespace(namespace)
            await proxy.restore()  # so the pool can close instead of reconnecting forever
            await runtime.runner.cleanup()  # type: ignore[union-attr]
            await asyncio.wait_for(runtime.pool.close(), 10)  # type: ignore[union-attr]
            await proxy.cut()
