"""Small HTTP helpers for integration tests.

:class:`Api` signs in by itself: ``Api(runtime.port)`` logs in as the admin the
runtime created at its first start (through ``POST /api/v1/auth/login``, with the
one-time password ``valux`` would have printed), and keeps the session per runtime
so a suite of tests logs in once per system, not once per test (the auth routes
are rate limited per address). To know which runtime serves a port and what its
admin's password is, this module wraps :meth:`valux.system.runtime.Runtime.start`
when it is imported (test instrumentation only: it records, changes nothing).

``Api(port, login=False)`` sends no credentials; ``Api(port, token=...)`` another
user's; :meth:`Api.register` makes a new user and returns its tokens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


# ------------------------------------------------------- which runtime, which admin


_RUNTIMES: dict[int, Any] = {}
"""API port → the in-process Runtime serving it."""
_ADMINS: dict[str, tuple[str, str]] = {}
"""Database URL → (e-mail, one-time password) of the admin its first start created."""


def _instrument_runtime() -> None:
    from valux.api.auth_service import BOOTSTRAP
    from valux.system import runtime as rt

    original = rt.Runtime.start
    if getattr(original, "_records_admins", False):
        return

    async def start(self: Any) -> None:
        await original(self)
        _RUNTIMES[self.port] = self
        boot = self.runner.app[BOOTSTRAP]
        if boot.email is not None and boot.password is not None:  # read; `valux` may print it
            _ADMINS[self.database_url] = (boot.email, boot.password)

    start._records_admins = True  # type: ignore[attr-defined]
    rt.Runtime.start = start  # type: ignore[method-assign]


_instrument_runtime()


def admin_credentials(port: int) -> tuple[str, str]:
    """(e-mail, password) of the first admin of the system serving ``port``."""
    runtime = _RUNTIMES.get(port)
    if runtime is None:
        raise LookupError(f"no in-process valux runtime serves port {port}")
    creds = _ADMINS.get(runtime.database_url)
    if creds is None:
        raise LookupError(f"the admin of {runtime.database_url} was not created in this process")
    return creds


@dataclass
class Session:
    """Tokens of one signed-in user."""

    access_token: str
    refresh_token: str
    expires_at: float

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> Session:
        return cls(
            body["access_token"],
            body["refresh_token"],
            time.monotonic() + float(body["expires_in"]),
        )


_SESSIONS: dict[tuple[int, int], Session] = {}
"""(port, id of its runtime) → the admin's session, shared by every Api of that system."""


class Api:
    """A JSON client for the valux API that checks status codes and signs in as the admin."""

    def __init__(self, port: int, *, login: bool = True, token: str | None = None) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.login = login and token is None
        self.token = token
        self.session: aiohttp.ClientSession

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession()
        if self.login:
            self.token = (await self._admin_session()).access_token
        if self.token is not None:
            self.session.headers["Authorization"] = f"Bearer {self.token}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    @property
    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header this client sends (for a WebSocket of your own)."""
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    # -- sessions ----------------------------------------------------------------------

    def _key(self) -> tuple[int, int]:
        return (self.port, id(_RUNTIMES.get(self.port)))

    async def _admin_session(self) -> Session:
        cached = _SESSIONS.get(self._key())
        if cached is not None and cached.expires_at - time.monotonic() > 300:
            return cached
        if cached is not None:
            status, body = await self._raw(
                "POST", "/api/v1/auth/refresh", {"refresh_token": cached.refresh_token}
            )
            if status == 200:
                _SESSIONS[self._key()] = Session.from_answer(body)
                return _SESSIONS[self._key()]
        email, password = admin_credentials(self.port)
        status, body = await self._raw(
            "POST", "/api/v1/auth/login", {"email": email, "password": password}
        )
        assert status == 200, f"admin login: {status} {body}"
        _SESSIONS[self._key()] = Session.from_answer(body)
        return _SESSIONS[self._key()]

    async def _raw(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url(path), json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def register(self, email: str | None = None, password: str | None = None) -> Session:
        """A new user (open registration); its session."""
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        password = password or f"pw-{uuid.uuid4().hex}"
        status, body = await self._raw(
            "POST", "/api/v1/auth/register", {"email": email, "password": password}
        )
        assert status == 201, f"register: {status} {body}"
        return Session.from_answer(body)

    # -- requests ----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base + path

    async def request(
        self,
        method: str,
        path: str,
        expect: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        for attempt in (1, 2):
            async with self.session.request(
                method, self.url(path), json=body, headers=headers
            ) as resp:
                data = await resp.json(content_type=None)
                status = resp.status
            expired = (
                status == 401
                and isinstance(data, dict)
                and data.get("error", {}).get("code") == "TOKEN_EXPIRED"
            )
            if expired and self.login and attempt == 1:  # a long test outlived the token
                _SESSIONS.pop(self._key(), None)
                self.token = (await self._admin_session()).access_token
                self.session.headers["Authorization"] = f"Bearer {self.token}"
                continue
            break
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {data}"
        return status, data

    async def get(self, path: str, expect: int = 200) -> Any:
        return (await self.request("GET", path, expect))[1]

    async def post(self, path: str, body: Any, expect: int) -> Any:
        return (await self.request("POST", path, expect, body))[1]

    async def ticks(self, ticks: list[tuple[str, float]]) -> None:
        now = time.time()
        body = {"ticks": [{"token": t, "price": p, "ts": now} for t, p in ticks]}
        await self.post("/api/v1/feeds/manual/ticks", body, 202)


async def wait_for(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 15.0
) -> T:
    """Poll ``fetch`` until ``done`` holds; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + within
    value = await fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value}")
        await asyncio.sleep(0.05)
        value = await fetch()
    return value
