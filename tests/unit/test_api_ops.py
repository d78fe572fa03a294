"""HTTP layer: health, supervisors, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from prometheus_client.metrics_core import CounterMetricFamily
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from valux.api.app import ROUTES, create_app
from valux.api.keys import OPENAPI_DOC
from valux.api.testing import FakeBackend, api_client
from valux.errors import Unavailable

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(fake: FakeBackend) -> AsyncIterator[Client]:
    async with api_client(fake) as c:
        yield c


# -------------------------------------------------------------------- health


async def test_live_is_always_200(client: Client, fake: FakeBackend) -> None:
    """/health/live answers {"status": "alive"} without asking the backend, even if it fails."""
    fake.fail["health_ready"] = RuntimeError("boom")
    r = await client.get("/health/live")
    assert r.status == 200 and await r.json() == {"status": "alive"}
    assert not fake.calls


async def test_get_routes_answer_head(client: Client) -> None:
    """GET routes also answer HEAD (load-balancer probes), without a body."""
    r = await client.head("/health/live")
    assert r.status == 200 and await r.read() == b""


async def test_ready_200_when_ready(client: Client) -> None:
    """/health/ready is 200 {"ready": true} when the backend says ready."""
    r = await client.get("/health/ready")
    assert r.status == 200 and await r.json() == {"ready": True}


async def test_ready_503_with_reasons(client: Client, fake: FakeBackend) -> None:
    """/health/ready is 503 {"ready": false, "reasons": [...]} when the backend is not ready."""
    fake.ready = (False, ["position p1 not armed", "feed dexscreener stale (12s)"])
    r = await client.get("/health/ready")
    assert r.status == 503
    assert await r.json() == {
        "ready": False,
        "reasons": ["position p1 not armed", "feed dexscreener stale (12s)"],
    }


@pytest.mark.parametrize("exc", [Unavailable("supervisor unreachable"), RuntimeError("x")])
async def test_ready_503_when_backend_fails(
    client: Client, fake: FakeBackend, exc: Exception
) -> None:
    """A readiness check that raises reports not-ready (503) instead of erroring."""
    fake.fail["health_ready"] = exc
    r = await client.get("/health/ready")
    assert r.status == 503
    body = await r.json()
    assert body["ready"] is False and body["reasons"][0].startswith("backend: ")


async def test_status_includes_backend_and_hub(client: Client) -> None:
    """/health/status merges the backend's status with ``hub`` (redis_connected etc.)."""
    r = await client.get("/health/status")
    assert r.status == 200
    body = await r.json()
    assert body["state"] == "RUNNING"
    assert body["hub"]["redis_connected"] is False
    assert body["hub"]["enabled"] is False
    assert body["hub"]["clients"] == 0


async def test_status_503_when_backend_unavailable_still_shows_hub(
    client: Client, fake: FakeBackend
) -> None:
    """If the backend cannot report, /health/status is 503 but still shows the hub."""
    fake.fail["health_status"] = Unavailable("root supervisor down")
    r = await client.get("/health/status")
    assert r.status == 503
    body = await r.json()
    assert body["backend_error"] == "root supervisor down" and "hub" in body


async def test_supervisors(client: Client) -> None:
    """/supervisors returns the backend's supervision tree."""
    r = await client.get("/supervisors")
    assert r.status == 200 and (await r.json())["root"]["state"] == "RUNNING"


# ------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]")


async def test_metrics_exposes_api_and_actor_families(client: Client, fake: FakeBackend) -> None:
    """/metrics serves Prometheus text with per-route request counts/latency, the backend's
    actor families, and nothing without the ``valux_`` prefix."""
    fake.metric_families.append(
        CounterMetricFamily("journal_events", "an unprefixed actor family", value=7)
    )
    await client.get("/api/v1/agents")
    await client.get("/api/v1/agents/missing")
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = await r.text()
    assert 'valux_api_requests_total{method="GET",route="/api/v1/agents",status="200"} 1.0' in text
    assert 'route="/api/v1/agents/{id}",status="404"' in text
    assert 'valux_api_request_seconds_bucket{le="0.001",method="GET",route="/api/v1/agents"}' in (
        text
    )
    assert "valux_fake_actor_up 1.0" in text
    assert "valux_journal_events_total 7.0" in text
    assert "valux_api_actor_metrics_up 1.0" in text
    assert "valux_api_ws_clients 0.0" in text
    names = {m.group(1) for line in text.splitlines() if (m := _SAMPLE.match(line))}
    assert names and all(n.startswith("valux_") for n in names), names


