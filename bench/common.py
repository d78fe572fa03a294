"""Shared plumbing of the benchmarks: environment, valux start-up, statistics, results.

- :class:`BenchEnv`: the PostgreSQL admin URL and Redis URL (``DATABASE_URL`` /
  ``REDIS_URL``, else the embedded servers of :mod:`valux.ops.embedded`), a data
  directory and the Ray namespace prefix of this run.
- :func:`valux_system`: a whole valux system (root supervisor, hosts,
  evaluators, manual feed, HTTP API on a free port) in a namespace of its own
  and a fresh database ``valux_bench_*``; torn down and dropped afterwards.
- :class:`Row` / :class:`BenchResult`: what a benchmark measured — scalar values
  or distributions (n, p50, p99, max, mean) — with its targets, judged met or
  missed; a benchmark never asserts a time.
- Machine and version facts, the console table, and the results files
  ``bench/results/latest.json`` (merged per benchmark) and ``latest.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import ray

from valux.ops.scratch_db import scratch_database

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# --------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in [0, 1])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def distribution(values: Iterable[float]) -> dict[str, float]:
    """n, p50, p90, p99, max, min and mean of ``values``."""
    data = sorted(values)
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "p50": percentile(data, 0.50),
        "p90": percentile(data, 0.90),
        "p99": percentile(data, 0.99),
        "max": data[-1],
        "min": data[0],
        "mean": sum(data) / len(data),
    }


def ms(seconds: Iterable[float]) -> list[float]:
    return [s * 1000.0 for s in seconds]


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Prometheus-style quantile of cumulative ``(upper bound, count)`` buckets."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower


# ------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Target:
    """A target on one statistic of a row: ``stat op bound`` (e.g. p99 ≤ 15 ms)."""

    stat: str  # "value" or a key of the row's distribution
    op: str  # "<=" or ">="
    bound: float

    def met(self, row: Row) -> bool | None:
        actual = row.value if self.stat == "value" else (row.stats or {}).get(self.stat)
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return None
        return bool(actual <= self.bound if self.op == "<=" else actual >= self.bound)

    def text(self, unit: str) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        name = "" if self.stat == "value" else f"{self.stat} "
        return f"{name}{sign} {fmt(self.bound)} {unit}".strip()


@dataclass
class Row:
    """One measured quantity: a scalar ``value`` or a distribution ``stats``."""

    metric: str
    unit: str
    value: float | None = None
    stats: dict[str, float] | None = None
    targets: list[Target] = field(default_factory=list)
    note: str = ""

    def verdict(self) -> bool | None:
        """True when every target is met, False when one is missed, None without targets."""
        results = [t.met(self) for t in self.targets]
        if not results:
            return None
        if any(r is False for r in results):
            return False
        return None if any(r is None for r in results) else True

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = [
            {**asdict(t), "text": t.text(self.unit), "met": t.met(self)} for t in self.targets
        ]
        out["met"] = self.verdict()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        targets = [Target(t["stat"], t["op"], t["bound"]) for t in data.get("targets", [])]
        return cls(
            metric=data["metric"],
            unit=data["unit"],
            value=data.get("value"),
            stats=data.get("stats"),
            targets=targets,
            note=data.get("note", ""),
        )


@dataclass
class BenchResult:
    """Everything one run of one benchmark produced."""

    name: str
    title: str
    quick: bool
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: str = ""
    duration_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def verdict(self) -> bool | None:
        verdicts = [r.verdict() for r in self.rows]
        if any(v is False for v in verdicts):
            return False
        return True if any(v is True for v in verdicts) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "quick": self.quick,
            "params": self.params,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "rows": [r.to_json() for r in self.rows],
            "met": self.verdict(),
            "notes": self.notes,
            "environment": self.environment,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        return cls(
            name=data["name"],
            title=data.get("title", ""),
            quick=bool(data.get("quick")),
            params=data.get("params", {}),
            rows=[Row.from_json(r) for r in data.get("rows", [])],
            notes=list(data.get("notes", [])),
            started_at=data.get("started_at", ""),
            duration_s=float(data.get("duration_s", 0.0)),
            environment=data.get("environment", {}),
            details=data.get("details", {}),
        )


def fmt(x: Any) -> str:
    """Numbers for tables: 3 significant decimals below 10, thousands separators above."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.1f}"
        if abs(x) >= 10:
            return f"{x:.2f}"
        return f"{x:.3g}" if abs(x) < 0.01 and x != 0 else f"{x:.3f}"
    return str(x)


def _status(row: Row) -> str:
    verdict = row.verdict()
    if verdict is None:
        return "" if not row.targets else "n/a"
    return "met" if verdict else "MISSED"


_COLUMNS = ("metric", "n", "p50", "p99", "max", "value", "unit", "target", "result")


