"""The in-process holder of unlocked wallet keys; it lives only inside a wallet host process.

Contract:

- :meth:`KeyVault.unlock` decrypts a stored record (:mod:`valux.custody.keys`) with the
  user's passphrase and holds the key for ``ttl_s`` seconds. The key is kept in a
  :class:`~valux.custody.keys.SecretKey` (a ``bytearray``) together with one signer made
  from it. Unlocking again replaces (and wipes) the key held before and restarts the TTL.
- :meth:`KeyVault.signer` hands out the signer for a *purpose*:

  ==============  =================  ==================  =====================
  state           ``"entry"``        ``"exit"``          how it is reached
  ==============  =================  ==================  =====================
  ``unlocked``    signs              signs               unlock, until the TTL
  ``exits_only``  :class:`Locked`    signs               TTL ran out or a plain
                                                         lock, positions open
  ``locked``      :class:`Locked`    :class:`Locked`     forced lock, or TTL /
                                                         plain lock with no
                                                         open position; never
                                                         unlocked
  ==============  =================  ==================  =====================

  An exit must always be able to run, so neither the TTL nor a plain
  :meth:`KeyVault.lock` takes the key away while the wallet has open positions: the key
  stays, for exits only, until those positions are closed
  (:meth:`KeyVault.set_open_positions` with ``False`` wipes it then) or someone locks
  with ``force=True``, which wipes it at once whatever is open — the positions are then
  unprotected and the caller must report them so (DESIGN.md, HALTED).
- Whether positions are open is the wallet's knowledge, not the vault's: the Wallet calls
  :meth:`KeyVault.set_open_positions` on recovery and whenever the answer changes. The flag
  is kept per wallet whether or not its key is unlocked. Without it the vault treats the
  wallet as having none, and an expired key is wiped.
- Expiry is evaluated on every call (there is no timer thread); :meth:`KeyVault.sweep`
  wipes every key whose time is up and that no exit needs — a host calls it
  periodically so an idle key does not outlive its TTL in memory.
- Wrong passphrases are counted per wallet. Once :attr:`KeyVault.free_attempts` (3)
  attempts in a row have failed, the next one must wait 2 s after the last, and every
  further failure doubles the wait (4, 8, 16 … s, capped at ``max_backoff_s``); an
  attempt made too early is refused, untried, with :class:`UnlockBackoff` saying how
  long to wait — whatever the passphrase. Every attempt counts as failed from the moment
  it starts until it succeeds, so concurrent attempts cannot slip past the wait. A
  correct passphrase resets the count; a malformed record does not count. The count
  lives in memory: a restarted host starts from zero, so whatever exposes unlocking
  (the API) should rate-limit it too.
- :meth:`KeyVault.status` reports ``locked`` / ``unlocked`` / ``exits_only`` with times
  and reasons and never any secret. Time comes from an injectable clock (wall-clock
  seconds by default, so expiry times can be shown to users).
- Thread safety: state changes happen under a lock; the scrypt derivation in
  :meth:`KeyVault.unlock` runs outside it and releases the GIL, so an async host should
  call ``unlock`` through ``asyncio.to_thread`` rather than block its event loop
  (~0.4 s at the default scrypt cost). The vault refuses to pickle.

What wiping does and does not achieve: :meth:`KeyVault.lock` overwrites valux's own
``bytearray`` with zeros and drops every reference to the key and its signer. Python
cannot promise that no other copy remains: the decryption produced an immutable
``bytes`` first; solders' ``Keypair`` keeps its own copy in Rust memory, and
eth_account's ``LocalAccount`` keeps the key as Python ``bytes`` and integers; a caller
that kept a signer keeps its copy. Those are freed without being zeroed and may linger
in the process's memory (or swap, or a core dump) until reused. The vault narrows the
window a key is reachable; it is not a hardware boundary.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import NoReturn

from valux.custody.keys import (
    Chain,
    EncryptedKey,
    SecretKey,
    Signer,
    WrongPassphrase,
    decrypt,
    signer_of,
)
from valux.errors import FieldError, InvalidRequest, ValuxError

__all__ = [
    "KeyState",
    "KeyStatus",
    "KeyVault",
    "Locked",
    "Purpose",
    "UnlockBackoff",
]


class Purpose(StrEnum):
    """Why a signature is wanted: an entry (buy) or an exit (sell of an open position)."""

    ENTRY = "entry"
    EXIT = "exit"


class KeyState(StrEnum):
    """What a wallet's key can do now (see the table in the module docstring)."""

    LOCKED = "locked"
    UNLOCKED = "unlocked"
    EXITS_ONLY = "exits_only"


