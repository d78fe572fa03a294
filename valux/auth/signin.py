"""The sign-in message skeleton shared by Sign-In with Ethereum and Sign-In with Solana.

Both messages follow EIP-4361's layout and field order; they differ in the
account line, the address and chain syntax, which fields are mandatory, the
blank lines when there is no statement, and the signature scheme. A
:class:`Dialect` states those differences; :func:`parse`, :func:`render`,
:func:`build` and :func:`verify` do the rest once, for both.

Parsing is strict (a relying party MUST check conformance to the ABNF,
EIP-4361 "Verifying a signed Message"): lines end in LF only, every field sits
in its place in the fixed order, and each value matches its ABNF rule:

- ``domain`` an RFC 3986 authority, optionally preceded by ``scheme://``;
- ``statement`` only RFC 3986 reserved / unreserved characters and spaces (so
  no LF, no ``%``, no non-ASCII);
- ``URI`` and each resource an RFC 3986 URI (scheme, then URI characters with
  well-formed percent escapes);
- ``Version`` ``1``; ``Nonce`` at least 8 ASCII letters or digits;
- ``Issued At`` / ``Expiration Time`` / ``Not Before`` RFC 3339 date-times with
  an offset (``Z`` or ``±hh:mm``), parsed to aware datetimes;
- ``Request ID`` RFC 3986 ``pchar`` only.

Verification checks, in this order, and fails with a :class:`SignInError`
whose ``code`` names the first failed check (``SIWE_MALFORMED``,
``SIWS_BAD_SIGNATURE``, ...): the grammar, the address, the presence of the
fields valux always needs (Chain ID, Nonce, Issued At), the signature, then
the expectations the caller passes — address (optional), domain (and scheme
when given; no scheme in the message means ``https``), URI or its origin
(optional), chain, nonce (constant-time), Expiration Time, Not Before, and
Issued At (not older than ``max_age``, not later than ``now`` + ``max_skew``).
The nonce check here only compares; single use is the nonce store's job
(:mod:`valux.auth.nonces`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from valux.auth.errors import SignInError, SignInFailure

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "DEFAULT_MAX_AGE",
    "Dialect",
    "Expected",
    "SignInMessage",
    "build",
    "parse",
    "render",
    "verify",
]

DEFAULT_MAX_AGE = timedelta(minutes=10)
"""How old a message's Issued At may be (Phantom checks ±10 minutes; the nonce lives 5)."""

DEFAULT_CLOCK_SKEW = timedelta(minutes=1)
"""How far in the future a message's Issued At may lie (the wallet's clock may run ahead)."""

# RFC 3986 character classes.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_GEN_DELIMS = r":/?#\[\]@"
_PCT = r"%[0-9A-Fa-f]{2}"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_HOST = rf"(?:\[[0-9A-Fa-f:.]+\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})+)"
_AUTHORITY = rf"(?:{_USERINFO}@)?{_HOST}(?::[0-9]*)?"
_URI_RE = re.compile(rf"{_SCHEME}:(?:[{_UNRESERVED}{_SUB_DELIMS}{_GEN_DELIMS}]|{_PCT})*")
_STATEMENT_RE = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}{_GEN_DELIMS} ]*")
_REQUEST_ID_RE = re.compile(rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})*")
_VERSION_RE = re.compile("1")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)

