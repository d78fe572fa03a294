"""Access tokens (JWT), rotating refresh tokens, and the signing-key file.

**Access tokens** are HS256 JWTs signed with a key the caller supplies (at
least :data:`MIN_KEY_BYTES` bytes). Claims: ``sub`` (user id), ``role``
(:class:`Role`), ``iat``, ``exp`` (``iat`` + 15 minutes by default), ``jti``
(random id, for audit and deny-lists) and ``typ`` = ``"access"``. Verification
pins the algorithm (no ``alg`` confusion), requires every claim, allows no
leeway, and says *expired* (:class:`~valux.auth.errors.TokenExpired`, refresh
and retry) apart from *invalid* (:class:`~valux.auth.errors.TokenInvalid`:
wrong key, tampered, not an access token). Hosts that issue and verify must
keep their clocks in sync (NTP): with leeway 0, a token from a host whose clock
runs ahead is refused until that moment arrives.

**Refresh tokens** are opaque random strings (``secrets.token_urlsafe(32)``,
256 bits) handed to the client once; only their SHA-256 is stored (a
high-entropy secret cannot be guessed from its hash, so a slow KDF would add
cost and no safety). They live 30 days and come in *families*: a login starts
a family; each refresh *rotates* — the presented token is marked used and a
new one, child of it in the same family, is issued. Presenting a token that
was already used means two parties hold the family (a stolen token): the
whole family is revoked and both must log in again. The functions are pure
over :class:`RefreshTokenRecord`; the caller looks records up by
:func:`hash_refresh_token` and stores what they return.

**The signing key file**: :func:`load_or_create_signing_key` creates a 64-byte
random key (base64url text) with mode 0600 if the file is missing, and refuses
to read a key file that group or others may read or write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

from valux.auth.errors import (
    InsecureKeyFile,
    RefreshTokenInvalid,
    RefreshTokenReused,
    TokenExpired,
    TokenInvalid,
)

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "ALGORITHM",
    "MIN_KEY_BYTES",
    "REFRESH_TOKEN_LIFETIME",
    "AccessClaims",
    "FamilyRevoked",
    "IssuedAccessToken",
    "IssuedRefreshToken",
    "RefreshTokenRecord",
    "Role",
    "Rotated",
    "hash_refresh_token",
    "issue_access_token",
    "issue_refresh_token",
    "load_or_create_signing_key",
    "rotate_refresh_token",
    "verify_access_token",
]

ALGORITHM = "HS256"
ACCESS_TOKEN_LIFETIME = timedelta(minutes=15)
REFRESH_TOKEN_LIFETIME = timedelta(days=30)
MIN_KEY_BYTES = 32
"""Shortest HS256 key accepted (RFC 7518 §3.2: at least the hash size)."""

_TYP = "access"
_REQUIRED = ["sub", "role", "iat", "exp", "jti", "typ"]


class Role(StrEnum):
    """A user's role: ``admin`` also covers the system routes."""

    USER = "user"
    ADMIN = "admin"


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetimes are not allowed; pass an aware time (UTC)")
    return now.astimezone(UTC)


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the JWT signing key must be at least {MIN_KEY_BYTES} bytes")


# -- access tokens -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token (times are aware, UTC, whole seconds)."""

    sub: str
    role: Role
    iat: datetime
    exp: datetime
    jti: str
    typ: str = _TYP


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    """A freshly signed access token and its claims (``expires_in_s`` for the response body)."""

    token: str
    claims: AccessClaims

    @property
    def expires_in_s(self) -> int:
        return int((self.claims.exp - self.claims.iat).total_seconds())


def issue_access_token(
    key: bytes,
    *,
    subject: str,
    role: Role | str,
    now: datetime | None = None,
    lifetime: timedelta = ACCESS_TOKEN_LIFETIME,
) -> IssuedAccessToken:
    """Sign an access token for user ``subject`` with ``role``, valid ``lifetime`` from ``now``."""
    _check_key(key)
    if not subject:
        raise ValueError("the token subject (user id) must not be empty")
    if lifetime <= timedelta(0):
        raise ValueError("the access token lifetime must be positive")
    issued = _utc(now).replace(microsecond=0)
    claims = AccessClaims(
        sub=subject,
        role=Role(role),
        iat=issued,
        exp=issued + lifetime,
        jti=uuid.uuid4().hex,
    )
    payload = {
        "sub": claims.sub,
        "role": claims.role.value,
        "iat": int(claims.iat.timestamp()),
        "exp": int(claims.exp.timestamp()),
        "jti": claims.jti,
        "typ": claims.typ,
    }
    return IssuedAccessToken(jwt.encode(payload, key, algorithm=ALGORITHM), claims)


def verify_access_token(key: bytes, token: str) -> AccessClaims:
    """The claims of ``token`` if valux signed it with ``key`` and it has not expired.

    Raises :class:`~valux.auth.errors.TokenExpired` for a genuine token past
    its ``exp`` and :class:`~valux.auth.errors.TokenInvalid` for anything else
    (bad signature, other algorithm, missing claim, unknown role, ``typ`` not
    ``access``, ``iat`` in the future).
    """
    _check_key(key)
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            leeway=0,
            options={"require": _REQUIRED, "verify_exp": True, "verify_iat": True},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired("the access token has expired; refresh it") from exc
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"the access token is not valid ({type(exc).__name__})") from exc
    if payload.get("typ") != _TYP:
        raise TokenInvalid("the token is not an access token")
    sub, jti, role = payload.get("sub"), payload.get("jti"), payload.get("role")
    if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not jti:
        raise TokenInvalid("the access token's sub or jti is not a non-empty string")
    if role not in {r.value for r in Role}:
        raise TokenInvalid("the access token names an unknown role")
    return AccessClaims(
        sub=sub,
        role=Role(role),
        iat=datetime.fromtimestamp(payload["iat"], UTC),
        exp=datetime.fromtimestamp(payload["exp"], UTC),
        jti=jti,
    )


