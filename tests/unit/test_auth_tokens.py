"""Access tokens, refresh-token families and the signing-key file (valux.auth.tokens)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from valux.auth.errors import (
    InsecureKeyFile,
    RefreshTokenInvalid,
    RefreshTokenReused,
    TokenExpired,
    TokenInvalid,
)
from valux.auth.tokens import (
    FamilyRevoked,
    RefreshTokenRecord,
    Role,
    Rotated,
    hash_refresh_token,
    issue_access_token,
    issue_refresh_token,
    load_or_create_signing_key,
    rotate_refresh_token,
    verify_access_token,
)

KEY = b"k" * 32 + b"-test-signing-key"
OTHER_KEY = b"o" * 48


def _now() -> datetime:
    return datetime.now(UTC)


# -- access tokens ---------------------------------------------------------------


def test_access_token_round_trip_carries_every_claim() -> None:
    """A fresh token verifies and yields sub, role, iat, exp (iat + 15 min), jti and typ."""
    issued = issue_access_token(KEY, subject="user-42", role=Role.ADMIN)
    claims = verify_access_token(KEY, issued.token)
    assert claims == issued.claims
    assert (claims.sub, claims.role, claims.typ) == ("user-42", Role.ADMIN, "access")
    assert claims.exp - claims.iat == timedelta(minutes=15)
    assert issued.expires_in_s == 900
    assert len(claims.jti) == 32
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "HS256"
    assert issue_access_token(KEY, subject="user-42", role="user").claims.jti != claims.jti


def test_an_expired_token_says_expired() -> None:
    """A genuine token past its exp raises TokenExpired (not TokenInvalid): the client refreshes."""
    issued = issue_access_token(KEY, subject="u", role="user", now=_now() - timedelta(minutes=16))
    with pytest.raises(TokenExpired) as info:
        verify_access_token(KEY, issued.token)
    assert info.value.code == "TOKEN_EXPIRED"


def test_a_token_expires_exactly_at_exp_with_no_leeway() -> None:
    """Leeway is zero: one second past a one-second lifetime is already expired."""
    issued = issue_access_token(
        KEY,
        subject="u",
        role="user",
        now=_now() - timedelta(seconds=2),
        lifetime=timedelta(seconds=1),
    )
    with pytest.raises(TokenExpired):
        verify_access_token(KEY, issued.token)


def test_a_tampered_token_is_invalid() -> None:
    """Changing the payload (user → admin) without the key breaks the signature."""
    token = issue_access_token(KEY, subject="u", role="user").token
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid) as info:
        verify_access_token(KEY, f"{head}.{forged}.{sig}")
    assert info.value.code == "TOKEN_INVALID"
    with pytest.raises(TokenInvalid):
        verify_access_token(KEY, "not.a.jwt")


def test_a_token_signed_with_another_key_is_invalid() -> None:
    """A token from another key (another deployment, an attacker) is refused."""
    token = issue_access_token(OTHER_KEY, subject="u", role="user").token
    with pytest.raises(TokenInvalid):
        verify_access_token(KEY, token)


def _payload(**changes: object) -> dict[str, object]:
    now = int(_now().timestamp())
    base: dict[str, object] = {
        "sub": "u",
        "role": "user",
        "iat": now,
        "exp": now + 600,
        "jti": "j" * 32,
        "typ": "access",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"typ": "refresh"}, id="wrong-typ"),
        pytest.param({"typ": None}, id="no-typ"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"role": "root"}, id="unknown-role"),
        pytest.param({"iat": 120}, id="iat-in-future"),
    ],
)
def test_tokens_with_wrong_typ_or_missing_claims_are_invalid(changes: dict[str, object]) -> None:
    """Correctly signed tokens that are not access tokens or lack a claim are refused. The
    payload is made when the test runs, not when it is collected (the whole suite reaches
    it minutes later: a token made at collection would merely be expired); ``iat`` here is
    seconds from now."""
    offset = changes.get("iat")
    if isinstance(offset, int):
        changes = {"iat": int(_now().timestamp()) + offset}
    payload = _payload(**changes)
    with pytest.raises(TokenInvalid):
        verify_access_token(KEY, jwt.encode(payload, KEY, algorithm="HS256"))


def test_other_algorithms_are_refused() -> None:
    """Only HS256 is accepted: an unsigned ('none') or HS512 token is invalid."""
    unsigned = jwt.encode(_payload(), None, algorithm="none")
    with pytest.raises(TokenInvalid):
        verify_access_token(KEY, unsigned)
    with pytest.raises(TokenInvalid):
        verify_access_token(KEY, jwt.encode(_payload(), KEY * 2, algorithm="HS512"))


def test_short_keys_and_naive_times_are_refused() -> None:
    """A key under 32 bytes and a naive issue time are programming errors (ValueError)."""
    with pytest.raises(ValueError, match="32 bytes"):
        issue_access_token(b"short", subject="u", role="user")
    with pytest.raises(ValueError, match="naive"):
        issue_access_token(KEY, subject="u", role="user", now=datetime(2026, 1, 1))  # noqa: DTZ001


# -- refresh tokens --------------------------------------------------------------


class Store:
    """The caller's storage, reduced to a dict keyed by token hash."""

    def __init__(self) -> None:
        self.rows: dict[str, RefreshTokenRecord] = {}

    def put(self, *records: RefreshTokenRecord) -> None:
        for r in records:
            self.rows[r.token_hash] = r

    def get(self, token: str) -> RefreshTokenRecord | None:
        return self.rows.get(hash_refresh_token(token))

    def revoke_family(self, family_id: str, at: datetime) -> None:
        for h, r in list(self.rows.items()):
            if r.family_id == family_id:
                self.rows[h] = RefreshTokenRecord(**{**_fields(r), "revoked_at": at})


