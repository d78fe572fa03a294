"""Password hashing, the strength minimum and the lockout policy (valux.auth.passwords)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from valux.auth.errors import AccountLocked, InvalidPasswordHash, WeakPassword
from valux.auth.passwords import (
    DEFAULT_PARAMS,
    FAST_INSECURE_PARAMS,
    MIN_LENGTH,
    Argon2Params,
    LockoutPolicy,
    LoginThrottle,
    PasswordHasher,
    check_password_strength,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(FAST_INSECURE_PARAMS)


# -- hashing -------------------------------------------------------------------


def test_hash_is_argon2id_and_verifies(hasher: PasswordHasher) -> None:
    """A hash is a salted argon2id PHC string; the right password verifies, a wrong one does not."""
    stored = hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert "correct horse" not in stored
    assert hasher.hash("correct horse battery staple") != stored  # a fresh salt each time
    assert hasher.verify(stored, "correct horse battery staple")
    assert not hasher.verify(stored, "correct horse battery stapl")
    assert not hasher.verify(stored, "")


def test_default_parameters_are_rfc9106_second_option() -> None:
    """Production hashing uses argon2id with t=3, m=64 MiB, p=4 (RFC 9106's second option)."""
    assert Argon2Params(time_cost=3, memory_kib=65536, parallelism=4) == DEFAULT_PARAMS
    inner = PasswordHasher()._hasher
    assert (inner.time_cost, inner.memory_cost, inner.parallelism) == (3, 65536, 4)
    assert inner.type.name == "ID"


def test_unicode_passwords_are_normalised(hasher: PasswordHasher) -> None:
    """The composed and decomposed spellings of the same password verify alike (NFKC)."""
    stored = hasher.hash("Caf\u00e9 au lait 2026")  # é precomposed
    assert hasher.verify(stored, "Cafe\u0301 au lait 2026")  # e + combining acute


def test_check_returns_a_new_hash_when_parameters_changed(hasher: PasswordHasher) -> None:
    """Checking a hash made with older parameters also returns a fresh hash to store."""
    old = PasswordHasher(Argon2Params(time_cost=2, memory_kib=8, parallelism=1))
    stored = old.hash("a long enough password")
    assert hasher.needs_rehash(stored)
    result = hasher.check(stored, "a long enough password")
    assert result.ok and result.new_hash is not None
    assert not hasher.needs_rehash(result.new_hash)
    assert hasher.check(result.new_hash, "a long enough password").new_hash is None
    assert hasher.check(stored, "wrong password!!").ok is False


def test_a_corrupt_stored_hash_is_an_error_not_a_wrong_password(hasher: PasswordHasher) -> None:
    """A stored value that is not an argon2 hash raises InvalidPasswordHash."""
    with pytest.raises(InvalidPasswordHash):
        hasher.verify("not-a-hash", "whatever password")
    with pytest.raises(InvalidPasswordHash):
        hasher.needs_rehash("$2b$12$bcrypt-looking-thing")


def test_burn_spends_a_verification(hasher: PasswordHasher) -> None:
    """The unknown-user path runs a verification too (and never raises)."""
    hasher.burn("anything at all")
    hasher.burn("anything at all")


# -- strength --------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["correct horse battery", "Tr0ub4dor&3x", "ζωή είναι ωραία", "x" * 9 + "y"],
)
def test_strong_enough_passwords_pass(password: str) -> None:
    """Any password of at least 10 characters passes, whatever its composition."""
    check_password_strength(password, user_inputs=["alice", "alice@example.com"])


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short1!", f"at least {MIN_LENGTH} characters"),
        ("aaaaaaaaaaaa", "one character repeated"),
        ("Password123", "most common"),
        ("qwertyuiop", "most common"),
        ("my-alice-pass-2026", "username or e-mail"),
        ("x" * 1025, "at most 1024"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, why: str) -> None:
    """Too short, one repeated character, a common password or containing the username fails."""
    with pytest.raises(WeakPassword) as info:
        check_password_strength(password, user_inputs=["alice@example.com"])
    assert why in info.value.message
    assert info.value.code == "WEAK_PASSWORD"
    assert {e.field for e in info.value.errors} == {"password"}


