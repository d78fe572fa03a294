"""The route table: one :class:`Route` per endpoint, used three times.

:func:`valux.api.app.create_app` registers each route's handler with aiohttp,
its security middleware enforces each route's :class:`Access`, and
:func:`valux.api.openapi.build_openapi` documents the very same entries —
method, path, path parameters, query and body models, responses, security
scheme — so neither the OpenAPI document nor the access rules can drift from
what is served. A route is :attr:`Access.USER` unless it says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

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


class Access(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"
    """Anyone: health probes, the OpenAPI document, register / login / nonce / refresh."""
    USER = "user"
    """A signed-in user (access token) or an API key (``read`` for GET, ``trade`` else);
    every resource it names must be the caller's own (another user's: 404)."""
    SESSION = "session"
    """A signed-in user with an access token, not an API key: managing credentials."""
    ADMIN = "admin"
    """An admin (an API key of an admin with the ``admin`` scope): system routes."""
    WEBHOOK = "webhook"
    """A request signed with the webhook's HMAC secret (``X-Valux-Signature``)."""


RateGroup = Literal["auth", "signals"]


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
    access: Access = Access.USER
    rate_limit: RateGroup | None = None
    """``auth``: limited per client address (and per account on login); ``signals``: per
    address and per user."""
    body_optional: bool = False
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(PATH_PARAM_RE.findall(self.path)))
