"""Adversarial chaos: SIGKILL valux's processes, break its database link and make the venue
unreliable, all at once under load; then prove, from sources written by different code,
that nothing was lost, doubled or left unprotected.

    python -m bench.chaos --minutes N [--agents 24] [--kill-every 3] [--seed 7]
                          [--db-fault-every 45] [--venue-latency-ms 50]
                          [--venue-failure-rate 0.05] [--venue-unknown-rate 0.1]
                          [--venue jupiter [--chain-drop-rate 0.1]
                                           [--chain-landing-delay 2]]

``--venue jupiter`` (:mod:`bench.chaos_jupiter`): the agents are live agents on
``valux sandbox`` (started by the run, a real SVM that drops and delays transactions),
each with a wallet made, funded and unlocked through the API; pool prices follow a random
walk; an operator loop unlocks every wallet a restart of its host left locked (keys are
never kept in clear); the balances check compares the wallets' books with the chain.

Runs valux on a real Ray instance (``RAY_ADDRESS`` if set, else a local one), real
PostgreSQL (``DATABASE_URL`` as the admin connection; a fresh database is created and
dropped) and Redis (``REDIS_URL``); embedded servers when those are unset. The API runs as
its own process, the paper exchange as its own actor (it outlives an agent host and the
wallets it runs, as a real exchange would) on a direct database connection; everything
else reaches PostgreSQL through a proxy that this run breaks.

Faults, all on during the whole load phase:

- **kills**: every ``--kill-every`` seconds (jittered), SIGKILL of a random agent host
  (with its agents' wallets), evaluator, feed, supervisor, the root, the exchange (less
  often) or the API process, sometimes two at once; the next kill does not wait for the
  last victim to come back (overlapping kills). Recovery is timed in the background.
- **database**: every ``--db-fault-every`` seconds (jittered), 2-8 s of either refused
  connections or a blackhole (connections hang, no byte moves).
- **venue**: latency, failure rate and unknown-outcome rate switched on.
- **escalation** at its real settings: a process killed too often fails its supervisor's
  budget, the root puts agents in REDUCING, and they come back after a quiet window.
- **clients** behave as they should: a 503 is retried after ``Retry-After``, a lost
  connection is retried with the same signal id; nothing is reconciled by the run itself.

Then the load and the faults stop; the run waits for readiness and checks open positions
against their stops while prices still move; then sets the global state to HALTED (its
fan-out latency is reported), waits until nothing is in flight and runs the checks of
:mod:`bench.chaos_checks`. It prints every violation with its evidence, a table, and
``chaos: lost=N duplicates=N custody=N balances=N pending=N unarmed=N http=N``; the exit
code is 1 if any is non-zero or a victim never came back.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import ray

from bench import chaos_checks as checks
from bench import chaos_jupiter as live
from bench.netfault import FaultyProxy
from valux.config.settings import Settings, load_settings
from valux.hosting.naming import (
    ROOT,
    agent_host_name,
    evaluator_name,
    exchange_name,
    feed_name,
    supervisor_name,
)
from valux.ops.ports import free_port
from valux.ops.scratch_db import admin_execute, with_database
from valux.supervisors.root import GROUPS
from valux.system.runtime import attach_or_start, prepare_database

#: Victim kinds and how often each is chosen (the exchange is the rare one: it is the
#: venue, and a venue that restarts often is not what a trader meets).
KINDS: dict[str, float] = {
    "agent-host": 5, "evaluator": 2, "feed": 1, "supervisor": 1,
    "root": 1, "api": 1.5, "exchange": 0.5,
}  # fmt: skip
START_BALANCE = Decimal(100)
TOKENS = ("CHA", "CHB", "CHC", "CHD", "CHE", "CHF")
GIVE_UP_AFTER_S = 90.0  # a client stops retrying a signal after this

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
class Faults:
    """How hard the run pushes."""

    kill_every: float = 3.0
    db_fault_every: float = 45.0
    venue_latency_ms: float = 50.0
    venue_failure_rate: float = 0.05
    venue_unknown_rate: float = 0.1
    venue: str = "paper"
    """``paper``, or ``jupiter``: live agents on ``valux sandbox`` (bench.chaos_jupiter)."""
    chain_drop_rate: float = 0.1
    chain_landing_delay: int = 2


@dataclass
class Run:
    """Everything the chaos run observed."""

    acked: dict[tuple[str, str], str] = field(default_factory=dict)  # (agent, signal) -> pos
    signals_sent: int = 0
    signals_decided: int = 0
    signal_retries: int = 0
    given_up: set[str] = field(default_factory=set)
    last_answer: dict[str, str] = field(default_factory=dict)  # given-up signal -> last answer
    statuses: Counter[int] = field(default_factory=Counter)
    http_violations: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    overlapping_kills: int = 0
    recovering: set[str] = field(default_factory=set)
    recoveries: list[tuple[str, float]] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)
    db_faults: Counter[str] = field(default_factory=Counter)
    db_fault_seconds: float = 0.0
    halt_latency_ms: float | None = None
    halt_hosts: tuple[int, int] = (0, 0)
    quiet_after_s: float = 0.0
    tokens: tuple[str, ...] = ()
    unlocks: int = 0  # jupiter: wallets unlocked again after a restart of their host
    unlock_failures: int = 0
    price_moves: int = 0
    alerts: Counter[str] = field(default_factory=Counter)  # what the processes logged


def _env(
    settings_env: dict[str, str], database_url: str, redis_url: str, address: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALUX_")}
    env.update(settings_env)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, RAY_ADDRESS=address)
    return env


ADMIN_EMAIL = "chaos@valux.test"


async def _create_admin(pool: asyncpg.Pool) -> str:
    """An admin for the run's clients (made in the database before the API starts, as
    ``valux user create --admin`` does); returns its password."""
    from valux.api.users_pg import PgUserStore
    from valux.auth.passwords import PasswordHasher
    from valux.auth.tokens import Role

    password = uuid.uuid4().hex
    await PgUserStore(pool).create_user(
        email=ADMIN_EMAIL, role=Role.ADMIN, secret_hash=PasswordHasher().hash(password)
    )
    return password


async def _login(session: aiohttp.ClientSession, api: ApiProcess, password: str) -> str:
    """An access token of the run's admin (valid for the whole run: the settings give it
    two hours; every API process reads the same signing key under the run's data dir)."""
    body = {"email": ADMIN_EMAIL, "password": password}
    for _ in range(60):
        try:
            async with session.post(api.url + "/api/v1/auth/login", json=body) as resp:
                answer = await resp.json(content_type=None)
                if resp.status == 200:
                    return str(answer["access_token"])
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the chaos admin could not log in: {answer}")


