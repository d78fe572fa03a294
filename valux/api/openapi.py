"""The OpenAPI 3.1 document, generated from the route table and request models.

Nothing here is written by hand per endpoint: paths, methods, path and query
parameters, request bodies and responses all come from the :class:`Route`
entries the app registers, and schemas from the pydantic models the handlers
validate with. Error responses are derived from what a route can fail with:
400 for any parameters or body, 413/415 for a body, 404 for a path id, 503 and
422 for a backend call, 500 always.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from valux.api.models import ID_PATTERN, ErrorOut
from valux.api.routes import Route

REF_TEMPLATE = "#/components/schemas/{model}"

ERROR_DESCRIPTIONS = {
    400: "Invalid request; `error.errors` names each field.",
    404: "No such resource.",
    409: "Conflicts with the current state.",
    413: "Body larger than the limit.",
    415: "Body is not application/json.",
    422: "Refused by the engine for a domain reason.",
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


def _errors_for(route: Route) -> list[int]:
    codes = set(route.errors) | {500}
    if route.body or route.query or route.path_params:
        codes.add(400)
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
                "required": True,
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
                "`X-Request-Id`."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
