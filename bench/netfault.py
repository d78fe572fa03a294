"""A loopback TCP proxy in front of PostgreSQL that injects the two ways a network fails.

- **refusal** (:meth:`FaultyProxy.cut`): the listener closes and every open connection is
  reset, so clients fail fast with a connection error;
- **blackhole** (:meth:`FaultyProxy.blackhole`): connections stay open and new ones are
  accepted, but no byte moves in either direction, so every call hangs until the
  client's own timeout (what a partition, a dead NAT entry or a stuck server looks like).

:meth:`FaultyProxy.restore` ends either. Used by the database-outage test and the chaos
run; the proxy runs on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server (TCP or unix socket)."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        target_port = parts.port or int(parse_qs(parts.query).get("port", ["5432"])[0])
        self._unix = f"{socket_dir}/.s.PGSQL.{target_port}" if socket_dir else None
        self._target = (parts.hostname or "127.0.0.1", target_port)
        self._target_url = target_url
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    def url(self) -> str:
        """The target URL rewritten to go through the proxy (TCP on loopback)."""
        parts = urlsplit(self._target_url)
        query = "&".join(
            f"{k}={v[0]}" for k, v in parse_qs(parts.query).items() if k not in ("host", "port")
        )
        user = parts.username or "postgres"
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}", query=query))

    @property
    def state(self) -> str:
        """``ok``, ``refusing`` or ``blackhole``."""
        if self._server is None:
            return "refusing"
        return "ok" if self._flowing.is_set() else "blackhole"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse: stop accepting and reset every open connection."""
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._reset_all()

    async def blackhole(self) -> None:
        """Hang: keep every connection open (and accept new ones), move no bytes."""
        await self.restore()
        self._flowing.clear()

    async def restore(self) -> None:
        """Forward again. After a blackhole the hung connections are reset (as a real
        network's would be by then: their peers have given up on them)."""
        if not self._flowing.is_set():
            self._reset_all()
            self._flowing.set()
        if self._server is None:
            await self.start()

    def _reset_all(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._unix:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # a blackhole holds every byte here
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