def _settings_env(
    namespace: str, faults: Faults, exchange_url: str, data_dir: Path
) -> dict[str, str]:
    tokens = ",".join(
        f'{{"symbol": "{t}", "start_price": "1", "drift": 0.0, "volatility": 60.0}}' for t in TOKENS
    )
    return {
        "VALUX_RAY__NAMESPACE": namespace,
        "VALUX_DATA_DIR": str(data_dir),  # one JWT signing key for every API process
        "VALUX_AUTH__ACCESS_TOKEN_TTL_S": "7200",
        "VALUX_HOSTING__AGENTS_PER_HOST": "6",
        "VALUX_HOSTING__EVALUATORS": "2",
        "VALUX_FEEDS__SIMULATED__INTERVAL_MS": "50",
        "VALUX_FEEDS__SIMULATED__TOKENS": f"[{tokens}]",
        "VALUX_FEEDS__STALE_AFTER_S": "30",
        "VALUX_VENUE__PAPER__LATENCY_MS": str(faults.venue_latency_ms),
        "VALUX_VENUE__PAPER__FAILURE_RATE": str(faults.venue_failure_rate),
        "VALUX_VENUE__PAPER__UNKNOWN_RATE": str(faults.venue_unknown_rate),
        "VALUX_VENUE__PAPER__DATABASE_URL": exchange_url,
        "VALUX_LOGGING__LEVEL": "error",
    }


