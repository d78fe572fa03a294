"""The route table: one :class:`Route` per endpoint, used twice.

:func:`valux.api.app.create_app` registers each route's handler with aiohttp,
and :func:`valux.api.openapi.build_openapi` documents the very same entries —
method, path, path parameters, query and body models, responses — so the
OpenAPI document cannot drift from what is served.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PATH_PARAM_RE = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Reply:
    """A documented response: a pydantic model, a raw JSON schema, or neither."""

    description: str
    model: type[BaseModel] | None = None
    schema: Mapping[str, Any] | None = None
    content_type: str = "application/json"


OBJECT = {"type": "object", "additionalProperties": True}
"""Schema of a backend-shaped JSON object."""

ARRAY_OF_OBJECTS = {"type": "array", "items": OBJECT}


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: how to serve it and how to document it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    responses: Mapping[int, Reply]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    """Error statuses beyond those implied by parameters and the backend."""
    uses_backend: bool = True
    long_lived: bool = False
    """Streams (WebSocket): no request timeout, no latency histogram."""
    description: str | None = None
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(PATH_PARAM_RE.findall(self.path)))
