"""Sign-In with Ethereum (EIP-4361), implemented here (the ``siwe`` package pins web3 < 8).

A message looks like this (the blank lines are part of the grammar; without a
statement there are two of them in a row)::

    app.example wants you to sign in with your Ethereum account:
    0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

    Sign in to valux.

    URI: https://app.example/login
    Version: 1
    Chain ID: 42161
    Nonce: 5XUTtMhmIfXH8QdQqh2yG
    Issued At: 2026-01-01T12:00:00Z
    Expiration Time: 2026-01-01T12:05:00Z

:func:`parse_message` checks it strictly against the EIP's ABNF (see
:mod:`valux.auth.signin` for every rule) including the EIP-55 checksum of the
address (an all-lowercase address is refused: valux requires the checksummed
form, as EIP-4361 wallets produce). :func:`verify` recovers the EIP-191
(``personal_sign``) signer with eth-account and checks it is the address, then
checks the expectations. Contract accounts (EIP-1271) are not supported: that
needs a chain call, and valux signs in externally owned accounts only.

Failure codes: ``SIWE_MALFORMED``, ``SIWE_INVALID_ADDRESS``,
``SIWE_BAD_SIGNATURE``, ``SIWE_ADDRESS_MISMATCH``, ``SIWE_DOMAIN_MISMATCH``,
``SIWE_URI_MISMATCH``, ``SIWE_CHAIN_MISMATCH``, ``SIWE_NONCE_MISMATCH``,
``SIWE_EXPIRED``, ``SIWE_NOT_YET_VALID`` (all :class:`~valux.auth.errors.SignInError`).

A login: the API issues a nonce (:mod:`valux.auth.nonces`); the client builds
and signs the message; the API parses it, consumes ``message.nonce`` from the
nonce store (single use), and calls :func:`verify` with that nonce.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_checksum_address

from valux.auth import signin
from valux.auth.signin import DEFAULT_CLOCK_SKEW, DEFAULT_MAX_AGE, SignInMessage

__all__ = ["DIALECT", "build_message", "parse_message", "verify"]

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def _check_address(address: str) -> str | None:
    if not _ADDRESS_RE.fullmatch(address):
        return f"{address[:50]!r} is not 0x and 40 hex digits"
    if not is_checksum_address(address):
        return f"{address} is not in its EIP-55 checksummed form"
    return None


def _signature_valid(text: str, address: str, signature: str | bytes) -> bool:
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # unreadable signature: eth-account raises several unrelated types
        return False
    return bool(signer == address)


DIALECT = signin.Dialect(
    prefix="SIWE",
    account="Ethereum",
    eip4361_layout=True,
    check_address=_check_address,
    chain_re=re.compile(r"[0-9]+"),
    normalise_chain=lambda chain: str(int(chain)),
    signature_valid=_signature_valid,
)


def parse_message(text: str) -> SignInMessage:
    """The fields of an EIP-4361 message, without checking any signature.

    Raises ``SIWE_MALFORMED`` or ``SIWE_INVALID_ADDRESS``.
    """
    return signin.parse(DIALECT, text)


def build_message(
    *,
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: datetime,
    statement: str | None = None,
    scheme: str | None = None,
    expiration_time: datetime | None = None,
    not_before: datetime | None = None,
    request_id: str | None = None,
    resources: Sequence[str] | None = None,
) -> str:
    """The EIP-4361 text for these fields (``SIWE_MALFORMED`` for a value the ABNF refuses)."""
    message = SignInMessage(
        domain=domain,
        address=address,
        scheme=scheme,
        statement=statement,
        uri=uri,
        version="1",
        chain_id=str(chain_id),
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=expiration_time,
        not_before=not_before,
        request_id=request_id,
        resources=tuple(resources) if resources is not None else None,
    )
    return signin.build(DIALECT, message)


def verify(
    text: str,
    signature: str | bytes,
    *,
    domain: str,
    nonce: str,
    chain_id: int,
    now: datetime,
    uri: str | None = None,
    origin: str | None = None,
    scheme: str | None = None,
    address: str | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    max_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> SignInMessage:
    """The message, if ``signature`` (65 bytes, or their hex with or without ``0x``) is genuine.

    ``domain`` is this service's host (``app.example`` or ``localhost:5173``),
    compared case-insensitively. ``uri`` checks the URI exactly, ``origin``
    (``https://app.example``) only its scheme, host and port; ``scheme``, when
    given, must be the message's scheme (``https`` if it names none).
    ``address`` pins the signer (for linking a wallet to a signed-in user).
    ``max_age`` bounds how old Issued At may be (None: unbounded), and
    Issued At may lie at most ``max_skew`` after ``now``.
    """
    expected = signin.Expected(
        domain=domain,
        nonce=nonce,
        chain_id=str(chain_id),
        uri=uri,
        origin=origin,
        scheme=scheme,
        address=address,
        max_age=max_age,
        max_skew=max_skew,
    )
    return signin.verify(DIALECT, text, signature, expected, now)