class ApiProcess:
    """The API as its own OS process, attached to the cluster (so it can be SIGKILLed)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir  # each start's output, for the evidence of a failed restart
        self.starts = 0
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"api-{self.starts}.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "valux.main", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

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
        handle = await asyncio.wait_for(
            asyncio.to_thread(ray.get_actor, name, namespace=namespace), 10
        )
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


def _victims(kind: str, settings: Settings, slots: list[int]) -> list[str]:
    if kind == "agent-host":  # its agents and their wallets: one process
        return [agent_host_name(s) for s in slots]
    if kind == "evaluator":
        return [evaluator_name(i) for i in range(settings.hosting.evaluators)]
    if kind == "feed":
        return [feed_name("jupiter" if settings.feeds.jupiter.enabled else "simulated")]
    if kind == "supervisor":
        return [supervisor_name(g) for g in GROUPS]
    if kind == "exchange":
        return [exchange_name("paper")]
    return [ROOT]


class Killer:
    """Kills on a jittered schedule without waiting for recovery; times each recovery."""

    def __init__(self, run: Run, settings: Settings, api: ApiProcess,
                 session: aiohttp.ClientSession, slots: list[int],
                 rng: random.Random) -> None:  # fmt: skip
        self.run, self.settings, self.api, self.session = run, settings, api, session
        self.slots, self.rng = slots, rng
        self.watchers: set[asyncio.Task[None]] = set()

    async def loop(self, stop_at: float, every: float) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        while True:
            await asyncio.sleep(every * self.rng.uniform(0.3, 1.7))
            if time.monotonic() >= stop_at:
                return
            burst = 2 if self.rng.random() < 0.2 else 1
            for kind in self.rng.choices(kinds, weights, k=burst):
                await self.kill(kind)

    async def kill(self, kind: str) -> None:
        run = self.run
        overlapping = bool(run.recovering)  # counted only if this kill happens
        began = time.monotonic()
        if kind == "api":
            if "api" in run.recovering:
                return
            self.api.kill()
            self.api.start()
            watch = self._watch_api(began)
        else:
            name = self.rng.choice(_victims(kind, self.settings, self.slots))
            if name in run.recovering:
                return
            pid = await _actor_pid(name, self.settings.ray.namespace)
            if pid is None:
                return
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            watch = self._watch_actor(kind, name, pid, began)
        run.kills[kind] += 1
        run.overlapping_kills += overlapping
        task = asyncio.get_running_loop().create_task(watch)
        self.watchers.add(task)
        task.add_done_callback(self.watchers.discard)

    async def _watch_api(self, began: float) -> None:
        self.run.recovering.add("api")
        try:
            ok = await _wait_http(self.session, self.api.url + "/health/live", 200, 120)
            self._done("api", ok, began)
        finally:
            self.run.recovering.discard("api")

    async def _watch_actor(self, kind: str, name: str, pid: int, began: float) -> None:
        self.run.recovering.add(name)
        try:
            ok = await _wait_new_pid(name, self.settings.ray.namespace, pid, 180)
            self._done(kind, ok, began)
        finally:
            self.run.recovering.discard(name)

    def _done(self, kind: str, ok: bool, began: float) -> None:
        if ok:
            self.run.recoveries.append((kind, time.monotonic() - began))
        else:
            self.run.unrecovered.append(kind)

    async def drain(self) -> None:
        if self.watchers:
            await asyncio.gather(*self.watchers, return_exceptions=True)


async def _database_faults(
    run: Run, proxy: FaultyProxy, stop_at: float, every: float, rng: random.Random
) -> None:
    while True:
        await asyncio.sleep(every * rng.uniform(0.5, 1.5))
        if time.monotonic() >= stop_at:
            return
        kind = rng.choice(("refusal", "blackhole"))
        duration = rng.uniform(2.0, 8.0)
        await (proxy.cut() if kind == "refusal" else proxy.blackhole())
        run.db_faults[kind] += 1
        await asyncio.sleep(duration)
        run.db_fault_seconds += duration
        await proxy.restore()


class Client:
    """Posts signals as a careful client does: retries 503 after ``Retry-After`` and lost
    connections with the same id, gives up after :data:`GIVE_UP_AFTER_S`."""

    def __init__(self, run: Run, api: ApiProcess, session: aiohttp.ClientSession) -> None:
        self.run, self.api, self.session = run, api, session
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(16)

    async def loop(self, agents: list[str], stop_at: float, rng: random.Random) -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.1)
            body = {
                "id": f"chaos-{uuid.uuid4().hex}",
                "token": rng.choice(self.run.tokens),
                "strength": 5,
                "type": "chaos",
                "size": "1",
                "agents": rng.sample(agents, k=min(3, len(agents))),
            }
            self.run.signals_sent += 1
            task = asyncio.get_running_loop().create_task(self.post(body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def post(self, body: dict[str, Any]) -> None:
        deadline = time.monotonic() + GIVE_UP_AFTER_S  # from when the signal was made
        async with self.slots:
            await self._post(body, deadline)

    async def _post(self, body: dict[str, Any], deadline: float) -> None:
        run = self.run
        attempts = 0
        last = "never sent (the client's slots were busy until its deadline)"
        while time.monotonic() < deadline:
            if attempts:
                run.signal_retries += 1
            attempts += 1
            try:
                async with self.session.post(
                    self.api.url + "/api/v1/signals", json=body,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as resp:  # fmt: skip
                    run.statuses[resp.status] += 1
                    text = await resp.text()
                    retry_after = resp.headers.get("Retry-After")
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"no answer: {type(exc).__name__}: {exc}"
                await asyncio.sleep(1.0)
                continue
            last = f"{status}: {text[:300]}"
            if status in (200, 201, 202):
                run.signals_decided += 1
                for outcome in _json(text).get("outcomes", []):
                    if outcome["status"] == "bought":
                        run.acked[(outcome["agent_id"], body["id"])] = outcome["position_id"]
                return
            if status == 503 and retry_after is not None:
                await asyncio.sleep(min(float(retry_after), 2.0))
                continue
            run.http_violations.append(f"POST /api/v1/signals {body['id']}: {last}")
            return
        run.given_up.add(body["id"])
        run.last_answer[body["id"]] = f"after {attempts} attempts, last {last}"

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def _reporting(work: Awaitable[None], what: Callable[[], str], every: float = 15.0) -> None:
    """Await ``work``, saying on stderr what it still waits for every ``every`` seconds (a
    run that does not end should say where it stands)."""
    task = asyncio.ensure_future(work)
    began = time.monotonic()
    while not task.done():
        await asyncio.wait({task}, timeout=every)
        if not task.done():
            print(f"chaos: still waiting after {time.monotonic() - began:.0f} s: {what()}",
                  file=sys.stderr, flush=True)  # fmt: skip
    task.result()


def _json(text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _until_quiet(pool: asyncpg.Pool, settings: Settings, within: float) -> checks.Quiet:
    deadline = time.monotonic() + within
    while True:
        try:
            state = await checks.in_flight(pool, settings)
        except Exception as exc:  # an actor still restarting
            state = checks.Quiet(agents={"?": [f"{type(exc).__name__}: {exc}"]})
        if state.quiet or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


async def _halt(run: Run, session: aiohttp.ClientSession, api: ApiProcess) -> None:
    body = {"state": "HALTED", "reason": "chaos run: checking"}
    for _ in range(30):
        try:
            async with session.post(api.url + "/api/v1/risk/state", json=body) as resp:
                if resp.status == 200:
                    answer = await resp.json()
                    run.halt_latency_ms = answer.get("latency_ms")
                    run.halt_hosts = (answer.get("hosts_reached", 0), answer.get("hosts", 0))
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(1.0)
    raise RuntimeError("the global HALT was not accepted")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _logged_alerts(data_dir: Path) -> Counter[str]:
    """The alerts in this Ray session's worker logs (the actors' structured logs) and in
    the API processes' output."""
    node = ray._private.worker._global_node  # no public API names the session directory
    session = (
        Path(node.get_session_dir_path())
        if node is not None
        else Path(tempfile.gettempdir()) / "ray" / "session_latest"
    )
    logs = session / "logs"
    files = [*logs.glob("worker-*.err"), *logs.glob("old/worker-*.err")]
    return checks.logged_alerts([*files, *data_dir.glob("api-*.log")])


