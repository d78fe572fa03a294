"""Port checks with messages an operator can act on.

``ray start --head`` defaults to 6379, where Redis often listens; the API
defaults to 8080, where half of all development servers listen. When a port is
taken, valux says in ONE line which port, who is sitting on it (best effort),
which part of valux wanted it and which setting moves it::

    port 6379 on 127.0.0.1 is already in use (a Redis server is listening there);
    valux's local Ray head wanted it — set ray.dashboard_port / VALUX_RAY__DASHBOARD_PORT
    to another port, or point ray.address at an existing cluster

:func:`ensure_port_free` is a pre-flight check (the port can still be taken
between the check and the real bind, so servers should also pass their bind
error through :func:`describe_bind_error`). Identifying the occupant reads
``/proc/net/tcp{,6}`` and ``/proc/*/fd`` (Linux; processes of other users or
containers stay anonymous) and, failing that, sends a Redis ``PING``; it never
raises.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
from pathlib import Path

from valux.config.settings import env_var_for
from valux.errors import ConfigurationError, PortInUseError

__all__ = ["describe_bind_error", "ensure_port_free", "free_port", "identify_listener"]

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
_SETTING_KEY = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")

# Process names (``/proc/<pid>/comm``, at most 15 characters) we can name better.
_KNOWN_PROCESSES = {
    "redis-server": "a Redis server",
    "postgres": "a PostgreSQL server",
    "gcs_server": "a Ray cluster's GCS server (from an earlier `ray start`?)",
    "raylet": "a Ray raylet",
    "nginx": "nginx",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(
    host: str,
    port: int,
    *,
    who: str,
    setting: str,
    hint: str | None = None,
) -> None:
    """Raise :class:`PortInUseError` unless ``port`` on ``host`` can be listened on.

    ``who`` is the part of valux that wants the port ("valux's local Ray head"),
    ``setting`` the dotted setting that moves it ("ray.dashboard_port"), ``hint`` an
    optional alternative appended to the advice ("point ray.address at an
    existing cluster"). Port 0 (any free port) always passes. A host that does
    not resolve raises :class:`ConfigurationError`.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"host {host!r} does not resolve ({exc.strerror}); {who} wanted to listen "
            f"there on port {port} ({setting})"
        ) from None
    seen: set[tuple[int, str]] = set()
    for family, socktype, proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if (family, address) in seen:
            continue
        seen.add((family, address))
        with socket.socket(family, socktype, proto) as sock:
            # Servers (aiohttp, Ray) set SO_REUSEADDR; without it a port in
            # TIME_WAIT would look taken although the server could bind it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise describe_bind_error(exc, host, port, who, setting, hint=hint) from None


def describe_bind_error(
    exc: OSError,
    host: str,
    port: int,
    who: str,
    setting: str,
    *,
    hint: str | None = None,
) -> PortInUseError:
    """Turn a failed bind (``EADDRINUSE``, ``EACCES``…) into a one-line :class:`PortInUseError`.

    Use it where a server's own bind fails, e.g. around aiohttp's
    ``TCPSite.start()``; the message has the same shape as
    :func:`ensure_port_free`'s.
    """
    advice = f"set {_setting_names(setting)} to another port"
    if hint:
        advice += f", or {hint}"
    if exc.errno == errno.EADDRINUSE:
        occupant = identify_listener(host, port)
        there = f" ({occupant} is listening there)" if occupant else ""
        return PortInUseError(
            f"port {port} on {host} is already in use{there}; {who} wanted it — {advice}"
        )
    if exc.errno == errno.EACCES:
        return PortInUseError(
            f"port {port} on {host} needs privileges this process lacks (ports below 1024 "
            f"need root or CAP_NET_BIND_SERVICE); {who} wanted it — {advice}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return PortInUseError(
            f"{host} is not an address of this machine, so port {port} cannot be opened "
            f"there; {who} wanted it — check the host setting next to {setting}"
        )
    reason = exc.strerror or str(exc)
    return PortInUseError(
        f"cannot listen on {host} port {port} ({reason}); {who} wanted it — {advice}"
    )


def identify_listener(host: str, port: int) -> str | None:
    """Best-effort name of whatever listens on ``port``, or None when nothing can be found out.

    E.g. "a Redis server with pid 7", "process nginx with pid 9". Never raises.
    """
    try:
        pid = _listening_pid(port)
        if pid is not None:
            return _describe_process(pid)
        if _answers_redis_ping(host, port):
            return "a Redis server"
    except Exception:  # identification is a courtesy; never fail because of it
        return None
    return None


def _setting_names(setting: str) -> str:
    if _SETTING_KEY.match(setting):
        return f"{setting} / {env_var_for(setting)}"
    return setting


def _family(host: str) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return socket.AF_INET
    return infos[0][0] if infos else socket.AF_INET


def _listening_inodes(port: int) -> set[str]:
    """Inodes of sockets in LISTEN state on ``port``, from /proc/net/tcp and tcp6."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port and inode != "0":
                inodes.add(inode)
    return inodes


def _listening_pid(port: int) -> int | None:
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        return int(entry.name)
                except OSError:
                    continue
    return None


def _describe_process(pid: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"process {pid}"
    if pid == os.getpid():
        return f"this process ({comm}, pid {pid})"
    known = _KNOWN_PROCESSES.get(comm)
    if known is not None:
        return f"{known} with pid {pid}"
    return f"process {comm} with pid {pid}"


def _answers_redis_ping(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # +PONG, or an error that only Redis words this way (auth required).
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
