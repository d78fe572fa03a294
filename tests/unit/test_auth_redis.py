"""Login nonces and rate limits against a real Redis (valux.auth.nonces, valux.auth.ratelimit).

Redis is the one at ``REDIS_URL`` when set (CI, or ``redis://127.0.0.1:6379/0`` on
a machine that runs one), else an embedded one started for this module, as the
integration tests do. Every test works under a unique key prefix and deletes its
keys afterwards, so it can share a server with anything else.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.unit.redis_support import redis_for_tests
from valux.auth import siwe
from valux.auth.errors import NonceInvalid, RedisUnavailable
from valux.auth.nonces import NONCE_TTL_S, NonceStore
from valux.auth.ratelimit import RateLimiter


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared test Redis (:func:`tests.unit.redis_support.redis_for_tests`)."""
    yield from redis_for_tests(tmp_path_factory)


def _client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 0))


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"valux-test:{uuid.uuid4().hex}:"
    yield value
    client = _client(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=value + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = _client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis2(redis_url: str) -> AsyncIterator[Redis]:
    """A second, separate connection: another API process."""
    client = _client(redis_url)
    yield client
    await client.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- nonces --------------------------------------------------------------------------


async def test_a_nonce_is_long_alphanumeric_and_stored_with_a_5_minute_ttl(
    redis: Redis, prefix: str
) -> None:
    """issue() returns 24 letters/digits stored under the prefix with a TTL of 300 s."""
    store = NonceStore(redis, prefix=prefix)
    nonce = await store.issue()
    assert len(nonce) == 24 and nonce.isalnum() and nonce.isascii()
    ttl = await redis.ttl(prefix + nonce)
    assert NONCE_TTL_S - 5 <= ttl <= NONCE_TTL_S
    assert await store.issue() != nonce


async def test_a_nonce_can_be_consumed_once(redis: Redis, prefix: str) -> None:
    """The first consume succeeds and deletes it; the second raises NonceInvalid."""
    store = NonceStore(redis, prefix=prefix)
    nonce = await store.issue()
    await store.consume(nonce)
    assert await redis.exists(prefix + nonce) == 0
    with pytest.raises(NonceInvalid) as info:
        await store.consume(nonce)
    assert info.value.code == "NONCE_INVALID"


async def test_concurrent_consumes_from_two_processes_succeed_once(
    redis: Redis, redis2: Redis, prefix: str
) -> None:
    """Of many simultaneous consumes over two connections, exactly one wins (GETDEL is atomic)."""
    stores = [NonceStore(redis, prefix=prefix), NonceStore(redis2, prefix=prefix)]
    nonce = await stores[0].issue()
    results = await asyncio.gather(
        *(stores[i % 2].consume(nonce) for i in range(10)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, NonceInvalid) for r in results if r is not None)


async def test_a_nonce_expires(redis: Redis, prefix: str) -> None:
    """After its TTL a nonce can no longer be consumed."""
    store = NonceStore(redis, prefix=prefix, ttl_s=1)
    nonce = await store.issue()
    await asyncio.sleep(1.2)
    with pytest.raises(NonceInvalid):
        await store.consume(nonce)


async def test_unknown_malformed_and_misbound_nonces_are_refused(redis: Redis, prefix: str) -> None:
    """Unknown/malformed nonces fail; a nonce bound to one session fails (and burns) for another."""
    store = NonceStore(redis, prefix=prefix)
    with pytest.raises(NonceInvalid):
        await store.consume("A" * 24)
    with pytest.raises(NonceInvalid, match="malformed"):
        await store.consume("bad nonce*")
    bound = await store.issue(bound_to="session-1")
    with pytest.raises(NonceInvalid, match="another client"):
        await store.consume(bound, bound_to="session-2")
    with pytest.raises(NonceInvalid, match="unknown"):
        await store.consume(bound, bound_to="session-1")
    good = await store.issue(bound_to="session-1")
    await store.consume(good, bound_to="session-1")


async def test_a_replayed_siwe_login_is_refused_by_the_nonce_store(
    redis: Redis, prefix: str
) -> None:
    """The whole flow: a signed login succeeds once; the same message and signature again fail."""
    store = NonceStore(redis, prefix=prefix)
    account = Account.create()
    now = datetime.now(UTC)

    async def login(text: str, signature: str) -> str:
        message = siwe.parse_message(text)
        assert message.nonce is not None
        await store.consume(message.nonce)
        verified = siwe.verify(
            text, signature, domain="app.example", nonce=message.nonce, chain_id=1, now=now
        )
        return verified.address

    nonce = await store.issue()
    text = siwe.build_message(
        domain="app.example",
        address=account.address,
        uri="https://app.example/login",
        chain_id=1,
        nonce=nonce,
        issued_at=now,
    )
    signature = Account.sign_message(encode_defunct(text=text), private_key=account.key)
    sig_hex = signature.signature.hex()
    assert await login(text, sig_hex) == account.address
    with pytest.raises(NonceInvalid):
        await login(text, sig_hex)


# -- rate limits ----------------------------------------------------------------------


async def test_the_limit_allows_n_then_refuses_with_a_retry_after(
    redis: Redis, prefix: str
) -> None:
    """Three hits pass (2, 1, 0 remaining); the fourth is refused, 0 < retry_after ≤ window."""
    limiter = RateLimiter(redis, prefix=prefix)
    decisions = [await limiter.hit("ip:203.0.113.7:login", 3, 10) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert 9 < refused.retry_after_s <= 10
    assert refused.retry_after_header == "10"
    assert refused.limit == 3
    pttl = await redis.pttl(prefix + "ip:203.0.113.7:login")
    assert 0 < pttl <= 10_000


async def test_two_connections_share_one_window(redis: Redis, redis2: Redis, prefix: str) -> None:
    """Hits through two separate clients (two API processes) count against the same limit."""
    a, b = RateLimiter(redis, prefix=prefix), RateLimiter(redis2, prefix=prefix)
    assert (await a.hit("user:42", 3, 10)).allowed
    assert (await b.hit("user:42", 3, 10)).allowed
    assert (await a.hit("user:42", 3, 10)).remaining == 0
    assert not (await b.hit("user:42", 3, 10)).allowed
    assert not (await a.hit("user:42", 3, 10)).allowed


async def test_concurrent_hits_never_exceed_the_limit(
    redis: Redis, redis2: Redis, prefix: str
) -> None:
    """Forty simultaneous hits over two connections: exactly the limit (5) are allowed."""
    limiters = [RateLimiter(redis, prefix=prefix), RateLimiter(redis2, prefix=prefix)]
    decisions = await asyncio.gather(*(limiters[i % 2].hit("burst", 5, 10) for i in range(40)))
    assert sum(d.allowed for d in decisions) == 5


async def test_the_window_slides(redis: Redis, prefix: str) -> None:
    """Once the oldest hit leaves the window (after retry_after) one more is allowed."""
    limiter = RateLimiter(redis, prefix=prefix)
    assert (await limiter.hit("slide", 2, 0.4)).allowed
    await asyncio.sleep(0.2)
    assert (await limiter.hit("slide", 2, 0.4)).allowed
    refused = await limiter.hit("slide", 2, 0.4)
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.25
    assert refused.retry_after_header == "1"
    await asyncio.sleep(refused.retry_after_s + 0.05)
    assert (await limiter.hit("slide", 2, 0.4)).allowed  # the first left; the second remains
    assert not (await limiter.hit("slide", 2, 0.4)).allowed


async def test_keys_are_independent_and_reset_clears_one(redis: Redis, prefix: str) -> None:
    """A full key does not limit another key; reset() empties a key's window."""
    limiter = RateLimiter(redis, prefix=prefix)
    assert (await limiter.hit("ip:a", 1, 10)).allowed
    assert not (await limiter.hit("ip:a", 1, 10)).allowed
    assert (await limiter.hit("ip:b", 1, 10)).allowed
    await limiter.reset("ip:a")
    assert (await limiter.hit("ip:a", 1, 10)).allowed
    with pytest.raises(ValueError):
        await limiter.hit("ip:a", 0, 10)
    with pytest.raises(ValueError):
        await limiter.hit("ip:a", 1, 0)


# -- Redis down -------------------------------------------------------------------------


async def test_unreachable_redis_raises_a_clear_error() -> None:
    """With nothing listening, both pieces raise RedisUnavailable naming Redis and its address."""
    port = _closed_port()
    client = Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        with pytest.raises(RedisUnavailable) as info:
            await NonceStore(client).issue()
        assert info.value.code == "REDIS_UNAVAILABLE"
        assert f"Redis at 127.0.0.1:{port}/0 is unreachable" in info.value.message
        with pytest.raises(RedisUnavailable, match="rate limiting"):
            await RateLimiter(client).hit("k", 1, 1)
        with pytest.raises(RedisUnavailable):
            await NonceStore(client).consume("A" * 24)
    finally:
        await client.aclose()