def _print_table(run: Run, faults: Faults, result: dict[str, int], fills: dict[str, int],
                 minutes: float) -> None:  # fmt: skip
    times = [t for _, t in run.recoveries]
    rows = [
        ("duration (min)", f"{minutes:g}"),
        *((f"kills: {k}", str(run.kills.get(k, 0))) for k in KINDS),
        (
            "kills: total / while another was recovering",
            f"{sum(run.kills.values())} / {run.overlapping_kills}",
        ),
        (
            "database refusals / blackholes / seconds down",
            f"{run.db_faults['refusal']} / {run.db_faults['blackhole']}"
            f" / {run.db_fault_seconds:.0f}",
        ),
        (
            "venue latency ms / failure / unknown rate",
            f"{faults.venue_latency_ms:g} / {faults.venue_failure_rate:g} / "
            f"{faults.venue_unknown_rate:g}",
        )
        if faults.venue == "paper"
        else (
            "venue: sandbox SVM + Jupiter; sends dropped / landing delay (slots)",
            f"{faults.chain_drop_rate:g} / {faults.chain_landing_delay}",
        ),
        *(
            [
                (
                    "wallets unlocked again after restarts (attempts refused) / price moves",
                    f"{run.unlocks} ({run.unlock_failures}) / {run.price_moves}",
                )
            ]
            if faults.venue == "jupiter"
            else []
        ),
        (
            "signals sent / decided / given up",
            f"{run.signals_sent} / {run.signals_decided} / {len(run.given_up)}",
        ),
        ("signal retries (503, lost connection)", str(run.signal_retries)),
        ("HTTP answers", ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))),
        ("buys acknowledged", str(len(run.acked))),
        ("fills (trades)", str(sum(fills.values()))),
        *((f"fills: {kind}", str(n)) for kind, n in fills.items()),
        ("recovered / not recovered", f"{len(times)} / {len(run.unrecovered)}"),
        (
            "recovery p50 / p99 / max (s)",
            f"{_percentile(times, 0.5):.2f} / {_percentile(times, 0.99):.2f} / "
            f"{max(times) if times else float('nan'):.2f}",
        ),
        ("quiet after the load (s)", f"{run.quiet_after_s:.1f}"),
        (
            "global HALT fan-out (ms; agent hosts reached / all)",
            f"{run.halt_latency_ms} ({run.halt_hosts[0]} / {run.halt_hosts[1]})",
        ),
        *((check, str(result[check])) for check in checks.CHECKS),
        (
            "alerts logged (not checks: valux reporting what it saw)",
            ", ".join(f"{k}: {v}" for k, v in sorted(run.alerts.items())) or "none",
        ),
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


