"""HTTP layer: the error contract — status mapping, body shape, limits, request ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from valux.api.testing import FakeBackend, api_client
from valux.errors import (
    ConfigurationError,
    Conflict,
    FieldError,
    InvalidRequest,
    NotFound,
    Unavailable,
    ValuxError,
)

Client = TestClient[web.Request, web.Application]
JSON = {"Content-Type": "application/json"}
MAX_BODY = 2048


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[Client]:
    async with api_client(fake, max_body_bytes=MAX_BODY) as c:
        yield c


async def test_malformed_json_is_400_with_position(client: Client) -> None:
    """Malformed JSON → 400 INVALID_REQUEST whose message gives line, column and char."""
    r = await client.post("/api/v1/agents", data='{"name": "a",\n  oops}', headers=JSON)
    assert r.status == 400
    error = (await r.json())["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert "line 2 column 3 (char 16)" in error["message"]
    assert error["errors"][0]["field"] == "body"


@pytest.mark.parametrize("data", ['{"name": "a", "balance": NaN}', '{"x": Infinity}'])
async def test_nan_and_infinity_literals_are_malformed(client: Client, data: str) -> None:
    """Python's json accepts NaN/Infinity; the API does not (they are not JSON)."""
    r = await client.post("/api/v1/agents", data=data, headers=JSON)
    assert r.status == 400
    assert "not valid JSON" in (await r.json())["error"]["message"]


async def test_invalid_utf8_is_400(client: Client) -> None:
    """A body that is not UTF-8 is a 400, not a 500."""
    r = await client.post("/api/v1/agents", data=b'{"name": "\xff"}', headers=JSON)
    assert r.status == 400
    assert "UTF-8" in (await r.json())["error"]["message"]


