"""The audit log: its event names and the one function that writes a row.

The audit log (table ``audit_log``, migration ``0008_users.sql``) stores one row
per security-relevant event: when, which event (one of :class:`AuditEvent`),
whose account or resource it concerns (``user_id``), who did it (``actor_id``;
None for the system or an unknown caller), from which address, and details that
never include a secret. The event values are stable strings: they are stored
and queried, so renaming one is a migration.

:func:`write_audit` is for every writer (the API, and the wallet host for
unlocks and key exports): it takes any object with asyncpg's
``execute(query, *args)`` — a pool, a connection, or the connection of a
transaction the caller already holds, so the row commits with what it records.
It refuses ``detail`` keys that name a secret (``password``, ``secret``,
``token``, ``private_key``, ``mnemonic``, ``signature``, ...): a caller that
tries to log one fails loudly in its tests instead of leaking it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

__all__ = ["AUDIT_INSERT", "AuditEvent", "Executor", "check_detail", "write_audit"]

AUDIT_INSERT = (
    "INSERT INTO audit_log (event, user_id, actor_id, ip, detail)"
    " VALUES ($1, $2, $3, $4, $5::jsonb)"
)

_SECRET_KEY = re.compile(
    r"password|passphrase|secret|token|private|mnemonic|seed|signature|^key$|api_key$",
    re.IGNORECASE,
)


class Executor(Protocol):
    """What :func:`write_audit` needs: asyncpg's ``Pool`` and ``Connection`` both fit."""

    async def execute(self, query: str, *args: Any) -> Any: ...


class AuditEvent(StrEnum):
    """One kind of security-relevant event."""

    USER_CREATED = "user_created"
    LOGIN_OK = "login_ok"
    LOGIN_FAILED = "login_failed"
    LOCKOUT = "lockout"
    """Too many failed logins locked the account."""
    LOGOUT = "logout"
    TOKEN_REFRESHED = "token_refreshed"
    REFRESH_REUSE = "refresh_reuse"
    """A used refresh token came back; its family was revoked."""
    PASSWORD_CHANGED = "password_changed"
    ROLE_CHANGED = "role_changed"
    WALLET_LINKED = "wallet_linked"
    """A SIWE / SIWS address was linked to a user."""
    API_KEY_CREATED = "api_key_created"
    API_KEY_REVOKED = "api_key_revoked"
    WEBHOOK_REJECTED = "webhook_rejected"
    RATE_LIMITED = "rate_limited"
    KEY_EXPORT = "key_export"
    """A wallet's private key was exported."""
    WALLET_UNLOCK = "wallet_unlock"
    WALLET_LOCK = "wallet_lock"
    SPEND_POLICY_CHANGED = "spend_policy_changed"
    RISK_STATE_CHANGED = "risk_state_changed"
    """A trading state (ACTIVE / REDUCING / HALTED) was changed by hand or by a breaker."""
    KILL_SWITCH = "kill_switch"
    USER_STATE_CHANGED = "user_state_changed"
    """A user put all of their agents in one trading state."""
    WEBHOOK_CREATED = "webhook_created"
    WEBHOOK_REVOKED = "webhook_revoked"


def check_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` as a plain dict; ``ValueError`` if a key (at any depth) names a secret."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if _SECRET_KEY.search(str(key)):
                    raise ValueError(f"audit detail key {path}{key!r} names a secret")
                walk(item, f"{path}{key}.")
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, path)

    walk(detail, "")
    return dict(detail)


async def write_audit(
    db: Executor,
    event: AuditEvent | str,
    *,
    user_id: str | None = None,
    actor_id: str | None = None,
    ip: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit row (``event`` must be an :class:`AuditEvent` value)."""
    name = AuditEvent(event).value
    body = json.dumps(check_detail(detail or {}), default=str, separators=(",", ":"))
    await db.execute(AUDIT_INSERT, name, user_id, actor_id, ip, body)
