"""Wallet secrets: create, import, export, and encrypt at rest — for Solana and EVM chains.

Contract:

- A secret lives in a :class:`SecretKey`: the raw key bytes in a ``bytearray`` that
  :meth:`SecretKey.wipe` overwrites with zeros. Its ``repr`` never shows the bytes, it
  refuses to pickle (a secret must never travel as an actor argument or a Ray message),
  and equality is constant-time. Solana secrets are the 64-byte keypair (32-byte seed,
  then the 32-byte public key, as Phantom and the Solana CLI export it); EVM secrets
  are the 32-byte secp256k1 private key.
- One interface over every chain: :func:`new_secret`, :func:`import_secret`,
  :func:`encrypt`, :func:`decrypt`, :func:`address_of`, :func:`export_text` and
  :func:`signer_of`. The secret carries its chain, so the chain is given once, when the
  secret is made.
- Import accepts, for Solana, a base58 keypair (Phantom's "export private key") or a
  Solana CLI keypair file (a JSON array of 64 integers); the public half must match the
  secret half. For EVM, 64 hex digits with or without ``0x``, a valid secp256k1 scalar.
  Bad input raises :class:`InvalidSecret`, whose message says what was expected and what
  was found (a length, a word count) and never any part of the text.
- At rest, a Solana secret is an :class:`EncryptedSolanaKey`: scrypt (parameters and
  salt stored with it) derives a 256-bit key for AES-256-GCM; the associated data binds
  the ciphertext to the record's version, chain, address and KDF parameters, so a blob
  copied onto another wallet's row (another address) does not decrypt. An EVM secret is
  an :class:`EncryptedEvmKey`: an Ethereum keystore v3 JSON (scrypt) written and read by
  ``eth_account.Account.encrypt`` / ``Account.decrypt``, so geth, MetaMask or
  ``Account.decrypt`` itself open it with the same passphrase. Keystore v3 does not
  authenticate its ``address`` field, so :func:`decrypt` derives the address from the
  decrypted key and refuses a record whose address differs.
- :func:`decrypt` raises :class:`WrongPassphrase` when the passphrase is wrong *or* the
  ciphertext was altered — an AEAD (and the keystore MAC) cannot tell the two apart, and
  the error says nothing more, so it is no oracle. A malformed, unsupported or
  inconsistent record raises :class:`InvalidKeyRecord` before any key derivation.
- Passphrases are normalised to Unicode NFC before use: the same text typed on
  different systems may arrive composed or decomposed. ASCII (and already-NFC) text is
  unchanged, so a keystore we write opens in other tools with the same passphrase.
- Records are plain frozen dataclasses whose :meth:`to_dict` holds only ``str`` and
  ``int`` values; the caller persists them. :func:`encrypted_key_from_dict` reads one
  back and validates it. Record format version: :data:`RECORD_VERSION`.
- scrypt defaults (:data:`DEFAULT_SCRYPT`: n=2**17, r=8, p=1 — 128 MiB, about 0.4 s
  here) follow OWASP's minimum for scrypt; tests pass cheap :class:`ScryptParams`.
  Derivation releases the GIL, so a host may run it in a thread. A record asking for
  more than :data:`MAX_SCRYPT_MEMORY` is refused rather than derived (a hostile row must
  not exhaust the host's memory).

What Python cannot promise: the bytes pass through immutable ``bytes`` objects on their
way in and out — the AEAD's output, the scrypt-derived key, ``eth_account``'s own
copies, a signer object's internal key, the text handed to :func:`import_secret` and
returned by :func:`export_text`. Those are freed by the garbage collector without being
zeroed. :meth:`SecretKey.wipe` zeroes valux's own copy, which limits how long a secret
sits in memory under our control; it is not a guarantee that no copy remains.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from valux.errors import ValuxError

__all__ = [
    "DEFAULT_SCRYPT",
    "MAX_SCRYPT_MEMORY",
    "RECORD_VERSION",
    "Chain",
    "EncryptedEvmKey",
    "EncryptedKey",
    "EncryptedSolanaKey",
    "InvalidKeyRecord",
    "InvalidPassphrase",
    "InvalidSecret",
    "KeyCustodyError",
    "ScryptParams",
    "SecretKey",
    "Signer",
    "WrongPassphrase",
    "address_of",
    "decrypt",
    "encrypt",
    "encrypted_key_from_dict",
    "export_text",
    "import_secret",
    "new_secret",
    "signer_of",
]

RECORD_VERSION = 1
"""Format of the records written here. Version 1: Solana = scrypt + AES-256-GCM with the
associated data of :func:`_associated_data`; EVM = keystore v3 (scrypt)."""

MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
"""Largest scrypt working set (128·n·r bytes) accepted, when writing or reading. geth's
"standard" keystore parameters (n=2**18, r=8) are exactly this."""

SOLANA_KEYPAIR_LEN = 64
EVM_KEY_LEN = 32
_SALT_LEN = 16
_NONCE_LEN = 12
_TAG_LEN = 16
_KDF_SCRYPT = "scrypt"
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {c: i for i, c in enumerate(_BASE58_ALPHABET)}


class Chain(StrEnum):
    """A chain valux holds keys for; the value is the name stored in records."""

    SOLANA = "solana"
    ARBITRUM = "arbitrum"

    @property
    def is_evm(self) -> bool:
        """An EVM chain: secp256k1 keys, checksummed 0x addresses, keystore v3 at rest."""
        return self is not Chain.SOLANA


# --------------------------------------------------------------------------- errors


class KeyCustodyError(ValuxError):
    """Base of the key-handling errors; ``chain`` names the chain when it is known."""

    code = "KEY_CUSTODY_ERROR"

    def __init__(self, message: str, chain: str = "") -> None:
        super().__init__(message)
        self.chain = chain

    def __reduce__(self) -> tuple[type[KeyCustodyError], tuple[str, str]]:
        return (type(self), (self.message, self.chain))


class InvalidSecret(KeyCustodyError):
    """Text or bytes given as a secret are not a valid key; the message never quotes them."""

    code = "INVALID_SECRET"


class InvalidPassphrase(KeyCustodyError):
    """A passphrase that cannot be used to encrypt (empty)."""

    code = "INVALID_PASSPHRASE"


class WrongPassphrase(KeyCustodyError):
    """Decryption failed: the passphrase is wrong, or the ciphertext is not this record's."""

    code = "WRONG_PASSPHRASE"


