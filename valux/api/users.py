"""Users as the API stores them: records, the :class:`UserStore` protocol, an in-memory store.

The pure parts of authentication (hashing, tokens, sign-in messages, API keys,
webhook signatures) live in :mod:`valux.auth`; this module is what the API keeps
between requests. Two implementations satisfy :class:`UserStore`:
:class:`~valux.api.users_pg.PgUserStore` over PostgreSQL (tables of migration
``0008_users.sql``) and :class:`MemoryUserStore` here, for the HTTP-layer unit
tests. Both follow the same contract:

- E-mails are compared case-insensitively and stored as given; wallet
  subjects exactly (EIP-55 / base58).
- The first admin (``u_admin``, :data:`SYSTEM_OWNER`) owns everything from
  before users existed and everything an in-process tool (backtest, bench)
  creates without naming an owner. It has no login identity until
  :meth:`UserStore.bootstrap_admin` (first start) or
  :meth:`UserStore.create_user` with ``role=admin`` (``valux user create
  --admin``) gives it one.
- Refresh-token rotation is atomic: of two refreshes presenting the same token,
  one rotates and the other is treated as a reuse.
- A revoked API key or webhook is kept (for the audit trail) and never matches.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from valux.auth.api_keys import ApiKeyRecord, Scope
from valux.auth.audit import AuditEvent, check_detail
from valux.auth.passwords import LoginThrottle
from valux.auth.tokens import RefreshTokenRecord, Role
from valux.errors import ConfigurationError, Conflict

__all__ = [
    "SYSTEM_OWNER",
    "ApiKeyRow",
    "Identity",
    "IdentityKind",
    "MemoryUserStore",
    "PasswordLogin",
    "User",
    "UserStore",
    "WebhookRow",
    "new_user_id",
]

SYSTEM_OWNER = "u_admin"
"""The first admin's id: owner of the data from before users, and of what in-process tools
create without naming an owner (migration ``0008_users.sql`` creates it)."""

IdentityKind = Literal["password", "siwe", "siws"]


def new_user_id() -> str:
    return "u_" + uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class User:
    """An account: ``email`` is None for a user who only ever signed in with a wallet."""

    id: str
    email: str | None
    role: Role
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class Identity:
    """One way to log in: ``password`` (subject: the lower-case e-mail) or a wallet."""

    kind: IdentityKind
    subject: str
    user_id: str
    created_at: datetime
    last_login_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "created_at": self.created_at.isoformat(),
            "last_login_at": None if self.last_login_at is None else self.last_login_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class PasswordLogin:
    """What a password login needs: the user, the stored hash and the lockout state."""

    user: User
    secret_hash: str
    throttle: LoginThrottle


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """A stored API key (its hash; the key itself was shown once)."""

    prefix: str
    key_hash: str
    user_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def record(self) -> ApiKeyRecord:
        return ApiKeyRecord(self.prefix, self.key_hash, self.scopes)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.prefix,
            "hint": f"vx_{self.prefix}_…",
            "name": self.name,
            "scopes": sorted(s.value for s in self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class WebhookRow:
    """A signal webhook; ``sealed_secret`` is the HMAC secret encrypted at rest."""

    id: str
    user_id: str
    name: str
    sealed_secret: bytes
    created_at: datetime
    revoked_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "url": f"/api/v1/webhooks/{self.id}/signals",
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


@runtime_checkable
class UserStore(Protocol):
    """Where the API keeps users, sessions, keys, webhooks and the audit log."""

    # -- users and identities ----------------------------------------------------------
    async def get_user(self, user_id: str) -> User | None:
        """The user, or None."""
        ...

    async def bootstrap_admin(self, email: str, secret_hash: str) -> User | None:
        """If no admin can log in, give the first admin ``email`` and this password and
        return it; else None. Safe against several API processes starting at once.
        ``ConfigurationError`` if ``email`` belongs to another user."""
        ...

    async def create_user(
        self,
        *,
        email: str | None,
        role: Role,
        secret_hash: str | None = None,
        wallet: tuple[IdentityKind, str] | None = None,
    ) -> User:
        """A new user with a password identity (``email`` + ``secret_hash``) and/or a wallet
        identity. An admin created while the first admin has no identity *is* the first
        admin (it gets the identity, and so everything from before users). ``Conflict`` if
        the e-mail or the wallet is taken."""
        ...

    async def identities(self, user_id: str) -> list[Identity]:
        """Every identity of the user, oldest first."""
        ...

    async def password_login(self, email: str) -> PasswordLogin | None:
        """The password identity of ``email`` (case-insensitive), or None."""
        ...

    async def save_login_attempt(
        self,
        email: str,
        throttle: LoginThrottle,
        *,
        login_at: datetime | None = None,
        new_hash: str | None = None,
    ) -> None:
        """Store the lockout state after an attempt (and, on success, when and a rehash)."""
        ...

    async def set_password(self, user_id: str, secret_hash: str) -> None:
        """Replace the user's password hash (and clear its lockout)."""
        ...

    async def wallet_user(self, kind: IdentityKind, subject: str) -> User | None:
        """The user a wallet is linked to, or None."""
        ...

    async def link_wallet(
        self, user_id: str, kind: IdentityKind, subject: str, *, at: datetime
    ) -> bool:
        """Link a wallet to a user; False if it already was. ``Conflict`` if another user
        holds it."""
        ...

    async def touch_identity(self, kind: IdentityKind, subject: str, at: datetime) -> None:
        """Record a successful login with this identity."""
        ...

    # -- refresh tokens ------------------------------------------------------------------
    async def add_refresh_token(self, record: RefreshTokenRecord) -> None: ...

    async def refresh_token(self, token_hash: str) -> RefreshTokenRecord | None: ...

    async def rotate_refresh_token(self, used: RefreshTokenRecord, new: RefreshTokenRecord) -> bool:
        """Mark ``used`` used and store ``new``, atomically; False (nothing stored) if
        ``used`` was used or revoked meanwhile."""
        ...

    async def revoke_refresh_family(self, family_id: str, at: datetime) -> int: ...

    async def revoke_user_refresh_tokens(self, user_id: str, at: datetime) -> int: ...

    # -- API keys ------------------------------------------------------------------------
    async def add_api_key(self, user_id: str, name: str, record: ApiKeyRecord) -> ApiKeyRow: ...

    async def api_key(self, prefix: str) -> tuple[ApiKeyRow, User] | None:
        """The key (revoked or not) and its user, or None."""
        ...

    async def list_api_keys(self, user_id: str) -> list[ApiKeyRow]: ...

    async def revoke_api_key(self, user_id: str, prefix: str, at: datetime) -> ApiKeyRow | None:
        """Revoke the user's key; None if the user has no such key."""
        ...

    # -- webhooks ------------------------------------------------------------------------
    async def add_webhook(
        self, user_id: str, webhook_id: str, name: str, sealed_secret: bytes
    ) -> WebhookRow: ...

    async def webhook(self, webhook_id: str) -> WebhookRow | None: ...

    async def list_webhooks(self, user_id: str) -> list[WebhookRow]: ...

    async def revoke_webhook(
        self, user_id: str, webhook_id: str, at: datetime
    ) -> WebhookRow | None: ...

    # -- audit ---------------------------------------------------------------------------
    async def audit(
        self,
        event: AuditEvent,
        *,
        user_id: str | None = None,
        actor_id: str | None = None,
        ip: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one audit row (:func:`valux.auth.audit.write_audit`)."""
        ...

    async def audit_log(
        self, *, limit: int, offset: int, event: str | None, user_id: str | None
    ) -> list[dict[str, Any]]:
        """Audit rows, newest first, as JSON-safe dicts."""
        ...


# -------------------------------------------------------------------- in memory


@dataclass
class _Ident:
    kind: IdentityKind
    subject: str
    user_id: str
    created_at: datetime
    secret_hash: str | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    last_login_at: datetime | None = None

    def identity(self) -> Identity:
        return Identity(self.kind, self.subject, self.user_id, self.created_at, self.last_login_at)


class MemoryUserStore:
    """:class:`UserStore` in dicts, for tests (single event loop, no persistence)."""

    def __init__(self) -> None:
        now = _now()
        self.users: dict[str, User] = {SYSTEM_OWNER: User(SYSTEM_OWNER, None, Role.ADMIN, now)}
        self.idents: dict[tuple[str, str], _Ident] = {}
        self.refresh: dict[str, RefreshTokenRecord] = {}
        self.keys: dict[str, ApiKeyRow] = {}
        self.hooks: dict[str, WebhookRow] = {}
        self.audit_rows: list[dict[str, Any]] = []
        self._audit_ids = itertools.count(1)

    # users -------------------------------------------------------------------------------
    async def get_user(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    def _has_identity(self, user_id: str) -> bool:
        return any(i.user_id == user_id for i in self.idents.values())

    def _unclaimed_admin(self) -> User | None:
        admins = sorted((u for u in self.users.values() if u.is_admin), key=lambda u: u.created_at)
        if any(self._has_identity(u.id) for u in admins):
            return None
        return admins[0] if admins else None

    def _email_taken(self, email: str, but: str | None = None) -> bool:
        key = ("password", email.lower())
        return key in self.idents and self.idents[key].user_id != but

    async def bootstrap_admin(self, email: str, secret_hash: str) -> User | None:
        admins = [u for u in self.users.values() if u.is_admin]
        if any(self._has_identity(u.id) for u in admins):
            return None
        target = self._unclaimed_admin()
        if self._email_taken(email, but=None if target is None else target.id):
            raise ConfigurationError(
                f"auth.admin_email {email!r} belongs to another user; set another e-mail"
            )
        now = _now()
        user = (
            replace(target, email=email)
            if target is not None
            else User(new_user_id(), email, Role.ADMIN, now)
        )
        self.users[user.id] = user
        self.idents[("password", email.lower())] = _Ident(
            "password", email.lower(), user.id, now, secret_hash
        )
        return user

    async def create_user(
        self,
        *,
        email: str | None,
        role: Role,
        secret_hash: str | None = None,
        wallet: tuple[IdentityKind, str] | None = None,
    ) -> User:
        if email is not None and self._email_taken(email):
            raise Conflict(f"a user with the e-mail {email} already exists")
        if wallet is not None and wallet in self.idents:
            raise Conflict("this wallet is already linked to a user")
        now = _now()
        target = self._unclaimed_admin() if role is Role.ADMIN else None
        user = (
            replace(target, email=email)
            if target is not None
            else User(new_user_id(), email, role, now)
        )
        self.users[user.id] = user
        if email is not None and secret_hash is not None:
            self.idents[("password", email.lower())] = _Ident(
                "password", email.lower(), user.id, now, secret_hash
            )
        if wallet is not None:
            self.idents[wallet] = _Ident(wallet[0], wallet[1], user.id, now)
        return user

    async def identities(self, user_id: str) -> list[Identity]:
        found = [i.identity() for i in self.idents.values() if i.user_id == user_id]
        return sorted(found, key=lambda i: i.created_at)

    async def password_login(self, email: str) -> PasswordLogin | None:
        ident = self.idents.get(("password", email.lower()))
        if ident is None or ident.secret_hash is None:
            return None
        return PasswordLogin(self.users[ident.user_id], ident.secret_hash, ident.throttle)

    async def save_login_attempt(
        self,
        email: str,
        throttle: LoginThrottle,
        *,
        login_at: datetime | None = None,
        new_hash: str | None = None,
    ) -> None:
        ident = self.idents.get(("password", email.lower()))
        if ident is None:
            return
        ident.throttle = throttle
        if login_at is not None:
            ident.last_login_at = login_at
        if new_hash is not None:
            ident.secret_hash = new_hash

    async def set_password(self, user_id: str, secret_hash: str) -> None:
        for ident in self.idents.values():
            if ident.user_id == user_id and ident.kind == "password":
                ident.secret_hash = secret_hash
                ident.throttle = LoginThrottle()

    async def wallet_user(self, kind: IdentityKind, subject: str) -> User | None:
        ident = self.idents.get((kind, subject))
        return None if ident is None else self.users.get(ident.user_id)

    async def link_wallet(
        self, user_id: str, kind: IdentityKind, subject: str, *, at: datetime
    ) -> bool:
        ident = self.idents.get((kind, subject))
        if ident is not None:
            if ident.user_id != user_id:
                raise Conflict("this wallet is already linked to another user")
            return False
        self.idents[(kind, subject)] = _Ident(kind, subject, user_id, at)
        return True

    async def touch_identity(self, kind: IdentityKind, subject: str, at: datetime) -> None:
        ident = self.idents.get((kind, subject))
        if ident is not None:
            ident.last_login_at = at

    # refresh tokens ----------------------------------------------------------------------
    async def add_refresh_token(self, record: RefreshTokenRecord) -> None:
        self.refresh[record.token_hash] = record

    async def refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        return self.refresh.get(token_hash)

    async def rotate_refresh_token(self, used: RefreshTokenRecord, new: RefreshTokenRecord) -> bool:
        current = self.refresh.get(used.token_hash)
        if current is None or current.used_at is not None or current.revoked_at is not None:
            return False
        self.refresh[used.token_hash] = used
        self.refresh[new.token_hash] = new
        return True

    async def revoke_refresh_family(self, family_id: str, at: datetime) -> int:
        count = 0
        for key, record in list(self.refresh.items()):
            if record.family_id == family_id and record.revoked_at is None:
                self.refresh[key] = replace(record, revoked_at=at)
                count += 1
        return count

    async def revoke_user_refresh_tokens(self, user_id: str, at: datetime) -> int:
        count = 0
        for key, record in list(self.refresh.items()):
            if record.user_id == user_id and record.revoked_at is None:
                self.refresh[key] = replace(record, revoked_at=at)
                count += 1
        return count

    # API keys ----------------------------------------------------------------------------
    async def add_api_key(self, user_id: str, name: str, record: ApiKeyRecord) -> ApiKeyRow:
        row = ApiKeyRow(record.prefix, record.key_hash, user_id, name, record.scopes, _now())
        self.keys[row.prefix] = row
        return row

    async def api_key(self, prefix: str) -> tuple[ApiKeyRow, User] | None:
        row = self.keys.get(prefix)
        if row is None:
            return None
        return row, self.users[row.user_id]

    async def list_api_keys(self, user_id: str) -> list[ApiKeyRow]:
        rows = [k for k in self.keys.values() if k.user_id == user_id]
        return sorted(rows, key=lambda k: k.created_at)

    async def revoke_api_key(self, user_id: str, prefix: str, at: datetime) -> ApiKeyRow | None:
        row = self.keys.get(prefix)
        if row is None or row.user_id != user_id:
            return None
        if row.revoked_at is None:
            row = replace(row, revoked_at=at)
            self.keys[prefix] = row
        return row

    # webhooks ----------------------------------------------------------------------------
    async def add_webhook(
        self, user_id: str, webhook_id: str, name: str, sealed_secret: bytes
    ) -> WebhookRow:
        row = WebhookRow(webhook_id, user_id, name, sealed_secret, _now())
        self.hooks[webhook_id] = row
        return row

    async def webhook(self, webhook_id: str) -> WebhookRow | None:
        return self.hooks.get(webhook_id)

    async def list_webhooks(self, user_id: str) -> list[WebhookRow]:
        rows = [w for w in self.hooks.values() if w.user_id == user_id]
        return sorted(rows, key=lambda w: w.created_at)

    async def revoke_webhook(
        self, user_id: str, webhook_id: str, at: datetime
    ) -> WebhookRow | None:
        row = self.hooks.get(webhook_id)
        if row is None or row.user_id != user_id:
            return None
        if row.revoked_at is None:
            row = replace(row, revoked_at=at)
            self.hooks[webhook_id] = row
        return row

    # audit -------------------------------------------------------------------------------
    async def audit(
        self,
        event: AuditEvent,
        *,
        user_id: str | None = None,
        actor_id: str | None = None,
        ip: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.audit_rows.append(
            {
                "id": next(self._audit_ids),
                "at": _now().isoformat(),
                "event": AuditEvent(event).value,
                "user_id": user_id,
                "actor_id": actor_id,
                "ip": ip,
                "detail": check_detail(detail or {}),
            }
        )

    async def audit_log(
        self, *, limit: int, offset: int, event: str | None, user_id: str | None
    ) -> list[dict[str, Any]]:
        rows = [
            r
            for r in reversed(self.audit_rows)
            if (event is None or r["event"] == event)
            and (user_id is None or r["user_id"] == user_id)
        ]
        return [dict(r) for r in rows[offset : offset + limit]]

    def events(self) -> list[str]:
        """The audit events recorded so far, oldest first (tests)."""
        return [r["event"] for r in self.audit_rows]
