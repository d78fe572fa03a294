"""Operations: health, supervision tree, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import structlog
from aiohttp import web

from valux.api.auth_service import AUTH
from valux.api.http import ip, json_response, owner, read_body
from valux.api.keys import BACKEND, METRICS, OPENAPI_DOC
from valux.api.models import LiveOut, ReadyOut, RiskStateOut, StateIn
from valux.api.routes import OBJECT, Access, Reply, Route
from valux.api.ws import HUB
from valux.auth.audit import AuditEvent
from valux.errors import ValuxError

log = structlog.get_logger("valux.api")


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def ready(request: web.Request) -> web.Response:
    try:
        is_ready, reasons = await request.app[BACKEND].health_ready()
    except ValuxError as exc:
        is_ready, reasons = False, [f"backend: {exc.message}"]
    except Exception as exc:  # a readiness probe reports, it does not crash
        log.exception("health_ready_failed")
        is_ready, reasons = False, [f"backend: {type(exc).__name__}"]
    if is_ready:
        return json_response({"ready": True})
    return json_response({"ready": False, "reasons": list(reasons)}, status=503)


async def status(request: web.Request) -> web.Response:
    hub = request.app[HUB].status()
    try:
        backend = await request.app[BACKEND].health_status()
    except ValuxError as exc:
        return json_response({"backend_error": exc.message, "hub": hub}, status=503)
    return json_response({**backend, "hub": hub})


async def supervisors(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].supervisors())


async def metrics(request: web.Request) -> web.Response:
    try:
        families = await request.app[BACKEND].actor_metrics()
    except Exception:  # the API's own metrics are still worth serving
        log.warning("actor_metrics_failed", exc_info=True)
        families = None
    body, content_type = request.app[METRICS].render(families)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def get_risk_state(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].get_global_state())


async def set_risk_state(request: web.Request) -> web.Response:
    body = await read_body(request, StateIn)
    result = await request.app[BACKEND].set_global_state(state=body.state, reason=body.reason)
    who = owner(request)
    await request.app[AUTH].audit(
        AuditEvent.KILL_SWITCH if body.state == "HALTED" else AuditEvent.RISK_STATE_CHANGED,
        actor_id=who,
        ip=ip(request),
        detail={"scope": "global", "state": body.state, "reason": body.reason},
    )
    return json_response(result)


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_DOC])


ROUTES = [
    Route("GET", "/health/live", live, "healthLive", "Liveness: the process serves", "health",
          {200: Reply("Always, while the process serves.", model=LiveOut)}, uses_backend=False,
          access=Access.PUBLIC),
    Route("GET", "/health/ready", ready, "healthReady",
          "Readiness: every open position armed, every feed fresh", "health",
          {200: Reply("Ready.", model=ReadyOut),
           503: Reply("Not ready, with the reasons.", model=ReadyOut)},
          uses_backend=False, access=Access.PUBLIC),
    Route("GET", "/health/status", status, "healthStatus", "Detailed component status",
          "health", {200: Reply("Engine status plus `hub` (WebSocket fan-out, "
                                "`hub.redis_connected`).", schema=OBJECT)},
          access=Access.ADMIN),
    Route("GET", "/supervisors", supervisors, "getSupervisors", "The supervision tree",
          "health", {200: Reply("Supervisors, children, restarts.", schema=OBJECT)},
          access=Access.ADMIN),
    Route("GET", "/metrics", metrics, "metrics", "Prometheus metrics", "health",
          {200: Reply("Prometheus text exposition; every name prefixed `valux_`.",
                      schema={"type": "string"}, content_type="text/plain")},
          access=Access.ADMIN),
    Route("GET", "/api/v1/risk/state", get_risk_state, "getRiskState",
          "The global trading state", "risk",
          {200: Reply("The global state.", model=RiskStateOut)}),
    Route("POST", "/api/v1/risk/state", set_risk_state, "setRiskState",
          "Set the global trading state (the kill switch: HALTED)", "risk",
          {200: Reply("The state applied, with the agent hosts reached and the fan-out "
                      "latency.", model=RiskStateOut)}, body=StateIn, access=Access.ADMIN,
          description="Journaled, then applied on every agent host in one round of parallel "
                      "calls; survives restarts. Each agent runs under the strictest of its "
                      "own state and this one."),
    Route("GET", "/openapi.json", openapi, "openapi", "This OpenAPI document", "health",
          {200: Reply("OpenAPI 3.1.", schema=OBJECT)}, uses_backend=False,
          access=Access.PUBLIC),
]  # fmt: skip
