"""The errors of valux's authentication building blocks, one stable ``code`` each.

Every class derives from the shared hierarchy in :mod:`valux.errors`, so the API
maps them without knowing this package: :class:`RedisUnavailable` is an
:class:`~valux.errors.Unavailable` (503, naming Redis), :class:`WeakPassword`
an :class:`~valux.errors.InvalidRequest` (400, field ``password``). The rest
derive from :class:`AuthError` (to become 401) or :class:`PermissionDenied`
(to become 403); the status mapping itself belongs to the API, which will add
those two classes to its table.

All of them pickle (house style): every constructor argument reaches
``super().__init__`` or is given back by ``__reduce__``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from valux.errors import (
    ConfigurationError,
    InvalidRequest,
    Unavailable,
    ValuxError,
)

__all__ = [
    "AccountLocked",
    "AdminRequired",
    "ApiKeyInvalid",
    "AuthError",
    "AuthRequired",
    "HostNotAllowed",
    "InsecureKeyFile",
    "InsufficientScope",
    "InvalidCredentials",
    "InvalidPasswordHash",
    "NonceInvalid",
    "OriginNotAllowed",
    "PermissionDenied",
    "RateLimited",
    "RedisUnavailable",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "RegistrationClosed",
    "SessionRequired",
    "SignInError",
    "SignInFailure",
    "TokenExpired",
    "TokenInvalid",
    "WeakPassword",
    "WebhookBadSignature",
    "WebhookError",
    "WebhookMalformed",
    "WebhookOutsideWindow",
]


class AuthError(ValuxError):
    """The caller could not be authenticated (the API answers 401).

    Messages are safe to show the caller: they never echo a secret, a token or
    a password.
    """

    code = "UNAUTHENTICATED"


class PermissionDenied(ValuxError):
    """The caller is authenticated but may not do this (the API answers 403)."""

    code = "FORBIDDEN"


class AuthRequired(AuthError):
    """The route needs a bearer token or an API key and the request carries neither."""

    code = "UNAUTHENTICATED"


class InvalidCredentials(AuthError):
    """The e-mail and password do not match an account (which of the two is not said)."""

    code = "INVALID_CREDENTIALS"


class AdminRequired(PermissionDenied):
    """The route is a system route: only an admin may call it."""

    code = "ADMIN_REQUIRED"


class SessionRequired(PermissionDenied):
    """The route manages credentials: it needs a login session, not an API key."""

    code = "SESSION_REQUIRED"


class RegistrationClosed(PermissionDenied):
    """Open registration is switched off (``auth.open_registration``)."""

    code = "REGISTRATION_CLOSED"


class OriginNotAllowed(PermissionDenied):
    """A browser page from an origin outside ``api.cors_origins`` tried to change state."""

    code = "ORIGIN_NOT_ALLOWED"


class HostNotAllowed(InvalidRequest):
    """The ``Host`` header names a host outside ``api.allowed_hosts`` (DNS rebinding)."""

    code = "HOST_NOT_ALLOWED"


class RateLimited(ValuxError):
    """Too many requests under one key in the window; retry after ``retry_after_s``."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[RateLimited], tuple[str, int]]:
        return (type(self), (self.message, self.retry_after_s))


# -- passwords ---------------------------------------------------------------


class WeakPassword(InvalidRequest):
    """A new password does not meet the minimum (``errors`` says why, field ``password``)."""

    code = "WEAK_PASSWORD"


class InvalidPasswordHash(ValuxError):
    """A stored password hash is not an argon2 hash (a corrupt row, not a wrong password)."""

    code = "PASSWORD_HASH_INVALID"


class AccountLocked(AuthError):
    """Too many failed logins: the account is locked until ``locked_until`` (UTC)."""

    code = "ACCOUNT_LOCKED"

    def __init__(self, message: str, locked_until: datetime, retry_after_s: int) -> None:
        super().__init__(message)
        self.locked_until = locked_until
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[AccountLocked], tuple[str, datetime, int]]:
        return (type(self), (self.message, self.locked_until, self.retry_after_s))


# -- tokens ------------------------------------------------------------------


class TokenExpired(AuthError):
    """The access token was genuine but its ``exp`` has passed: refresh and retry."""

    code = "TOKEN_EXPIRED"


class TokenInvalid(AuthError):
    """The access token is not one valux issued with this key, or is not an access token."""

    code = "TOKEN_INVALID"