def _fields(r: RefreshTokenRecord) -> dict[str, object]:
    return {name: getattr(r, name) for name in r.__dataclass_fields__}


def test_refresh_tokens_are_stored_only_as_sha256_and_live_30_days() -> None:
    """The record holds the token's SHA-256, never the token; it expires 30 days after issue."""
    now = _now()
    issued = issue_refresh_token("user-1", now=now)
    record = issued.record
    assert record.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in repr(record)
    assert record.expires_at - record.issued_at == timedelta(days=30)
    assert record.parent_hash is None and record.used_at is None
    assert len(issued.token) >= 43  # 32 random bytes, base64url


def test_rotation_returns_the_new_token_and_marks_the_old_one_used() -> None:
    """Rotation gives a new token in the same family, child of the old; the old is marked used."""
    store = Store()
    first = issue_refresh_token("user-1")
    store.put(first.record)
    t1 = _now()
    outcome = rotate_refresh_token(first.token, store.get(first.token), now=t1)
    assert isinstance(outcome, Rotated)
    new, used = outcome.new.record, outcome.used
    assert used.token_hash == first.record.token_hash and used.used_at == t1
    assert new.family_id == first.record.family_id
    assert new.parent_hash == first.record.token_hash
    assert new.user_id == outcome.user_id == "user-1"
    assert outcome.new.token != first.token
    store.put(used, new)
    again = rotate_refresh_token(outcome.new.token, store.get(outcome.new.token))
    assert isinstance(again, Rotated) and again.new.record.parent_hash == new.token_hash


def test_reusing_a_rotated_token_revokes_the_whole_family() -> None:
    """Presenting an already-used token returns FamilyRevoked; afterwards no token of it works."""
    store = Store()
    first = issue_refresh_token("user-1")
    store.put(first.record)
    rotated = rotate_refresh_token(first.token, store.get(first.token))
    assert isinstance(rotated, Rotated)
    store.put(rotated.used, rotated.new.record)

    reuse = rotate_refresh_token(first.token, store.get(first.token))  # the thief, or the victim
    assert isinstance(reuse, FamilyRevoked)
    assert reuse.family_id == first.record.family_id and reuse.user_id == "user-1"
    err = reuse.error()
    assert isinstance(err, RefreshTokenReused) and err.code == "REFRESH_TOKEN_REUSED"
    store.revoke_family(reuse.family_id, _now())

    with pytest.raises(RefreshTokenInvalid, match="revoked"):
        rotate_refresh_token(rotated.new.token, store.get(rotated.new.token))
    other = issue_refresh_token("user-1")  # another login's family is untouched
    assert other.record.family_id != reuse.family_id


def test_unknown_expired_and_mismatched_refresh_tokens_are_refused() -> None:
    """No record, a record for another token, or an expired one raise RefreshTokenInvalid."""
    issued = issue_refresh_token("user-1", now=_now() - timedelta(days=31))
    with pytest.raises(RefreshTokenInvalid, match="unknown"):
        rotate_refresh_token(issued.token, None)
    with pytest.raises(RefreshTokenInvalid, match="unknown"):
        rotate_refresh_token("something-else", issued.record)
    with pytest.raises(RefreshTokenInvalid, match="expired") as info:
        rotate_refresh_token(issued.token, issued.record)
    assert info.value.code == "REFRESH_TOKEN_INVALID"


def test_token_errors_pickle() -> None:
    """Token errors cross process boundaries with their codes intact."""
    for err in (TokenExpired("x"), TokenInvalid("y"), RefreshTokenReused("z")):
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err) and clone.code == err.code and clone.message == err.message


# -- the key file ------------------------------------------------------------------


def test_key_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    """A missing key file is created 0600 (even under umask 000) and reads back the same key."""
    path = tmp_path / "secrets" / "jwt.key"
    old = os.umask(0)
    try:
        key = load_or_create_signing_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(key) == 64
    assert load_or_create_signing_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["jwt.key"]  # no temporary left behind
    issued = issue_access_token(key, subject="u", role="user")
    assert verify_access_token(load_or_create_signing_key(path), issued.token).sub == "u"


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A 0644 key file is refused with a message naming the mode and the fix."""
    path = tmp_path / "jwt.key"
    load_or_create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile) as info:
        load_or_create_signing_key(path)
    assert "0644" in info.value.message and "chmod 600" in info.value.message
    assert info.value.code == "KEY_FILE_INSECURE"
    path.chmod(0o640)
    with pytest.raises(InsecureKeyFile):
        load_or_create_signing_key(path)
    path.chmod(0o400)
    assert len(load_or_create_signing_key(path)) == 64


def test_a_key_file_with_too_short_a_key_is_refused(tmp_path: Path) -> None:
    """A private file holding fewer than 32 bytes of key is refused too."""
    path = tmp_path / "jwt.key"
    path.write_text(base64.urlsafe_b64encode(b"x" * 16).decode())
    path.chmod(0o600)
    with pytest.raises(InsecureKeyFile, match="16 bytes"):
        load_or_create_signing_key(path)