async def test_empty_body_is_400(client: Client) -> None:
    """An empty JSON body on a route that needs one is 400 on field ``body``."""
    r = await client.post("/api/v1/agents", data=b"", headers=JSON)
    assert r.status == 400
    assert (await r.json())["error"]["errors"] == [{"field": "body", "message": "required"}]


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
)
async def test_wrong_content_type_is_415(client: Client, headers: dict[str, str]) -> None:
    """A body that is not declared application/json → 415 UNSUPPORTED_MEDIA_TYPE."""
    r = await client.post("/api/v1/agents", data=b'{"name": "a"}', headers=headers)
    assert r.status == 415
    assert (await r.json())["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_json_with_charset_is_accepted(client: Client) -> None:
    """``application/json; charset=utf-8`` is JSON."""
    r = await client.post(
        "/api/v1/agents",
        data='{"name": "a"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status == 201


async def test_body_over_limit_is_413(client: Client, fake: FakeBackend) -> None:
    """A body larger than max_body_bytes (declared by Content-Length) → 413, backend untouched."""
    data = '{"name": "' + "x" * MAX_BODY + '"}'
    r = await client.post("/api/v1/agents", data=data, headers=JSON)
    assert r.status == 413
    assert (await r.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert not fake.calls


async def test_chunked_body_over_limit_is_413(client: Client) -> None:
    """A chunked body (no Content-Length) that grows past the limit is also 413."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    r = await client.post("/api/v1/agents", data=chunks(), headers=JSON)
    assert r.status == 413
    assert (await r.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (NotFound("agent x not found"), 404, "NOT_FOUND"),
        (Conflict("already paused"), 409, "CONFLICT"),
        (Unavailable("postgres down"), 503, "UNAVAILABLE"),
        (InvalidRequest("bad", [FieldError("config.dca", "bad")]), 400, "INVALID_REQUEST"),
        (ConfigurationError("stopLoss.mode invalid"), 400, "CONFIGURATION_ERROR"),
        (ValuxError("cannot do that"), 422, "VALUX_ERROR"),
    ],
)
async def test_valux_errors_map_to_statuses(
    client: Client, fake: FakeBackend, exc: Exception, status: int, code: str
) -> None:
    """Each shared error class maps to one status and keeps its message (and field errors)."""
    fake.fail["list_agents"] = exc
    r = await client.get("/api/v1/agents")
    assert r.status == status
    error = (await r.json())["error"]
    assert error["code"] == code
    assert error["message"] == str(exc)
    if isinstance(exc, InvalidRequest):
        assert error["errors"] == [{"field": "config.dca", "message": "bad"}]


async def test_unexpected_exception_is_500_without_details(
    client: Client, fake: FakeBackend
) -> None:
    """An unexpected exception → 500 INTERNAL "internal error" + request id, no stack trace
    or exception text in the body; it is logged with the request id."""
    fake.fail["list_agents"] = RuntimeError("secret /etc/valux detail")
    with capture_logs() as logs:
        r = await client.get("/api/v1/agents", headers={"X-Request-Id": "req-123"})
    assert r.status == 500
    text = await r.text()
    assert "secret" not in text and "Traceback" not in text
    assert await r.json() == {
        "error": {"code": "INTERNAL", "message": "internal error", "request_id": "req-123"}
    }
    [entry] = [e for e in logs if e["event"] == "unhandled_error"]
    assert entry["request_id"] == "req-123"
    assert entry["route"] == "/api/v1/agents"
    assert entry["log_level"] == "error"


async def test_request_id_echoed_or_generated(client: Client) -> None:
    """Every response carries X-Request-Id: a well-formed incoming one is echoed, a missing or
    malformed one is replaced by a generated id — on successes and errors alike."""
    r = await client.get("/health/live", headers={"X-Request-Id": "abc-1"})
    assert r.headers["X-Request-Id"] == "abc-1"
    r = await client.get("/health/live", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.headers["X-Request-Id"] != "bad id\twith spaces"
    assert len(r.headers["X-Request-Id"]) == 32
    r1 = await client.get("/nope")
    r2 = await client.get("/nope")
    assert r1.headers["X-Request-Id"] != r2.headers["X-Request-Id"]
    assert (await r1.json())["error"]["request_id"] == r1.headers["X-Request-Id"]


async def test_unknown_route_is_json_404(client: Client) -> None:
    """A path no route matches → 404 NOT_FOUND in the JSON error shape."""
    r = await client.get("/api/v1/unknown")
    assert r.status == 404
    assert r.content_type == "application/json"
    assert (await r.json())["error"]["code"] == "NOT_FOUND"


async def test_wrong_method_is_json_405_with_allow(client: Client) -> None:
    """A known path with the wrong method → 405 METHOD_NOT_ALLOWED keeping the Allow header."""
    r = await client.put("/api/v1/agents", json={})
    assert r.status == 405
    assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert (await r.json())["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_slow_backend_call_is_503_after_request_timeout() -> None:
    """A backend call that outlives request_timeout is answered 503 instead of hanging."""

    class SlowBackend(FakeBackend):
        async def list_agents(self, *, owner: str | None = None) -> list[dict[str, Any]]:
            await asyncio.sleep(5)
            return []

    async with api_client(SlowBackend(), request_timeout=0.1) as client:
        r = await client.get("/api/v1/agents")
        assert r.status == 503
        assert "longer than 0.1s" in (await r.json())["error"]["message"]


async def test_timeout_error_raised_by_backend_is_500_not_503(
    client: Client, fake: FakeBackend
) -> None:
    """A TimeoutError the backend raises itself (not our deadline) is a bug: 500."""
    fake.fail["list_agents"] = TimeoutError("inner")
    r = await client.get("/api/v1/agents")
    assert r.status == 500


async def test_decimals_in_responses_are_strings() -> None:
    """A Decimal that reaches the response is rendered as a plain decimal string (no exponent),
    never a JSON number."""

    class DecimalBackend(FakeBackend):
        async def prices(self) -> dict[str, Any]:
            return {"BONK": {"price": Decimal("0.00000021"), "big": Decimal("1E+3")}}

    async with api_client(DecimalBackend()) as client:
        body = await (await client.get("/api/v1/prices")).json()
    assert body == {"BONK": {"price": "0.00000021", "big": "1000"}}
