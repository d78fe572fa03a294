"""Request parsing and JSON responses shared by every handler.

Handlers stay thin: ``body = await read_body(request, Model)``, then one
backend call, then :func:`json_response`. All validation problems surface as
:class:`~valux.api.errors.BadRequest` (400) naming each field the way
:func:`valux.feeds.ticks.parse_ticks` does — ``ticks[3].price``,
``metrics.market_cap``; content-type and size problems as 415 and 413.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from valux.api.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from valux.api.keys import CLIENT_IP, MAX_BODY_BYTES, PRINCIPAL
from valux.api.models import ID_RE
from valux.api.security import Principal
from valux.auth.errors import AuthRequired
from valux.errors import FieldError

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json",)


# ------------------------------------------------------------------- encoding


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(data: object) -> str:
    """Compact JSON; Decimals become strings, datetimes ISO-8601."""
    return json.dumps(data, default=_default, separators=(",", ":"), ensure_ascii=False)


def json_response(
    data: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response rendered with :func:`dumps`."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


# ------------------------------------------------------------------- decoding


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON with non-integer numbers as ``Decimal`` (no float rounding).

    Raises :class:`BadRequest` with the parse position on malformed input;
    ``NaN``/``Infinity`` are refused.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"body is not valid UTF-8 (byte {exc.start})",
            errors=[FieldError("body", "not valid UTF-8")],
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise BadRequest(
            f"malformed JSON: {exc.msg} at {where}",
            errors=[FieldError("body", f"{exc.msg} at {where}")],
        ) from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}", errors=[FieldError("body", str(exc))]) from None


def field_path(loc: Sequence[int | str]) -> str:
    """``("ticks", 3, "price")`` → ``"ticks[3].price"``; empty → ``"body"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "body"


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[FieldError]:
    """Every pydantic error as a :class:`FieldError` naming its field."""
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if isinstance(p, int | str)]
        # Tagged unions/function validators add a non-field step to the location.
        loc = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required"
        else:
            message = err["msg"].removeprefix("Value error, ")
        path = field_path(loc)
        errors.append(FieldError(f"{prefix}{path}" if loc else (prefix or path), message))
    return errors


def validate(model: type[M], data: object, *, what: str) -> M:
    """``model.model_validate(data)`` with errors turned into a 400 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        names = ", ".join(dict.fromkeys(e.field for e in errors))
        raise BadRequest(f"invalid {what}: {names}", errors=errors) from None


async def read_raw(request: web.Request) -> bytes:
    """The raw JSON request body, enforcing content type (415) and size (413)."""
    max_size = request.app[MAX_BODY_BYTES]
    if not request.body_exists:
        raise BadRequest("a JSON request body is required", errors=[FieldError("body", "required")])
    if request.content_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"send the body as application/json (got {request.content_type})",
            errors=[FieldError("Content-Type", "must be application/json")],
        )
    if request.content_length is not None and request.content_length > max_size:
        raise PayloadTooLarge(
            f"request body exceeds {max_size} bytes", errors=[FieldError("body", "too large")]
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body exceeds {max_size} bytes", errors=[FieldError("body", "too large")]
        ) from None
    if not raw.strip():
        raise BadRequest("request body is empty", errors=[FieldError("body", "required")])
    return raw


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, enforcing content type (415) and size (413)."""
    return loads(await read_raw(request))


async def read_body(request: web.Request, model: type[M]) -> M:
    """Read, parse and validate a JSON body with ``model``."""
    return validate(model, await read_json(request), what="request body")


async def read_optional_body(request: web.Request, model: type[M]) -> M:
    """Like :func:`read_body`, but no body at all means ``model()`` (its defaults)."""
    if not request.body_exists or request.content_length == 0:
        return validate(model, {}, what="request body")
    return await read_body(request, model)


def caller(request: web.Request) -> Principal:
    """The authenticated caller (the security middleware put it there)."""
    if PRINCIPAL not in request:  # a public route reached a handler that needs a caller
        raise AuthRequired("this route needs Authorization: Bearer <access token>")
    return request[PRINCIPAL]


def owner(request: web.Request) -> str:
    """The caller's user id: every resource a handler touches must be this user's."""
    return caller(request).user_id


def ip(request: web.Request) -> str:
    """The client address (``api.trust_forwarded_for`` decides whether a proxy's counts)."""
    return request.get(CLIENT_IP) or request.remote or "unknown"


def read_query(request: web.Request, model: type[M]) -> M:
    """Validate the query string with ``model``; a repeated parameter is an error."""
    data: dict[str, str] = {}
    errors: list[FieldError] = []
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            errors.append(FieldError(key, "given more than once"))
        data[key] = values[-1]
    if errors:
        raise BadRequest("invalid query string", errors=errors)
    return validate(model, data, what="query string")


def path_id(request: web.Request, name: str = "id") -> str:
    """A path identifier, checked against the client-id alphabet (400 if not)."""
    value = request.match_info[name]
    if not ID_RE.match(value):
        raise BadRequest(
            f"invalid {name} in path",
            errors=[FieldError(name, "must be 1–128 characters of A-Z a-z 0-9 . _ : -")],
        )
    return value
