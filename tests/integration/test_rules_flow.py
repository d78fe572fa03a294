"""The full rule set through the API: a DCA buy, a take-profit ladder with a moon bag,
and the trailing stop, on a scripted price path, with exact amounts and P&L.

The venue charges no fee and no slippage here, so every fill is at the tick's price and
each expected number below follows from the rules by hand:

==========  ======  =====================================================================
tick        price   what the rules do (agent-rules.md)
==========  ======  =====================================================================
(buy)       1.0     1 SOL buys 1 token; SL-1: stop −30 % (0.7)
1           0.75    gain −25 % ≤ −20 % → DCA-7 buys 0.75 × 1 × 100 % = 0.75 SOL (1 token);
                    DCA-8 average (1 + 0.75) / 2 = 0.875; Q-2 fix: stop re-initialised,
                    −30 % of 0.875; TP-17: ladder restarts from the new average
2           1.3125  gain +50 % → TP level 1 sells 25 % of the 2 tokens bought = 0.5;
                    SL-6: peak +50 % → stop +40 % (1.225)
3           1.75    gain +100 % → level 2 sells 0.5; TP-7: the moon bag (20 % of 2 = 0.4)
                    activates, 1.0 token left; SL-6: stop +90 % (1.6625)
4           1.6     ≤ 1.6625 → SL-15 sells the whole remaining 1.0 (moon bag included)
==========  ======  =====================================================================

Proceeds 0.65625 + 0.875 + 1.6 = 3.13125 against 1.75 invested: realised +1.38125 SOL.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.conftest import fresh_database, make_settings
from tests.integration.helpers import Api, wait_for
from tests.integration.test_restart import kill_namespace
from valux.system.runtime import Runtime

CONFIG = {
    "stopLoss": {"enabled": True, "mode": "fixed", "defaultPercentage": -30},
    "takeProfit": {
        "enabled": True,
        "mode": "custom",
        "levels": [
            {"targetPercent": 50, "sellPercent": 25},
            {"targetPercent": 100, "sellPercent": 25},
        ],
        "moonBag": {"enabled": True, "triggerPercent": 100, "retainPercent": 20},
    },
    "dca": {
        "enabled": True,
        "mode": "custom",
        "levels": [{"dropPercent": -20, "buyPercent": 100}],
        "maxDCACount": 1,
        "cooldownSeconds": 10,
    },
    "staleTrade": {"enabled": False},
}


async def _position(api: Api, position_id: str) -> dict[str, Any]:
    return await api.get(f"/api/v1/positions/{position_id}")


async def test_dca_take_profit_ladder_moon_bag_and_trailing_stop(
    server_urls: tuple[str, str], redis_url: str, data_dir: Path, ray_session: str
) -> None:
    namespace = f"{ray_session}-rules-{uuid.uuid4().hex[:4]}"
    with fresh_database(server_urls[0]) as database_url:
        settings = make_settings(
            data_dir,
            database_url,
            redis_url,
            namespace,
            **{
                "venue.paper.fee_bps": 0,
                "venue.paper.slippage_bps_per_unit": 0,
                "venue.paper.network_fee": "0",
            },
        )
        runtime = Runtime(settings)
        await runtime.start()
        token = f"RUL{uuid.uuid4().hex[:5]}"
        try:
            async with Api(runtime.port) as api:
                await api.ticks([(token, 1.0)])
                agent = await api.post(
                    "/api/v1/agents", {"name": "ladder", "balance": "10", "config": CONFIG}, 201
                )
                signal = {"id": f"s-{uuid.uuid4().hex}", "token": token, "strength": 5,
                          "type": "t", "size": "1", "agents": [agent["id"]]}  # fmt: skip
                (bought,) = (await api.post("/api/v1/signals", signal, 201))["outcomes"]
                assert bought["status"] == "bought", bought
                pid = bought["position_id"]
                assert Decimal(bought["amount"]) == 1 and Decimal(bought["price"]) == 1

                await api.ticks([(token, 0.75)])  # DCA
                # The stop is stored in the background (SL-12), so wait for it as well.
                after_dca = await wait_for(
                    lambda: _position(api, pid),
                    lambda p: Decimal(p["amount"]) == 2 and p["peak"] != 1.0,
                )
                assert Decimal(after_dca["purchase_price"]) == Decimal("0.875")
                assert Decimal(after_dca["invested"]) == Decimal("1.75")
                assert after_dca["stop_pct"] == -30.0  # Q-2 fix: SL-1 from the new average
                assert after_dca["peak"] == 0.875

                await api.ticks([(token, 1.3125)])  # TP level 1
                await wait_for(
                    lambda: _position(api, pid), lambda p: Decimal(p["remaining"]) == Decimal("1.5")
                )
                await api.ticks([(token, 1.75)])  # TP level 2 + moon bag
                level2 = await wait_for(
                    lambda: _position(api, pid),
                    lambda p: Decimal(p["remaining"]) == 1 and p["stop_pct"] != 40.0,
                )
                assert level2["status"] == "open"  # the moon bag keeps it open
                assert level2["stop_pct"] == 90.0

                await api.ticks([(token, 1.6)])  # trailing stop
                closed = await wait_for(
                    lambda: _position(api, pid), lambda p: p["status"] == "closed"
                )
                assert closed["exit_reason"] == "stop_loss"
                assert Decimal(closed["proceeds"]) == Decimal("3.13125")
                assert Decimal(closed["realized_pnl"]) == Decimal("1.38125")

                trades = await api.get(f"/api/v1/trades?agent={agent['id']}")
                got = sorted(
                    (t["side"], Decimal(t["base_amount"]), Decimal(t["quote_amount"]))
                    for t in trades
                )
                assert got == sorted(
                    [
                        ("buy", Decimal(1), Decimal(1)),
                        ("buy", Decimal(1), Decimal("0.75")),
                        ("sell", Decimal("0.5"), Decimal("0.65625")),
                        ("sell", Decimal("0.5"), Decimal("0.875")),
                        ("sell", Decimal(1), Decimal("1.6")),
                    ]
                )
                wallet = await api.get(f"/api/v1/agents/{agent['id']}/wallet")
                assert Decimal(wallet["balances"]["SOL"]) == Decimal(
                    "11.38125"
                )  # 10 − 1.75 + 3.13125
                assert Decimal(wallet["balances"].get(token, "0")) == 0
                view = await api.get(f"/api/v1/agents/{agent['id']}")
                assert Decimal(view["realized_pnl"]) == Decimal("1.38125")
        finally:
            kill_namespace(namespace)
            await runtime.runner.cleanup()  # type: ignore[union-attr]
            await runtime.pool.close()  # type: ignore[union-attr]
