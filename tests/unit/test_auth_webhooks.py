"""HMAC-SHA256 webhook signatures (valux.auth.webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from valux.auth import webhooks
from valux.auth.errors import (
    WebhookBadSignature,
    WebhookMalformed,
    WebhookOutsideWindow,
)

SECRET = "whsec_test-secret-0123456789"
BODY = b'{"id":"sig-1","token":"SOL","strength":3,"type":"breakout"}'
T = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = datetime.fromtimestamp(T, UTC)


def test_sign_then_verify_round_trips() -> None:
    """A header made by sign() verifies for the same body and returns the signed time."""
    header = webhooks.sign(SECRET, BODY, T)
    assert header.startswith(f"t={T},v1=")
    assert webhooks.verify(SECRET, header, BODY, NOW) == T
    assert webhooks.verify(SECRET.encode(), header, BODY, NOW) == T


def test_the_mac_covers_the_timestamp_and_the_body() -> None:
    """The v1 value is HMAC-SHA256 of f"{t}." + body under the secret's UTF-8 bytes."""
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_a_tampered_body_is_refused() -> None:
    """One changed byte in the body fails with WEBHOOK_BAD_SIGNATURE."""
    header = webhooks.sign(SECRET, BODY, T)
    with pytest.raises(WebhookBadSignature) as info:
        webhooks.verify(SECRET, header, BODY.replace(b"3", b"5"), NOW)
    assert info.value.code == "WEBHOOK_BAD_SIGNATURE"


def test_a_moved_timestamp_or_another_secret_is_refused() -> None:
    """Re-stamping a captured signature with a new t, or signing with another secret, fails."""
    header = webhooks.sign(SECRET, BODY, T - 1000)
    restamped = header.replace(f"t={T - 1000}", f"t={T}")
    with pytest.raises(WebhookBadSignature):
        webhooks.verify(SECRET, restamped, BODY, NOW)
    with pytest.raises(WebhookBadSignature):
        webhooks.verify(SECRET, webhooks.sign("whsec_other", BODY, T), BODY, NOW)


def test_an_old_timestamp_is_refused_as_a_replay() -> None:
    """A request signed over 300 s ago is WEBHOOK_OUTSIDE_WINDOW; exactly 300 s is still fine."""
    assert webhooks.verify(SECRET, webhooks.sign(SECRET, BODY, T - 300), BODY, NOW) == T - 300
    with pytest.raises(WebhookOutsideWindow) as info:
        webhooks.verify(SECRET, webhooks.sign(SECRET, BODY, T - 301), BODY, NOW)
    assert info.value.code == "WEBHOOK_OUTSIDE_WINDOW" and "ago" in info.value.message


def test_a_future_timestamp_is_refused() -> None:
    """A request signed more than the window ahead of valux's clock is refused too."""
    assert webhooks.verify(SECRET, webhooks.sign(SECRET, BODY, T + 300), BODY, NOW)
    with pytest.raises(WebhookOutsideWindow, match="future"):
        webhooks.verify(SECRET, webhooks.sign(SECRET, BODY, T + 301), BODY, NOW)
    header = webhooks.sign(SECRET, BODY, T + 3600)
    assert webhooks.verify(SECRET, header, BODY, NOW + timedelta(hours=1), window_s=10)


GOOD_HEX = "0" * 64


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"v1={GOOD_HEX}",
        f"t={T}",
        f"t=abc,v1={GOOD_HEX}",
        f"t=-5,v1={GOOD_HEX}",
        f"t={T},v1=xyz",
        f"t={T},v1={GOOD_HEX.upper().replace('0', 'A')}",
        f"t={T},t={T},v1={GOOD_HEX}",
        f"t={T};v1={GOOD_HEX}",
        f"t={T},v1={GOOD_HEX}," + "x=1," * 300,
    ],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    """Missing, garbled, duplicate-t, non-hex or oversized headers are WEBHOOK_MALFORMED."""
    with pytest.raises(WebhookMalformed) as info:
        webhooks.verify(SECRET, header, BODY, NOW)
    assert info.value.code == "WEBHOOK_MALFORMED"


def test_several_v1_values_allow_secret_rotation() -> None:
    """A header carrying signatures under the old and the new secret verifies with either."""
    old = webhooks.signature("whsec_old", BODY, T)
    new = webhooks.signature("whsec_new", BODY, T)
    header = f"t={T},v1={old},v1={new},v2=ignored"
    assert webhooks.verify("whsec_old", header, BODY, NOW) == T
    assert webhooks.verify("whsec_new", header, BODY, NOW) == T


def test_verify_refuses_naive_now_and_empty_secrets() -> None:
    """Naive datetimes and an empty secret are programming errors (ValueError)."""
    header = webhooks.sign(SECRET, BODY, T)
    with pytest.raises(ValueError, match="naive"):
        webhooks.verify(SECRET, header, BODY, datetime(2026, 1, 1))  # noqa: DTZ001 - the point
    with pytest.raises(ValueError, match="empty"):
        webhooks.sign("", BODY, T)


def test_generated_secrets_are_long_and_distinct() -> None:
    """generate_secret() gives whsec_ + 256 bits, different every time."""
    a, b = webhooks.generate_secret(), webhooks.generate_secret()
    assert a.startswith("whsec_") and len(a) == 6 + 43 and a != b


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_documented_openssl_command_produces_the_same_signature() -> None:
    """The shell recipe in the module docstring computes exactly what verify() checks."""
    script = (
        'printf \'%s.%s\' "$t" "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d\' \' -f1'
    )
    out = subprocess.run(
        ["sh", "-c", script],
        env={"t": str(T), "body": BODY.decode(), "secret": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()
    assert webhooks.verify(SECRET, f"t={T},v1={out}", BODY, NOW) == T
    assert "openssl dgst -sha256 -hmac" in (webhooks.__doc__ or "")