# (attribute, line tag) in the fixed order of the ABNF; Resources follows them.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("uri", "URI: "),
    ("version", "Version: "),
    ("chain_id", "Chain ID: "),
    ("nonce", "Nonce: "),
    ("issued_at", "Issued At: "),
    ("expiration_time", "Expiration Time: "),
    ("not_before", "Not Before: "),
    ("request_id", "Request ID: "),
)
_RESOURCES_TAG = "Resources:"
_EIP4361_REQUIRED = frozenset({"uri", "version", "chain_id", "nonce", "issued_at"})
_VERIFY_REQUIRED = ("chain_id", "nonce", "issued_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignInMessage:
    """A parsed sign-in message. Times are aware datetimes; absent fields are None.

    ``chain_id`` is kept as written (``"1"`` for Ethereum mainnet, ``"devnet"``
    on Solana); ``statement`` is None when absent (``""`` is a present, empty
    statement, which EIP-4361's grammar allows).
    """

    domain: str
    address: str
    scheme: str | None = None
    statement: str | None = None
    uri: str | None = None
    version: str | None = None
    chain_id: str | None = None
    nonce: str | None = None
    issued_at: datetime | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What distinguishes one sign-in message family from another.

    ``check_address`` returns a problem description or None;
    ``signature_valid(text, address, signature)`` must never raise for bad input.
    """

    prefix: str
    account: str
    eip4361_layout: bool
    check_address: Callable[[str], str | None]
    chain_re: re.Pattern[str]
    normalise_chain: Callable[[str], str]
    signature_valid: Callable[[str, str, str | bytes], bool]

    def header(self, scheme: str | None, domain: str) -> str:
        origin = f"{scheme}://{domain}" if scheme else domain
        return f"{origin} wants you to sign in with your {self.account} account:"

    def fail(self, reason: SignInFailure, message: str) -> SignInError:
        return SignInError(self.prefix, reason, message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """What the relying party expects of a message (see :func:`verify`)."""

    domain: str
    nonce: str
    chain_id: str
    uri: str | None = None
    origin: str | None = None
    scheme: str | None = None
    address: str | None = None
    max_age: timedelta | None = DEFAULT_MAX_AGE
    max_skew: timedelta = DEFAULT_CLOCK_SKEW


# -- parsing -------------------------------------------------------------------


def _malformed(dialect: Dialect, line: int, problem: str) -> SignInError:
    return dialect.fail(SignInFailure.MALFORMED, f"line {line}: {problem}")


def _datetime(dialect: Dialect, line: int, value: str) -> datetime:
    if not _DATETIME_RE.fullmatch(value):
        raise _malformed(dialect, line, f"{value!r} is not an RFC 3339 date-time with an offset")
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise _malformed(dialect, line, f"{value!r} is not a valid date-time ({exc})") from exc


def _value(dialect: Dialect, attr: str, line: int, raw: str) -> str | datetime:
    if attr in ("issued_at", "expiration_time", "not_before"):
        return _datetime(dialect, line, raw)
    checks: dict[str, tuple[re.Pattern[str], str]] = {
        "uri": (_URI_RE, "an RFC 3986 URI"),
        "version": (_VERSION_RE, "1"),
        "chain_id": (dialect.chain_re, "a chain id of this kind of account"),
        "nonce": (_NONCE_RE, "at least 8 letters or digits"),
        "request_id": (_REQUEST_ID_RE, "RFC 3986 path characters"),
    }
    pattern, what = checks[attr]
    if not pattern.fullmatch(raw):
        raise _malformed(dialect, line, f"{raw!r} is not {what}")
    return raw


def _split(dialect: Dialect, lines: list[str]) -> tuple[str | None, int]:
    """The statement (or None) and the index of the first field line (may be len(lines))."""
    n = len(lines)
    if dialect.eip4361_layout:
        # address LF LF [ statement LF ] LF fields
        if n < 4 or lines[2] != "":
            raise _malformed(dialect, 3, "expected an empty line after the address")
        if lines[3] == "":
            if n > 4 and lines[4] == "":
                return "", 5  # a present, empty statement
            return None, 4
        if n < 5 or lines[4] != "":
            raise _malformed(dialect, 5, "expected an empty line after the statement")
        return lines[3], 5
    # address [ LF LF statement ] [ LF LF fields ]
    if n == 2:
        return None, 2
    if lines[2] != "" or n < 4:
        raise _malformed(dialect, 3, "expected an empty line after the address")
    if _is_field(lines[3]):
        return None, 3
    if n == 4:
        return lines[3], 4
    if lines[4] != "" or n < 6:
        raise _malformed(dialect, 5, "expected an empty line after the statement")
    return lines[3], 5


def _is_field(line: str) -> bool:
    return line == _RESOURCES_TAG or any(line.startswith(tag) for _, tag in _FIELDS)


def parse(dialect: Dialect, text: str) -> SignInMessage:
    """Parse ``text`` strictly; raise ``<PREFIX>_MALFORMED`` / ``_INVALID_ADDRESS`` otherwise."""
    if "\r" in text:
        raise _malformed(dialect, 1, "lines must end with LF alone (no CR)")
    lines = text.split("\n")
    header = re.fullmatch(
        rf"(?:(?P<scheme>{_SCHEME})://)?(?P<domain>{_AUTHORITY})"
        rf" wants you to sign in with your {dialect.account} account:",
        lines[0],
    )
    if header is None:
        raise _malformed(
            dialect,
            1,
            f"expected '<domain> wants you to sign in with your {dialect.account} account:'",
        )
    if len(lines) < 2:
        raise _malformed(dialect, 2, "the address is missing")
    address = lines[1]
    problem = dialect.check_address(address)
    if problem is not None:
        raise dialect.fail(SignInFailure.INVALID_ADDRESS, f"line 2: {problem}")
    statement, index = _split(dialect, lines)
    if statement is not None and not _STATEMENT_RE.fullmatch(statement):
        raise _malformed(
            dialect,
            4,
            "the statement may hold only RFC 3986 reserved/unreserved characters and spaces",
        )
    values: dict[str, Any] = {}
    for attr, tag in _FIELDS:
        line = lines[index] if index < len(lines) else None
        if line is not None and line.startswith(tag):
            values[attr] = _value(dialect, attr, index + 1, line[len(tag) :])
            index += 1
        elif dialect.eip4361_layout and attr in _EIP4361_REQUIRED:
            raise _malformed(dialect, index + 1, f"expected '{tag}...'")
    resources: tuple[str, ...] | None = None
    if index < len(lines) and lines[index] == _RESOURCES_TAG:
        found: list[str] = []
        index += 1
        while index < len(lines) and lines[index].startswith("- "):
            resource = lines[index][2:]
            if not _URI_RE.fullmatch(resource):
                raise _malformed(dialect, index + 1, f"resource {resource!r} is not a URI")
            found.append(resource)
            index += 1
        resources = tuple(found)
    if index < len(lines):
        raise _malformed(dialect, index + 1, f"unexpected line {lines[index][:40]!r}")
    return SignInMessage(
        domain=header["domain"],
        scheme=header["scheme"],
        address=address,
        statement=statement,
        resources=resources,
        **values,
    )


# -- rendering -----------------------------------------------------------------


def _format_time(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetimes are not allowed in a sign-in message")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render(dialect: Dialect, message: SignInMessage) -> str:
    """The text of ``message`` in ``dialect``'s layout (no validation; see :func:`build`)."""
    lines = [dialect.header(message.scheme, message.domain), message.address]
    fields: list[str] = []
    for attr, tag in _FIELDS:
        value = getattr(message, attr)
        if value is not None:
            fields.append(tag + (_format_time(value) if isinstance(value, datetime) else value))
    if message.resources is not None:
        fields.append(_RESOURCES_TAG)
        fields.extend(f"- {r}" for r in message.resources)
    if dialect.eip4361_layout:
        lines.append("")
        if message.statement is not None:
            lines.append(message.statement)
        lines.append("")
        lines.extend(fields)
    else:
        if message.statement is not None:
            lines.extend(["", message.statement])
        if fields:
            lines.append("")
            lines.extend(fields)
    return "\n".join(lines)


def build(dialect: Dialect, message: SignInMessage) -> str:
    """The text of ``message``, checked to parse back (raises ``<PREFIX>_MALFORMED`` if not)."""
    text = render(dialect, message)
    parse(dialect, text)
    return text


# -- verification --------------------------------------------------------------


def _origin(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{scheme}://{parts.hostname.lower()}{suffix}"


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetimes are not allowed; pass an aware time (UTC)")
    return now


def verify(
    dialect: Dialect,
    text: str,
    signature: str | bytes,
    expected: Expected,
    now: datetime,
) -> SignInMessage:
    """The parsed message if ``signature`` over ``text`` is genuine and meets ``expected``.

    Raises :class:`~valux.auth.errors.SignInError` naming the first failed
    check (module docstring for the order).
    """
    now = _aware(now)
    message = parse(dialect, text)
    missing = [a for a in _VERIFY_REQUIRED if getattr(message, a) is None]
    if missing:
        tags = ", ".join(tag.strip() for attr, tag in _FIELDS if attr in missing)
        raise dialect.fail(SignInFailure.MALFORMED, f"valux requires the fields {tags}")
    if not dialect.signature_valid(text, message.address, signature):
        raise dialect.fail(
            SignInFailure.BAD_SIGNATURE, "the signature was not made by the message's address"
        )
    _check_expectations(dialect, message, expected, now)
    return message


def _check_expectations(
    dialect: Dialect, message: SignInMessage, expected: Expected, now: datetime
) -> None:
    fail = dialect.fail
    if expected.address is not None and message.address != expected.address:
        raise fail(SignInFailure.ADDRESS_MISMATCH, "the message is signed by another address")
    if message.domain.lower() != expected.domain.lower():
        raise fail(
            SignInFailure.DOMAIN_MISMATCH,
            f"the message is for {message.domain!r}, not {expected.domain!r}",
        )
    if expected.scheme is not None and (message.scheme or "https").lower() != (
        expected.scheme.lower()
    ):
        raise fail(SignInFailure.DOMAIN_MISMATCH, "the message is for another scheme")
    if expected.uri is not None and message.uri != expected.uri:
        raise fail(SignInFailure.URI_MISMATCH, f"the message's URI is not {expected.uri!r}")
    if expected.origin is not None:
        want = _origin(expected.origin)
        if want is None:
            raise ValueError(f"expected origin {expected.origin!r} is not scheme://host[:port]")
        if message.uri is None or _origin(message.uri) != want:
            raise fail(SignInFailure.URI_MISMATCH, f"the message's URI is not under {want}")
    assert message.chain_id is not None and message.nonce is not None  # _VERIFY_REQUIRED
    if dialect.normalise_chain(message.chain_id) != dialect.normalise_chain(expected.chain_id):
        raise fail(
            SignInFailure.CHAIN_MISMATCH,
            f"the message is for chain {message.chain_id!r}, not {expected.chain_id!r}",
        )
    if not hmac.compare_digest(message.nonce.encode(), expected.nonce.encode()):
        raise fail(SignInFailure.NONCE_MISMATCH, "the message's nonce is not this login's nonce")
    _check_times(dialect, message, expected, now)


def _check_times(
    dialect: Dialect, message: SignInMessage, expected: Expected, now: datetime
) -> None:
    fail = dialect.fail
    if message.expiration_time is not None and now >= message.expiration_time:
        raise fail(SignInFailure.EXPIRED, "the message's Expiration Time has passed")
    if message.not_before is not None and now < message.not_before:
        raise fail(SignInFailure.NOT_YET_VALID, "the message's Not Before has not come yet")
    assert message.issued_at is not None  # _VERIFY_REQUIRED
    if message.issued_at > now + expected.max_skew:
        raise fail(SignInFailure.NOT_YET_VALID, "the message's Issued At lies in the future")
    if expected.max_age is not None and now - message.issued_at > expected.max_age:
        raise fail(SignInFailure.EXPIRED, "the message was issued too long ago; sign in again")