class RefreshTokenInvalid(AuthError):
    """The refresh token is unknown, expired or revoked: log in again."""

    code = "REFRESH_TOKEN_INVALID"


class RefreshTokenReused(AuthError):
    """A refresh token was presented a second time; its whole family has been revoked."""

    code = "REFRESH_TOKEN_REUSED"


class InsecureKeyFile(ConfigurationError):
    """A signing-key file is readable by others, or is not a usable key."""

    code = "KEY_FILE_INSECURE"


# -- wallet sign-in ----------------------------------------------------------


class SignInFailure(StrEnum):
    """Why a Sign-In-With-Ethereum / -Solana attempt failed.

    The error code is the dialect's prefix and this value:
    ``SIWE_BAD_SIGNATURE``, ``SIWS_EXPIRED``, ...
    """

    MALFORMED = "MALFORMED"
    """The text does not follow the message grammar, or lacks a field valux requires."""
    INVALID_ADDRESS = "INVALID_ADDRESS"
    """The address is not a valid account (EIP-55 checksum, or not a base58 ed25519 key)."""
    BAD_SIGNATURE = "BAD_SIGNATURE"
    """The signature is unreadable or was not made by the message's address."""
    ADDRESS_MISMATCH = "ADDRESS_MISMATCH"
    """The caller expected a particular address and the message names another."""
    DOMAIN_MISMATCH = "DOMAIN_MISMATCH"
    """The message's domain (or scheme) is not this service's."""
    URI_MISMATCH = "URI_MISMATCH"
    """The message's URI (or its origin) is not the expected one."""
    CHAIN_MISMATCH = "CHAIN_MISMATCH"
    """The message is bound to another chain."""
    NONCE_MISMATCH = "NONCE_MISMATCH"
    """The message's nonce is not the one this login was issued."""
    EXPIRED = "EXPIRED"
    """The message's Expiration Time has passed, or it was issued too long ago."""
    NOT_YET_VALID = "NOT_YET_VALID"
    """The message's Not Before (or Issued At) lies in the future."""


class SignInError(AuthError):
    """A wallet sign-in failed: ``code`` is e.g. ``SIWE_EXPIRED``; ``reason`` says which check."""

    code = "SIGN_IN_FAILED"

    def __init__(self, prefix: str, reason: SignInFailure, message: str) -> None:
        super().__init__(message)
        self.prefix = prefix
        self.reason = SignInFailure(reason)
        self.code = f"{prefix}_{self.reason.value}"

    def __reduce__(self) -> tuple[type[SignInError], tuple[str, SignInFailure, str]]:
        return (type(self), (self.prefix, self.reason, self.message))


# -- nonces and Redis ----------------------------------------------------------


class NonceInvalid(AuthError):
    """The login nonce is unknown, already used, expired, or bound to another client."""

    code = "NONCE_INVALID"


class RedisUnavailable(Unavailable):
    """Redis, which holds login nonces and rate-limit windows, cannot be reached.

    The message names Redis and where it was expected, so the API's 503 says
    what is down; the client may retry.
    """

    code = "REDIS_UNAVAILABLE"


# -- webhooks ------------------------------------------------------------------


class WebhookError(AuthError):
    """Base of the webhook signature failures."""

    code = "WEBHOOK_REJECTED"


class WebhookMalformed(WebhookError):
    """The ``X-Valux-Signature`` header is missing or does not read ``t=<secs>,v1=<hex>``."""

    code = "WEBHOOK_MALFORMED"


class WebhookBadSignature(WebhookError):
    """No ``v1`` in the header is the HMAC of this body under the shared secret."""

    code = "WEBHOOK_BAD_SIGNATURE"


class WebhookOutsideWindow(WebhookError):
    """The signed timestamp is too old (a replay) or too far in the future."""

    code = "WEBHOOK_OUTSIDE_WINDOW"


# -- API keys ------------------------------------------------------------------


class ApiKeyInvalid(AuthError):
    """The API key is malformed, unknown or revoked."""

    code = "API_KEY_INVALID"


class InsufficientScope(PermissionDenied):
    """The API key (or token) lacks the scope the route requires."""

    code = "INSUFFICIENT_SCOPE"

    def __init__(self, message: str, required: str) -> None:
        super().__init__(message)
        self.required = required

    def __reduce__(self) -> tuple[type[InsufficientScope], tuple[str, str]]:
        return (type(self), (self.message, self.required))