def test_every_strength_problem_is_reported_and_the_error_pickles() -> None:
    """All problems come back at once, and WeakPassword survives pickling with its field errors."""
    with pytest.raises(WeakPassword) as info:
        check_password_strength("bbbbbb")
    assert len(info.value.errors) == 2
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.errors == info.value.errors and clone.code == "WEAK_PASSWORD"


# -- lockout ---------------------------------------------------------------------


def _fail(policy: LockoutPolicy, state: LoginThrottle, at: datetime) -> LoginThrottle:
    assert policy.check(state, at).allowed
    return policy.record_failure(state, at).state


def test_five_failures_lock_the_account_for_fifteen_minutes() -> None:
    """Four failures leave the account open; the fifth locks it until 15 minutes later."""
    policy = LockoutPolicy()
    state = LoginThrottle()
    for i in range(4):
        state = _fail(policy, state, T0 + timedelta(minutes=i))
    assert state.failures == 4 and state.locked_until is None
    update = policy.record_failure(state, T0 + timedelta(minutes=4))
    assert update.locked_now
    assert update.state.locked_until == T0 + timedelta(minutes=19)
    check = policy.check(update.state, T0 + timedelta(minutes=5))
    assert not check.allowed and check.retry_after_s == 14 * 60
    err = check.error()
    assert err.code == "ACCOUNT_LOCKED" and err.locked_until == T0 + timedelta(minutes=19)
    assert "840 s" in err.message


def test_a_locked_account_refuses_until_the_lock_ends_then_counts_afresh() -> None:
    """While locked, even attempts are refused and do not extend the lock; after 15 min it opens."""
    policy = LockoutPolicy()
    state = LoginThrottle()
    for i in range(5):
        state = policy.record_failure(state, T0 + timedelta(seconds=i)).state
    locked_until = state.locked_until
    assert locked_until == T0 + timedelta(seconds=4, minutes=15)
    during = policy.record_failure(state, T0 + timedelta(minutes=10))
    assert during.state == state and not during.locked_now
    assert not policy.check(state, locked_until - timedelta(seconds=1)).allowed
    assert policy.check(state, locked_until).allowed
    after = policy.record_failure(state, locked_until + timedelta(seconds=1)).state
    assert after.failures == 1 and after.locked_until is None


def test_failures_spread_beyond_the_window_do_not_lock() -> None:
    """Failures more than 15 minutes after the first one start a new count."""
    policy = LockoutPolicy()
    state = LoginThrottle()
    for i in range(12):  # one failure every 4 minutes: never 5 inside one 15-minute window
        state = _fail(policy, state, T0 + timedelta(minutes=4 * i))
    assert state.locked_until is None and state.failures <= 4


def test_a_success_resets_the_count() -> None:
    """After a successful login the next failures count from zero."""
    policy = LockoutPolicy()
    state = LoginThrottle()
    for i in range(4):
        state = _fail(policy, state, T0 + timedelta(seconds=i))
    state = policy.record_success(state, T0 + timedelta(seconds=5)).state
    assert state == LoginThrottle()
    state = _fail(policy, state, T0 + timedelta(seconds=6))
    assert state.failures == 1


def test_lockout_rejects_naive_times_and_account_locked_pickles() -> None:
    """Naive datetimes are refused; AccountLocked keeps its unlock time through pickling."""
    with pytest.raises(ValueError, match="naive"):
        LockoutPolicy().check(LoginThrottle(), datetime(2026, 1, 1))  # noqa: DTZ001 - the point
    err = AccountLocked("locked", T0, 900)
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.locked_until, clone.retry_after_s, clone.code) == (T0, 900, "ACCOUNT_LOCKED")
