"""The Jupiter venue's errors, and Solana transaction errors turned into readable reasons.

Every class pickles with all its constructor arguments (they cross Ray). Where each one
sits in :mod:`valux.venues.base`'s hierarchy decides :func:`should_retry`:

- :class:`JupiterUnavailable` (a :class:`~valux.venues.base.VenueUnavailable`): the HTTP
  service or the RPC node could not answer (connection error, timeout, 5xx, 429 after
  the retries, an unreadable body). Nothing happened; retryable.
- :class:`JupiterRejected` (an :class:`~valux.venues.base.OrderRejected`): the service
  refused the request as given (400 with Jupiter's ``errorCode`` such as
  ``COULD_NOT_FIND_ANY_ROUTE`` or ``TOKEN_NOT_TRADABLE``, 401/403 for a bad API key).
  :class:`SlippageExceeded` is the refusal of a swap whose quote the pool no longer
  honours within ``slippageBps``; the venue answers it as FAILED (nothing was signed).
- :class:`SignerMismatch` and :class:`ResignRefused`: the sender's own refusals, raised
  before anything is signed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Final

import aiohttp

from valux.errors import Unavailable
from valux.venues.base import OrderRejected, VenueError, VenueUnavailable

__all__ = [
    "JUPITER_PROGRAM_ERRORS",
    "JUPITER_PROGRAM_ID",
    "JupiterRejected",
    "JupiterUnavailable",
    "ResignRefused",
    "SignerMismatch",
    "SlippageExceeded",
    "should_retry",
    "tx_error_reason",
]

VENUE: Final = "jupiter"

JUPITER_PROGRAM_ID: Final = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"
"""Jupiter's aggregator program (v6) on mainnet."""

JUPITER_PROGRAM_ERRORS: Final = {
    6000: "empty route",
    6001: "slippage tolerance exceeded",
    6002: "invalid calculation",
    6003: "missing platform fee account",
    6004: "invalid slippage",
    6008: "exact-out amount not matched",
    6014: "incorrect token program id",
    6017: "insufficient funds",
}
"""Custom error codes of Jupiter's aggregator program (v6) that a landed or simulated
swap can fail with; the code alone is shown for any other program's custom error."""


class JupiterUnavailable(VenueUnavailable):
    """The service or the node could not answer now; ``status`` is the HTTP status (0 for
    a connection error or timeout). Nothing happened: retryable."""

    code = "JUPITER_UNAVAILABLE"

    def __init__(
        self,
        message: str,
        venue: str = VENUE,
        status: int = 0,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, venue)
        self.status = status
        self.retry_after_s = retry_after_s
        """A 429's ``Retry-After``, in seconds, when the server sent one."""

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[JupiterUnavailable], tuple[str, str, int, float | None]]:
        return (type(self), (self.message, self.venue, self.status, self.retry_after_s))


class JupiterRejected(OrderRejected):
    """The service refused the request as given; ``error_code`` is Jupiter's
    ``errorCode`` (``COULD_NOT_FIND_ANY_ROUTE``, ``TOKEN_NOT_TRADABLE``, ``UNAUTHORIZED``…)
    and ``status`` the HTTP status."""

    code = "JUPITER_REJECTED"

    def __init__(
        self, message: str, venue: str = VENUE, error_code: str = "", status: int = 400
    ) -> None:
        super().__init__(message, venue)
        self.error_code = error_code
        self.status = status

    def __reduce__(self) -> tuple[type[JupiterRejected], tuple[str, str, str, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.venue, self.error_code, self.status))


class SlippageExceeded(JupiterRejected):
    """``/swap`` refused: the pool no longer gives what the quote promised within its
    ``slippageBps`` (Jupiter's ``SLIPPAGE_TOLERANCE_EXCEEDED``). Nothing was signed."""

    code = "JUPITER_SLIPPAGE"


class SignerMismatch(OrderRejected):
    """The signer handed over is not the key of the wallet this sender writes for."""

    code = "SOLANA_SIGNER_MISMATCH"


class ResignRefused(OrderRejected):
    """A new transaction was asked for an intent whose earlier attempt may still land
    (not landed, blockhash not provably expired). Nothing was signed."""

    code = "SOLANA_RESIGN_REFUSED"


def should_retry(exc: BaseException) -> bool:
    """Whether the call that raised ``exc`` may be tried again (after a status lookup, for
    a submit): :class:`JupiterUnavailable` and every other ``VenueUnavailable``, valux's
    ``Unavailable``, timeouts, connection and aiohttp client errors. Never a rejection,
    a slippage refusal or an unexpected bug."""
    if isinstance(exc, VenueUnavailable | Unavailable):
        return True
    if isinstance(exc, VenueError):
        return False
    return isinstance(
        exc, TimeoutError | asyncio.TimeoutError | ConnectionError | aiohttp.ClientError
    )


def tx_error_reason(err: Any, programs: Sequence[str] = ()) -> str:
    """A reason a person can read for a transaction error as the RPC renders it
    (``"BlockhashNotFound"``, ``{"InstructionError": [5, {"Custom": 6001}]}``, …).

    ``programs`` (the program id of each top-level instruction, when known) names the
    failing program, and Jupiter's custom errors by their meaning."""
    if err is None:
        return "no error"
    if isinstance(err, str):
        return _words(err)
    if isinstance(err, dict) and len(err) == 1:
        ((name, detail),) = err.items()
        if name == "InstructionError" and isinstance(detail, list | tuple) and len(detail) == 2:
            index, inner = detail
            program = (
                programs[index] if isinstance(index, int) and 0 <= index < len(programs) else None
            )
            where = f"instruction {index}" + (f" ({program})" if program else "")
            return f"{where} failed: {_instruction_reason(inner, program == JUPITER_PROGRAM_ID)}"
        if name == "InsufficientFundsForRent":
            return "an account would be left below the rent-exempt minimum"
        return f"{_words(str(name))}: {json.dumps(detail, default=str)}"
    return json.dumps(err, default=str)


def _instruction_reason(inner: Any, jupiter: bool) -> str:
    if isinstance(inner, str):
        return _words(inner)
    if isinstance(inner, dict) and "Custom" in inner:
        try:
            code = int(inner["Custom"])
        except (TypeError, ValueError):
            return f"custom program error {inner['Custom']!r}"
        known = JUPITER_PROGRAM_ERRORS.get(code) if jupiter else None
        text = f"custom program error {code} ({code:#x})"
        return f"{text}: {known}" if known else text
    return json.dumps(inner, default=str)


def _words(name: str) -> str:
    out: list[str] = []
    for char in name:
        if char.isupper() and out:
            out.append(" ")
        out.append(char.lower())
    return "".join(out)
