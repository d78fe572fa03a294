"""The OpenAPI 3.1 document, generated from the route table and request models.

Nothing here is written by hand per endpoint: paths, methods, path and query
parameters, request bodies, responses and security all come from the
:class:`Route` entries the app registers, and schemas from the pydantic models
the handlers validate with. Error responses are derived from what a route can
fail with: 400 for any parameters or body and for a foreign ``Host``, 413/415
for a body, 404 for a path id, 401 and 403 for a route that needs a caller
(403 also for a foreign ``Origin`` on a state change), 429 for a rate-limited
route, 503 and 422 for a backend call, 500 always.

Security schemes: ``bearerAuth`` (the access token from ``/api/v1/auth/login``),
``apiKeyAuth`` (``X-API-Key``) and ``webhookSignature`` (``X-Valux-Signature``);
each operation lists the ones it accepts, and public ones an empty list.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from valux.api.models import ID_PATTERN, ErrorOut
from valux.api.routes import Access, Route

REF_TEMPLATE = "#/components/schemas/{model}"

ERROR_DESCRIPTIONS = {
    400: "Invalid request (or a Host outside `api.allowed_hosts`); `error.errors` names "
    "each field.",
    401: "No credential, or an expired, revoked or wrong one (`WWW-Authenticate: Bearer`).",
    403: "Not allowed: the admin role, an API key scope, a session (not an API key), or "
    "a browser Origin outside `api.cors_origins`.",
    404: "No such resource (another user's resource is answered the same way).",
    409: "Conflicts with the current state.",
    413: "Body larger than the limit.",
    415: "Body is not application/json.",
    422: "Refused by the engine for a domain reason.",
    429: "Over a rate limit; `Retry-After` says when to try again.",
    500: "Internal error (details only in the server log, by request id).",
    503: "A dependency is unavailable or the request timed out; retry later.",
}


def _models(routes: Iterable[Route]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {ErrorOut: None}
    for r in routes:
        for m in (r.body, r.query):
            if m is not None:
                seen[m] = None
        for reply in r.responses.values():
            if reply.model is not None:
                seen[reply.model] = None
    return list(seen)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string, never JSON null: drop the null branch."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    rest = [o for o in options if o != {"type": "null"}]
    out = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if len(rest) == 1:
        out.update(rest[0])
    else:
        out["anyOf"] = rest
    if schema.get("default") is not None:
        out["default"] = schema["default"]
    return out


def _query_parameters(model: type[BaseModel], schema: dict[str, Any]) -> list[dict[str, Any]]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    params = []
    for name, prop in props.items():
        prop = _not_null(dict(prop))
        description = prop.pop("description", None) or model.model_fields[name].description
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            param["description"] = description
        params.append(param)
    return params


SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The access token of `POST /api/v1/auth/login` (15 minutes; renew it "
        "with `POST /api/v1/auth/refresh`).",
    },
    "apiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (`vx_...`) from `POST /api/v1/keys`, with the scope the "
        "route needs: `read` for GET, `trade` for the rest, `admin` for system routes.",
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Valux-Signature",
        "description": '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + raw body>` with '
        "the webhook's secret; at most 300 s old.",
    },
}

_SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    Access.PUBLIC: [],
    Access.USER: [{"bearerAuth": []}, {"apiKeyAuth": []}],
    Access.SESSION: [{"bearerAuth": []}],
    Access.ADMIN: [{"bearerAuth": []}, {"apiKeyAuth": []}],
    Access.WEBHOOK: [{"webhookSignature": []}],
}


def _errors_for(route: Route) -> list[int]:
    codes = set(route.errors) | {500}
    if route.body or route.query or route.path_params:
        codes.add(400)
    if route.path not in ("/health/live", "/health/ready"):
        codes.add(400)  # a foreign Host
    if route.access is not Access.PUBLIC:
        codes.add(401)
    if route.access in (Access.USER, Access.SESSION, Access.ADMIN):
        codes.add(403)
    if route.method not in ("GET", "HEAD") or route.long_lived:
        codes.add(403)  # a foreign Origin
    if route.rate_limit is not None:
        codes.add(429)
    if route.rate_limit == "auth":
        codes.add(503)  # Redis down
    if route.body:
        codes |= {413, 415}
    if route.path_params:
        codes.add(404)
    if route.uses_backend:
        codes |= {422, 503}
    return sorted(c for c in codes if c not in route.responses)


def _version() -> str:
    try:
        return importlib.metadata.version("valux")
    except importlib.metadata.PackageNotFoundError:  # running from a plain checkout
        return "0.0.0"


def build_openapi(
    routes: Iterable[Route], *, title: str = "valux", version: str | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``."""
    routes = list(routes)
    models = _models(routes)
    keyed, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    # Query models are flattened into parameters, so they need their own schema.
    inline = {m: m.model_json_schema(ref_template=REF_TEMPLATE) for m in models}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return dict(keyed[(model, "validation")])

    error_content = {"application/json": {"schema": ref(ErrorOut)}}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": [r.tag],
        }
        op["security"] = _SECURITY[r.access]
        if r.description:
            op["description"] = r.description
        params: list[dict[str, Any]] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": ID_PATTERN},
            }
            for p in r.path_params
        ]
        if r.query is not None:
            params += _query_parameters(r.query, inline[r.query])
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": not r.body_optional,
                "content": {"application/json": {"schema": ref(r.body)}},
            }
        responses: dict[str, Any] = {}
        for status, reply in sorted(r.responses.items()):
            entry: dict[str, Any] = {"description": reply.description}
            schema: dict[str, Any] | None = None
            if reply.model is not None:
                schema = ref(reply.model)
            elif reply.schema is not None:
                schema = dict(reply.schema)
            if schema is not None:
                entry["content"] = {reply.content_type: {"schema": schema}}
            responses[str(status)] = entry
        for status in _errors_for(r):
            responses[str(status)] = {
                "description": ERROR_DESCRIPTIONS[status],
                "content": error_content,
            }
        op["responses"] = responses
        paths.setdefault(r.path, {})[r.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version or _version(),
            "description": (
                "HTTP API of the valux trading engine. JSON only; money is a decimal "
                "string (numbers are accepted on input). Every response carries "
                "`X-Request-Id`. Log in with `POST /api/v1/auth/login` and send "
                "`Authorization: Bearer <access_token>`; every resource is its user's "
                "(another user's answers 404)."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