def _cells(row: Row) -> list[str]:
    stats = row.stats or {}
    n = stats.get("n")
    return [
        row.metric,
        fmt(int(n)) if n is not None else "",
        fmt(stats.get("p50")),
        fmt(stats.get("p99")),
        fmt(stats.get("max")),
        fmt(row.value),
        row.unit,
        ", ".join(t.text(row.unit) for t in row.targets),
        _status(row),
    ]


def render_table(result: BenchResult) -> str:
    """The console table of one result (with its notes)."""
    rows = [list(_COLUMNS), *(_cells(r) for r in result.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = [
        f"== {result.name}{' (quick)' if result.quick else ''}: {result.title}"
        f"  [{result.duration_s:.1f}s]"
    ]
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j in (0, 6, 7) else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend(f"   note: {n}" for n in result.notes)
    return "\n".join(lines)


def render_environment(env: dict[str, Any]) -> str:
    machine = env.get("machine", {})
    versions = env.get("versions", {})
    return (
        f"machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('ram_gb', '?')} GB RAM, {machine.get('os', '?')}\n"
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
    )


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown summary of a whole results document (for the README)."""
    lines = ["# valux benchmarks", ""]
    env = doc.get("environment", {})
    if env:
        machine = env.get("machine", {})
        versions = env.get("versions", {})
        lines += [
            f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('ram_gb', '?')} GB RAM ({machine.get('os', '?')}).  ",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".  ",
            f"Updated: {doc.get('updated', '?')}. Reproduce: `python -m bench` "
            "(`python -m bench NAME` for one, `--quick` for the smoke).",
            "",
        ]
    lines += [
        "| benchmark | metric | n | p50 | p99 | max | value | unit | target | result |",
        "|---|---|--:|--:|--:|--:|--:|---|---|---|",
    ]
    benchmarks = doc.get("benchmarks", {})
    for name in sorted(benchmarks, key=_order):
        result = BenchResult.from_json(benchmarks[name])
        label = name + (" (quick)" if result.quick else "")
        for row in result.rows:
            cells = _cells(row)
            status = cells[-1]
            cells[-1] = "**MISSED**" if status == "MISSED" else status
            lines.append("| " + " | ".join([label, *cells]).replace("\n", " ") + " |")
    lines.append("")
    for name in sorted(benchmarks, key=_order):
        notes = benchmarks[name].get("notes") or []
        if notes:
            lines.append(f"**{name}**: " + " ".join(notes))
            lines.append("")
    return "\n".join(lines)


ORDER = (
    "signal_latency",
    "fanout",
    "evaluator",
    "tick_to_exit",
    "nautilus",
    "scale",
    "journal",
    "recovery",
    "api_load",
)


def _order(name: str) -> tuple[int, str]:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def write_results(results: Sequence[BenchResult], directory: Path = RESULTS_DIR) -> Path:
    """Merge ``results`` into ``latest.json`` (per benchmark) and rewrite ``latest.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "latest.json"
    doc: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        doc = {}
    benchmarks = doc.setdefault("benchmarks", {})
    for result in results:
        benchmarks[result.name] = result.to_json()
        if result.environment:
            doc["environment"] = result.environment
    doc["updated"] = now_iso()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    (directory / "latest.md").write_text(render_markdown(doc))
    return path


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# -------------------------------------------------------------------- environment


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(terse=True),
    }


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "valux"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("ray", "numpy", "aiohttp", "asyncpg", "nautilus_trader"):
        v = _version(name)
        if v is not None:
            versions[name] = v
    versions["valux"] = f"{_version('valux') or '?'} ({_git_commit()})"
    return versions


@dataclass
class BenchEnv:
    """Where the benchmarks find PostgreSQL, Redis and Ray (see the module docstring)."""

    admin_url: str
    redis_url: str
    data_dir: Path
    namespace: str
    server_versions: dict[str, str] = field(default_factory=dict)
    _embedded: list[Any] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def from_environment(cls) -> BenchEnv:
        """``DATABASE_URL`` / ``REDIS_URL`` when set, else embedded servers in a temp dir."""
        tmp = tempfile.TemporaryDirectory(prefix="valux-bench-")
        data_dir = Path(tmp.name)
        embedded: list[Any] = []
        pg = os.environ.get("DATABASE_URL")
        rd = os.environ.get("REDIS_URL")
        if not pg or not rd:
            from valux.ops.embedded import EmbeddedPostgres, EmbeddedRedis

            if not pg:
                server = EmbeddedPostgres(data_dir)
                pg = server.start()
                embedded.append(server)
            if not rd:
                redis_server = EmbeddedRedis(data_dir)
                rd = redis_server.start()
                embedded.append(redis_server)
        env = cls(pg, rd, data_dir, f"valux-bench-{uuid.uuid4().hex[:6]}", _tmp=tmp)
        env._embedded = embedded
        return env

    async def probe_servers(self) -> dict[str, str]:
        """PostgreSQL and Redis server versions and durability settings (once)."""
        if self.server_versions:
            return self.server_versions
        conn = await asyncpg.connect(self.admin_url)
        try:
            self.server_versions["postgres"] = str(await conn.fetchval("SHOW server_version"))
            self.server_versions["pg_fsync"] = str(await conn.fetchval("SHOW fsync"))
            self.server_versions["pg_synchronous_commit"] = str(
                await conn.fetchval("SHOW synchronous_commit")
            )
        finally:
            await conn.close()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            info = await client.info("server")
            self.server_versions["redis"] = str(info.get("redis_version", "?"))
        finally:
            await client.aclose()
        return self.server_versions

    async def environment(self) -> dict[str, Any]:
        versions = package_versions()
        with contextlib.suppress(Exception):
            versions.update(await self.probe_servers())
        return {"machine": machine_info(), "versions": versions}

    def close(self) -> None:
        for server in reversed(self._embedded):
            with contextlib.suppress(Exception):
                server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def ensure_ray(env: BenchEnv) -> None:
    """A local Ray instance for this process (callers hold the machine-wide Ray lock)."""
    if not ray.is_initialized():
        ray.init(namespace=env.namespace, include_dashboard=False, log_to_driver=False)


# ----------------------------------------------------------------------- databases


def fresh_database(admin_url: str, label: str) -> contextlib.AbstractAsyncContextManager[str]:
    """A new, empty database ``valux_bench_<label>_<hex>``; dropped afterwards."""
    return scratch_database(admin_url, f"valux_bench_{label}")


# ----------------------------------------------------------------- valux systems


@dataclass
class System:
    """A running valux system and an HTTP session on its API."""

    runtime: Any
    settings: Any
    database_url: str
    namespace: str
    http: aiohttp.ClientSession
    api_key: str = ""
    """An admin API key (every scope) the HTTP session sends as ``X-API-Key``."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.runtime.port}"

    async def request(
        self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)
    ) -> Any:
        async with self.http.request(method, self.base + path, json=body) as resp:
            data = await resp.json(content_type=None)
            allowed = (expect,) if isinstance(expect, int) else expect
            if resp.status not in allowed:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data}")
            return data

    async def ticks(self, ticks: Sequence[tuple[str, float]], ts: float | None = None) -> None:
        stamp = time.time() if ts is None else ts
        body = {"ticks": [{"token": t, "price": p, "ts": stamp} for t, p in ticks]}
        await self.request("POST", "/api/v1/feeds/manual/ticks", body, expect=202)

    async def create_agents(
        self,
        count: int,
        *,
        config: dict[str, Any] | None = None,
        balance: str = "1000",
        concurrency: int = 32,
        prefix: str = "bench",
    ) -> list[str]:
        """``count`` agents through ``POST /api/v1/agents`` (``concurrency`` at a time)."""
        gate = asyncio.Semaphore(concurrency)
        ids = [f"{prefix}-{i:05d}-{uuid.uuid4().hex[:6]}" for i in range(count)]

        async def one(agent_id: str) -> None:
            body: dict[str, Any] = {"name": agent_id, "balance": balance, "id": agent_id}
            if config is not None:
                body["config"] = config
            async with gate:
                await self.request("POST", "/api/v1/agents", body, expect=201)

        # sequential numbering keeps host slots filled in order; creation itself is concurrent
        await asyncio.gather(*(one(a) for a in ids))
        return ids

    def backend(self) -> Any:
        """The API's :class:`~valux.system.backend.RayBackend` over this system, in-process."""
        from valux.system.backend import RayBackend

        return RayBackend(self.settings, self.runtime.pool)

    async def handle(self, name: str) -> Any:
        from valux.hosting.handles import actor_handle

        return await actor_handle(name, self.namespace)

    async def ready(self, within: float = 60.0) -> float:
        """Seconds until ``GET /health/ready`` answers 200."""
        started = time.perf_counter()
        while True:
            async with self.http.get(self.base + "/health/ready") as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
                last = await resp.text()
            if time.perf_counter() - started > within:
                raise RuntimeError(f"not ready within {within}s: {last}")
            await asyncio.sleep(0.05)

    async def metrics_text(self) -> str:
        async with self.http.get(self.base + "/metrics") as resp:
            return await resp.text()


def bench_settings(env: BenchEnv, database_url: str, namespace: str, **overrides: Any) -> Any:
    from valux.config.settings import load_settings

    base: dict[str, Any] = {
        "database.url": database_url,
        "redis.url": env.redis_url,
        "ray.namespace": namespace,
        "api.port": 0,
        "data_dir": env.data_dir,
        "feeds.simulated.enabled": False,
        "feeds.manual.enabled": True,
        "logging.level": "warning",
    }
    base.update(overrides)
    return load_settings(env={}, overrides=base)


def namespace_actors(namespace: str, *, alive_only: bool = True) -> list[dict[str, Any]]:
    """Name, class, pid and state of the actors of ``namespace`` (from Ray's GCS actor table).

    Works without the Ray dashboard (the state API needs it): reads the GCS
    table through Ray's global state accessor.
    """
    from ray._private import state as ray_state
    from ray.core.generated import gcs_pb2

    accessor = ray_state.state._connect_and_get_accessor()
    out = []
    for blob in accessor.get_actor_table(None, "ALIVE" if alive_only else None):
        data = gcs_pb2.ActorTableData.FromString(blob)
        if data.ray_namespace != namespace:
            continue
        out.append(
            {
                "name": data.name,
                "class": data.class_name,
                "pid": data.pid,
                "state": gcs_pb2.ActorTableData.ActorState.Name(data.state),
                "restarts": data.num_restarts,
            }
        )
    return out


def actor_pid(namespace: str, name: str) -> int:
    for actor in namespace_actors(namespace):
        if actor["name"] == name and actor["pid"]:
            return int(actor["pid"])
    raise LookupError(f"no live actor {name!r} in namespace {namespace!r}")


def kill_namespace(namespace: str) -> int:
    """Kill every named actor of ``namespace`` for good (no restart, no final snapshot)."""
    killed = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != namespace:
            continue
        with contextlib.suppress(Exception):
            ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
            killed += 1
    return killed


async def start_runtime(settings: Any) -> Any:
    from valux.hosting.handles import clear_cache
    from valux.system.runtime import Runtime

    clear_cache()
    runtime = Runtime(settings)
    await runtime.start()
    return runtime


async def admin_key(system: System) -> str:
    """An API key of the admin the system's first start created (benchmarks drive the API
    as that admin; the key does not expire during a run)."""
    from valux.api.app import bootstrap_credentials
    from valux.api.testing import admin_api_key

    credentials = bootstrap_credentials(system.runtime.runner.app)
    if credentials is None:
        raise RuntimeError("the system's first start created no admin to benchmark as")
    email, password = credentials
    return await admin_api_key(system.base, email, password)


async def stop_runtime(runtime: Any, namespace: str) -> None:
    """Drain the API, then kill the namespace's actors (the database is dropped after)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(runtime.stop(), 30)
    await asyncio.to_thread(kill_namespace, namespace)


@contextlib.asynccontextmanager
async def valux_system(env: BenchEnv, label: str, **overrides: Any) -> AsyncIterator[System]:
    """A fresh valux system in its own namespace and database (module docstring)."""
    ensure_ray(env)
    namespace = f"{env.namespace}-{label}-{uuid.uuid4().hex[:4]}"
    async with fresh_database(env.admin_url, label) as database_url:
        settings = bench_settings(env, database_url, namespace, **overrides)
        system = System(await start_runtime(settings), settings, database_url, namespace, None)  # type: ignore[arg-type]
        try:
            system.api_key = await admin_key(system)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), headers={"X-API-Key": system.api_key}
            ) as http:
                system.http = http
                yield system
        finally:
            await stop_runtime(system.runtime, namespace)  # the runtime may have been replaced


def process_rss(pids: Iterable[int]) -> dict[str, int]:
    """Summed RSS and USS (bytes) of ``pids`` (processes that vanished are skipped)."""
    rss = uss = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            rss += proc.memory_info().rss
            with contextlib.suppress(psutil.AccessDenied):
                uss += proc.memory_full_info().uss
        except psutil.NoSuchProcess:
            continue
    return {"rss": rss, "uss": uss}


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ---------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its sizes and its entry point ``run(env, result, **params)``.

    ``run`` fills ``result`` (rows, notes, details); the suite stamps name,
    parameters, timing and environment. ``quick`` sizes make the seconds-long
    smoke, ``full`` the real measurement.
    """

    name: str
    title: str
    needs_ray: bool
    quick: dict[str, Any]
    full: dict[str, Any]
    run: Any  # async (BenchEnv, BenchResult, **params) -> None

    async def measure(
        self, env: BenchEnv, *, quick: bool, overrides: dict[str, Any] | None = None
    ) -> BenchResult:
        params = {**(self.quick if quick else self.full), **(overrides or {})}
        result = BenchResult(self.name, self.title, quick, params, started_at=now_iso())
        if self.needs_ray:
            ensure_ray(env)
        started = time.perf_counter()
        await self.run(env, result, **params)
        result.duration_s = time.perf_counter() - started
        result.environment = await env.environment()
        return result
