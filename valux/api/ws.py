"""WebSocket fan-out: one Redis subscriber per API process, many clients.

Actors publish JSON to three Redis pub/sub channels (``{prefix}`` is ``valux``
unless configured)::

    valux:prices     {"ticks": [{"token": str, "price": float, "ts": float}, ...], ...}
    valux:positions  {"agent_id": str, "token": str, "position_id": str, ...}
    valux:trades     {"agent_id": str, "token": str, "trade_id": str, ...}

The :class:`WsHub` subscribes once and forwards each message to every client
whose filter matches, as ``{"type": "prices"|"position"|"trade", **body}`` (the
envelope's ``type`` wins over a ``type`` key in the body, so actors should not
use that key).

A client filters with ``{"op": "subscribe", "agents"?, "tokens"?, "types"?}``
(a missing list means all; each subscribe replaces the previous filter):

- ``types`` selects event kinds;
- ``tokens`` filters positions/trades by ``token`` and cuts a prices batch down
  to the subscribed tokens (a batch left empty is not sent);
- ``agents`` filters positions/trades by ``agent_id``; it does not apply to
  prices, which belong to no agent.

Ownership: a client is authenticated at the handshake (``Authorization:
Bearer``, an API key, or — browsers cannot set headers — the subprotocol
``bearer.<access token>`` offered next to ``valux``) and receives position and
trade events of its own user's agents only, whatever its filter says; prices
belong to no one and go to everyone. The hub learns an agent's owner from the
backend the first time it sees the agent (events of that agent wait, in order,
for the answer) and keeps it: an agent never changes owner.

Back-pressure: each client has a bounded send queue drained by its own sender
task. When a message does not fit, the client is disconnected with close code
1008 and a reason, so one slow reader never delays the others or grows memory;
a single send that blocks longer than ``send_timeout`` does the same. Redis
being down never breaks the API: the subscriber retries with capped
exponential backoff and :meth:`WsHub.status` reports ``redis_connected``.
On shutdown every client gets a 1001 close frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from valux.api.http import dumps, field_errors
from valux.api.keys import PRINCIPAL
from valux.api.models import SubscribeIn
from valux.api.routes import Reply, Route

log = structlog.get_logger("valux.api.ws")

CHANNEL_KINDS: Final = {"prices": "prices", "positions": "position", "trades": "trade"}
"""Channel suffix → event ``type``."""


def channel(kind: str, prefix: str = "valux") -> str:
    """The Redis channel an actor publishes ``kind`` events to (``prices``, ``position``,
    ``trade``): ``valux:prices``, ``valux:positions``, ``valux:trades``."""
    for suffix, k in CHANNEL_KINDS.items():
        if k == kind:
            return f"{prefix}:{suffix}"
    raise ValueError(
        f"unknown event kind {kind!r}; expected one of {sorted(CHANNEL_KINDS.values())}"
    )


SUBPROTOCOL: Final = "valux"
"""The subprotocol the server selects; a browser offers it with ``bearer.<token>``."""
OWNER_LOOKUP_TIMEOUT_S: Final = 5.0
MAX_PENDING_PER_AGENT: Final = 1000
CLOSE_TOO_SLOW: Final = int(WSCloseCode.POLICY_VIOLATION)  # 1008
CLOSE_GOING_AWAY: Final = int(WSCloseCode.GOING_AWAY)  # 1001
MAX_CLIENT_MESSAGE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Subscription:
    """A client's filter; ``None`` means "everything" for that dimension."""

    agents: frozenset[str] | None = None
    tokens: frozenset[str] | None = None
    types: frozenset[str] | None = None

    def as_dict(self) -> dict[str, list[str] | None]:
        return {
            "agents": None if self.agents is None else sorted(self.agents),
            "tokens": None if self.tokens is None else sorted(self.tokens),
            "types": None if self.types is None else sorted(self.types),
        }