async def test_metrics_survive_backend_failure(client: Client, fake: FakeBackend) -> None:
    """If collecting the actors' metrics fails, /metrics still serves the API's own metrics
    and reports valux_api_actor_metrics_up 0."""
    fake.fail["actor_metrics"] = Unavailable("actors unreachable")
    r = await client.get("/metrics")
    assert r.status == 200
    text = await r.text()
    assert "valux_api_actor_metrics_up 0.0" in text
    assert "valux_fake_actor_up" not in text


async def test_unmatched_paths_share_one_label(client: Client) -> None:
    """Unknown paths are counted under route="unmatched" so label cardinality stays bounded."""
    for i in range(3):
        await client.get(f"/random/{i}")
    text = await (await client.get("/metrics")).text()
    assert 'valux_api_requests_total{method="GET",route="unmatched",status="404"} 3.0' in text


# ------------------------------------------------------------------- openapi


def _registered(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


async def test_openapi_lists_every_registered_route_and_nothing_else(client: Client) -> None:
    """Every (method, path) registered with aiohttp is in /openapi.json, and vice versa."""
    r = await client.get("/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"] == "3.1.0"
    registered = _registered(client.app)  # type: ignore[arg-type]
    assert registered == _documented(doc)
    assert len(registered) == len(ROUTES) == 52


def test_openapi_documents_parameters_bodies_and_responses() -> None:
    """Each operation documents its path parameters, query parameters, body and error replies."""
    app = create_app(FakeBackend(), redis_url=None)
    doc = app[OPENAPI_DOC]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), (method, path)
            assert "500" in op["responses"]
            if method in ("post", "patch") and "requestBody" in op:
                assert {"400", "413", "415"} <= set(op["responses"])

    positions = doc["paths"]["/api/v1/positions"]["get"]
    query = {p["name"]: p for p in positions["parameters"] if p["in"] == "query"}
    assert set(query) == {"agent", "status", "limit", "offset"}
    assert not any(p["required"] for p in query.values())
    assert "closed" in str(query["status"]["schema"])

    signal = doc["paths"]["/api/v1/signals"]["post"]
    assert signal["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SignalIn"
    }
    assert {"200", "201", "400", "503"} <= set(signal["responses"])
    ticks = doc["paths"]["/api/v1/feeds/manual/ticks"]["post"]
    assert "MANUAL_FEED_DISABLED" in ticks["description"]
    assert {"202", "404"} <= set(ticks["responses"])
    assert doc["paths"]["/api/v1/agents/{id}"]["delete"]["responses"]["409"]


def _validator(doc: dict[str, Any], schema_name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        "urn:valux", DRAFT202012.create_resource(doc)
    )
    return Draft202012Validator(
        {"$ref": f"urn:valux#/components/schemas/{schema_name}"}, registry=registry
    )


def test_openapi_schemas_are_valid_and_agree_with_validation() -> None:
    """Component schemas are valid JSON Schema 2020-12, and bodies the API accepts/refuses
    are accepted/refused by the documented schema too."""
    doc = create_app(FakeBackend(), redis_url=None)[OPENAPI_DOC]
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    signal = _validator(doc, "SignalIn")
    good = {"id": "s:1", "token": "BONK", "strength": 5, "type": "t", "size": "0.5"}
    assert signal.is_valid(good)
    assert signal.is_valid({**good, "metrics": {"market_cap": 10, "holder_count": 3}})
    for bad in (
        {**good, "strength": 6},
        {**good, "id": "has space"},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "token"},
    ):
        assert not signal.is_valid(bad), bad
    agent = _validator(doc, "AgentCreate")
    assert agent.is_valid({"name": "a", "balance": "1.5", "config": {"stopLoss": {}}})
    assert not agent.is_valid({"balance": "1"})


async def test_openapi_route_serves_the_built_document(client: Client) -> None:
    """/openapi.json serves exactly the document the app built from its route table."""
    doc = await (await client.get("/openapi.json")).json()
    assert doc == client.app[OPENAPI_DOC]  # type: ignore[index]