def _report(check: str, evidence: list[str]) -> int:
    for line in evidence[:25]:
        print(f"chaos: {check}: {line}", flush=True)
    if len(evidence) > 25:
        print(f"chaos: {check}: ... and {len(evidence) - 25} more", flush=True)
    return len(evidence)


async def _verdict(run: Run, settings: Settings, pool: asyncpg.Pool,
                   session: aiohttp.ClientSession, api: ApiProcess,
                   chain_rpc: str | None = None) -> dict[str, int]:  # fmt: skip
    result = dict.fromkeys(checks.CHECKS, 0)
    ready = await _wait_http(session, api.url + "/health/ready", 200, 240)
    if not ready:
        async with session.get(api.url + "/health/ready") as resp:
            print(f"chaos: not ready: {await resp.text()}", file=sys.stderr)
        result["unarmed"] += _report("unarmed", ["the system did not report ready in 240 s"])
    await asyncio.sleep(3.0)  # a few ticks: stops crossed during an outage fire now
    result["unarmed"] += _report("unarmed", await checks.crossed_stops(pool, settings))
    await _halt(run, session, api)  # freeze trading: the checks then read a still system
    began = time.monotonic()
    await _until_quiet(pool, settings, 120)
    run.quiet_after_s = time.monotonic() - began
    snap = await checks.snapshot(pool, settings, run.given_up)
    quote = settings.venue.quote_asset
    result["lost"] += _report("lost", checks.check_lost(snap, run.acked))
    result["duplicates"] += _report("duplicates", checks.check_duplicates(snap))
    result["custody"] += _report("custody", checks.check_custody(snap, quote))
    if chain_rpc is not None:  # live wallets: the chain is the venue's books
        snap.venue_moves = snap.venue_accounts = await live.chain_balances(pool, chain_rpc)
        balances = checks.check_balances(snap, "on chain")
    else:
        balances = checks.check_balances(snap)
    result["balances"] += _report("balances", balances)
    result["pending"] += _report("pending", checks.check_pending(snap))
    result["unarmed"] += _report("unarmed", checks.check_armed(snap))
    result["http"] += _report("http", run.http_violations)
    return result