class Locked(ValuxError):
    """No signer for this purpose: the wallet's key is locked (or held for exits only)."""

    code = "KEY_LOCKED"

    def __init__(self, wallet_id: str, reason: str, purpose: str = "") -> None:
        what = f"{purpose} " if purpose else ""
        super().__init__(f"wallet {wallet_id}: key is locked for {what}signing: {reason}")
        self.wallet_id = wallet_id
        self.reason = reason
        self.purpose = purpose

    def __reduce__(self) -> tuple[type[Locked], tuple[str, str, str]]:
        return (type(self), (self.wallet_id, self.reason, self.purpose))


class UnlockBackoff(ValuxError):
    """Too many wrong passphrases: no attempt is made until ``retry_after_s`` have passed."""

    code = "UNLOCK_BACKOFF"

    def __init__(self, wallet_id: str, retry_after_s: float, failed_attempts: int) -> None:
        super().__init__(
            f"wallet {wallet_id}: {failed_attempts} wrong passphrases in a row; "
            f"try again in {math.ceil(retry_after_s)} s"
        )
        self.wallet_id = wallet_id
        self.retry_after_s = retry_after_s
        self.failed_attempts = failed_attempts

    def __reduce__(self) -> tuple[type[UnlockBackoff], tuple[str, float, int]]:
        return (type(self), (self.wallet_id, self.retry_after_s, self.failed_attempts))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStatus:
    """What the vault can say about one wallet's key — never the key itself."""

    wallet_id: str
    state: KeyState
    chain: Chain | None = None
    address: str | None = None
    unlocked_at: float | None = None
    expires_at: float | None = None
    """When entries stop (unlocked), or stopped (exits-only); epoch seconds."""
    reason: str | None = None
    """Why entries (or all signing, when locked) are refused."""
    open_positions: bool = False
    failed_attempts: int = 0
    retry_at: float | None = None
    """Earliest time the next unlock attempt is accepted, while backing off."""

    def to_dict(self) -> dict[str, str | float | int | bool | None]:
        """Plain JSON-ready fields."""
        return {
            "wallet_id": self.wallet_id,
            "state": self.state.value,
            "chain": self.chain.value if self.chain else None,
            "address": self.address,
            "unlocked_at": self.unlocked_at,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "open_positions": self.open_positions,
            "failed_attempts": self.failed_attempts,
            "retry_at": self.retry_at,
        }


@dataclass(slots=True)
class _Held:
    secret: SecretKey
    signer: Signer | None
    chain: Chain
    address: str
    unlocked_at: float
    expires_at: float
    exits_only: str | None = None
    """Set (to why entries stopped) once the key is kept for exits only."""

    def exits_only_reason(self) -> str:
        return f"{self.exits_only}; exits only while positions are open"


@dataclass(slots=True)
class _Attempts:
    failures: int
    last_at: float


