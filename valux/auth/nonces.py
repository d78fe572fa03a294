"""Single-use login nonces in Redis, shared by every API process.

Contract:

- :meth:`NonceStore.issue` makes a random nonce of :data:`NONCE_LENGTH` (24)
  ASCII letters and digits (~142 bits; SIWE/SIWS need at least 8
  alphanumerics) and stores it with a TTL (:data:`NONCE_TTL_S`, 5 minutes) with
  ``SET NX EX``. It may be *bound* to a value (a pre-login session id, a
  client fingerprint) that must be presented again when it is consumed.
- :meth:`NonceStore.consume` takes it with ``GETDEL``, which is atomic: of two
  concurrent consumes (two API processes, a replayed request) exactly one
  succeeds. An unknown, expired, already-consumed or differently-bound nonce
  raises :class:`~valux.auth.errors.NonceInvalid`; a consume that fails for
  the binding still burns the nonce. ``GETDEL`` needs Redis 6.2 or later
  (the embedded Redis is 6.2).
- Redis being unreachable raises
  :class:`~valux.auth.errors.RedisUnavailable` (a 503 naming Redis): login
  cannot proceed without a nonce store, and trading does not depend on it.

Key layout: ``<prefix><nonce>`` (default prefix ``valux:nonce:``) → ``b:<binding>``,
with the TTL. Nothing else is stored.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string

from redis.asyncio import Redis

from valux.auth._redis import redis_errors
from valux.auth.errors import NonceInvalid

__all__ = ["DEFAULT_PREFIX", "NONCE_LENGTH", "NONCE_TTL_S", "NonceStore"]

NONCE_LENGTH = 24
NONCE_TTL_S = 300
DEFAULT_PREFIX = "valux:nonce:"

_ALPHABET = string.ascii_letters + string.digits
_NONCE_RE = re.compile(r"[A-Za-z0-9]{16,128}")


class NonceStore:
    """Issue and consume single-use nonces under ``prefix`` in ``redis``.

    ``redis`` is a ``redis.asyncio.Redis`` the caller owns (and closes); it may
    be created with ``decode_responses`` either way.
    """

    def __init__(
        self, redis: Redis, *, prefix: str = DEFAULT_PREFIX, ttl_s: int = NONCE_TTL_S
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the nonce TTL must be positive")
        self._redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    async def issue(self, *, bound_to: str = "") -> str:
        """A fresh nonce, valid for ``ttl_s`` seconds and one :meth:`consume`."""
        with redis_errors(self._redis, "login"):
            while True:
                nonce = "".join(secrets.choice(_ALPHABET) for _ in range(NONCE_LENGTH))
                stored = await self._redis.set(
                    self.prefix + nonce, "b:" + bound_to, nx=True, ex=self.ttl_s
                )
                if stored:  # a collision (never, at 142 bits) would simply draw again
                    return nonce

    async def consume(self, nonce: str, *, bound_to: str = "") -> None:
        """Use ``nonce`` up; ``NonceInvalid`` if unknown, expired, used or bound elsewhere."""
        if not _NONCE_RE.fullmatch(nonce):
            raise NonceInvalid("the login nonce is malformed; ask for a new one")
        with redis_errors(self._redis, "login"):
            value = await self._redis.getdel(self.prefix + nonce)
        if value is None:
            raise NonceInvalid("the login nonce is unknown, expired or already used; ask again")
        stored = value if isinstance(value, bytes) else str(value).encode("utf-8")
        if not hmac.compare_digest(stored, ("b:" + bound_to).encode("utf-8")):
            raise NonceInvalid("the login nonce was issued to another client; ask for a new one")
