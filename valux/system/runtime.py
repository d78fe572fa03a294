"""The start and stop sequence of one valux API process.

``Runtime.start``: logging → PostgreSQL (URL or embedded) → migrations → Redis
(URL or embedded) → Ray (address, ``ray start`` cluster, or local) → attach to
the running actor system or start it → serve the API. Each step prints what
it chose. ``Runtime.stop``: drain the API (bounded), then — only if this process
started its own local Ray — stop the actor tree after final snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import ray
from aiohttp import web
from ray.exceptions import ActorUnavailableError, RayActorError

from valux.api.app import create_app
from valux.config.secrets import export_for_actors, public_settings, without_password
from valux.config.settings import Settings
from valux.errors import Unavailable
from valux.hosting.handles import clear_cache
from valux.hosting.naming import ROOT
from valux.observability.logging import configure_logging
from valux.ops.embedded import resolve_database_url, resolve_redis_url, stop_embedded
from valux.ops.ports import describe_bind_error, ensure_port_free
from valux.persistence.bounded_pool import create_bounded_pool
from valux.persistence.journal import DATABASE_DOWN
from valux.persistence.migrations import apply_migrations
from valux.persistence.starts import RECORD_BOOT
from valux.supervisors import factory
from valux.system.backend import RayBackend
from valux.system.ray_connect import RayConnection, connect, use_cluster_token

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


_DATABASE_WAIT_S = 120.0  # how long start-up waits for an unreachable PostgreSQL


async def prepare_database(
    settings: Settings, say: Say = _quiet, *, command_timeout_s: float | None = None
) -> tuple[str, asyncpg.Pool]:
    """Resolve PostgreSQL, apply pending migrations, return (url, pool).

    With ``command_timeout_s`` (the API's pool) every call of the pool — its query, a new
    connection, the wait for a free one — is bounded by it, so a hung database answers
    503 instead of holding requests (:mod:`valux.persistence.bounded_pool`). Migrations
    run first on a connection of their own, without that bound (one may rewrite a large
    table). A database unreachable at start is waited for up to two minutes."""
    url, description = await asyncio.to_thread(resolve_database_url, settings)
    say(f"database: {description}")
    deadline = time.monotonic() + _DATABASE_WAIT_S
    while True:  # a database that is briefly unreachable (restarting, a network blip)
        try:
            return url, await _migrate_and_open_pool(url, settings, command_timeout_s, say)
        except DATABASE_DOWN as exc:
            if time.monotonic() > deadline:
                raise
            say(f"PostgreSQL unreachable ({type(exc).__name__}: {exc}); retrying")
            await asyncio.sleep(1.0)


async def _migrate_and_open_pool(
    url: str, settings: Settings, command_timeout_s: float | None, say: Say
) -> asyncpg.Pool:
    database = settings.database
    conn = await asyncpg.connect(url, timeout=database.connect_timeout_s)
    try:
        applied = await apply_migrations(conn)
    finally:
        with contextlib.suppress(*DATABASE_DOWN):  # (a close that fails aborts the socket)
            await conn.close(timeout=database.connect_timeout_s)
    if applied:
        say(f"migrations applied: {', '.join(applied)}")
    if command_timeout_s is None:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=database.pool_min_size,
            max_size=database.pool_max_size,
            timeout=database.connect_timeout_s,
        )
        return pool
    return await create_bounded_pool(
        url,
        bound_s=command_timeout_s,
        min_size=database.pool_min_size,
        max_size=database.pool_max_size,
        connect_timeout_s=database.connect_timeout_s,
    )


async def attach_or_start(
    settings: Settings, database_url: str, redis_url: str | None, say: Say = _quiet
) -> tuple[Any, bool]:
    """The root supervisor's handle, and whether this call started the system."""
    ns = settings.ray.namespace
    try:
        root = await asyncio.to_thread(ray.get_actor, ROOT, namespace=ns)
        started = False
    except ValueError:
        await _record_boot(database_url)  # restarts are counted from here on
        # Constructor arguments are kept by Ray and shown by its tools: no password in
        # them. The actors read theirs from their environment (valux.config.secrets).
        root = factory.spawn(
            "root",
            ROOT,
            ns,
            public_settings(settings),
            without_password(database_url),
            without_password(redis_url),
            placement=settings.placement,
        )
        started = True
    began = time.perf_counter()
    info = await _ping_root(root, settings, say)  # returns once the whole tree has recovered
    verb = "started" if started else "attached to"
    say(
        f"{verb} the valux actor system in namespace {ns!r}"
        + (f" in {time.perf_counter() - began:.1f}s" if started else "")
    )
    del info
    return root, started


async def _ping_root(root: Any, settings: Settings, say: Say) -> Any:
    """The root's ping, waiting out a root that is restarting right now (Ray restarts it;
    an API started at that moment must attach, not exit)."""
    deadline = time.monotonic() + max(120.0, settings.api.actor_retry_s)
    while True:
        try:
            return await root.ping.remote()
        except (RayActorError, ActorUnavailableError) as exc:
            if time.monotonic() > deadline:
                raise
            say(f"the root supervisor is restarting ({type(exc).__name__}); waiting")
            await asyncio.sleep(1.0)


async def _record_boot(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(RECORD_BOOT)
    finally:
        await conn.close()


class Runtime:
    """One API process attached to the actor system."""

    def __init__(self, settings: Settings, *, say: Say = _quiet) -> None:
        self.settings = settings
        self.say = say
        self.connection: RayConnection | None = None
        self.pool: asyncpg.Pool | None = None
        self.runner: web.AppRunner | None = None
        self.root: Any = None
        self.port: int | None = None
        self.database_url = ""
        self.redis_url: str | None = None

    async def start(self) -> None:
        s = self.settings
        configure_logging(s.logging.level, s.logging.format, process="api")
        # Fail in a second, not after Ray and the actors have started.
        ensure_port_free(s.api.host, s.api.port, who="the valux HTTP API", setting="api.port")
        self.database_url, self.pool = await prepare_database(
            s, self.say, command_timeout_s=s.database.api_command_timeout_s
        )
        self.redis_url, redis_description = await asyncio.to_thread(resolve_redis_url, s)
        self.say(f"redis: {redis_description}")
        # a local Ray instance's workers inherit these (no secret travels through Ray)
        export_for_actors(self.database_url, self.redis_url, s.jupiter.api_key)
        if not ray.is_initialized():
            self.connection, warnings = connect(s)  # main thread: blocking is fine at start
            for warning in warnings:
                self.say(f"warning: {warning}")
            self.say(f"ray: {self.connection.description}")
        else:
            self.say("ray: already connected in this process")
        clear_cache()
        self.root, _ = await attach_or_start(s, self.database_url, self.redis_url, self.say)
        backend = RayBackend(s, self.pool)
        app = create_app(backend, redis_url=self.redis_url, max_body_bytes=s.api.max_body_bytes)
        self.runner = web.AppRunner(
            app, shutdown_timeout=s.api.shutdown_timeout_s, handle_signals=False, access_log=None
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, s.api.host, s.api.port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise describe_bind_error(
                exc, s.api.host, s.api.port, who="the valux HTTP API", setting="api.port"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else s.api.port

    @property
    def owns_cluster(self) -> bool:
        return self.connection is not None and self.connection.owns_cluster

    async def stop(self) -> dict[str, Any]:
        """Drain the API; stop the actors only if we own the local Ray instance."""
        report: dict[str, Any] = {}
        timeout = self.settings.supervision.step_timeout_s
        if self.runner is not None:
            try:
                await asyncio.wait_for(
                    self.runner.cleanup(), self.settings.api.shutdown_timeout_s + 2
                )
                report["api"] = "drained"
            except TimeoutError:
                report["api"] = "drain timed out; closed"
                self.say("warning: the API did not drain in time; closing connections")
        if self.owns_cluster and self.root is not None:
            self.say("stopping the actor system (local Ray instance): final snapshots")
            try:
                report["actors"] = await asyncio.wait_for(self.root.shutdown.remote(), timeout * 4)
            except Exception as exc:
                report["actors"] = f"skipped: {type(exc).__name__}: {exc}"
                self.say(f"warning: actor shutdown step skipped: {exc}")
            ray.kill(self.root, no_restart=True)
        elif self.root is not None:
            self.say("trading actors keep running on the cluster (`valux stop` stops them)")
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), timeout)
            except TimeoutError:
                self.pool.terminate()
        if self.owns_cluster:
            await asyncio.to_thread(ray.shutdown)
            # Everything ran on this box and stops with it; attached to a cluster, the
            # actors still use the embedded servers, so they keep running.
            await asyncio.to_thread(stop_embedded, self.settings)
        self.say("stopped")
        return report


def _connect_existing(settings: Settings) -> None:
    from valux.system.ray_connect import running_cluster_address

    if ray.is_initialized():
        return
    address = settings.ray.address or running_cluster_address()[0]
    if not address:
        raise Unavailable(
            "no running Ray cluster found (set RAY_ADDRESS or --address); "
            "a valux started with its own local Ray stops with Ctrl-C instead"
        )
    use_cluster_token()
    ray.init(address=address, namespace=settings.ray.namespace, log_to_driver=False)


async def _root(settings: Settings) -> Any:
    _connect_existing(settings)  # main thread, before anything else runs
    try:
        return await asyncio.to_thread(ray.get_actor, ROOT, namespace=settings.ray.namespace)
    except ValueError:
        raise Unavailable(
            f"no valux actor system runs in namespace {settings.ray.namespace!r}"
        ) from None


async def stop_cluster(settings: Settings, say: Say = _quiet) -> dict[str, Any]:
    """``valux stop``: orderly shutdown of the actor system on the cluster."""
    root = await _root(settings)
    say("stopping the actor system: no new entries, final snapshots")
    report: dict[str, Any] = await asyncio.wait_for(
        root.shutdown.remote(), settings.supervision.step_timeout_s * 6
    )
    ray.kill(root, no_restart=True)
    left = await _wait_until_gone(settings.ray.namespace, settings.supervision.step_timeout_s)
    if left:
        report["still_listed"] = left
        say(f"warning: still listed by Ray after the shutdown: {', '.join(left)}")
    else:
        say("actor system stopped")
    return report


async def _wait_until_gone(namespace: str, timeout_s: float) -> list[str]:
    """Wait until Ray lists no named actor of ``namespace`` (a killed actor leaves Ray's
    table a moment after the kill); the names still listed when ``timeout_s`` ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        left = sorted(a["name"] for a in listed if a["namespace"] == namespace)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


async def cluster_status(settings: Settings) -> dict[str, Any]:
    root = await _root(settings)
    tree: dict[str, Any] = await root.tree.remote()
    return tree
