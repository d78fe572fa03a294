"""API keys and scopes (valux.auth.api_keys), the audit event names and the auth error family."""

from __future__ import annotations

import hashlib
import pickle
import re

import pytest

from valux.auth import errors
from valux.auth.api_keys import (
    ApiKeyRecord,
    Scope,
    check_scope,
    generate_api_key,
    parse_api_key,
    verify_api_key,
)
from valux.auth.audit import AuditEvent
from valux.errors import InvalidRequest, Unavailable, ValuxError


def test_a_generated_key_round_trips() -> None:
    """A new key has the vx_<prefix>_<secret> shape, and verifies against its stored record."""
    new = generate_api_key([Scope.READ, "trade"])
    assert re.fullmatch(r"vx_[a-z0-9]{10}_[A-Za-z0-9]{40}", new.key)
    assert new.record.scopes == frozenset({Scope.READ, Scope.TRADE})
    assert parse_api_key(new.key) == new.record.prefix
    assert verify_api_key(new.key, new.record) is new.record


def test_only_a_hash_and_the_prefix_are_stored() -> None:
    """The record holds the prefix and the SHA-256 of the whole key, never the secret part."""
    new = generate_api_key([Scope.READ])
    secret = new.key.split("_", 2)[2]
    assert new.record.key_hash == hashlib.sha256(new.key.encode()).hexdigest()
    assert secret not in repr(new.record)
    assert generate_api_key([Scope.READ]).key != new.key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "vx_",
        "vx_abc_def",
        "sk_abcdefghij_" + "A" * 40,
        "vx_ABCDEFGHIJ_" + "A" * 40,
        "vx_abcdefghij_" + "A" * 39,
    ],
)
def test_malformed_keys_are_refused(key: str) -> None:
    """Anything that is not vx_<10 lowercase alnum>_<40 alnum> is ApiKeyInvalid."""
    with pytest.raises(errors.ApiKeyInvalid):
        parse_api_key(key)


def test_a_wrong_secret_or_a_missing_record_is_refused() -> None:
    """Same prefix with another secret, a record of another key, or no record: all refused alike."""
    new = generate_api_key([Scope.TRADE])
    forged = new.key[:-1] + ("A" if new.key[-1] != "A" else "B")
    with pytest.raises(errors.ApiKeyInvalid, match="unknown or revoked"):
        verify_api_key(forged, new.record)
    with pytest.raises(errors.ApiKeyInvalid, match="unknown or revoked"):
        verify_api_key(new.key, None)
    other = generate_api_key([Scope.TRADE])
    with pytest.raises(errors.ApiKeyInvalid):
        verify_api_key(new.key, other.record)
    with pytest.raises(errors.ApiKeyInvalid):
        verify_api_key(new.key, ApiKeyRecord(new.record.prefix, other.record.key_hash, frozenset()))


def test_scopes_include_the_lower_ones() -> None:
    """read < trade < admin: trade covers read, admin covers everything, read covers only read."""
    check_scope([Scope.TRADE], Scope.READ)
    check_scope([Scope.ADMIN], "trade")
    check_scope(["read"], Scope.READ)
    with pytest.raises(errors.InsufficientScope) as info:
        check_scope([Scope.READ], Scope.TRADE)
    assert info.value.required == "trade" and info.value.code == "INSUFFICIENT_SCOPE"
    assert isinstance(info.value, errors.PermissionDenied)
    with pytest.raises(errors.InsufficientScope):
        check_scope([Scope.TRADE], Scope.ADMIN)
    with pytest.raises(errors.InsufficientScope):
        check_scope([], Scope.READ)
    with pytest.raises(ValueError):
        check_scope(["write"], Scope.READ)
    with pytest.raises(ValueError, match="at least one scope"):
        generate_api_key([])


def test_audit_event_names_are_stable_snake_case() -> None:
    """The audit log's event names are unique snake_case strings including the security events."""
    values = [e.value for e in AuditEvent]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", v) for v in values)
    for name in ("login_ok", "login_failed", "lockout", "key_export", "wallet_unlock"):
        assert name in values
    assert AuditEvent("risk_state_changed") is AuditEvent.RISK_STATE_CHANGED


def test_every_auth_error_pickles_with_its_code() -> None:
    """Each error class survives pickling (it may cross Ray) and has a distinct code."""
    samples: list[ValuxError] = [
        errors.AuthError("a"),
        errors.PermissionDenied("b"),
        errors.WeakPassword("c"),
        errors.InvalidPasswordHash("d"),
        errors.TokenExpired("e"),
        errors.TokenInvalid("f"),
        errors.RefreshTokenInvalid("g"),
        errors.RefreshTokenReused("h"),
        errors.InsecureKeyFile("i"),
        errors.NonceInvalid("j"),
        errors.RedisUnavailable("k"),
        errors.WebhookMalformed("l"),
        errors.WebhookBadSignature("m"),
        errors.WebhookOutsideWindow("n"),
        errors.ApiKeyInvalid("o"),
        errors.InsufficientScope("p", "admin"),
        errors.SignInError("SIWS", errors.SignInFailure.BAD_SIGNATURE, "q"),
    ]
    codes = [e.code for e in samples]
    assert len(codes) == len(set(codes))
    for err in samples:
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err)
        assert (clone.code, clone.message) == (err.code, err.message)
    assert isinstance(errors.RedisUnavailable("x"), Unavailable)  # the API answers 503
    assert isinstance(errors.WeakPassword("x"), InvalidRequest)  # the API answers 400
