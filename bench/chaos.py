"""Chaos test: SIGKILL valux's processes at random under load, then prove nothing was lost.

    python -m bench.chaos --minutes N [--agents 24] [--kill-every 4] [--seed 7]

Runs valux on a real Ray instance (``RAY_ADDRESS`` if set, else a local one), real
PostgreSQL (``DATABASE_URL`` as the admin connection; a fresh database is created and
dropped) and Redis (``REDIS_URL``); embedded servers when those are unset. The API runs as
its own process. Meanwhile a fast simulated feed moves prices, a steady stream of signals
buys, tight trailing stops sell, and every ``--kill-every`` seconds one process is killed
with SIGKILL: an agent host, a wallet host, an evaluator, a feed, a supervisor, the root
supervisor or the API process. Each kill waits for its victim to come back (recovery time).

At the end the load stops, the system must report ready, and the checks run against
PostgreSQL and the actors:

- lost        acknowledged buys whose position is missing from the journal-backed read
              model or from the agent's state;
- duplicates  decisions filled twice (two buys for one (signal, agent), two sells for one
              position) or venue fills the wallet never booked;
- mismatches  wallets whose balances (actor state and read model) differ from the starting
              balance plus the journaled fills and fees, exactly in Decimal;
- unarmed     open positions not armed at a live evaluator, or still open although the
              latest price is at or below their stop.

It prints a table and ends with ``chaos: lost=N duplicates=N mismatches=N unarmed=N``;
the exit code is 1 if any is non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import ray

from valux.config.settings import Settings, load_settings
from valux.ops.ports import free_port
from valux.ops.scratch_db import admin_execute, with_database
from valux.supervisors.naming import (
    ROOT,
    agent_host_name,
    evaluator_name,
    feed_name,
    supervisor_name,
    wallet_host_name,
)
from valux.system.runtime import attach_or_start, prepare_database

KINDS = ("agent-host", "wallet-host", "evaluator", "feed", "supervisor", "root", "api")
START_BALANCE = Decimal(100)
TOKENS = ("CHA", "CHB", "CHC", "CHD", "CHE", "CHF")


STOP_CONFIG: dict[str, Any] = {"stopLoss": {"defaultPercentage": -3, "mode": "fixed"}}
#: Half the agents trade the whole rule set with tight thresholds, so take-profit sales,
#: moon bags and DCA buys happen (and get killed mid-flight) within a short run.
RULES_CONFIG: dict[str, Any] = {
    **STOP_CONFIG,
    "takeProfit": {
        "enabled": True,
        "mode": "custom",
        "levels": [
            {"targetPercent": 2, "sellPercent": 30},
            {"targetPercent": 4, "sellPercent": 30},
        ],
        "moonBag": {"enabled": True, "triggerPercent": 4, "retainPercent": 10},
    },
    "dca": {
        "enabled": True,
        "mode": "custom",
        "levels": [{"dropPercent": -2, "buyPercent": 50}],
        "maxDCACount": 1,
        "cooldownSeconds": 10,
    },
}


@dataclass
class Run:
    """Everything the chaos run observed."""

    acked: dict[tuple[str, str], str] = field(default_factory=dict)  # (agent, signal) -> pos
    signals_sent: int = 0
    signals_acked: int = 0
    signals_failed: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    recoveries: list[tuple[str, float]] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)


def _env(
    settings_env: dict[str, str], database_url: str, redis_url: str, address: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALUX_")}
    env.update(settings_env)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, RAY_ADDRESS=address)
    return env


def _settings_env(namespace: str) -> dict[str, str]:
    tokens = ",".join(
        f'{{"symbol": "{t}", "start_price": "1", "drift": 0.0, "volatility": 60.0}}' for t in TOKENS
    )
    return {
        "VALUX_RAY__NAMESPACE": namespace,
        "VALUX_HOSTING__AGENTS_PER_HOST": "6",
        "VALUX_HOSTING__WALLETS_PER_HOST": "6",
        "VALUX_HOSTING__EVALUATORS": "2",
        "VALUX_FEEDS__SIMULATED__INTERVAL_MS": "50",
        "VALUX_FEEDS__SIMULATED__TOKENS": f"[{tokens}]",
        "VALUX_FEEDS__STALE_AFTER_S": "30",
        "VALUX_SUPERVISION__PING_INTERVAL_S": "0.5",
        "VALUX_SUPERVISION__PING_TIMEOUT_S": "5",
        "VALUX_SUPERVISION__RESTART_INTENSITY": "1000",
        "VALUX_LOGGING__LEVEL": "error",
    }


class ApiProcess:
    """The API as its own OS process, attached to the cluster (so it can be SIGKILLed)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "valux.main", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _wait_http(session: aiohttp.ClientSession, url: str, status: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == status:
                    return True
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    return False


async def _actor_pid(name: str, namespace: str) -> int | None:
    try:
        handle = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
        info: dict[str, Any] = await asyncio.wait_for(handle.ping.remote(), 5)
        return int(info["pid"])
    except Exception:
        return None


async def _wait_new_pid(name: str, namespace: str, old: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pid = await _actor_pid(name, namespace)
        if pid is not None and pid != old:
            return True
        await asyncio.sleep(0.1)
    return False


async def _evaluators_armed(pool: asyncpg.Pool, settings: Settings) -> bool:
    for shard in range(settings.hosting.evaluators):
        try:
            handle = await asyncio.to_thread(
                ray.get_actor, evaluator_name(shard), namespace=settings.ray.namespace
            )
            report = await asyncio.wait_for(handle.ready_report.remote(), 5)
        except Exception:
            return False
        if report["unarmed_count"]:
            return False
    return True


def _victims(kind: str, settings: Settings, slots: list[int]) -> list[str]:
    if kind == "agent-host":
        return [agent_host_name(s) for s in slots]
    if kind == "wallet-host":
        return [wallet_host_name(s) for s in slots]
    if kind == "evaluator":
        return [evaluator_name(i) for i in range(settings.hosting.evaluators)]
    if kind == "feed":
        return [feed_name("simulated")]
    if kind == "supervisor":
        return [supervisor_name(g) for g in ("agents", "wallets", "evaluators", "feeds")]
    return [ROOT]


async def _killer(
    run: Run,
    settings: Settings,
    api: ApiProcess,
    session: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    slots: list[int],
    stop_at: float,
    every: float,
    rng: random.Random,
) -> None:
    ns = settings.ray.namespace
    while time.monotonic() + every < stop_at:
        await asyncio.sleep(every)
        kind = rng.choice(KINDS)
        began = time.monotonic()
        if kind == "api":
            api.kill()
            run.kills[kind] += 1
            api.start()
            ok = await _wait_http(session, api.url + "/health/live", 200, 90)
        else:
            name = rng.choice(_victims(kind, settings, slots))
            pid = await _actor_pid(name, ns)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            run.kills[kind] += 1
            ok = await _wait_new_pid(name, ns, pid, 90)
            if ok and kind == "evaluator":
                while not await _evaluators_armed(pool, settings):
                    if time.monotonic() - began > 90:
                        ok = False
                        break
                    await asyncio.sleep(0.1)
        elapsed = time.monotonic() - began
        if ok:
            run.recoveries.append((kind, elapsed))
        else:
            run.unrecovered.append(kind)


async def _signals(
    run: Run,
    api: ApiProcess,
    session: aiohttp.ClientSession,
    agents: list[str],
    stop_at: float,
    rng: random.Random,
) -> None:
    while time.monotonic() < stop_at:
        await asyncio.sleep(0.1)
        chosen = rng.sample(agents, k=min(3, len(agents)))
        body = {
            "id": f"chaos-{uuid.uuid4().hex}",
            "token": rng.choice(TOKENS),
            "strength": 5,
            "type": "chaos",
            "size": "1",
            "agents": chosen,
        }
        run.signals_sent += 1
        try:
            async with session.post(
                api.url + "/api/v1/signals", json=body, timeout=aiohttp.ClientTimeout(total=20)
            ) as resp:
                if resp.status not in (200, 201):
                    run.signals_failed += 1
                    continue
                result = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            run.signals_failed += 1
            continue
        run.signals_acked += 1
        for outcome in result["outcomes"]:
            if outcome["status"] == "bought":
                run.acked[(outcome["agent_id"], body["id"])] = outcome["position_id"]


async def _check(
    run: Run, settings: Settings, pool: asyncpg.Pool, agents: list[str], slots: list[int]
) -> dict[str, int]:
    ns = settings.ray.namespace
    positions = {
        r["id"]: r
        for r in await pool.fetch("SELECT id, agent_id, status, signal_id, token FROM positions")
    }
    actor_open: set[str] = set()
    for slot in slots:
        host = await asyncio.to_thread(ray.get_actor, agent_host_name(slot), namespace=ns)
        actor_open.update(p["id"] for p in await host.open_positions.remote())
    lost = 0
    for (_agent, _signal), pid in run.acked.items():
        row = positions.get(pid)
        if row is None or (row["status"] == "open" and pid not in actor_open):
            lost += 1
    lost += sum(
        1 for pid, r in positions.items() if r["status"] == "open" and pid not in actor_open
    )

    # Venue fills first, wallets' pending intents next, booked trades last: a sale still in
    # flight when the checks start (the feed keeps ticking) is then either pending or
    # booked, never counted as a fill the wallet did not book.
    venue_fills = {
        r["intent_id"]
        for r in await pool.fetch("SELECT intent_id FROM paper_venue_orders WHERE state = 'filled'")
    }
    pending: set[str] = set()
    mismatch_views: list[dict[str, Any]] = []
    for slot in sorted(set(await _wallet_slots(pool))):
        host = await asyncio.to_thread(ray.get_actor, wallet_host_name(slot), namespace=ns)
        ids = [
            r["id"] for r in await pool.fetch("SELECT id FROM wallets WHERE host_slot = $1", slot)
        ]
        for view in await host.describe.remote(ids):
            pending.update(view["pending_intents"])
            mismatch_views.append(view)
    found: list[str] = []  # what each duplicate is, printed with the verdict
    trades = await pool.fetch("SELECT position_id, side, reason, base_amount FROM trades")
    # One opening buy and one closing sale per position; take-profit sales and DCA buys
    # are several per position by design, so for them: never more sold than bought.
    per_decision = Counter(
        (r["position_id"], r["side"]) for r in trades if r["reason"] not in ("take_profit", "dca")
    )
    found += [f"{side} of {pid} filled {n}x" for (pid, side), n in per_decision.items() if n > 1]
    net: dict[str, Decimal] = defaultdict(Decimal)
    for r in trades:
        net[r["position_id"]] += r["base_amount"] if r["side"] == "buy" else -r["base_amount"]
    found += [f"{pid} sold {-amount} more than bought" for pid, amount in net.items() if amount < 0]
    per_signal = Counter((r["agent_id"], r["signal_id"]) for r in positions.values())
    found += [f"signal {sig} opened {n} positions for {agent}"
              for (agent, sig), n in per_signal.items() if n > 1]  # fmt: skip
    booked = {r["intent_id"] for r in await pool.fetch("SELECT intent_id FROM trades")}
    found += [f"venue fill {i} neither booked nor pending" for i in venue_fills - booked - pending]
    duplicates = (
        sum(n - 1 for n in per_decision.values() if n > 1)
        + sum(1 for amount in net.values() if amount < 0)
        + sum(n - 1 for n in per_signal.values() if n > 1)
        + len(venue_fills - booked - pending)
    )
    for line in found:
        print(f"chaos: duplicate: {line}", flush=True)
    mismatches = 0
    for view in mismatch_views:
        mismatches += await _wallet_mismatch(pool, view)

    armed: set[str] = set()
    latest: dict[str, float] = {}
    for shard in range(settings.hosting.evaluators):
        evaluator = await asyncio.to_thread(ray.get_actor, evaluator_name(shard), namespace=ns)
        armed.update(await evaluator.armed_ids.remote())
        for token, (price, _ts) in (await evaluator.latest_prices.remote()).items():
            latest[token] = price
    open_ids = [r["id"] for r in await pool.fetch("SELECT id FROM positions WHERE status = 'open'")]
    unarmed = sum(1 for pid in open_ids if pid not in armed)
    crossed = await _crossed_stops(settings, open_ids)
    if crossed:  # give the tick that crossed them time to finish its exits, then look again
        await asyncio.sleep(2.0)
        still_open = {
            r["id"]
            for r in await pool.fetch(
                "SELECT id FROM positions WHERE status = 'open' AND id = ANY($1::text[])", crossed
            )
        }
        unarmed += len(set(await _crossed_stops(settings, list(still_open))) & set(crossed))
    return {"lost": lost, "duplicates": duplicates, "mismatches": mismatches, "unarmed": unarmed}


async def _crossed_stops(settings: Settings, position_ids: list[str]) -> list[str]:
    """Open positions whose evaluator-held stop is at or above the token's latest price."""
    ns = settings.ray.namespace
    crossed = []
    for shard in range(settings.hosting.evaluators):
        evaluator = await asyncio.to_thread(ray.get_actor, evaluator_name(shard), namespace=ns)
        latest = await evaluator.latest_prices.remote()
        for pid in position_ids:
            state = await evaluator.position_state.remote(pid)
            if state is None or state["stop_pct"] is None or state["token"] not in latest:
                continue
            purchase = state["purchase_price"]
            if latest[state["token"]][0] <= purchase * (1 + state["stop_pct"] / 100):
                crossed.append(pid)
    return crossed


async def _wallet_slots(pool: asyncpg.Pool) -> list[int]:
    return [r["host_slot"] for r in await pool.fetch("SELECT DISTINCT host_slot FROM wallets")]


async def _wallet_mismatch(pool: asyncpg.Pool, view: dict[str, Any]) -> int:
    """Actor balances and read model vs start + journaled fills (trades) − reservations."""
    expected: dict[str, Decimal] = defaultdict(Decimal)
    expected["SOL"] = START_BALANCE
    for t in await pool.fetch(
        "SELECT side, token, base_amount, quote_amount FROM trades WHERE wallet_id = $1",
        view["wallet_id"],
    ):
        sign = 1 if t["side"] == "buy" else -1
        expected["SOL"] -= sign * t["quote_amount"]
        expected[t["token"]] += sign * t["base_amount"]
    actor = {a: Decimal(v) for a, v in view["balances"].items() if Decimal(v) != 0}
    model = {
        r["asset"]: r["amount"]
        for r in await pool.fetch(
            "SELECT asset, amount FROM balances WHERE wallet_id = $1", view["wallet_id"]
        )
        if r["amount"] != 0
    }
    want = {a: v for a, v in expected.items() if v != 0}
    if view["pending_intents"]:
        return 0  # still resolving; reservations make the comparison meaningless for now
    if actor != want or model != want:
        print(
            f"chaos: wallet {view['wallet_id']} expected {want} actor {actor} model {model}",
            file=sys.stderr,
        )
    return int(actor != want) + int(model != want)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print_table(run: Run, result: dict[str, int], fills: dict[str, int], minutes: float) -> None:
    times = [t for _, t in run.recoveries]
    rows = [
        ("duration (min)", f"{minutes:g}"),
        *((f"kills: {k}", str(run.kills.get(k, 0))) for k in KINDS),
        ("kills: total", str(sum(run.kills.values()))),
        ("signals sent / acknowledged", f"{run.signals_sent} / {run.signals_acked}"),
        ("buys acknowledged", str(len(run.acked))),
        ("fills (trades)", str(sum(fills.values()))),
        *((f"fills: {kind}", str(n)) for kind, n in fills.items()),
        ("recovered / not recovered", f"{len(times)} / {len(run.unrecovered)}"),
        (
            "recovery p50 / p99 / max (s)",
            f"{_percentile(times, 0.5):.2f} / {_percentile(times, 0.99):.2f} / "
            f"{max(times) if times else float('nan'):.2f}",
        ),
        ("lost", str(result["lost"])),
        ("duplicates", str(result["duplicates"])),
        ("balance mismatches", str(result["mismatches"])),
        ("unarmed / missed stops", str(result["unarmed"])),
    ]
    per_kind: dict[str, list[float]] = defaultdict(list)
    for kind, t in run.recoveries:
        per_kind[kind].append(t)
    for kind, values in sorted(per_kind.items()):
        rows.append((f"recovery {kind} median (s)", f"{statistics.median(values):.2f}"))
    width = max(len(k) for k, _ in rows)
    print(f"| {'metric'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


async def chaos(minutes: float, agents_count: int, kill_every: float, seed: int) -> int:
    rng = random.Random(seed)
    data_dir = Path(tempfile.mkdtemp(prefix="valux-chaos-"))
    admin_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not admin_url or not redis_url:
        from valux.ops.embedded import EmbeddedPostgres, EmbeddedRedis

        admin_url = admin_url or EmbeddedPostgres(data_dir).start()
        redis_url = redis_url or EmbeddedRedis(data_dir).start()
    name = f"valux_chaos_{uuid.uuid4().hex[:8]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    database_url = with_database(admin_url, name)
    namespace = f"valux-chaos-{uuid.uuid4().hex[:6]}"
    settings_env = _settings_env(namespace)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    else:
        ray.init(namespace=namespace, include_dashboard=False, log_to_driver=False)
    gcs = ray.get_runtime_context().gcs_address
    settings = load_settings(
        env={**settings_env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    )
    api = ApiProcess(_env(settings_env, database_url, redis_url, gcs))
    run = Run()
    try:
        _, pool = await prepare_database(settings)
        await attach_or_start(settings, database_url, redis_url)
        api.start()
        async with aiohttp.ClientSession() as session:
            if not await _wait_http(session, api.url + "/health/live", 200, 120):
                print("chaos: the API did not start", file=sys.stderr)
                return 2
            agents = []
            for i in range(agents_count):
                async with session.post(
                    api.url + "/api/v1/agents",
                    json={
                        "name": f"chaos-{i}",
                        "balance": str(START_BALANCE),
                        "config": RULES_CONFIG if i % 2 else STOP_CONFIG,
                    },
                ) as resp:
                    agents.append((await resp.json())["id"])
            slots = sorted(
                {r["host_slot"] for r in await pool.fetch("SELECT host_slot FROM agents")}
            )
            print(f"chaos: {len(agents)} agents on {len(slots)} hosts; running {minutes:g} min",
                  file=sys.stderr)  # fmt: skip
            stop_at = time.monotonic() + minutes * 60
            await asyncio.gather(
                _signals(run, api, session, agents, stop_at, rng),
                _killer(run, settings, api, session, pool, slots, stop_at, kill_every, rng),
            )
            print("chaos: load stopped; waiting for ready", file=sys.stderr)
            if api.proc is None or api.proc.poll() is not None:
                api.start()
            ready = await _wait_http(session, api.url + "/health/ready", 200, 180)
            await asyncio.sleep(3.0)  # a few ticks: stops crossed during an outage fire now
            for slot in slots:
                host = await asyncio.to_thread(
                    ray.get_actor, agent_host_name(slot), namespace=namespace
                )
                await host.reconcile_all.remote()
            await asyncio.sleep(1.0)
            result = await _check(run, settings, pool, agents, slots)
            if not ready:
                result["unarmed"] += 1
                print("chaos: the system did not report ready", file=sys.stderr)
            fills = {
                f"{r['side']} {r['reason']}": r["n"]
                for r in await pool.fetch(
                    "SELECT side, coalesce(reason, '?') AS reason, count(*) AS n FROM trades"
                    " GROUP BY 1, 2 ORDER BY 1, 2"
                )
            }
        _print_table(run, result, fills, minutes)
        print(
            f"chaos: lost={result['lost']} duplicates={result['duplicates']} "
            f"mismatches={result['mismatches']} unarmed={result['unarmed']}"
        )
        await pool.close()
        return 1 if any(result.values()) or run.unrecovered else 0
    finally:
        api.stop()
        try:
            root = await asyncio.to_thread(ray.get_actor, ROOT, namespace=namespace)
            await asyncio.wait_for(root.shutdown.remote(), 60)
            ray.kill(root, no_restart=True)
        except Exception:
            pass
        ray.shutdown()
        await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--agents", type=int, default=24)
    parser.add_argument("--kill-every", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(chaos(args.minutes, args.agents, args.kill_every, args.seed)))


if __name__ == "__main__":
    main()
