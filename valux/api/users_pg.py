""":class:`PgUserStore`: the :class:`~valux.api.users.UserStore` over PostgreSQL.

Tables of migration ``0008_users.sql``. Creating the first admin takes a
transaction-level advisory lock, so two API processes starting on an empty
database make one admin, not two. Refresh-token rotation is one transaction
whose ``UPDATE ... WHERE used_at IS NULL AND revoked_at IS NULL`` decides which
of two concurrent refreshes wins. PostgreSQL being unreachable surfaces as
:class:`~valux.errors.Unavailable` (503).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from valux.api.users import (
    ApiKeyRow,
    Identity,
    IdentityKind,
    PasswordLogin,
    User,
    WebhookRow,
    new_user_id,
)
from valux.auth.api_keys import ApiKeyRecord, Scope
from valux.auth.audit import AuditEvent, write_audit
from valux.auth.passwords import LoginThrottle
from valux.auth.tokens import RefreshTokenRecord, Role
from valux.errors import ConfigurationError, Conflict
from valux.persistence.guard import db_guard

__all__ = ["PgUserStore"]

_ADMIN_LOCK = 0x56414C5558_01  # "VALUX" + 1: creating the first admin


def _user(row: asyncpg.Record) -> User:
    return User(row["id"], row["email"], Role(row["role"]), row["created_at"])


def _refresh(row: asyncpg.Record) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        token_hash=row["token_hash"],
        family_id=row["family_id"],
        parent_hash=row["parent_hash"],
        user_id=row["user_id"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        revoked_at=row["revoked_at"],
    )


def _key(row: asyncpg.Record) -> ApiKeyRow:
    return ApiKeyRow(
        row["prefix"],
        row["key_hash"],
        row["user_id"],
        row["name"],
        frozenset(Scope(s) for s in row["scopes"]),
        row["created_at"],
        row["revoked_at"],
    )


def _hook(row: asyncpg.Record) -> WebhookRow:
    return WebhookRow(
        row["id"], row["user_id"], row["name"], bytes(row["secret"]), row["created_at"],
        row["revoked_at"],
    )  # fmt: skip


_USER = "id, email, role, created_at"
_KEY = "prefix, key_hash, user_id, name, scopes, created_at, revoked_at"
_HOOK = "id, user_id, name, secret, created_at, revoked_at"
_UNCLAIMED_ADMIN = (
    f"SELECT {_USER} FROM users u WHERE role = 'admin'"
    " AND NOT EXISTS (SELECT 1 FROM user_identities i WHERE i.user_id = u.id)"
    " AND NOT EXISTS (SELECT 1 FROM users a JOIN user_identities i ON i.user_id = a.id"
    "                 WHERE a.role = 'admin')"
    " ORDER BY created_at, id LIMIT 1"
)


class PgUserStore:
    """Users, identities, refresh tokens, API keys, webhooks and the audit log in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- users -------------------------------------------------------------------------
    @db_guard
    async def get_user(self, user_id: str) -> User | None:
        row = await self.pool.fetchrow(f"SELECT {_USER} FROM users WHERE id = $1", user_id)
        return None if row is None else _user(row)

    @db_guard
    async def bootstrap_admin(self, email: str, secret_hash: str) -> User | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_LOCK)
            can_log_in = await conn.fetchval(
                "SELECT 1 FROM users u JOIN user_identities i ON i.user_id = u.id"
                " WHERE u.role = 'admin' LIMIT 1"
            )
            if can_log_in:
                return None
            target = await conn.fetchrow(_UNCLAIMED_ADMIN)
            owner = await conn.fetchval(
                "SELECT user_id FROM user_identities WHERE kind = 'password' AND subject = $1",
                email.lower(),
            )
            if owner is not None:
                raise ConfigurationError(
                    f"auth.admin_email {email!r} belongs to another user; set another e-mail"
                )
            user = await self._claim_or_insert(conn, target, email, Role.ADMIN)
            await self._add_password(conn, user.id, email, secret_hash)
            return user

    async def _claim_or_insert(
        self, conn: Any, target: asyncpg.Record | None, email: str | None, role: Role
    ) -> User:
        if target is not None:
            row = await conn.fetchrow(
                f"UPDATE users SET email = $2 WHERE id = $1 RETURNING {_USER}", target["id"], email
            )
        else:
            row = await conn.fetchrow(
                f"INSERT INTO users (id, email, role) VALUES ($1, $2, $3) RETURNING {_USER}",
                new_user_id(),
                email,
                role.value,
            )
        return _user(row)

    @staticmethod
    async def _add_password(conn: Any, user_id: str, email: str, secret_hash: str) -> None:
        await conn.execute(
            "INSERT INTO user_identities (kind, subject, user_id, secret_hash)"
            " VALUES ('password', $1, $2, $3)",
            email.lower(),
            user_id,
            secret_hash,
        )

    @db_guard
    async def create_user(
        self,
        *,
        email: str | None,
        role: Role,
        secret_hash: str | None = None,
        wallet: tuple[IdentityKind, str] | None = None,
    ) -> User:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_LOCK)
                target = await conn.fetchrow(_UNCLAIMED_ADMIN) if role is Role.ADMIN else None
                user = await self._claim_or_insert(conn, target, email, role)
                if email is not None and secret_hash is not None:
                    await self._add_password(conn, user.id, email, secret_hash)
                if wallet is not None:
                    await conn.execute(
                        "INSERT INTO user_identities (kind, subject, user_id) VALUES ($1, $2, $3)",
                        wallet[0],
                        wallet[1],
                        user.id,
                    )
                return user
        except asyncpg.UniqueViolationError:
            what = "e-mail" if email is not None and wallet is None else "e-mail or wallet"
            raise Conflict(f"a user with this {what} already exists") from None

    @db_guard
    async def identities(self, user_id: str) -> list[Identity]:
        rows = await self.pool.fetch(
            "SELECT kind, subject, user_id, created_at, last_login_at FROM user_identities"
            " WHERE user_id = $1 ORDER BY created_at, kind, subject",
            user_id,
        )
        return [
            Identity(r["kind"], r["subject"], r["user_id"], r["created_at"], r["last_login_at"])
            for r in rows
        ]

    @db_guard
    async def password_login(self, email: str) -> PasswordLogin | None:
        row = await self.pool.fetchrow(
            "SELECT u.id, u.email, u.role, u.created_at, i.secret_hash, i.failures,"
            " i.first_failure_at, i.locked_until FROM user_identities i"
            " JOIN users u ON u.id = i.user_id WHERE i.kind = 'password' AND i.subject = $1",
            email.lower(),
        )
        if row is None or row["secret_hash"] is None:
            return None
        throttle = LoginThrottle(
            failures=row["failures"],
            first_failure_at=row["first_failure_at"],
            locked_until=row["locked_until"],
        )
        return PasswordLogin(_user(row), row["secret_hash"], throttle)

    @db_guard
    async def save_login_attempt(
        self,
        email: str,
        throttle: LoginThrottle,
        *,
        login_at: datetime | None = None,
        new_hash: str | None = None,
    ) -> None:
        await self.pool.execute(
            "UPDATE user_identities SET failures = $2, first_failure_at = $3, locked_until = $4,"
            " last_login_at = coalesce($5, last_login_at),"
            " secret_hash = coalesce($6, secret_hash)"
            " WHERE kind = 'password' AND subject = $1",
            email.lower(),
            throttle.failures,
            throttle.first_failure_at,
            throttle.locked_until,
            login_at,
            new_hash,
        )

    @db_guard
    async def set_password(self, user_id: str, secret_hash: str) -> None:
        await self.pool.execute(
            "UPDATE user_identities SET secret_hash = $2, failures = 0, first_failure_at = NULL,"
            " locked_until = NULL WHERE kind = 'password' AND user_id = $1",
            user_id,
            secret_hash,
        )

    @db_guard
    async def wallet_user(self, kind: IdentityKind, subject: str) -> User | None:
        row = await self.pool.fetchrow(
            "SELECT u.id, u.email, u.role, u.created_at FROM user_identities i"
            " JOIN users u ON u.id = i.user_id WHERE i.kind = $1 AND i.subject = $2",
            kind,
            subject,
        )
        return None if row is None else _user(row)

    @db_guard
    async def link_wallet(
        self, user_id: str, kind: IdentityKind, subject: str, *, at: datetime
    ) -> bool:
        inserted = await self.pool.fetchval(
            "INSERT INTO user_identities (kind, subject, user_id, created_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (kind, subject) DO NOTHING RETURNING 1",
            kind,
            subject,
            user_id,
            at,
        )
        if inserted:
            return True
        holder = await self.pool.fetchval(
            "SELECT user_id FROM user_identities WHERE kind = $1 AND subject = $2", kind, subject
        )
        if holder != user_id:
            raise Conflict("this wallet is already linked to another user")
        return False

    @db_guard
    async def touch_identity(self, kind: IdentityKind, subject: str, at: datetime) -> None:
        await self.pool.execute(
            "UPDATE user_identities SET last_login_at = $3 WHERE kind = $1 AND subject = $2",
            kind,
            subject,
            at,
        )

    # -- refresh tokens ----------------------------------------------------------------
    _INSERT_REFRESH = (
        "INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, user_id, issued_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6)"
    )

    @db_guard
    async def add_refresh_token(self, record: RefreshTokenRecord) -> None:
        await self.pool.execute(
            self._INSERT_REFRESH,
            record.token_hash,
            record.family_id,
            record.parent_hash,
            record.user_id,
            record.issued_at,
            record.expires_at,
        )

    @db_guard
    async def refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM refresh_tokens WHERE token_hash = $1", token_hash
        )
        return None if row is None else _refresh(row)

    @db_guard
    async def rotate_refresh_token(self, used: RefreshTokenRecord, new: RefreshTokenRecord) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            won = await conn.fetchval(
                "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1"
                " AND used_at IS NULL AND revoked_at IS NULL RETURNING 1",
                used.token_hash,
                used.used_at,
            )
            if not won:
                return False
            await conn.execute(
                self._INSERT_REFRESH,
                new.token_hash,
                new.family_id,
                new.parent_hash,
                new.user_id,
                new.issued_at,
                new.expires_at,
            )
            return True

    @db_guard
    async def revoke_refresh_family(self, family_id: str, at: datetime) -> int:
        result = await self.pool.execute(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
            family_id,
            at,
        )
        return int(result.split()[-1])

    @db_guard
    async def revoke_user_refresh_tokens(self, user_id: str, at: datetime) -> int:
        result = await self.pool.execute(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
            at,
        )
        return int(result.split()[-1])

    # -- API keys ----------------------------------------------------------------------
    @db_guard
    async def add_api_key(self, user_id: str, name: str, record: ApiKeyRecord) -> ApiKeyRow:
        row = await self.pool.fetchrow(
            f"INSERT INTO api_keys (prefix, key_hash, user_id, name, scopes)"
            f" VALUES ($1, $2, $3, $4, $5::text[]) RETURNING {_KEY}",
            record.prefix,
            record.key_hash,
            user_id,
            name,
            sorted(s.value for s in record.scopes),
        )
        return _key(row)

    @db_guard
    async def api_key(self, prefix: str) -> tuple[ApiKeyRow, User] | None:
        row = await self.pool.fetchrow(
            "SELECT k.prefix, k.key_hash, k.user_id, k.name, k.scopes, k.created_at,"
            " k.revoked_at, u.id, u.email, u.role, u.created_at AS user_created_at"
            " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.prefix = $1",
            prefix,
        )
        if row is None:
            return None
        user = User(row["id"], row["email"], Role(row["role"]), row["user_created_at"])
        return _key(row), user

    @db_guard
    async def list_api_keys(self, user_id: str) -> list[ApiKeyRow]:
        rows = await self.pool.fetch(
            f"SELECT {_KEY} FROM api_keys WHERE user_id = $1 ORDER BY created_at, prefix",
            user_id,
        )
        return [_key(r) for r in rows]

    @db_guard
    async def revoke_api_key(self, user_id: str, prefix: str, at: datetime) -> ApiKeyRow | None:
        row = await self.pool.fetchrow(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3)"
            f" WHERE prefix = $1 AND user_id = $2 RETURNING {_KEY}",
            prefix,
            user_id,
            at,
        )
        return None if row is None else _key(row)

    # -- webhooks ----------------------------------------------------------------------
    @db_guard
    async def add_webhook(
        self, user_id: str, webhook_id: str, name: str, sealed_secret: bytes
    ) -> WebhookRow:
        row = await self.pool.fetchrow(
            f"INSERT INTO webhooks (id, user_id, name, secret) VALUES ($1, $2, $3, $4)"
            f" RETURNING {_HOOK}",
            webhook_id,
            user_id,
            name,
            sealed_secret,
        )
        return _hook(row)

    @db_guard
    async def webhook(self, webhook_id: str) -> WebhookRow | None:
        row = await self.pool.fetchrow(f"SELECT {_HOOK} FROM webhooks WHERE id = $1", webhook_id)
        return None if row is None else _hook(row)

    @db_guard
    async def list_webhooks(self, user_id: str) -> list[WebhookRow]:
        rows = await self.pool.fetch(
            f"SELECT {_HOOK} FROM webhooks WHERE user_id = $1 ORDER BY created_at, id", user_id
        )
        return [_hook(r) for r in rows]

    @db_guard
    async def revoke_webhook(
        self, user_id: str, webhook_id: str, at: datetime
    ) -> WebhookRow | None:
        row = await self.pool.fetchrow(
            f"UPDATE webhooks SET revoked_at = coalesce(revoked_at, $3)"
            f" WHERE id = $1 AND user_id = $2 RETURNING {_HOOK}",
            webhook_id,
            user_id,
            at,
        )
        return None if row is None else _hook(row)

    # -- audit -------------------------------------------------------------------------
    @db_guard
    async def audit(
        self,
        event: AuditEvent,
        *,
        user_id: str | None = None,
        actor_id: str | None = None,
        ip: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await write_audit(
            self.pool, event, user_id=user_id, actor_id=actor_id, ip=ip, detail=detail
        )

    @db_guard
    async def audit_log(
        self, *, limit: int, offset: int, event: str | None, user_id: str | None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, at, event, user_id, actor_id, ip, detail FROM audit_log"
            " WHERE ($1::text IS NULL OR event = $1) AND ($2::text IS NULL OR user_id = $2)"
            " ORDER BY at DESC, id DESC LIMIT $3 OFFSET $4",
            event,
            user_id,
            limit,
            offset,
        )
        return [
            {
                "id": r["id"],
                "at": r["at"].isoformat(),
                "event": r["event"],
                "user_id": r["user_id"],
                "actor_id": r["actor_id"],
                "ip": r["ip"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]
