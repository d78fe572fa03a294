"""API keys for scripts and bots: ``vx_<prefix>_<secret>``, shown once, stored as a hash.

Contract:

- :func:`generate_api_key` returns the key (to show the user exactly once) and
  the :class:`ApiKeyRecord` to store: the ``prefix`` (10 lowercase letters and
  digits, ~51 bits, the lookup index; it may also be shown in lists, "vx_k3j9…")
  and ``key_hash``, the hex SHA-256 of the whole key. The secret part is 40
  letters and digits (~238 bits).
- SHA-256, not argon2, is deliberate: a slow KDF protects *low-entropy*
  secrets (passwords) against guessing. A 238-bit random secret cannot be
  guessed from its hash at any hash speed, and a fast hash keeps checking a
  key on every request to microseconds instead of ~50 ms and 64 MiB.
- :func:`verify_api_key` takes the presented key and the record the caller
  found by :func:`parse_api_key`'s prefix, and compares hashes in constant
  time. Unknown, malformed or mismatching keys all raise the same
  :class:`~valux.auth.errors.ApiKeyInvalid` (revocation is the caller's: delete
  or flag the row and pass None).
- :class:`Scope` is ``read`` < ``trade`` < ``admin``: each includes the ones
  before it. :func:`check_scope` raises
  :class:`~valux.auth.errors.InsufficientScope` (403) when the granted scopes
  do not cover the required one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from valux.auth.errors import ApiKeyInvalid, InsufficientScope

__all__ = [
    "KEY_PREFIX",
    "ApiKeyRecord",
    "NewApiKey",
    "Scope",
    "check_scope",
    "generate_api_key",
    "hash_api_key",
    "parse_api_key",
    "verify_api_key",
]

KEY_PREFIX = "vx"
_PREFIX_LEN = 10
_SECRET_LEN = 40
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_KEY_RE = re.compile(rf"{KEY_PREFIX}_([a-z0-9]{{{_PREFIX_LEN}}})_([A-Za-z0-9]{{{_SECRET_LEN}}})")


class Scope(StrEnum):
    """What an API key may do; a scope includes every scope below it."""

    READ = "read"
    """GET anything the key's user owns."""
    TRADE = "trade"
    """Also post signals, close positions, pause and resume agents."""
    ADMIN = "admin"
    """Also the system routes (only for keys of an admin user)."""

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Scope.READ: 0, Scope.TRADE: 1, Scope.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """What the caller stores for a key (plus its own columns: user, name, created, revoked)."""

    prefix: str
    key_hash: str
    scopes: frozenset[Scope]


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly generated key: ``key`` to show once, ``record`` to store."""

    key: str
    record: ApiKeyRecord


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of the whole key, as stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key(scopes: Iterable[Scope | str]) -> NewApiKey:
    """A new key with ``scopes`` (at least one)."""
    granted = frozenset(Scope(s) for s in scopes)
    if not granted:
        raise ValueError("an API key needs at least one scope")
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LEN))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LEN))
    key = f"{KEY_PREFIX}_{prefix}_{secret}"
    return NewApiKey(key, ApiKeyRecord(prefix, hash_api_key(key), granted))


def parse_api_key(key: str) -> str:
    """The lookup prefix of ``key``; raises ``ApiKeyInvalid`` if the key is malformed."""
    match = _KEY_RE.fullmatch(key)
    if match is None:
        raise ApiKeyInvalid("the API key is malformed (expected vx_<prefix>_<secret>)")
    return match.group(1)


def verify_api_key(key: str, record: ApiKeyRecord | None) -> ApiKeyRecord:
    """``record`` if ``key`` is the key it was made for; else raise ``ApiKeyInvalid``."""
    prefix = parse_api_key(key)
    if record is None or record.prefix != prefix:
        raise ApiKeyInvalid("unknown or revoked API key")
    if not hmac.compare_digest(hash_api_key(key), record.key_hash):
        raise ApiKeyInvalid("unknown or revoked API key")
    return record


def check_scope(granted: Iterable[Scope | str], required: Scope | str) -> None:
    """Raise ``InsufficientScope`` (403) unless ``granted`` covers ``required``."""
    need = Scope(required)
    best = max((Scope(s).rank for s in granted), default=-1)
    if best < need.rank:
        raise InsufficientScope(f"this needs an API key with the {need.value!r} scope", need.value)
