"""HMAC-SHA256 signatures for webhooks (TradingView alerts, scripts) posting to valux.

The sender and valux share a secret (:func:`generate_secret`). Each request
carries the header::

    X-Valux-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC is over the bytes ``f"{t}."`` followed by the raw request body,
keyed with the secret's UTF-8 bytes. Binding the time into the MAC and
accepting it only within ``window_s`` (300 s) of valux's clock, in both
directions, stops replays of a captured request later on (and a sender whose
clock is badly off is told so). The comparison is constant-time. Several
``v1=`` entries may be sent (the same body signed with the old and the new
secret while rotating); one match suffices. Other keys (a future ``v2``) are
ignored.

Verification raises, each a distinct :class:`~valux.auth.errors.WebhookError`:
``WEBHOOK_MALFORMED`` (no header, or not ``t=<digits>`` and at least one
``v1=<64 hex>``), ``WEBHOOK_BAD_SIGNATURE`` (no ``v1`` matches),
``WEBHOOK_OUTSIDE_WINDOW`` (genuine, but too old or too far ahead). The
signature is checked before the time, so only a genuine request learns
about the window.

Secrets at rest: valux must keep the secret itself (an HMAC is checked by
recomputing it), so :func:`seal_secret` encrypts it with AES-256-GCM under a
key derived (HKDF-SHA256, its own label) from the server's key file, and
:func:`open_secret` decrypts it; a database dump alone does not reveal them.

Signing from a shell, with curl and openssl (``--data-binary`` sends the
body byte for byte, as signed; the route is the webhook's own signal intake,
``POST /api/v1/webhooks/<id>/signals``)::

    secret='whsec_...'                      # from POST /api/v1/webhooks, shown once
    url='http://127.0.0.1:8080/api/v1/webhooks/wh_.../signals'
    body='{"id":"sig-1","token":"SOL","strength":3,"type":"breakout"}'
    t=$(date +%s)
    sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
    curl -sS -X POST "$url" \\
      -H 'Content-Type: application/json' \\
      -H "X-Valux-Signature: t=$t,v1=$sig" \\
      --data-binary "$body"
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from valux.auth.errors import WebhookBadSignature, WebhookMalformed, WebhookOutsideWindow

__all__ = [
    "DEFAULT_WINDOW_S",
    "HEADER",
    "generate_secret",
    "open_secret",
    "seal_secret",
    "sign",
    "signature",
    "verify",
]

HEADER = "X-Valux-Signature"
DEFAULT_WINDOW_S = 300

_T_RE = re.compile(r"[0-9]{1,12}")
_V1_RE = re.compile(r"[0-9a-f]{64}")
_MAX_HEADER = 1024


def generate_secret() -> str:
    """A new shared secret (``whsec_`` and 43 base64url characters, 256 bits), shown once."""
    return "whsec_" + secrets.token_urlsafe(32)


_SEAL_INFO = b"valux webhook secrets v1"
_NONCE_BYTES = 12


def _seal_key(server_key: bytes) -> bytes:
    if len(server_key) < 32:
        raise ValueError("the server key must be at least 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(server_key)


def seal_secret(server_key: bytes, secret: str, *, bound_to: str) -> bytes:
    """``secret`` encrypted for storage (nonce + AES-256-GCM ciphertext), bound to
    ``bound_to`` (the webhook id) so a sealed secret cannot be moved to another row."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_seal_key(server_key)).encrypt(
        nonce, secret.encode("utf-8"), bound_to.encode("utf-8")
    )
    return nonce + sealed


def open_secret(server_key: bytes, blob: bytes, *, bound_to: str) -> str:
    """The secret :func:`seal_secret` stored; ``ValueError`` if the key or binding differ."""
    try:
        plain = AESGCM(_seal_key(server_key)).decrypt(
            blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], bound_to.encode("utf-8")
        )
    except InvalidTag:
        raise ValueError(
            "the webhook secret cannot be decrypted (was the key file replaced?)"
        ) from None
    return plain.decode("utf-8")


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the webhook secret must not be empty")
    return key


def signature(secret: str | bytes, body: bytes, t: int) -> str:
    """The hex HMAC-SHA256 of ``f"{t}.".encode() + body`` under ``secret``."""
    return hmac.new(_key(secret), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, t: int) -> str:
    """The ``X-Valux-Signature`` header value for ``body`` sent at unix time ``t``."""
    if t < 0:
        raise ValueError("the webhook timestamp must be a unix time in seconds")
    return f"t={t},v1={signature(secret, body, t)}"


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise WebhookMalformed(f"the {HEADER} header is missing")
    if len(header) > _MAX_HEADER:
        raise WebhookMalformed(f"the {HEADER} header is too long")
    t: int | None = None
    v1: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookMalformed(f"the {HEADER} header must read t=<seconds>,v1=<hex>")
        if key == "t":
            if t is not None or not _T_RE.fullmatch(value):
                raise WebhookMalformed(f"the {HEADER} header needs one t=<unix seconds>")
            t = int(value)
        elif key == "v1":
            if not _V1_RE.fullmatch(value):
                raise WebhookMalformed("v1 must be 64 lowercase hex digits (HMAC-SHA256)")
            v1.append(value)
    if t is None or not v1:
        raise WebhookMalformed(f"the {HEADER} header must read t=<seconds>,v1=<hex>")
    return t, v1


def verify(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    now: datetime,
    window_s: int = DEFAULT_WINDOW_S,
) -> int:
    """Check ``header`` against ``body``; return the signed unix time.

    ``now`` must be aware. Raises ``WebhookMalformed``, ``WebhookBadSignature``
    or ``WebhookOutsideWindow`` (module docstring).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetimes are not allowed; pass an aware time (UTC)")
    t, candidates = _parse(header)
    expected = signature(secret, body, t)
    # Compare against every candidate (no early exit) so timing says nothing about which.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookBadSignature("the webhook signature does not match this body")
    skew = now.timestamp() - t
    if skew > window_s:
        raise WebhookOutsideWindow(
            f"the webhook was signed {int(skew)} s ago; at most {window_s} s are accepted"
        )
    if -skew > window_s:
        raise WebhookOutsideWindow(
            f"the webhook is signed {int(-skew)} s in the future; check the sender's clock"
        )
    return t
