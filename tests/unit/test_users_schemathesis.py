"""schemathesis against ``/openapi.json`` of the app over FakeBackend: no 5xx, and every 4xx
names the field, parameter or header it is about.

Each operation of the document is fuzzed twice per example: with a valid admin token (so
requests reach the handlers, past authentication) and with none (so the 401 path is
fuzzed too). Bounded by ``MAX_EXAMPLES`` per operation: the whole module takes well under
two minutes here. The app runs on a loopback port in a thread of its own, as a real
server, with a real Redis (``REDIS_URL``, a local one, or an embedded one) for the login
nonces; its rate limits are set out of the fuzzer's reach.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.unit.redis_support import redis_for_tests
from valux.api.app import ROUTES, create_app
from valux.api.openapi import build_openapi
from valux.api.security import AuthConfig
from valux.api.testing import FakeBackend, sign_in
from valux.auth.tokens import Role

MAX_EXAMPLES = 60

schema = schemathesis.openapi.from_dict(build_openapi(ROUTES))


class Server:
    """The app on 127.0.0.1 in a background thread (its own event loop)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        unlimited = 10**9
        self.fake = FakeBackend(
            auth_config=AuthConfig.for_tests(
                auth_per_ip=unlimited,
                auth_per_account=unlimited,
                signals_per_ip=unlimited,
                signals_per_user=unlimited,
            )
        )
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.headers: dict[str, str] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = create_app(self.fake, redis_url=self.redis_url)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await self.fake.create_agent(
            name="fuzz", config=None, balance=Decimal(5), agent_id="fuzz-agent", owner="u_fuzz"
        )
        _, self.headers = await sign_in(self.fake, "u_fuzz", role=Role.ADMIN)

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL, else a local Redis that answers, else an embedded one."""
    yield from redis_for_tests(tmp_path_factory)


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[Server]:
    s = Server(redis_url)
    s.start()
    yield s
    s.stop()


def _names_the_field(response: Any) -> None:
    """Every 4xx is the JSON error body and names at least one field."""
    if not 400 <= response.status_code < 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"a {response.status_code} that is not JSON") from None
    errors = body.get("error", {}).get("errors") or []
    fields = [e.get("field") for e in errors if isinstance(e, dict)]
    assert fields and all(isinstance(f, str) and f for f in fields), (
        f"{response.status_code} {body.get('error', {}).get('code')} names no field: {body}"
    )


@schemathesis.check
def four_xx_names_the_field(ctx: Any, response: Any, case: Any) -> None:
    _names_the_field(response)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_every_4xx_names_the_field(case: Any, server: Server) -> None:
    """With a valid admin token and with none, no answer is a 5xx and every 4xx names the
    field at fault (the WebSocket route is fuzzed as plain GETs: a 400)."""
    base = f"http://127.0.0.1:{server.port}"
    with requests.Session() as session:
        for headers in (server.headers, {}):
            response = case.call(base_url=base, session=session, headers=headers, timeout=10)
            case.validate_response(response, checks=[not_a_server_error, four_xx_names_the_field])