class InvalidKeyRecord(KeyCustodyError):
    """A stored record is malformed, of an unsupported version or KDF, or inconsistent."""

    code = "INVALID_KEY_RECORD"


# --------------------------------------------------------------------------- secrets


class SecretKey:
    """The raw bytes of one chain's secret key, wipeable, never shown, never pickled."""

    __slots__ = ("_buffer", "_chain")

    def __init__(self, chain: Chain | str, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into a private buffer after checking it is a valid key for ``chain``.

        Raises :class:`InvalidSecret` (no byte of ``data`` in the message).
        """
        self._chain = Chain(chain)
        self._buffer = bytearray(data)
        try:
            _validate(self._chain, self._buffer)
        except InvalidSecret:
            self.wipe()
            raise

    @property
    def chain(self) -> Chain:
        """The chain this key belongs to."""
        return self._chain

    @property
    def wiped(self) -> bool:
        """True once :meth:`wipe` ran; a wiped key can no longer be used."""
        return not any(self._buffer)

    def reveal(self) -> bytes:
        """An immutable copy of the key bytes, for a library that needs ``bytes``.

        The copy cannot be wiped: keep it short-lived and never store or log it.
        """
        self._require_live()
        return bytes(self._buffer)

    def wipe(self) -> None:
        """Overwrite the buffer with zeros (valux's copy only; see the module docstring)."""
        for i in range(len(self._buffer)):
            self._buffer[i] = 0

    def _require_live(self) -> None:
        if self.wiped:
            raise InvalidSecret("this key was wiped and can no longer be used", self._chain)

    def __len__(self) -> int:
        return len(self._buffer)

    def __repr__(self) -> str:
        state = "wiped" if self.wiped else "hidden"
        return f"SecretKey(chain={self._chain.value}, {len(self._buffer)} bytes, {state})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return self._chain is other._chain and hmac.compare_digest(self._buffer, other._buffer)

    __hash__ = None  # type: ignore[assignment]  # mutable (wipeable): not hashable

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretKey must not be pickled (it would leave the process)")

    def __copy__(self) -> NoReturn:
        raise TypeError("a SecretKey must not be copied; pass the object itself")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError("a SecretKey must not be copied; pass the object itself")


Signer = Keypair | LocalAccount
"""What can sign for a chain: a solders ``Keypair`` (Solana) or an eth_account
``LocalAccount`` (EVM). Each holds its own copy of the key (see the module docstring)."""


def new_secret(chain: Chain | str) -> SecretKey:
    """A fresh random key for ``chain`` from the operating system's CSPRNG."""
    chain = Chain(chain)
    if chain is Chain.SOLANA:
        return SecretKey(chain, bytes(Keypair()))
    while True:
        candidate = secrets.token_bytes(EVM_KEY_LEN)
        if 0 < int.from_bytes(candidate, "big") < _SECP256K1_ORDER:
            return SecretKey(chain, candidate)


def import_secret(chain: Chain | str, text: str) -> SecretKey:
    """Parse a secret exported by a wallet: see the module docstring for the formats.

    Surrounding whitespace is ignored. Raises :class:`InvalidSecret`.
    """
    chain = Chain(chain)
    text = text.strip()
    if not text:
        raise InvalidSecret(f"no {_chain_name(chain)} secret given: the text is empty", chain)
    words = text.split()
    if len(words) >= 12 and all(word.isalpha() for word in words):
        raise InvalidSecret(
            f"this looks like a seed phrase ({len(words)} words); valux imports a private "
            f"key, not a seed phrase — export the account's private key from the wallet",
            chain,
        )
    if chain is Chain.SOLANA:
        is_json = text.startswith(("[", "{"))
        raw = _parse_json_keypair(text) if is_json else _parse_base58_keypair(text)
        try:
            return SecretKey(chain, raw)
        finally:
            _zero(raw)
    return SecretKey(chain, _parse_evm_hex(text, chain))


def address_of(secret: SecretKey) -> str:
    """The public address of ``secret``: base58 for Solana, checksummed 0x-hex for EVM."""
    secret._require_live()
    if secret.chain is Chain.SOLANA:
        return str(Pubkey.from_bytes(bytes(secret._buffer[32:])))
    address: str = Account.from_key(secret._buffer).address
    return address


def export_text(secret: SecretKey) -> str:
    """The secret as wallets import it: base58 keypair (Solana) or 0x-hex (EVM).

    The returned ``str`` cannot be wiped; export is for an audited, explicit user request.
    """
    secret._require_live()
    if secret.chain is Chain.SOLANA:
        return _base58_encode(secret._buffer)
    return "0x" + secret._buffer.hex()


def signer_of(secret: SecretKey) -> Signer:
    """A signing object for ``secret``; it holds its own copy of the key, which valux
    cannot wipe — drop every reference to it when the key is locked."""
    secret._require_live()
    if secret.chain is Chain.SOLANA:
        return Keypair.from_bytes(secret._buffer)
    account: LocalAccount = Account.from_key(secret._buffer)
    return account


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost: ``n`` (a power of two) × ``r`` sets memory (128·n·r bytes), ``p`` time."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        for name in ("n", "r", "p"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"scrypt {name} must be a positive integer, got {value!r}")
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"scrypt n must be a power of two ≥ 2, got {self.n}")
        if self.memory_bytes > MAX_SCRYPT_MEMORY:
            raise ValueError(
                f"scrypt n={self.n}, r={self.r} needs {self.memory_bytes // 2**20} MiB; "
                f"the limit is {MAX_SCRYPT_MEMORY // 2**20} MiB"
            )

    @property
    def memory_bytes(self) -> int:
        """The working set scrypt allocates."""
        return 128 * self.n * self.r


DEFAULT_SCRYPT = ScryptParams()
"""n=2**17, r=8, p=1: OWASP's minimum for scrypt (128 MiB, ~0.4 s on these machines)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedSolanaKey:
    """A Solana keypair at rest: scrypt + AES-256-GCM. Binary fields are base64 text.

    ``ciphertext`` is AES-GCM's output (64 key bytes, then the 16-byte tag).
    """

    version: int
    chain: Chain
    address: str
    kdf: str
    kdf_n: int
    kdf_r: int
    kdf_p: int
    salt: str
    nonce: str
    ciphertext: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", Chain(self.chain))

    def to_dict(self) -> dict[str, str | int]:
        """The row to persist: only ``str`` and ``int`` values."""
        return {
            "version": self.version,
            "chain": self.chain.value,
            "address": self.address,
            "kdf": self.kdf,
            "kdf_n": self.kdf_n,
            "kdf_r": self.kdf_r,
            "kdf_p": self.kdf_p,
            "salt": self.salt,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedEvmKey:
    """An EVM private key at rest: an Ethereum keystore v3 JSON (scrypt) and its address.

    ``keystore`` is the JSON text exactly as ``Account.encrypt`` produced it (the file a
    user could hand to geth or MetaMask); ``address`` is checksummed.
    """

    version: int
    chain: Chain
    address: str
    keystore: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", Chain(self.chain))

    def to_dict(self) -> dict[str, str | int]:
        """The row to persist: only ``str`` and ``int`` values."""
        return {
            "version": self.version,
            "chain": self.chain.value,
            "address": self.address,
            "keystore": self.keystore,
        }


EncryptedKey = EncryptedSolanaKey | EncryptedEvmKey
"""A secret at rest, whichever chain it belongs to."""


def encrypted_key_from_dict(data: Mapping[str, object]) -> EncryptedKey:
    """Read a record written by ``to_dict``; raises :class:`InvalidKeyRecord` if it is not one."""
    chain_text = data.get("chain")
    try:
        chain = Chain(str(chain_text))
    except ValueError:
        raise InvalidKeyRecord(f"unknown chain {chain_text!r} in key record") from None
    if chain is Chain.SOLANA:
        expected = set(EncryptedSolanaKey.__dataclass_fields__)
    else:
        expected = set(EncryptedEvmKey.__dataclass_fields__)
    if set(data) != expected:
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected)
        raise InvalidKeyRecord(
            f"{chain.value} key record has missing fields {missing} / unknown fields {unknown}",
            chain,
        )
    fields: dict[str, Any] = {"chain": chain}
    for name, value in data.items():
        if name == "chain":
            continue
        want: type = int if name in ("version", "kdf_n", "kdf_r", "kdf_p") else str
        if type(value) is not want:
            raise InvalidKeyRecord(
                f"key record field {name!r} must be {want.__name__}, got {type(value).__name__}",
                chain,
            )
        fields[name] = value
    record: EncryptedKey = (
        EncryptedSolanaKey(**fields) if chain is Chain.SOLANA else EncryptedEvmKey(**fields)
    )
    _check_record(record)
    return record


def encrypt(
    secret: SecretKey, passphrase: str, *, scrypt: ScryptParams = DEFAULT_SCRYPT
) -> EncryptedKey:
    """Encrypt ``secret`` under ``passphrase`` into a record for its chain (see above)."""
    secret._require_live()
    if not passphrase:
        raise InvalidPassphrase("the passphrase must not be empty", secret.chain)
    address = address_of(secret)
    if secret.chain.is_evm:
        if (scrypt.r, scrypt.p) != (8, 1):
            raise ValueError("keystore v3 via eth_account supports scrypt r=8, p=1 only")
        keystore = Account.encrypt(
            secret.reveal(), _normalise(passphrase), kdf="scrypt", iterations=scrypt.n
        )
        return EncryptedEvmKey(
            version=RECORD_VERSION,
            chain=secret.chain,
            address=address,
            keystore=json.dumps(keystore, separators=(",", ":"), sort_keys=True),
        )
    salt = secrets.token_bytes(_SALT_LEN)
    nonce = secrets.token_bytes(_NONCE_LEN)
    aad = _associated_data(RECORD_VERSION, secret.chain, address, _KDF_SCRYPT, scrypt)
    key = _derive(passphrase, salt, scrypt)
    ciphertext = AESGCM(key).encrypt(nonce, secret._buffer, aad)
    return EncryptedSolanaKey(
        version=RECORD_VERSION,
        chain=secret.chain,
        address=address,
        kdf=_KDF_SCRYPT,
        kdf_n=scrypt.n,
        kdf_r=scrypt.r,
        kdf_p=scrypt.p,
        salt=_b64(salt),
        nonce=_b64(nonce),
        ciphertext=_b64(ciphertext),
    )


def decrypt(
    record: EncryptedKey, passphrase: str, *, expected_address: str | None = None
) -> SecretKey:
    """The secret in ``record``, checked against the record's address.

    ``expected_address`` (the wallet row's own address) is compared before any key
    derivation. Raises :class:`WrongPassphrase` or :class:`InvalidKeyRecord`.
    """
    _check_record(record)
    chain = record.chain
    if expected_address is not None and not _same_address(chain, expected_address, record.address):
        raise InvalidKeyRecord(
            f"the key record is for {record.address}, not for wallet address {expected_address}",
            chain,
        )
    wrong = WrongPassphrase(
        "wrong passphrase (or the stored key was altered or belongs to another wallet)", chain
    )
    raw: bytes
    if isinstance(record, EncryptedEvmKey):
        try:
            raw = Account.decrypt(record.keystore, _normalise(passphrase))
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, ValueError) and "MAC mismatch" in str(exc):
                raise wrong from None
            raise InvalidKeyRecord(f"the keystore cannot be read: {exc}", chain) from None
    else:
        params = ScryptParams(n=record.kdf_n, r=record.kdf_r, p=record.kdf_p)
        aad = _associated_data(record.version, chain, record.address, record.kdf, params)
        key = _derive(passphrase, _unb64(record.salt), params)
        try:
            raw = AESGCM(key).decrypt(_unb64(record.nonce), _unb64(record.ciphertext), aad)
        except InvalidTag:
            raise wrong from None
    try:
        secret = SecretKey(chain, raw)
    except InvalidSecret:
        raise InvalidKeyRecord("the decrypted key is not a valid key", chain) from None
    del raw
    if not _same_address(chain, address_of(secret), record.address):
        secret.wipe()
        raise InvalidKeyRecord(
            f"the key record says {record.address}, but its key belongs to another address",
            chain,
        )
    return secret


# --------------------------------------------------------------------------- internals


def _chain_name(chain: Chain) -> str:
    return "Solana" if chain is Chain.SOLANA else f"EVM ({chain.value})"


def _zero(buffer: bytearray) -> None:
    for i in range(len(buffer)):
        buffer[i] = 0


def _validate(chain: Chain, data: bytearray) -> None:
    if chain is Chain.SOLANA:
        if len(data) != SOLANA_KEYPAIR_LEN:
            raise InvalidSecret(
                f"a Solana keypair is {SOLANA_KEYPAIR_LEN} bytes, got {len(data)}"
                + (" (the size of a public address or a bare seed)" if len(data) == 32 else ""),
                chain,
            )
        derived = Keypair.from_seed(bytes(data[:32])).pubkey()
        if bytes(derived) != bytes(data[32:]):
            raise InvalidSecret(
                "the keypair's public half does not match its secret half "
                "(corrupt, or pasted incompletely)",
                chain,
            )
        return
    if len(data) != EVM_KEY_LEN:
        raise InvalidSecret(f"an EVM private key is {EVM_KEY_LEN} bytes, got {len(data)}", chain)
    if not 0 < int.from_bytes(data, "big") < _SECP256K1_ORDER:
        raise InvalidSecret("not a valid secp256k1 private key (out of range)", chain)


def _parse_json_keypair(text: str) -> bytearray:
    expected = "a Solana CLI keypair file is a JSON array of 64 integers from 0 to 255"
    try:
        values = json.loads(text)
    except ValueError:
        raise InvalidSecret(f"not valid JSON: {expected}", Chain.SOLANA) from None
    if not isinstance(values, list):
        raise InvalidSecret(expected, Chain.SOLANA)
    if not all(type(v) is int and 0 <= v <= 255 for v in values):
        raise InvalidSecret(f"{expected}; found other values", Chain.SOLANA)
    if len(values) != SOLANA_KEYPAIR_LEN:
        raise InvalidSecret(f"{expected}; found {len(values)}", Chain.SOLANA)
    raw = bytearray(values)
    values.clear()
    return raw


def _parse_base58_keypair(text: str) -> bytearray:
    if any(c not in _BASE58_INDEX for c in text):
        raise InvalidSecret(
            "not a Solana secret key: expected a base58 keypair (as Phantom exports it) or "
            "a JSON array of 64 integers (a Solana CLI keypair file); the text contains "
            "characters outside the base58 alphabet",
            Chain.SOLANA,
        )
    raw = _base58_decode(text)
    if len(raw) != SOLANA_KEYPAIR_LEN:
        size = len(raw)
        _zero(raw)
        hint = " — the size of a public address or a bare seed" if size == 32 else ""
        raise InvalidSecret(
            f"a base58 Solana keypair decodes to {SOLANA_KEYPAIR_LEN} bytes; this text "
            f"decodes to {size}{hint}",
            Chain.SOLANA,
        )
    return raw


def _parse_evm_hex(text: str, chain: Chain) -> bytearray:
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    expected = "an EVM private key is 64 hex digits (32 bytes), with or without 0x"
    if len(digits) != 2 * EVM_KEY_LEN:
        raise InvalidSecret(f"{expected}; got {len(digits)} characters", chain)
    try:
        return bytearray(bytes.fromhex(digits))
    except ValueError:
        raise InvalidSecret(f"{expected}; the text has non-hex characters", chain) from None


def _base58_decode(text: str) -> bytearray:
    number = 0
    for char in text:
        number = number * 58 + _BASE58_INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading = len(text) - len(text.lstrip("1"))
    return bytearray(leading) + bytearray(body)


def _base58_encode(data: bytes | bytearray) -> str:
    number = int.from_bytes(data, "big")
    chars: list[str] = []
    while number:
        number, rem = divmod(number, 58)
        chars.append(_BASE58_ALPHABET[rem])
    leading = len(data) - len(bytes(data).lstrip(b"\0"))
    return "1" * leading + "".join(reversed(chars))


def _normalise(passphrase: str) -> str:
    return unicodedata.normalize("NFC", passphrase)


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p)
    return kdf.derive(_normalise(passphrase).encode("utf-8"))


def _associated_data(
    version: int, chain: Chain, address: str, kdf: str, params: ScryptParams
) -> bytes:
    """What the AEAD authenticates besides the ciphertext: moving the blob to another
    wallet (address), chain, format or parameter set makes decryption fail."""
    return (
        f"valux-key|v{version}|{chain.value}|{address}|{kdf}|n={params.n}|r={params.r}|p={params.p}"
    ).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _same_address(chain: Chain, a: str, b: str) -> bool:
    return a.lower() == b.lower() if chain.is_evm else a == b


def _check_record(record: EncryptedKey) -> None:
    """Structure, version and parameter checks that need no passphrase."""
    chain = record.chain
    if record.version != RECORD_VERSION:
        raise InvalidKeyRecord(
            f"key record version {record.version} is not supported (this build reads "
            f"version {RECORD_VERSION})",
            chain,
        )
    if isinstance(record, EncryptedSolanaKey):
        if chain is not Chain.SOLANA:
            raise InvalidKeyRecord(f"a Solana key record names chain {chain.value}", chain)
        if record.kdf != _KDF_SCRYPT:
            raise InvalidKeyRecord(f"unsupported key derivation {record.kdf!r}", chain)
        try:
            ScryptParams(n=record.kdf_n, r=record.kdf_r, p=record.kdf_p)
            lengths = (
                len(_unb64(record.salt)),
                len(_unb64(record.nonce)),
                len(_unb64(record.ciphertext)),
            )
        except (ValueError, binascii.Error) as exc:
            raise InvalidKeyRecord(f"key record parameters are invalid: {exc}", chain) from None
        if lengths != (_SALT_LEN, _NONCE_LEN, SOLANA_KEYPAIR_LEN + _TAG_LEN):
            raise InvalidKeyRecord(
                "key record salt, nonce or ciphertext has the wrong length", chain
            )
        try:
            Pubkey.from_string(record.address)
        except ValueError:
            raise InvalidKeyRecord("key record address is not a Solana address", chain) from None
        return
    if not chain.is_evm:
        raise InvalidKeyRecord(f"an EVM key record names chain {chain.value}", chain)
    try:
        keystore = json.loads(record.keystore)
        crypto = keystore["crypto"]
        kdf = crypto["kdf"]
        kdfparams = crypto["kdfparams"]
        if keystore["version"] != 3:
            raise ValueError(f"keystore version {keystore['version']} (expected 3)")
        if kdf != _KDF_SCRYPT:
            raise ValueError(f"keystore KDF {kdf!r} (expected scrypt)")
        ScryptParams(n=kdfparams["n"], r=kdfparams["r"], p=kdfparams["p"])
        checksummed = to_checksum_address(record.address)
        if "address" in keystore and not _same_address(
            chain, "0x" + str(keystore["address"]).removeprefix("0x"), checksummed
        ):
            raise ValueError("the keystore's address differs from the record's")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidKeyRecord(f"the keystore cannot be used: {exc}", chain) from None