async def chaos(
    minutes: float, agents_count: int, faults: Faults, seed: int, keep: bool = False
) -> int:
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
    direct_url = with_database(admin_url, name)
    proxy = FaultyProxy(direct_url)
    await proxy.start()
    database_url = proxy.url()  # what valux uses; the exchange and the checks go direct
    namespace = f"valux-chaos-{uuid.uuid4().hex[:6]}"
    settings_env = _settings_env(namespace, faults, direct_url, data_dir)
    sandbox: live.SandboxProcess | None = None
    run = Run(tokens=TOKENS)
    if faults.venue == "jupiter":
        sandbox = live.SandboxProcess(data_dir, seed=seed, drop_rate=faults.chain_drop_rate,
                                      landing_delay=faults.chain_landing_delay)  # fmt: skip
        settings_env.update(live.live_settings_env(sandbox.start()))
        run.tokens = tuple(sandbox.tokens)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    else:
        ray.init(namespace=namespace, include_dashboard=False, log_to_driver=False)
    gcs = ray.get_runtime_context().gcs_address
    settings = load_settings(
        env={**settings_env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    )
    api = ApiProcess(_env(settings_env, database_url, redis_url, gcs), data_dir)
    pool: asyncpg.Pool | None = None
    try:
        _, pool = await prepare_database(
            load_settings(env={**settings_env, "DATABASE_URL": direct_url, "REDIS_URL": redis_url})
        )
        password = await _create_admin(pool)
        await attach_or_start(settings, database_url, redis_url)
        api.start()
        async with aiohttp.ClientSession() as session:
            if not await _wait_http(session, api.url + "/health/live", 200, 120):
                print("chaos: the API did not start", file=sys.stderr)
                return 2
            session.headers["Authorization"] = f"Bearer {await _login(session, api, password)}"
            agents: list[str] = []
            operator_stop = asyncio.Event()
            side_tasks: list[asyncio.Future[Any]] = []
            if sandbox is not None:
                agents = await live.create_live_agents(
                    session, api.url, sandbox, agents_count, [STOP_CONFIG, RULES_CONFIG]
                )
                operator = live.Operator(session, api.url)
                mover = live.PriceMover(sandbox, rng)
                side_tasks.append(asyncio.ensure_future(operator.loop(operator_stop)))
            for i in range(agents_count if sandbox is None else 0):
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
            killer = Killer(run, settings, api, session, slots, rng)
            client = Client(run, api, session)
            await asyncio.gather(
                client.loop(agents, stop_at, rng),
                killer.loop(stop_at, faults.kill_every),
                _database_faults(run, proxy, stop_at, faults.db_fault_every, rng),
                *([mover.loop(session, stop_at)] if sandbox is not None else []),
            )
            await proxy.restore()
            print("chaos: load stopped; waiting for recoveries and clients", file=sys.stderr)
            await _reporting(killer.drain(), lambda: f"recovering: {sorted(run.recovering)}")
            if api.proc is None or api.proc.poll() is not None:
                api.start()
            await _reporting(client.drain(), lambda: f"signals in flight: {len(client.tasks)}")
            for signal_id, last in sorted(run.last_answer.items()):
                print(f"chaos: given up: signal {signal_id}: {last}", flush=True)
            print("chaos: checking", file=sys.stderr)
            chain_rpc = None if sandbox is None else sandbox.manifest["solana_rpc_url"]
            result = await _verdict(run, settings, pool, session, api, chain_rpc)
            if sandbox is not None:
                operator_stop.set()
                await asyncio.gather(*side_tasks, return_exceptions=True)
                run.unlocks = operator.total
                run.unlock_failures = operator.failed_unlocks
                run.price_moves = mover.moves
            fills = {
                f"{r['side']} {r['reason']}": r["n"]
                for r in await pool.fetch(
                    "SELECT side, coalesce(reason, '?') AS reason, count(*) AS n FROM trades"
                    " GROUP BY 1, 2 ORDER BY 1, 2"
                )
            }
        run.alerts = await asyncio.to_thread(_logged_alerts, data_dir)
        _print_table(run, faults, result, fills, minutes)
        for kind in run.unrecovered:
            where = f" (its output: {data_dir}/api-*.log)" if kind == "api" else ""
            print(f"chaos: not recovered: {kind}{where}", flush=True)
        print("chaos: " + " ".join(f"{check}={result[check]}" for check in checks.CHECKS))
        return 1 if any(result.values()) or run.unrecovered else 0
    finally:
        api.stop()
        if sandbox is not None:
            sandbox.stop()
        await proxy.restore()
        try:
            root = await asyncio.to_thread(ray.get_actor, ROOT, namespace=namespace)
            await asyncio.wait_for(root.shutdown.remote(), 60)
            ray.kill(root, no_restart=True)
        except Exception:
            pass
        ray.shutdown()
        if pool is not None:
            await pool.close()
        if keep:
            print(f"chaos: database kept for inspection: {direct_url}", file=sys.stderr)
        else:
            await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    defaults = Faults()
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--agents", type=int, default=24)
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every)
    parser.add_argument("--db-fault-every", type=float, default=defaults.db_fault_every)
    parser.add_argument("--venue-latency-ms", type=float, default=defaults.venue_latency_ms)
    parser.add_argument("--venue-failure-rate", type=float, default=defaults.venue_failure_rate)
    parser.add_argument("--venue-unknown-rate", type=float, default=defaults.venue_unknown_rate)
    parser.add_argument(
        "--venue",
        choices=("paper", "jupiter"),
        default="paper",
        help="jupiter: live agents on `valux sandbox` (a real SVM)",
    )
    parser.add_argument(
        "--chain-drop-rate",
        type=float,
        default=defaults.chain_drop_rate,
        help="jupiter: share of sent transactions the sandbox drops",
    )
    parser.add_argument(
        "--chain-landing-delay",
        type=int,
        default=defaults.chain_landing_delay,
        help="jupiter: slots before a sent transaction lands",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)
    faults = Faults(args.kill_every, args.db_fault_every, args.venue_latency_ms,
                    args.venue_failure_rate, args.venue_unknown_rate, args.venue,
                    args.chain_drop_rate, args.chain_landing_delay)  # fmt: skip
    sys.exit(asyncio.run(chaos(args.minutes, args.agents, faults, args.seed, args.keep)))


if __name__ == "__main__":
    main()
