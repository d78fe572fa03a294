"""Who may call what, checked for every route of the table (so a new route is covered).

- without a credential every route but the public ones is 401 (with ``WWW-Authenticate``);
- a plain user gets 403 on every admin route, an admin gets through;
- no GET route changes state: serving one calls only read methods of the backend;
- the route table's access rules are the documented ones (public: health, OpenAPI, the
  sign-in routes; admin: supervisors, status, metrics, the global state, the manual feed,
  the audit log).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from valux.api.app import ROUTES
from valux.api.openapi import build_openapi
from valux.api.routes import Access, Route
from valux.api.testing import FakeBackend, api_client, sign_in
from valux.auth.tokens import Role

Client = TestClient[web.Request, web.Application]

PUBLIC = {"healthLive", "healthReady", "openapi", "register", "login", "nonce", "refresh"}
ADMIN = {
    "getSupervisors", "healthStatus", "metrics", "setRiskState", "pushManualTicks", "auditLog",
}  # fmt: skip
READS = re.compile(r"^(get_|list_|prices$|health_|supervisors$|actor_metrics$|agent_owner$)")


def _path(route: Route) -> str:
    return re.sub(r"\{\w+\}", "x1", route.path)


@pytest.fixture
async def client() -> AsyncIterator[tuple[Client, FakeBackend]]:
    fake = FakeBackend()
    async with api_client(fake, user=None) as c:
        yield c, fake


def test_the_access_rules_are_the_documented_ones() -> None:
    """Public and admin routes are exactly the documented sets; everything else needs a user."""
    assert {r.operation_id for r in ROUTES if r.access is Access.PUBLIC} == PUBLIC
    assert {r.operation_id for r in ROUTES if r.access is Access.ADMIN} == ADMIN


def test_openapi_names_the_security_of_every_operation() -> None:
    """Each operation lists its schemes (empty for public ones) and 401 where a caller is
    needed; the three schemes are declared."""
    doc = build_openapi(ROUTES)
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {"bearerAuth", "apiKeyAuth", "webhookSignature"}
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        names = {name for entry in op["security"] for name in entry}
        if route.access is Access.PUBLIC:
            assert op["security"] == [], route.operation_id
        else:
            assert names, route.operation_id
            assert "401" in op["responses"], route.operation_id
        if route.access is Access.WEBHOOK:
            assert names == {"webhookSignature"}
        if route.access is Access.SESSION:
            assert names == {"bearerAuth"}


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r.access is not Access.PUBLIC], ids=lambda r: r.operation_id
)
async def test_no_credential_is_401(client: tuple[Client, FakeBackend], route: Route) -> None:
    """Without Authorization or X-API-Key the route answers 401 naming the credential (a
    webhook without its signature: 401 naming X-Valux-Signature, or 404 for an unknown id)."""
    c, fake = client
    kwargs: dict[str, Any] = {}
    if route.body is not None:
        kwargs["json"] = {}
    r = await c.request(route.method, _path(route), **kwargs)
    if route.access is Access.WEBHOOK:
        assert r.status in (401, 404)
        return
    assert r.status == 401, await r.text()
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    body = await r.json()
    assert body["error"]["errors"][0]["field"] == "Authorization"
    assert [m for m, _ in fake.calls] == []  # refused before the backend


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r.access is Access.ADMIN], ids=lambda r: r.operation_id
)
async def test_admin_routes_are_403_for_users_and_open_to_admins(
    client: tuple[Client, FakeBackend], route: Route
) -> None:
    """A user's token is 403 ADMIN_REQUIRED on a system route; an admin's is let through."""
    c, fake = client
    _, user = await sign_in(fake, "u_plain", role=Role.USER)
    _, admin = await sign_in(fake, "u_boss", role=Role.ADMIN)
    body = {"state": "ACTIVE"} if route.operation_id == "setRiskState" else None
    if route.operation_id == "pushManualTicks":
        body = {"ticks": [{"token": "T", "price": "1"}]}
    r = await c.request(route.method, _path(route), json=body, headers=user)
    assert r.status == 403 and (await r.json())["error"]["code"] == "ADMIN_REQUIRED"
    r = await c.request(route.method, _path(route), json=body, headers=admin)
    assert r.status < 400, await r.text()


@pytest.mark.parametrize(
    "route",
    [r for r in ROUTES if r.method == "GET" and not r.long_lived],
    ids=lambda r: r.operation_id,
)
async def test_no_get_route_changes_state(client: tuple[Client, FakeBackend], route: Route) -> None:
    """Serving a GET calls only the backend's read methods (get_/list_/prices/health/...),
    whatever it answers."""
    c, fake = client
    _, admin = await sign_in(fake, "u_reader", role=Role.ADMIN)
    await c.post("/api/v1/agents", json={"name": "a", "id": "x1", "balance": "1"}, headers=admin)
    fake.calls.clear()
    await c.get(_path(route), headers=admin)
    writes = [m for m, _ in fake.calls if not READS.match(m)]
    assert writes == []


async def test_the_audit_log_is_for_admins(client: tuple[Client, FakeBackend]) -> None:
    """An admin reads the audit log newest first, filtered by event; a user gets 403; a
    global state change is recorded with who made it."""
    c, fake = client
    _, admin = await sign_in(fake, "u_auditor", role=Role.ADMIN)
    _, user = await sign_in(fake, "u_someone", role=Role.USER)
    await c.post("/api/v1/risk/state", json={"state": "HALTED", "reason": "drill"}, headers=admin)
    await c.post("/api/v1/risk/state", json={"state": "ACTIVE"}, headers=admin)
    r = await c.get("/api/v1/audit?event=kill_switch", headers=admin)
    rows = await r.json()
    assert r.status == 200 and [row["event"] for row in rows] == ["kill_switch"]
    assert rows[0]["actor_id"] == "u_auditor" and rows[0]["detail"]["reason"] == "drill"
    r = await c.get("/api/v1/audit?limit=1", headers=admin)
    assert (await r.json())[0]["event"] == "risk_state_changed"
    assert (await c.get("/api/v1/audit", headers=user)).status == 403


async def test_admin_api_key_helper_makes_a_key_that_reaches_system_routes() -> None:
    """valux.api.testing.admin_api_key (for benchmarks): log in, get an all-scopes key that
    reaches /supervisors and trading routes alike."""
    from valux.api.auth_service import BOOTSTRAP
    from valux.api.testing import admin_api_key

    fake = FakeBackend()
    async with api_client(fake, user=None) as c:
        email, password = c.app[BOOTSTRAP].take()  # type: ignore[index,misc]
        key = await admin_api_key(str(c.make_url("")).rstrip("/"), email, password)
        headers = {"X-API-Key": key}
        assert (await c.get("/supervisors", headers=headers)).status == 200
        r = await c.post("/api/v1/agents", json={"name": "b"}, headers=headers)
        assert r.status == 201


def test_host_allowlist_matching_and_the_bind_address(tmp_path: Path) -> None:
    """Ports are ignored, IPv6 brackets understood, ".example.com" covers subdomains, "*"
    everything; from settings, the bind address joins the allowlist unless it is 0.0.0.0."""
    from valux.api.security import AuthConfig, host_allowed
    from valux.config.settings import load_settings

    allowed = ("127.0.0.1", "localhost", "::1", ".example.com")
    for host, ok in (
        ("127.0.0.1:8080", True), ("LOCALHOST", True), ("[::1]:80", True),
        ("app.example.com", True), ("example.com", True), ("evilexample.com", False),
        ("evil.example", False), (None, False), ("", False),
    ):  # fmt: skip
        assert host_allowed(host, allowed) is ok, host
    assert host_allowed("anything", ("*",))
    for bind, extra in (("10.0.0.5", "10.0.0.5"), ("0.0.0.0", None)):
        settings = load_settings(
            env={}, overrides={"api.host": bind, "auth.key_file": tmp_path / "jwt.key"}
        )
        config = AuthConfig.from_settings(settings)
        assert (extra in config.allowed_hosts) if extra else config.allowed_hosts == (
            "127.0.0.1", "localhost", "::1"
        )  # fmt: skip
