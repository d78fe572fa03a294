"""Password hashing (argon2id), the strength minimum, and the login lockout policy.

Contract:

- :class:`PasswordHasher` hashes with **argon2id** and explicit parameters
  (:data:`DEFAULT_PARAMS`, RFC 9106's second recommended option: 3 passes over
  64 MiB, 4 lanes; about 50–100 ms on these machines). Tests pass
  :data:`FAST_INSECURE_PARAMS`. Passwords are NFKC-normalised before hashing
  and verifying (NIST SP 800-63B §5.1.1.2), so the same password typed on two
  keyboards verifies. Hashing blocks the thread: an aiohttp handler runs it in
  an executor.
- :meth:`PasswordHasher.check` takes the stored hash and the attempt and
  returns whether it matched and, when the stored hash was made with older
  parameters, the new hash to store (rehash on login).
- :func:`check_password_strength` is the minimum for a *new* password: at least
  :data:`MIN_LENGTH` (10) characters after normalisation, at most
  :data:`MAX_LENGTH` (1024), not one repeated character, not a well-known
  password, not containing the user's name or e-mail. No composition rules
  (NIST advises against them); length is what counts.
- :class:`LockoutPolicy` is pure: given the stored :class:`LoginThrottle` and
  ``now`` it answers whether a login may be attempted and returns the new
  values to store after a failure or success. Five failures within 15 minutes
  lock the account for 15 minutes; while locked, attempts are refused without
  checking the password and do not extend the lock; when the lock ends the
  count starts again from zero. A refusal's :meth:`LockoutCheck.error` is the
  :class:`~valux.auth.errors.AccountLocked` (with ``retry_after_s``) to raise.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from valux.auth.errors import AccountLocked, InvalidPasswordHash, WeakPassword
from valux.errors import FieldError

__all__ = [
    "DEFAULT_PARAMS",
    "FAST_INSECURE_PARAMS",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "Argon2Params",
    "LockoutCheck",
    "LockoutPolicy",
    "LockoutUpdate",
    "LoginThrottle",
    "PasswordCheck",
    "PasswordHasher",
    "check_password_strength",
]

MIN_LENGTH = 10
"""Fewest characters (Unicode code points, after NFKC) a new password may have."""

MAX_LENGTH = 1024
"""Most characters a password may have; bounds the work an attacker can ask for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Argon2Params:
    """argon2id cost parameters. ``memory_kib`` is in KiB."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4
    hash_len: int = 32
    salt_len: int = 16


DEFAULT_PARAMS = Argon2Params()
"""RFC 9106 §4 second recommended option (t=3, m=64 MiB, p=4): the production cost."""

FAST_INSECURE_PARAMS = Argon2Params(time_cost=1, memory_kib=8, parallelism=1)
"""The cheapest argon2id allows: for tests only, never for real passwords."""


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The outcome of a password check: ``ok``, and a replacement hash to store if any."""

    ok: bool
    new_hash: str | None = None


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    """argon2id hashing with explicit parameters (a thin, typed wrapper over argon2-cffi)."""

    def __init__(self, params: Argon2Params = DEFAULT_PARAMS) -> None:
        self.params = params
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=params.hash_len,
            salt_len=params.salt_len,
            type=argon2.Type.ID,
        )
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        """The PHC-format argon2id hash (``$argon2id$v=19$m=…``) to store for ``password``."""
        return self._hasher.hash(_normalise(password))

    def verify(self, stored_hash: str, password: str) -> bool:
        """True if ``password`` matches ``stored_hash``.

        Raises :class:`~valux.auth.errors.InvalidPasswordHash` if the stored
        value is not an argon2 hash (a corrupt row is not a wrong password).
        """
        try:
            return self._hasher.verify(stored_hash, _normalise(password))
        except InvalidHashError as exc:
            raise InvalidPasswordHash(
                "the stored password hash is not a valid argon2 hash"
            ) from exc
        except VerificationError:
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True if ``stored_hash`` was made with other parameters (or another argon2 type)."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError as exc:
            raise InvalidPasswordHash(
                "the stored password hash is not a valid argon2 hash"
            ) from exc

    def check(self, stored_hash: str, password: str) -> PasswordCheck:
        """Verify, and on success say what to store if the hash's parameters are outdated."""
        if not self.verify(stored_hash, password):
            return PasswordCheck(ok=False)
        if self.needs_rehash(stored_hash):
            return PasswordCheck(ok=True, new_hash=self.hash(password))
        return PasswordCheck(ok=True)

    def burn(self, password: str) -> None:
        """Spend the time of one verification for a user that does not exist.

        Answering "no such user" faster than "wrong password" would tell an
        attacker which accounts exist; call this on the unknown-user path.
        """
        if self._dummy_hash is None:
            self._dummy_hash = self.hash("valux-dummy-password")
        self.verify(self._dummy_hash, password)


