"""HTTP errors of the API: one ``web.HTTPException`` subclass per status.

Handlers and helpers *raise* these (aiohttp house style); the error middleware
in :mod:`valux.api.app` renders every one of them — and every
:class:`valux.errors.ValuxError` the backend raises, and every exception
nobody expected — into the single error body shape::

    {"error": {"code": "INVALID_REQUEST", "message": "...",
               "errors": [{"field": "...", "message": "..."}],
               "request_id": "..."}}

``errors`` is present only when there are field errors. The mapping from the
shared error hierarchy to HTTP lives here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiohttp import web

from valux.auth.errors import AccountLocked, AuthError, PermissionDenied, RateLimited
from valux.custody.keys import InvalidPassphrase, InvalidSecret, WrongPassphrase
from valux.custody.vault import Locked, UnlockBackoff
from valux.errors import (
    ConfigurationError,
    Conflict,
    FieldError,
    InvalidRequest,
    NotFound,
    Unavailable,
    ValuxError,
)


class ApiError(web.HTTPException):
    """Base of every API error: a status, a stable machine ``code`` and a message.

    The exception carries structured data rather than a pre-rendered body so
    the middleware can add the request id when it renders it.
    """

    status_code = 500
    default_code: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(headers=headers, reason=None, text=message)
        self.code = code or self.default_code
        self.message = message
        self.errors = list(errors)
        self.extra_headers = dict(headers or {})

    def error_body(self, request_id: str | None) -> dict[str, Any]:
        """The JSON error body for this error."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            err["errors"] = [e.as_dict() for e in self.errors]
        if request_id is not None:
            err["request_id"] = request_id
        return {"error": err}


class BadRequest(ApiError):
    """400: the request is invalid; ``errors`` names each offending field."""

    status_code = 400
    default_code = "INVALID_REQUEST"


class Unauthorized(ApiError):
    """401: no credential, or one that is expired, revoked or wrong (``WWW-Authenticate``)."""

    status_code = 401
    default_code = "UNAUTHENTICATED"


class Forbidden(ApiError):
    """403: authenticated, but not allowed (role, scope, origin, registration closed)."""

    status_code = 403
    default_code = "FORBIDDEN"


class NotFoundError(ApiError):
    """404: no such route, or the named resource does not exist."""

    status_code = 404
    default_code = "NOT_FOUND"


class MethodNotAllowed(ApiError):
    """405: the path exists but not with this method (``Allow`` says which)."""

    status_code = 405
    default_code = "METHOD_NOT_ALLOWED"


class ConflictError(ApiError):
    """409: the request clashes with the current state."""

    status_code = 409
    default_code = "CONFLICT"


class PayloadTooLarge(ApiError):
    """413: the body exceeds ``max_body_bytes``."""

    status_code = 413
    default_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    """415: the body is not ``application/json``."""

    status_code = 415
    default_code = "UNSUPPORTED_MEDIA_TYPE"


class Unprocessable(ApiError):
    """422: well-formed, but the backend refused it for a domain reason."""

    status_code = 422
    default_code = "UNPROCESSABLE"


class InternalError(ApiError):
    """500: a bug. The body never carries details; the log does."""

    status_code = 500
    default_code = "INTERNAL"


class TooManyRequests(ApiError):
    """429: over a rate limit; ``Retry-After`` says when to try again."""

    status_code = 429
    default_code = "RATE_LIMITED"


class ServiceUnavailable(ApiError):
    """503: a dependency cannot serve the request now; retrying later may work."""

    status_code = 503
    default_code = "UNAVAILABLE"


RETRY_AFTER_S = 2
"""What a 503 tells the client to wait: about one actor restart on these machines."""


def _www_authenticate(exc: AuthError) -> str:
    # RFC 6750 §3: a bad token is "invalid_token"; no credential at all names no error.
    if exc.code == "UNAUTHENTICATED":
        return 'Bearer realm="valux"'
    return f'Bearer realm="valux", error="invalid_token", error_description="{exc.code}"'


def from_valux_error(exc: ValuxError) -> ApiError:
    """Map the shared error hierarchy onto HTTP (the only place that does)."""
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": _www_authenticate(exc)}
        if isinstance(exc, AccountLocked):
            headers["Retry-After"] = str(exc.retry_after_s)
        field = _auth_field(exc)
        return Unauthorized(
            exc.message, code=exc.code, errors=[FieldError(field, exc.message)], headers=headers
        )
    if isinstance(exc, PermissionDenied):
        field = "Origin" if exc.code == "ORIGIN_NOT_ALLOWED" else "Authorization"
        return Forbidden(exc.message, code=exc.code, errors=[FieldError(field, exc.message)])
    if isinstance(exc, RateLimited):
        return TooManyRequests(
            exc.message,
            code=exc.code,
            errors=[FieldError("Retry-After", f"retry in {exc.retry_after_s} s")],
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, UnlockBackoff):
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return TooManyRequests(exc.message, code=exc.code, headers={"Retry-After": retry})
    if isinstance(exc, WrongPassphrase):
        return Forbidden(exc.message, code=exc.code, errors=[FieldError("passphrase", "wrong")])
    if isinstance(exc, InvalidSecret | InvalidPassphrase):
        field = "secret" if isinstance(exc, InvalidSecret) else "passphrase"
        return BadRequest(exc.message, code=exc.code, errors=[FieldError(field, exc.message)])
    if isinstance(exc, Locked):
        return ConflictError(exc.message, code=exc.code)
    if isinstance(exc, InvalidRequest):
        return BadRequest(exc.message, code=exc.code, errors=exc.errors)
    if isinstance(exc, NotFound):
        return NotFoundError(exc.message)
    if isinstance(exc, Conflict):
        return ConflictError(exc.message)
    if isinstance(exc, Unavailable):
        return ServiceUnavailable(exc.message, headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, ConfigurationError):
        # A config the backend refused (e.g. an agent config) is the caller's input.
        return BadRequest(exc.message, code=exc.code)
    return Unprocessable(exc.message, code=exc.code)


def _auth_field(exc: AuthError) -> str:
    """The part of the request a 401 is about: a credential header, or a body field."""
    code = exc.code
    if code.startswith(("SIWE_", "SIWS_")) or code == "NONCE_INVALID":
        return "message"
    if code.startswith("REFRESH_TOKEN"):
        return "refresh_token"
    if code.startswith("WEBHOOK_"):
        return "X-Valux-Signature"
    if code in ("INVALID_CREDENTIALS", "ACCOUNT_LOCKED"):
        return "password"
    if code == "API_KEY_INVALID":
        return "X-API-Key"
    return "Authorization"


_AIOHTTP_CODES: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFoundError,
    405: MethodNotAllowed,
    409: ConflictError,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def from_aiohttp_error(exc: web.HTTPException) -> ApiError:
    """Re-shape an error aiohttp raised itself (unknown route, 405, body too big)."""
    cls = _AIOHTTP_CODES.get(exc.status_code)
    passthrough = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    if cls is None:
        cls = BadRequest if 400 <= exc.status_code < 500 else InternalError
    field = "path"
    if exc.status_code == 404:
        message = "no such route"
    elif exc.status_code == 405:
        message = f"method not allowed; allowed: {passthrough.get('Allow', '')}"
        field = "method"
    elif exc.status_code == 413:
        message = "request body too large"
        field = "body"
    else:
        message = exc.reason
        if exc.status_code == 403:  # aiohttp-cors refusing a preflight
            field = "Origin"
    errors = [FieldError(field, message)] if 400 <= exc.status_code < 500 else []
    return cls(message, headers=passthrough, errors=errors)