def _frozen(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


class WsClient:
    """One connected WebSocket: its filter, bounded queue and sender task."""

    def __init__(
        self,
        hub: WsHub,
        ws: web.WebSocketResponse,
        client_id: int,
        transport: asyncio.Transport | None = None,
        owner: str | None = None,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.transport = transport
        self.owner = owner
        """The user whose agents' events this client may receive (None: unauthenticated
        hub tests; such a client gets no agent event while the hub knows owners)."""
        self.id = client_id
        self.subscription = Subscription()
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=hub.queue_size)
        self.closing = False
        self._sender = asyncio.create_task(self._send_loop(), name=f"ws-sender-{client_id}")
        self._closer: asyncio.Task[None] | None = None

    def offer(self, text: str) -> bool:
        """Queue ``text`` for sending; ``False`` when the queue is full."""
        if self.closing:
            return True
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def _send_loop(self) -> None:
        while True:
            text = await self.queue.get()
            try:
                async with asyncio.timeout(self.hub.send_timeout):
                    await self.ws.send_str(text)
                self.hub.counters["messages_sent"] += 1
            except TimeoutError:
                self.hub.drop_slow(self, f"a send took longer than {self.hub.send_timeout:g}s")
                return
            except (ConnectionError, RuntimeError):
                return  # the socket is closing; the reader will notice

    def handle_text(self, text: str) -> None:
        """Apply one client message (a subscribe op) and queue the answer."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            self.send_error(f"malformed JSON: {exc.msg} at char {exc.pos}")
            return
        try:
            sub = SubscribeIn.model_validate(data)
        except ValidationError as exc:
            errors = field_errors(exc)
            self.send_error(
                "invalid message; expected "
                '{"op": "subscribe", "agents"?: [...], "tokens"?: [...], "types"?: [...]}',
                errors=[e.as_dict() for e in errors],
            )
            return
        self.subscription = Subscription(
            agents=_frozen(sub.agents),
            tokens=_frozen(sub.tokens),
            types=_frozen(list(sub.types) if sub.types is not None else None),
        )
        self.send_control({"type": "subscribed", **self.subscription.as_dict()})

    def send_error(self, message: str, *, errors: list[dict[str, str]] | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "message": message}
        if errors:
            body["errors"] = errors
        self.send_control(body)

    def send_control(self, body: dict[str, Any]) -> None:
        if not self.offer(dumps(body)):
            self.hub.drop_slow(self, "send queue full")

    def close_soon(self, code: int, reason: str) -> None:
        """Stop sending and close with ``code`` in the background (idempotent)."""
        if self.closing:
            return
        self.closing = True
        self._sender.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name=f"ws-close-{self.id}")
        self.hub.track(self._closer)

    async def close(self, code: int, reason: str) -> None:
        """Stop sending and close with ``code``; waits for the close handshake."""
        self.close_soon(code, reason)
        if self._closer is not None:
            await asyncio.shield(self._closer)

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self.hub.close_timeout):
                await self.ws.close(code=code, message=reason.encode()[:123])
        except Exception:  # a peer that never reads cannot take a close frame either
            if self.transport is not None:
                self.transport.abort()

    async def stop_sender(self) -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender


class WsHub:
    """Subscribes to the event channels once and fans messages out to clients.

    Lifecycle: :meth:`start` and :meth:`stop` run in the app's ``cleanup_ctx``
    (the Redis subscriber task); :meth:`close_all` runs in ``on_shutdown``, before
    aiohttp waits for handlers, so every socket gets its 1001 close frame.
    """

    def __init__(
        self,
        redis_url: str | None,
        *,
        channel_prefix: str = "valux",
        queue_size: int = 256,
        send_timeout: float = 5.0,
        close_timeout: float = 2.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        health_check_interval: float = 15.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be ≥ 1")
        self.redis_url = redis_url
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.health_check_interval = health_check_interval
        self.channels: dict[str, str] = {
            f"{channel_prefix}:{suffix}": kind for suffix, kind in CHANNEL_KINDS.items()
        }
        self.clients: dict[int, WsClient] = {}
        self.owner_of: Callable[[str], Awaitable[str | None]] | None = None
        """How to learn an agent's owner (the backend's ``agent_owner``); None: events go
        only to clients without an owner (hub tests)."""
        self._owners: dict[str, str | None] = {}
        self._pending: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.redis_connected = False
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.counters: dict[str, int] = {
            "clients_total": 0,
            "messages_received": 0,
            "messages_sent": 0,
            "messages_dropped": 0,
            "messages_invalid": 0,
            "clients_disconnected_slow": 0,
            "redis_connects": 0,
            "owner_lookups": 0,
            "owner_lookup_failures": 0,
        }

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the subscriber task (no-op without a Redis URL)."""
        if self.redis_url is not None and self._task is None:
            self._task = asyncio.create_task(self._subscribe_forever(), name="ws-hub-redis")

    async def stop(self) -> None:
        """Stop the subscriber and drop any client still registered."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.close_all()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a reference to a background close until it finishes (awaited by :meth:`stop`)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        """Refuse new clients and close every open one with ``code``."""
        self._closing = True
        clients = list(self.clients.values())
        if clients:
            await asyncio.gather(*(c.close(code, reason) for c in clients))

    # ------------------------------------------------------------------ clients
    def register(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
        owner: str | None = None,
    ) -> WsClient:
        """Track a prepared WebSocket of ``owner``; ``transport`` is aborted if a close cannot
        complete."""
        client = WsClient(self, ws, next(self._ids), transport, owner)
        self.clients[client.id] = client
        self.counters["clients_total"] += 1
        if self._closing:
            client.close_soon(CLOSE_GOING_AWAY, "server shutting down")
        return client

    async def unregister(self, client: WsClient) -> None:
        self.clients.pop(client.id, None)
        await client.stop_sender()

    def drop_slow(self, client: WsClient, why: str) -> None:
        """Disconnect a client that fell behind (1008) so it cannot slow the others."""
        if client.closing:
            return
        self.counters["clients_disconnected_slow"] += 1
        self.clients.pop(client.id, None)
        log.warning("ws_client_too_slow", client=client.id, why=why)
        client.close_soon(CLOSE_TOO_SLOW, f"client too slow: {why}")

    # ----------------------------------------------------------------- fan-out
    def dispatch(self, channel: str, data: bytes | str) -> None:
        """Forward one pub/sub message to every matching client (never awaits)."""
        self.counters["messages_received"] += 1
        kind = self.channels.get(channel)
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            body = None
        if kind is None or not isinstance(body, dict):
            self.counters["messages_invalid"] += 1
            log.warning("ws_invalid_message", channel=channel)
            return
        body.pop("type", None)
        if kind == "prices":
            self._dispatch_prices(body)
        else:
            self._dispatch_event(kind, body)

    def _deliver(self, client: WsClient, text: str) -> None:
        if not client.offer(text):
            self.counters["messages_dropped"] += 1
            self.drop_slow(client, f"send queue full ({self.queue_size} messages)")

    def _dispatch_event(self, kind: str, body: dict[str, Any]) -> None:
        agent = body.get("agent_id")
        if self.owner_of is None:
            self._deliver_event(kind, body, None)
            return
        if not isinstance(agent, str):
            self.counters["messages_invalid"] += 1
            return
        if agent in self._owners:
            self._deliver_event(kind, body, self._owners[agent])
            return
        waiting = self._pending.get(agent)
        if waiting is None:
            self._pending[agent] = [(kind, body)]
            task = asyncio.create_task(self._learn_owner(agent), name=f"ws-owner-{agent}")
            self.track(task)
        elif len(waiting) < MAX_PENDING_PER_AGENT:
            waiting.append((kind, body))
        else:
            self.counters["messages_dropped"] += 1

    async def _learn_owner(self, agent: str) -> None:
        """Ask the backend who owns ``agent``, then deliver its waiting events in order."""
        assert self.owner_of is not None
        self.counters["owner_lookups"] += 1
        owner: str | None = None
        try:
            async with asyncio.timeout(OWNER_LOOKUP_TIMEOUT_S):
                owner = await self.owner_of(agent)
        except Exception as exc:  # the database is down: drop these events, ask next time
            self.counters["owner_lookup_failures"] += 1
            log.warning("ws_owner_lookup_failed", agent_id=agent, error=repr(exc))
            waiting = self._pending.pop(agent, [])
            self.counters["messages_dropped"] += len(waiting)
            return
        if owner is not None:
            self._owners[agent] = owner  # an agent never changes owner
        for kind, body in self._pending.pop(agent, []):
            self._deliver_event(kind, body, owner)

    def _deliver_event(self, kind: str, body: dict[str, Any], owner: str | None) -> None:
        """Send to the matching clients of ``owner`` (None: clients without an owner)."""
        text: str | None = None
        agent, token = body.get("agent_id"), body.get("token")
        for client in list(self.clients.values()):
            if client.owner != owner:
                continue
            sub = client.subscription
            if sub.types is not None and kind not in sub.types:
                continue
            if sub.agents is not None and agent not in sub.agents:
                continue
            if sub.tokens is not None and token not in sub.tokens:
                continue
            if text is None:
                text = dumps({"type": kind, **body})
            self._deliver(client, text)

    def _dispatch_prices(self, body: dict[str, Any]) -> None:
        ticks = body.get("ticks")
        if not isinstance(ticks, list):
            self.counters["messages_invalid"] += 1
            log.warning("ws_invalid_prices", reason="ticks is not a list")
            return
        by_filter: dict[frozenset[str] | None, str | None] = {}
        for client in list(self.clients.values()):
            sub = client.subscription
            if sub.types is not None and "prices" not in sub.types:
                continue
            if sub.tokens not in by_filter:
                by_filter[sub.tokens] = self._prices_text(body, ticks, sub.tokens)
            text = by_filter[sub.tokens]
            if text is not None:
                self._deliver(client, text)

    @staticmethod
    def _prices_text(
        body: dict[str, Any], ticks: list[Any], tokens: frozenset[str] | None
    ) -> str | None:
        if tokens is not None:
            ticks = [t for t in ticks if isinstance(t, dict) and t.get("token") in tokens]
            if not ticks:
                return None
        return dumps({"type": "prices", **body, "ticks": ticks})

    # ------------------------------------------------------------------- redis
    async def _subscribe_forever(self) -> None:
        assert self.redis_url is not None
        delay = self.backoff_initial
        while True:
            tcp = not self.redis_url.startswith("unix:")
            client = aioredis.Redis.from_url(
                self.redis_url,
                socket_connect_timeout=2.0,
                # unix-socket connections (the embedded Redis) take no keepalive option
                **({"socket_keepalive": True} if tcp else {}),
                health_check_interval=self.health_check_interval,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                self.redis_connected = True
                self.connected_since = time.time()
                self.counters["redis_connects"] += 1
                self.last_error = None
                delay = self.backoff_initial
                log.info("ws_hub_subscribed", channels=sorted(self.channels))
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    try:
                        self.dispatch(channel, message["data"])
                    except Exception:  # a bug in fan-out must not kill the subscription
                        log.exception("ws_dispatch_failed", channel=channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, reset, auth: retry with backoff
                if self.redis_connected or self.last_error is None:
                    log.warning("ws_hub_redis_unavailable", error=repr(exc), retry_in=delay)
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.redis_connected = False
                self.connected_since = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # unannotated in redis-py
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff_max)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What ``/health/status`` shows under ``hub`` (and ``/metrics`` exports)."""
        return {
            "enabled": self.redis_url is not None,
            "redis_connected": self.redis_connected,
            "last_error": self.last_error,
            "channels": sorted(self.channels),
            "clients": len(self.clients),
            "queue_size": self.queue_size,
            **self.counters,
        }