# -- refresh tokens ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshTokenRecord:
    """One stored refresh token (the token itself is never stored, only its hash).

    ``parent_hash`` is the token it replaced (None for the first of a family);
    ``used_at`` is set when it was rotated; ``revoked_at`` when its family was
    revoked (logout, reuse detected, password change). The caller indexes
    ``token_hash`` (unique) and ``family_id``.
    """

    token_hash: str
    family_id: str
    parent_hash: str | None
    user_id: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    """A new refresh token: ``token`` goes to the client once, ``record`` to storage."""

    token: str
    record: RefreshTokenRecord


@dataclass(frozen=True, slots=True)
class Rotated:
    """A successful refresh: store ``new.record`` and ``used`` (the old record, now used)."""

    new: IssuedRefreshToken
    used: RefreshTokenRecord

    @property
    def user_id(self) -> str:
        return self.used.user_id


@dataclass(frozen=True, slots=True)
class FamilyRevoked:
    """Reuse detected: revoke every record of ``family_id`` (set ``revoked_at``), then refuse.

    :meth:`error` is the exception to raise once the revocation is stored.
    """

    family_id: str
    user_id: str
    reused_hash: str

    def error(self) -> RefreshTokenReused:
        return RefreshTokenReused(
            "this refresh token was already used; every session of its family has been "
            "signed out — log in again"
        )


def hash_refresh_token(token: str) -> str:
    """The hex SHA-256 under which a refresh token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_refresh(
    user_id: str, family_id: str, parent_hash: str | None, now: datetime, lifetime: timedelta
) -> IssuedRefreshToken:
    token = secrets.token_urlsafe(32)
    record = RefreshTokenRecord(
        token_hash=hash_refresh_token(token),
        family_id=family_id,
        parent_hash=parent_hash,
        user_id=user_id,
        issued_at=now,
        expires_at=now + lifetime,
    )
    return IssuedRefreshToken(token, record)


def issue_refresh_token(
    user_id: str,
    *,
    now: datetime | None = None,
    lifetime: timedelta = REFRESH_TOKEN_LIFETIME,
) -> IssuedRefreshToken:
    """The first refresh token of a new family (at login)."""
    if not user_id:
        raise ValueError("the user id must not be empty")
    return _new_refresh(user_id, uuid.uuid4().hex, None, _utc(now), lifetime)


def rotate_refresh_token(
    presented: str,
    record: RefreshTokenRecord | None,
    *,
    now: datetime | None = None,
    lifetime: timedelta = REFRESH_TOKEN_LIFETIME,
) -> Rotated | FamilyRevoked:
    """Exchange ``presented`` (whose stored ``record`` the caller looked up by hash).

    Returns :class:`Rotated` (store both records, issue an access token for
    ``user_id``) or :class:`FamilyRevoked` when ``presented`` had already been
    used (store the revocation, then raise its :meth:`~FamilyRevoked.error`).
    Raises :class:`~valux.auth.errors.RefreshTokenInvalid` if there is no such
    record, or it is revoked or expired (nothing to store). The new token
    expires ``lifetime`` after the rotation: a family lives as long as it is
    used at least every 30 days.
    """
    at = _utc(now)
    presented_hash = hash_refresh_token(presented)
    if record is None or not hmac.compare_digest(presented_hash, record.token_hash):
        raise RefreshTokenInvalid("unknown refresh token; log in again")
    if record.revoked_at is not None:
        raise RefreshTokenInvalid("this refresh token has been revoked; log in again")
    if record.used_at is not None:
        return FamilyRevoked(record.family_id, record.user_id, record.token_hash)
    if at >= record.expires_at:
        raise RefreshTokenInvalid("this refresh token has expired; log in again")
    new = _new_refresh(record.user_id, record.family_id, record.token_hash, at, lifetime)
    return Rotated(new, replace(record, used_at=at))


# -- the signing key file ------------------------------------------------------

_KEY_BYTES = 64  # HS256's block size: a longer key would be hashed down first


def load_or_create_signing_key(path: Path) -> bytes:
    """The JWT signing key in ``path``, created (0600, 64 random bytes) if it does not exist.

    Creation is atomic (written to a private temporary file, then hard-linked
    into place), so two processes starting together read the same key.
    Raises :class:`~valux.auth.errors.InsecureKeyFile` if the file is not a
    regular file, group or others have any access to it, or it does not hold
    at least :data:`MIN_KEY_BYTES` bytes of base64url.
    """
    path = path.expanduser()
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii") + "\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_key_file(path: Path) -> bytes:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise InsecureKeyFile(f"the JWT signing key {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise InsecureKeyFile(
            f"the JWT signing key {path} has mode {mode:04o}, so other users may read it; "
            f"it must be 0600 or stricter (chmod 600 {path}), or delete it to generate a new key "
            "(which signs every user out)"
        )
    try:
        key = base64.urlsafe_b64decode(path.read_text(encoding="ascii").strip().encode("ascii"))
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InsecureKeyFile(f"the JWT signing key {path} is not base64url text") from exc
    if len(key) < MIN_KEY_BYTES:
        raise InsecureKeyFile(
            f"the JWT signing key {path} holds {len(key)} bytes; {MIN_KEY_BYTES} are needed"
        )
    return key