class KeyVault:
    """Unlocked keys of the wallets one host serves (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        free_attempts: int = 3,
        max_backoff_s: float = 900.0,
        max_ttl_s: float | None = None,
    ) -> None:
        if free_attempts < 0 or max_backoff_s <= 0:
            raise ValueError("free_attempts must be ≥ 0 and max_backoff_s > 0")
        self.free_attempts = free_attempts
        self.max_backoff_s = max_backoff_s
        self.max_ttl_s = max_ttl_s
        self._clock = clock
        self._mutex = threading.RLock()
        self._held: dict[str, _Held] = {}
        self._open: dict[str, bool] = {}
        self._attempts: dict[str, _Attempts] = {}
        self._locked_reason: dict[str, str] = {}

    # ----------------------------------------------------------------- unlock / lock

    def unlock(
        self,
        wallet_id: str,
        record: EncryptedKey,
        passphrase: str,
        ttl_s: float,
        *,
        expected_address: str | None = None,
    ) -> KeyStatus:
        """Decrypt ``record`` and hold its key for ``ttl_s`` seconds.

        ``expected_address`` (the wallet row's address) guards against a record stored on
        the wrong row. Raises :class:`UnlockBackoff` (no attempt made),
        :class:`~valux.custody.keys.WrongPassphrase` (counted, the message says how long
        the next attempt must wait), :class:`~valux.custody.keys.InvalidKeyRecord` (not
        counted) or :class:`~valux.errors.InvalidRequest` for a bad ``ttl_s``.
        """
        self._check_ttl(ttl_s)
        with self._mutex:
            now = self._clock()
            attempts = self._attempts.get(wallet_id)
            failures = attempts.failures if attempts else 0
            if attempts is not None:
                retry_at = self._retry_at(attempts)
                if retry_at is not None and now < retry_at:
                    raise UnlockBackoff(wallet_id, retry_at - now, failures)
            self._attempts[wallet_id] = _Attempts(failures + 1, now)
        try:
            secret = decrypt(record, passphrase, expected_address=expected_address)
        except WrongPassphrase:
            with self._mutex:
                counted = self._attempts.get(wallet_id)
                message = f"wrong passphrase for wallet {wallet_id}"
                if counted is not None:
                    message += f" ({counted.failures} failed attempts in a row"
                    retry_at = self._retry_at(counted)
                    if retry_at is not None:
                        wait = max(0.0, retry_at - self._clock())
                        message += f"; the next attempt is accepted in {math.ceil(wait)} s"
                    message += ")"
            raise WrongPassphrase(message, record.chain) from None
        except BaseException:
            with self._mutex:  # not a passphrase failure: take back the provisional count
                counted = self._attempts.get(wallet_id)
                if counted is not None:
                    counted.failures -= 1
                    if counted.failures <= 0:
                        del self._attempts[wallet_id]
            raise
        try:
            signer = signer_of(secret)
        except BaseException:
            secret.wipe()
            raise
        with self._mutex:
            now = self._clock()
            self._attempts.pop(wallet_id, None)
            self._discard(wallet_id, reason="replaced by a new unlock")
            self._locked_reason.pop(wallet_id, None)
            self._held[wallet_id] = _Held(
                secret=secret,
                signer=signer,
                chain=secret.chain,
                address=record.address,
                unlocked_at=now,
                expires_at=now + ttl_s,
            )
            return self._status(wallet_id, now)

    def lock(self, wallet_id: str, *, force: bool = False, reason: str | None = None) -> KeyStatus:
        """Stop entries now; wipe the key unless open positions still need it for exits.

        ``force=True`` wipes the key whatever is open (exits then fail with
        :class:`Locked`). Locking a locked wallet is a no-op. ``reason`` is shown in
        :meth:`status` and in :class:`Locked` errors.
        """
        with self._mutex:
            now = self._clock()
            held = self._refresh(wallet_id, now)
            if held is not None:
                if force:
                    self._discard(wallet_id, reason=reason or "locked (forced)")
                elif self._open.get(wallet_id, False):
                    if held.exits_only is None:
                        held.exits_only = reason or "locked"
                    held.expires_at = min(held.expires_at, now)
                else:
                    self._discard(wallet_id, reason=reason or "locked")
            return self._status(wallet_id, now)

    def lock_all(self, *, reason: str) -> list[str]:
        """Forced lock of every held key (host shutdown); the wallet ids that were held."""
        with self._mutex:
            wallet_ids = sorted(self._held)
            for wallet_id in wallet_ids:
                self._discard(wallet_id, reason=reason)
            return wallet_ids

    def set_open_positions(self, wallet_id: str, open_positions: bool) -> KeyStatus:
        """Tell the vault whether ``wallet_id`` has open positions (exits may need its key).

        Set to ``False`` while the key is held for exits only, the key is wiped at once.
        """
        with self._mutex:
            self._open[wallet_id] = open_positions
            now = self._clock()
            self._refresh(wallet_id, now)
            return self._status(wallet_id, now)

    def sweep(self) -> list[str]:
        """Wipe every key past its TTL that no exit needs; the wallet ids wiped."""
        with self._mutex:
            now = self._clock()
            wiped = []
            for wallet_id in sorted(self._held):
                if self._refresh(wallet_id, now) is None:
                    wiped.append(wallet_id)
            return wiped

    # ----------------------------------------------------------------- signing / status

    def signer(self, wallet_id: str, purpose: Purpose | str) -> Signer:
        """The signer of ``wallet_id`` for ``purpose`` (``"entry"`` or ``"exit"``).

        Raises :class:`Locked` naming the wallet and why. Do not keep the signer beyond
        the signature it was asked for: a kept signer outlives :meth:`lock`.
        """
        purpose = Purpose(purpose)
        with self._mutex:
            now = self._clock()
            held = self._refresh(wallet_id, now)
            if held is None or held.signer is None:
                reason = self._locked_reason.get(wallet_id, "the key has not been unlocked")
                raise Locked(wallet_id, reason, purpose.value)
            if held.exits_only is not None and purpose is Purpose.ENTRY:
                raise Locked(wallet_id, held.exits_only_reason(), purpose.value)
            return held.signer

    def status(self, wallet_id: str) -> KeyStatus:
        """Locked / unlocked / exits-only, with times, reasons and the attempt count."""
        with self._mutex:
            now = self._clock()
            self._refresh(wallet_id, now)
            return self._status(wallet_id, now)

    # ----------------------------------------------------------------- internals

    def _check_ttl(self, ttl_s: float) -> None:
        problem = None
        if not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0:
            problem = "must be a positive number of seconds"
        elif self.max_ttl_s is not None and ttl_s > self.max_ttl_s:
            problem = f"must be at most {self.max_ttl_s:g} s"
        if problem is not None:
            raise InvalidRequest(f"ttl_s {problem}", [FieldError("ttl_s", problem)])

    def _retry_at(self, attempts: _Attempts) -> float | None:
        excess = attempts.failures - self.free_attempts
        if excess < 0:
            return None
        return attempts.last_at + min(self.max_backoff_s, 2.0 ** (excess + 1))

    def _refresh(self, wallet_id: str, now: float) -> _Held | None:
        """Apply expiry and the open-positions flag; the held entry if any key remains."""
        held = self._held.get(wallet_id)
        if held is None:
            return None
        open_positions = self._open.get(wallet_id, False)
        if held.exits_only is None and now >= held.expires_at:
            expired = f"unlock expired at {_iso(held.expires_at)}"
            if not open_positions:
                self._discard(wallet_id, reason=expired)
                return None
            held.exits_only = expired
        if held.exits_only is not None and not open_positions:
            self._discard(wallet_id, reason=f"{held.exits_only}; no open positions remain")
            return None
        return held

    def _discard(self, wallet_id: str, *, reason: str) -> None:
        held = self._held.pop(wallet_id, None)
        if held is not None:
            held.secret.wipe()
            held.signer = None
            self._locked_reason[wallet_id] = reason

    def _status(self, wallet_id: str, now: float) -> KeyStatus:
        attempts = self._attempts.get(wallet_id)
        retry_at = self._retry_at(attempts) if attempts else None
        open_positions = self._open.get(wallet_id, False)
        failed = attempts.failures if attempts else 0
        waiting = retry_at if retry_at is not None and retry_at > now else None
        held = self._held.get(wallet_id)
        if held is None:
            return KeyStatus(
                wallet_id=wallet_id,
                state=KeyState.LOCKED,
                reason=self._locked_reason.get(wallet_id, "the key has not been unlocked"),
                open_positions=open_positions,
                failed_attempts=failed,
                retry_at=waiting,
            )
        return KeyStatus(
            wallet_id=wallet_id,
            state=KeyState.EXITS_ONLY if held.exits_only else KeyState.UNLOCKED,
            chain=held.chain,
            address=held.address,
            unlocked_at=held.unlocked_at,
            expires_at=held.expires_at,
            reason=held.exits_only_reason() if held.exits_only else None,
            open_positions=open_positions,
            failed_attempts=failed,
            retry_at=waiting,
        )

    def __repr__(self) -> str:
        with self._mutex:
            return f"KeyVault({len(self._held)} keys held)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyVault must not be pickled: its keys never leave the process")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")