HUB = web.AppKey["WsHub"]("ws_hub")
"""The app's WebSocket fan-out hub (one Redis subscriber per process)."""


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: stream price, position and trade events (see module docs)."""
    hub = request.app[HUB]
    principal = request.get(PRINCIPAL)
    ws = web.WebSocketResponse(
        heartbeat=30.0, max_msg_size=MAX_CLIENT_MESSAGE_BYTES, protocols=(SUBPROTOCOL,)
    )
    await ws.prepare(request)
    client = hub.register(ws, request.transport, None if principal is None else principal.user_id)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                client.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                client.send_error("binary frames are not supported; send JSON text")
    finally:
        await hub.unregister(client)
    return ws


WS_DESCRIPTION = """\
Upgrade to a WebSocket. Authenticate the handshake with `Authorization: Bearer
<access token>` or `X-API-Key`, or from a browser by offering the subprotocols
`["valux", "bearer.<access token>"]` (the server selects `valux`). A browser's
`Origin` must be allowlisted (`api.cors_origins`) or the API's own. You receive the
position and trade events of your own agents only. The server streams JSON text
messages:

* `{"type": "prices", "ticks": [{"token", "price", "ts"}, ...]}`
* `{"type": "position", "agent_id", "token", ...}`
* `{"type": "trade", "agent_id", "token", ...}`

Send `{"op": "subscribe", "agents"?: [...], "tokens"?: [...], "types"?: [...]}` to
filter (a missing list means all; `agents` does not apply to prices; a prices batch
is cut down to the subscribed tokens). The answer is `{"type": "subscribed", ...}`;
an invalid message is answered with `{"type": "error", "message"}` and the
connection stays open. A client that falls behind is closed with code 1008;
on server shutdown every client gets 1001.
"""

ROUTES = [
    Route(
        "GET",
        "/ws",
        ws_handler,
        "websocket",
        "Live prices, positions and trades (WebSocket)",
        "stream",
        {101: Reply("Switching protocols to WebSocket.")},
        uses_backend=False,
        long_lived=True,
        description=WS_DESCRIPTION,
    )
]