# A few of the most common passwords that pass the length rule (from public breach
# top lists); the full breached-password check belongs to a later, networked step.
_COMMON = frozenset(
    {
        "1234567890",
        "0123456789",
        "12345678910",
        "123456789a",
        "qwertyuiop",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "password12",
        "password123",
        "password1234",
        "passw0rd123",
        "iloveyou12",
        "qwerty1234",
        "qwerty123456",
        "abcdefghij",
        "letmein123",
        "welcome123",
        "administrator",
        "changeme123",
        "trustno1234",
    }
)


def check_password_strength(password: str, *, user_inputs: Iterable[str] = ()) -> None:
    """Raise :class:`~valux.auth.errors.WeakPassword` unless ``password`` meets the minimum.

    ``user_inputs`` are strings the password must not contain (the username,
    the e-mail and its local part), compared case-insensitively; inputs
    shorter than 4 characters are ignored. Every problem is reported at once.
    """
    normalised = _normalise(password)
    problems: list[str] = []
    if len(normalised) < MIN_LENGTH:
        problems.append(f"it must be at least {MIN_LENGTH} characters long")
    if len(normalised) > MAX_LENGTH:
        problems.append(f"it must be at most {MAX_LENGTH} characters long")
    if normalised and len(set(normalised)) == 1:
        problems.append("it must not be one character repeated")
    folded = normalised.casefold()
    if folded in _COMMON:
        problems.append("it is one of the most common passwords")
    for value in user_inputs:
        parts = {value, value.split("@", 1)[0]}
        if any(len(p) >= 4 and _normalise(p).casefold() in folded for p in parts):
            problems.append("it must not contain your username or e-mail")
            break
    if problems:
        raise WeakPassword(
            "the password is too weak: " + "; ".join(problems),
            [FieldError("password", p) for p in problems],
        )


# -- lockout -------------------------------------------------------------------


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetimes are not allowed; pass an aware time (UTC)")
    return now


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginThrottle:
    """What the caller stores per account for the lockout (all three columns nullable/zero).

    ``failures`` counts failed logins since ``first_failure_at``; ``locked_until``
    is set while the account is locked.
    """

    failures: int = 0
    first_failure_at: datetime | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LockoutCheck:
    """Whether a login may be attempted now; if not, for how long it stays refused."""

    allowed: bool
    locked_until: datetime | None = None
    retry_after_s: int = 0

    def error(self) -> AccountLocked:
        """The :class:`~valux.auth.errors.AccountLocked` to raise for a refusal."""
        if self.allowed or self.locked_until is None:
            raise ValueError("this login is allowed; there is no lockout error to raise")
        return AccountLocked(
            f"too many failed logins; try again in {self.retry_after_s} s",
            self.locked_until,
            self.retry_after_s,
        )


@dataclass(frozen=True, slots=True)
class LockoutUpdate:
    """The values to store after an attempt; ``locked_now`` is True on the failure that locks."""

    state: LoginThrottle
    locked_now: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LockoutPolicy:
    """After ``max_failures`` failures within ``window``, refuse logins for ``lock_for``.

    The window is fixed from the first failure: a failure after it has passed
    starts a new count. Use :meth:`check` before verifying the password, then
    :meth:`record_failure` or :meth:`record_success` and store the result.
    """

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock_for: timedelta = timedelta(minutes=15)

    def check(self, state: LoginThrottle, now: datetime) -> LockoutCheck:
        """May a login be tried at ``now``? (Locked: refused, even with the right password.)"""
        now = _aware(now)
        if state.locked_until is not None and now < state.locked_until:
            wait = (state.locked_until - now).total_seconds()
            return LockoutCheck(False, state.locked_until, max(1, math.ceil(wait)))
        return LockoutCheck(True)

    def record_failure(self, state: LoginThrottle, now: datetime) -> LockoutUpdate:
        """The values to store after a wrong password at ``now``."""
        now = _aware(now)
        if state.locked_until is not None and now < state.locked_until:
            return LockoutUpdate(state)  # refused attempts do not extend the lock
        started = state.first_failure_at
        if started is None or now - started >= self.window or state.locked_until is not None:
            failures, started = 1, now  # a new window (or the lock has ended)
        else:
            failures = state.failures + 1
        if failures >= self.max_failures:
            locked = LoginThrottle(locked_until=now + self.lock_for)
            return LockoutUpdate(locked, locked_now=True)
        return LockoutUpdate(LoginThrottle(failures=failures, first_failure_at=started))

    def record_success(self, state: LoginThrottle, now: datetime) -> LockoutUpdate:
        """The values to store after a successful login: the count starts again."""
        _aware(now)
        return LockoutUpdate(LoginThrottle())
