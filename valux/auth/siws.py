"""Sign-In with Solana (SIWS): the EIP-4361 message with a Solana account, signed with ed25519.

The format is the one Phantom specified and the Solana wallet-standard
implements (``@solana/wallet-standard-util``'s ``createSignInMessageText`` /
``parseSignInMessageText``; Phantom's ``sign-in-with-solana`` ABNF)::

    app.example wants you to sign in with your Solana account:
    9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM

    Sign in to valux.

    URI: https://app.example/login
    Version: 1
    Chain ID: devnet
    Nonce: 5XUTtMhmIfXH8QdQqh2yG
    Issued At: 2026-01-01T12:00:00.000Z

Differences from EIP-4361, as that spec has them:

- the address is base58 (32–44 characters of the Bitcoin alphabet) and must
  decode to a 32-byte ed25519 public key, else ``SIWS_INVALID_ADDRESS``;
- ``Chain ID`` is one of ``mainnet``, ``testnet``, ``devnet``, ``localnet``,
  ``solana:mainnet``, ``solana:testnet``, ``solana:devnet``; ``solana:devnet``
  and ``devnet`` name the same chain when compared;
- every field after the address is optional in the grammar, and the blank
  lines differ: ``address [LF LF statement] [LF LF fields]`` (so with no
  statement there is one blank line, not two). A statement that begins like a
  field (``URI: ...``) is read as the fields, as the wallet-standard parser does;
- the wallet signs the message's UTF-8 bytes as they are (no prefix), with
  ed25519; the signature is 64 bytes, given as bytes or base58.

valux's verifier additionally requires ``Chain ID``, ``Nonce`` and
``Issued At`` (else ``SIWS_MALFORMED``): the API always asks the wallet for
them (the sign-in input it hands to ``signIn``), and without them a signed
message could be replayed. Failure codes are those of :mod:`valux.auth.siwe`
with the prefix ``SIWS_``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from solders.pubkey import Pubkey
from solders.signature import Signature

from valux.auth import signin
from valux.auth.signin import DEFAULT_CLOCK_SKEW, DEFAULT_MAX_AGE, SignInMessage

__all__ = ["CHAINS", "DIALECT", "build_message", "parse_message", "verify"]

CHAINS = (
    "mainnet",
    "testnet",
    "devnet",
    "localnet",
    "solana:mainnet",
    "solana:testnet",
    "solana:devnet",
)
"""The Chain ID values of the SIWS grammar."""

_ADDRESS_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")


def _check_address(address: str) -> str | None:
    if not _ADDRESS_RE.fullmatch(address):
        return f"{address[:50]!r} is not 32 to 44 base58 characters"
    try:
        Pubkey.from_string(address)
    except ValueError:
        return f"{address} does not decode to a 32-byte public key"
    return None


def _signature_valid(text: str, address: str, signature: str | bytes) -> bool:
    try:
        sig = (
            Signature.from_string(signature)
            if isinstance(signature, str)
            else Signature.from_bytes(bytes(signature))
        )
        return bool(sig.verify(Pubkey.from_string(address), text.encode("utf-8")))
    except ValueError:
        return False


DIALECT = signin.Dialect(
    prefix="SIWS",
    account="Solana",
    eip4361_layout=False,
    check_address=_check_address,
    chain_re=re.compile("|".join(re.escape(c) for c in CHAINS)),
    normalise_chain=lambda chain: chain.removeprefix("solana:"),
    signature_valid=_signature_valid,
)


def parse_message(text: str) -> SignInMessage:
    """The fields of a SIWS message, without checking any signature.

    Raises ``SIWS_MALFORMED`` or ``SIWS_INVALID_ADDRESS``.
    """
    return signin.parse(DIALECT, text)


def build_message(
    *,
    domain: str,
    address: str,
    chain_id: str,
    nonce: str,
    issued_at: datetime,
    uri: str | None = None,
    statement: str | None = None,
    scheme: str | None = None,
    expiration_time: datetime | None = None,
    not_before: datetime | None = None,
    request_id: str | None = None,
    resources: Sequence[str] | None = None,
) -> str:
    """The SIWS text for these fields, as a wallet would build it (``Version: 1`` included)."""
    message = SignInMessage(
        domain=domain,
        address=address,
        scheme=scheme,
        statement=statement,
        uri=uri,
        version="1",
        chain_id=chain_id,
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
    chain_id: str,
    now: datetime,
    uri: str | None = None,
    origin: str | None = None,
    scheme: str | None = None,
    address: str | None = None,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    max_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> SignInMessage:
    """The message, if ``signature`` (64 bytes, or base58) is the address's ed25519 signature.

    The expectations mean what they mean in :func:`valux.auth.siwe.verify`;
    ``chain_id`` is e.g. ``"mainnet"``, ``"devnet"`` or ``"localnet"``.
    """
    expected = signin.Expected(
        domain=domain,
        nonce=nonce,
        chain_id=chain_id,
        uri=uri,
        origin=origin,
        scheme=scheme,
        address=address,
        max_age=max_age,
        max_skew=max_skew,
    )
    return signin.verify(DIALECT, text, signature, expected, now)
