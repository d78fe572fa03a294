""":class:`AuthService`: the API's authentication logic over a :class:`~valux.api.users.UserStore`.

It joins the pure building blocks of :mod:`valux.auth` to storage and Redis:
password and wallet logins, registration, refresh-token rotation, logout,
API keys, webhooks, and the audit rows each of them writes. Handlers call it;
it never sees an HTTP object except to read credentials in
:meth:`AuthService.authenticate`.

Secrets never reach a log or an audit row: passwords, tokens, keys and webhook
secrets are only hashed, compared, or returned to their owner once. Audit rows
are best effort (a failed write is logged as ``alert_audit_write_failed``; the
request it records still succeeds or fails on its own merits).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import hdrs, web

from valux.api.security import AuthConfig, Principal, RedisGate, session_scopes
from valux.api.users import SYSTEM_OWNER, IdentityKind, User, UserStore
from valux.auth import siwe, siws, webhooks
from valux.auth.api_keys import (
    Scope,
    generate_api_key,
    hash_api_key,
    parse_api_key,
    verify_api_key,
)
from valux.auth.audit import AuditEvent
from valux.auth.errors import (
    AdminRequired,
    ApiKeyInvalid,
    InvalidCredentials,
    RedisUnavailable,
    RefreshTokenInvalid,
    RegistrationClosed,
    SignInError,
    TokenInvalid,
    WebhookError,
)
from valux.auth.passwords import LockoutPolicy, PasswordHasher, check_password_strength
from valux.auth.signin import SignInMessage
from valux.auth.tokens import (
    FamilyRevoked,
    Role,
    hash_refresh_token,
    issue_access_token,
    issue_refresh_token,
    rotate_refresh_token,
    verify_access_token,
)
from valux.errors import Conflict, FieldError, InvalidRequest, NotFound, Unavailable

__all__ = ["AUTH", "BOOTSTRAP", "AuthService", "BootstrapAdmin", "user_view"]

log = structlog.get_logger("valux.api.auth")

KEY_CACHE_S = 5.0
"""How long a verified API key is trusted without asking the database again."""

_ETH_HEADER = "wants you to sign in with your Ethereum account:"
_SOL_HEADER = "wants you to sign in with your Solana account:"
_WS_BEARER = "bearer."


def _now() -> datetime:
    return datetime.now(UTC)


class BootstrapAdmin:
    """The admin created at this start, with its one-time password (None if none was)."""

    def __init__(self) -> None:
        self.email: str | None = None
        self.password: str | None = None
        self.user_id: str | None = None

    def take(self) -> tuple[str, str] | None:
        """``(email, password)`` once; afterwards None (the password is shown once)."""
        if self.email is None or self.password is None:
            return None
        creds = (self.email, self.password)
        self.password = None
        return creds


async def user_view(store: UserStore, user: User) -> dict[str, Any]:
    """The user as ``GET /api/v1/auth/me`` shows it (no secret, no hash)."""
    identities = await store.identities(user.id)
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role.value,
        "created_at": user.created_at.isoformat(),
        "identities": [i.public() for i in identities],
    }


class AuthService:
    """Authentication and credentials for one API process (see the module docstring)."""

    def __init__(self, config: AuthConfig, store: UserStore, redis: RedisGate) -> None:
        self.config = config
        self.store = store
        self.redis = redis
        self.hasher = PasswordHasher(config.password_params)
        self.lockout: LockoutPolicy = config.lockout
        self._hashing = asyncio.Semaphore(2)  # argon2id takes 64 MiB and ~100 ms each
        self._keys: dict[str, tuple[float, Principal]] = {}
        """Verified API keys by their hash, for :data:`KEY_CACHE_S`: a key revoked through
        another API process keeps working here for at most that long."""

    # -- helpers ---------------------------------------------------------------------

    async def _argon(self, fn: Any, *args: Any) -> Any:
        async with self._hashing:
            return await asyncio.to_thread(fn, *args)

    async def audit(
        self,
        event: AuditEvent,
        *,
        user_id: str | None = None,
        actor_id: str | None = None,
        ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Write an audit row; a failure is logged, never raised."""
        try:
            await self.store.audit(
                event, user_id=user_id, actor_id=actor_id, ip=ip, detail=dict(detail or {})
            )
        except Exception as exc:
            log.error("alert_audit_write_failed", audit_event=event.value, error=repr(exc))

    async def _session(self, user: User) -> dict[str, Any]:
        access = issue_access_token(
            self.config.signing_key,
            subject=user.id,
            role=user.role,
            lifetime=self.config.access_ttl,
        )
        refresh = issue_refresh_token(user.id, lifetime=self.config.refresh_ttl)
        await self.store.add_refresh_token(refresh.record)
        return {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": access.expires_in_s,
            "refresh_token": refresh.token,
            "refresh_expires_in": int(self.config.refresh_ttl.total_seconds()),
            "user_id": user.id,
            "role": user.role.value,
        }

    async def limit_auth(self, ip: str) -> None:
        """The auth routes' per-address limit (fail closed: sign-in needs Redis)."""
        c = self.config
        try:
            await self.redis.limit(f"ip:{ip}:auth", c.auth_per_ip, c.rate_window_s, fail_open=False)
        except RedisUnavailable as exc:
            raise RedisUnavailable(
                f"{exc.message}; sign-in needs Redis (trading routes keep working)"
            ) from None

    async def limit_signals(self, ip: str, user_id: str | None) -> None:
        """The signal routes' per-address and per-user limits (fail open: trading never
        waits on Redis)."""
        c = self.config
        await self.redis.limit(
            f"ip:{ip}:signals", c.signals_per_ip, c.rate_window_s, fail_open=True
        )
        if user_id is not None:
            await self.redis.limit(
                f"user:{user_id}:signals", c.signals_per_user, c.rate_window_s, fail_open=True
            )

    async def limit_account(self, account: str) -> None:
        """The per-account login limit (fail closed: login needs Redis)."""
        try:
            await self.redis.limit(
                f"login:{account.lower()}",
                self.config.auth_per_account,
                self.config.rate_window_s,
                fail_open=False,
            )
        except RedisUnavailable as exc:
            raise RedisUnavailable(
                f"{exc.message}; sign-in needs Redis (trading routes keep working)"
            ) from None

    # -- who is calling ----------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Principal | None:
        """The caller from ``Authorization`` / ``X-API-Key`` (or the WebSocket subprotocol
        ``bearer.<token>``); None if the request carries no credential. Raises
        ``TokenExpired``/``TokenInvalid``/``ApiKeyInvalid`` for a bad one."""
        header = request.headers.get(hdrs.AUTHORIZATION, "").strip() or None
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            value = value.strip()
            if scheme.lower() != "bearer" or not value:
                raise TokenInvalid("send Authorization: Bearer <access token or API key>")
            if value.startswith("vx_"):
                return await self.api_key_principal(value)
            return await self.token_principal(value)
        key = request.headers.get("X-API-Key", "").strip()
        if key:
            return await self.api_key_principal(key)
        offered = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL)
        if offered is not None:
            for proto in offered.split(","):
                proto = proto.strip()
                if proto.lower().startswith(_WS_BEARER):
                    return await self.token_principal(proto[len(_WS_BEARER) :])
        return None

    async def token_principal(self, token: str) -> Principal:
        claims = verify_access_token(self.config.signing_key, token)
        if await self.redis.access_revoked(claims.jti):
            raise TokenInvalid("this access token was revoked (logged out); log in again")
        return Principal(
            claims.sub, claims.role, "token", session_scopes(claims.role), claims.jti, claims.exp
        )

    async def api_key_principal(self, key: str) -> Principal:
        prefix = parse_api_key(key)
        digest = hash_api_key(key)
        cached = self._keys.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found = await self.store.api_key(prefix)
        if found is None or found[0].revoked_at is not None:
            raise ApiKeyInvalid("unknown or revoked API key")
        row, user = found
        verify_api_key(key, row.record)
        scopes = row.scopes if user.is_admin else row.scopes - {Scope.ADMIN}
        principal = Principal(user.id, user.role, "api_key", frozenset(scopes), row.prefix)
        if len(self._keys) >= 10_000:
            self._keys.clear()
        self._keys[digest] = (time.monotonic() + KEY_CACHE_S, principal)
        return principal

    # -- passwords ---------------------------------------------------------------------

    async def register(self, email: str, password: str, *, ip: str) -> dict[str, Any]:
        if not self.config.open_registration:
            raise RegistrationClosed(
                "open registration is switched off (auth.open_registration); an admin "
                "creates accounts with `valux user create`"
            )
        check_password_strength(password, user_inputs=[email])
        secret_hash = await self._argon(self.hasher.hash, password)
        user = await self.store.create_user(email=email, role=Role.USER, secret_hash=secret_hash)
        await self.audit(
            AuditEvent.USER_CREATED,
            user_id=user.id,
            actor_id=user.id,
            ip=ip,
            detail={"method": "register", "email": email},
        )
        return {**(await self._session(user)), "user": await user_view(self.store, user)}

    async def login_password(self, email: str, password: str, *, ip: str) -> dict[str, Any]:
        await self.limit_account(email)
        now = _now()
        found = await self.store.password_login(email)
        if found is None:
            await self._argon(self.hasher.burn, password)  # as slow as a wrong password
            await self.audit(
                AuditEvent.LOGIN_FAILED,
                ip=ip,
                detail={"method": "password", "email": email, "reason": "unknown_email"},
            )
            raise InvalidCredentials("wrong e-mail or password")
        user = found.user
        check = self.lockout.check(found.throttle, now)
        if not check.allowed:
            await self.audit(
                AuditEvent.LOGIN_FAILED,
                user_id=user.id,
                ip=ip,
                detail={"method": "password", "reason": "locked"},
            )
            raise check.error()
        result = await self._argon(self.hasher.check, found.secret_hash, password)
        if not result.ok:
            update = self.lockout.record_failure(found.throttle, now)
            await self.store.save_login_attempt(email, update.state)
            await self.audit(
                AuditEvent.LOGIN_FAILED,
                user_id=user.id,
                ip=ip,
                detail={"method": "password", "reason": "wrong_password",
                        "failures": update.state.failures},
            )  # fmt: skip
            if update.locked_now:
                locked = self.lockout.check(update.state, now)
                await self.audit(
                    AuditEvent.LOCKOUT,
                    user_id=user.id,
                    ip=ip,
                    detail={"locked_until": str(update.state.locked_until)},
                )
                raise locked.error()
            raise InvalidCredentials("wrong e-mail or password")
        update = self.lockout.record_success(found.throttle, now)
        await self.store.save_login_attempt(
            email, update.state, login_at=now, new_hash=result.new_hash
        )
        await self.audit(
            AuditEvent.LOGIN_OK,
            user_id=user.id,
            actor_id=user.id,
            ip=ip,
            detail={"method": "password"},
        )
        return await self._session(user)

    async def change_password(
        self, principal: Principal, current: str, new: str, *, ip: str
    ) -> dict[str, Any]:
        user = await self.store.get_user(principal.user_id)
        found = (
            None
            if user is None or user.email is None
            else await self.store.password_login(user.email)
        )
        if user is None or user.email is None or found is None:
            raise InvalidRequest(
                "this account has no password (it signs in with a wallet)",
                [FieldError("current_password", "this account has no password")],
            )
        if not await self._argon(self.hasher.verify, found.secret_hash, current):
            await self.audit(
                AuditEvent.LOGIN_FAILED,
                user_id=user.id,
                actor_id=user.id,
                ip=ip,
                detail={"method": "password_change", "reason": "wrong_password"},
            )
            raise InvalidCredentials("the current password is wrong")
        check_password_strength(new, user_inputs=[user.email])
        await self.store.set_password(user.id, await self._argon(self.hasher.hash, new))
        revoked = await self.store.revoke_user_refresh_tokens(user.id, _now())
        await self._revoke_access(principal)
        await self.audit(
            AuditEvent.PASSWORD_CHANGED,
            user_id=user.id,
            actor_id=user.id,
            ip=ip,
            detail={"sessions_revoked": revoked},
        )
        return {"changed": True, "sessions_revoked": revoked}

    # -- wallets -----------------------------------------------------------------------

    async def nonce(self) -> dict[str, Any]:
        return {"nonce": await self.redis.issue_nonce(), "expires_in": self.config.nonce_ttl_s}

    def signin_domains(self, request_host: str | None) -> tuple[str, ...]:
        if self.config.signin_domains:
            return self.config.signin_domains
        hosts = [request_host.lower()] if request_host else []
        for origin in self.config.cors_origins:
            hosts.append(origin.split("://", 1)[-1])
        return tuple(dict.fromkeys(hosts))

    async def _verify_wallet(
        self, message: str, signature: str, *, request_host: str | None, ip: str
    ) -> tuple[IdentityKind, SignInMessage]:
        first = message.split("\n", 1)[0]
        kind: IdentityKind
        if first.endswith(_ETH_HEADER):
            kind, parsed = "siwe", siwe.parse_message(message)
        elif first.endswith(_SOL_HEADER):
            kind, parsed = "siws", siws.parse_message(message)
        else:
            raise InvalidRequest(
                "message is not a Sign-In with Ethereum or Sign-In with Solana message",
                [FieldError("message", "expected '<domain> wants you to sign in with your "
                                       "Ethereum account:' (or Solana)")],
            )  # fmt: skip
        await self.limit_account(f"{kind}:{parsed.address}")
        if parsed.nonce is not None:
            await self.redis.consume_nonce(parsed.nonce)  # single use, before anything else
        domains = self.signin_domains(request_host)
        domain = parsed.domain if parsed.domain.lower() in domains else (domains or ("",))[0]
        now = _now()
        try:
            if kind == "siwe":
                allowed = self.config.siwe_chain_ids
                chain = int(parsed.chain_id) if parsed.chain_id else allowed[0]
                verified = siwe.verify(
                    message, signature, domain=domain, nonce=parsed.nonce or "", now=now,
                    chain_id=chain if chain in allowed else allowed[0],
                )  # fmt: skip
            else:
                clusters = self.config.siws_chains
                cluster = (parsed.chain_id or clusters[0]).removeprefix("solana:")
                verified = siws.verify(
                    message, signature, domain=domain, nonce=parsed.nonce or "", now=now,
                    chain_id=cluster if cluster in clusters else clusters[0],
                )  # fmt: skip
        except SignInError as exc:
            await self.audit(
                AuditEvent.LOGIN_FAILED,
                ip=ip,
                detail={"method": kind, "address": parsed.address, "reason": exc.code},
            )
            raise
        return kind, verified

    async def login_wallet(
        self, message: str, signature: str, *, request_host: str | None, ip: str
    ) -> dict[str, Any]:
        kind, verified = await self._verify_wallet(
            message, signature, request_host=request_host, ip=ip
        )
        user = await self.store.wallet_user(kind, verified.address)
        if user is None:
            if not self.config.wallet_signup:
                raise RegistrationClosed(
                    "this wallet is not linked to an account and sign-up by wallet is "
                    "switched off (auth.wallet_signup)"
                )
            try:
                user = await self.store.create_user(
                    email=None, role=Role.USER, wallet=(kind, verified.address)
                )
                await self.audit(
                    AuditEvent.USER_CREATED,
                    user_id=user.id,
                    actor_id=user.id,
                    ip=ip,
                    detail={"method": kind, "address": verified.address},
                )
            except Conflict:  # a concurrent first login created it
                user = await self.store.wallet_user(kind, verified.address)
                if user is None:
                    raise
        await self.store.touch_identity(kind, verified.address, _now())
        await self.audit(
            AuditEvent.LOGIN_OK,
            user_id=user.id,
            actor_id=user.id,
            ip=ip,
            detail={"method": kind, "address": verified.address},
        )
        return await self._session(user)

    async def link_wallet(
        self,
        principal: Principal,
        message: str,
        signature: str,
        *,
        request_host: str | None,
        ip: str,
    ) -> dict[str, Any]:
        kind, verified = await self._verify_wallet(
            message, signature, request_host=request_host, ip=ip
        )
        added = await self.store.link_wallet(principal.user_id, kind, verified.address, at=_now())
        if added:
            await self.audit(
                AuditEvent.WALLET_LINKED,
                user_id=principal.user_id,
                actor_id=principal.user_id,
                ip=ip,
                detail={"method": kind, "address": verified.address},
            )
        return await self.me(principal)

    # -- sessions ----------------------------------------------------------------------

    async def refresh(self, token: str, *, ip: str) -> dict[str, Any]:
        record = await self.store.refresh_token(hash_refresh_token(token))
        outcome = rotate_refresh_token(token, record, lifetime=self.config.refresh_ttl)
        if not isinstance(outcome, FamilyRevoked):
            if await self.store.rotate_refresh_token(outcome.used, outcome.new.record):
                user = await self.store.get_user(outcome.user_id)
                if user is None:
                    raise RefreshTokenInvalid("the account of this refresh token is gone")
                access = issue_access_token(
                    self.config.signing_key,
                    subject=user.id,
                    role=user.role,
                    lifetime=self.config.access_ttl,
                )
                return {
                    "access_token": access.token,
                    "token_type": "Bearer",
                    "expires_in": access.expires_in_s,
                    "refresh_token": outcome.new.token,
                    "refresh_expires_in": int(self.config.refresh_ttl.total_seconds()),
                    "user_id": user.id,
                    "role": user.role.value,
                }
            # another refresh with the same token won the race: that is a reuse too
            outcome = FamilyRevoked(
                outcome.used.family_id, outcome.used.user_id, outcome.used.token_hash
            )
        revoked = await self.store.revoke_refresh_family(outcome.family_id, _now())
        await self.audit(
            AuditEvent.REFRESH_REUSE,
            user_id=outcome.user_id,
            ip=ip,
            detail={"family": outcome.family_id, "sessions_revoked": revoked},
        )
        raise outcome.error()

    async def _revoke_access(self, principal: Principal) -> None:
        if principal.via == "token" and principal.credential_id and principal.expires_at:
            ttl = int((principal.expires_at - _now()).total_seconds()) + 1
            await self.redis.revoke_access(principal.credential_id, ttl)

    async def logout(
        self, principal: Principal, refresh_token: str | None, everywhere: bool, *, ip: str
    ) -> dict[str, Any]:
        now = _now()
        revoked = 0
        if refresh_token is not None:
            record = await self.store.refresh_token(hash_refresh_token(refresh_token))
            if record is not None and record.user_id == principal.user_id:
                revoked += await self.store.revoke_refresh_family(record.family_id, now)
        if everywhere:
            revoked += await self.store.revoke_user_refresh_tokens(principal.user_id, now)
        await self._revoke_access(principal)
        await self.audit(
            AuditEvent.LOGOUT,
            user_id=principal.user_id,
            actor_id=principal.user_id,
            ip=ip,
            detail={"everywhere": everywhere, "sessions_revoked": revoked},
        )
        return {"logged_out": True, "refresh_tokens_revoked": revoked}

    async def me(self, principal: Principal) -> dict[str, Any]:
        user = await self.store.get_user(principal.user_id)
        if user is None:
            raise TokenInvalid("the account of this credential is gone")
        return await user_view(self.store, user)

    # -- admin bootstrap -----------------------------------------------------------------

    async def bootstrap_admin(self, holder: BootstrapAdmin) -> None:
        """At start-up: if no admin can log in, give the first admin a password (shown once
        by ``valux``) and the e-mail ``auth.admin_email``."""
        from secrets import token_urlsafe

        password = token_urlsafe(18)
        secret_hash = await self._argon(self.hasher.hash, password)
        user = await self.store.bootstrap_admin(self.config.admin_email, secret_hash)
        if user is None:
            return
        holder.email, holder.password, holder.user_id = user.email, password, user.id
        await self.audit(
            AuditEvent.USER_CREATED,
            user_id=user.id,
            detail={"method": "bootstrap", "email": user.email, "role": "admin",
                    "first_admin": user.id == SYSTEM_OWNER},
        )  # fmt: skip
        log.info("admin_bootstrapped", user_id=user.id, email=user.email)

    # -- API keys ----------------------------------------------------------------------

    async def create_api_key(
        self, principal: Principal, name: str, scopes: list[str], *, ip: str
    ) -> dict[str, Any]:
        granted = {Scope(s) for s in scopes}
        if Scope.ADMIN in granted and principal.role is not Role.ADMIN:
            raise AdminRequired("only an admin may create a key with the admin scope")
        new = generate_api_key(granted)
        row = await self.store.add_api_key(principal.user_id, name, new.record)
        await self.audit(
            AuditEvent.API_KEY_CREATED,
            user_id=principal.user_id,
            actor_id=principal.user_id,
            ip=ip,
            detail={"key_prefix": row.prefix, "name": name, "scopes": sorted(granted)},
        )
        return {**row.public(), "key": new.key}

    async def list_api_keys(self, principal: Principal) -> list[dict[str, Any]]:
        return [k.public() for k in await self.store.list_api_keys(principal.user_id)]

    async def revoke_api_key(self, principal: Principal, prefix: str, *, ip: str) -> dict[str, Any]:
        row = await self.store.revoke_api_key(principal.user_id, prefix, _now())
        if row is None:
            raise NotFound(f"API key {prefix} not found")
        self._keys = {d: c for d, c in self._keys.items() if c[1].credential_id != prefix}
        await self.audit(
            AuditEvent.API_KEY_REVOKED,
            user_id=principal.user_id,
            actor_id=principal.user_id,
            ip=ip,
            detail={"key_prefix": prefix},
        )
        return row.public()

    # -- webhooks ----------------------------------------------------------------------

    async def create_webhook(self, principal: Principal, name: str, *, ip: str) -> dict[str, Any]:
        webhook_id = "wh_" + uuid.uuid4().hex[:24]
        secret = webhooks.generate_secret()
        sealed = webhooks.seal_secret(self.config.signing_key, secret, bound_to=webhook_id)
        row = await self.store.add_webhook(principal.user_id, webhook_id, name, sealed)
        await self.audit(
            AuditEvent.WEBHOOK_CREATED,
            user_id=principal.user_id,
            actor_id=principal.user_id,
            ip=ip,
            detail={"webhook": webhook_id, "name": name},
        )
        return {**row.public(), "secret": secret}

    async def list_webhooks(self, principal: Principal) -> list[dict[str, Any]]:
        return [w.public() for w in await self.store.list_webhooks(principal.user_id)]

    async def revoke_webhook(
        self, principal: Principal, webhook_id: str, *, ip: str
    ) -> dict[str, Any]:
        row = await self.store.revoke_webhook(principal.user_id, webhook_id, _now())
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        await self.audit(
            AuditEvent.WEBHOOK_REVOKED,
            user_id=principal.user_id,
            actor_id=principal.user_id,
            ip=ip,
            detail={"webhook": webhook_id},
        )
        return row.public()

    async def webhook_principal(
        self, webhook_id: str, header: str | None, body: bytes, *, ip: str
    ) -> Principal:
        """The webhook's owner, if ``header`` signs ``body`` with its secret in the window."""
        row = await self.store.webhook(webhook_id)
        if row is None or row.revoked_at is not None:
            raise NotFound(f"webhook {webhook_id} not found")
        try:
            secret = webhooks.open_secret(
                self.config.signing_key, row.sealed_secret, bound_to=row.id
            )
        except ValueError as exc:
            raise Unavailable(f"webhook {webhook_id}: {exc}; create a new webhook") from None
        try:
            webhooks.verify(secret, header, body, _now(), self.config.webhook_window_s)
        except WebhookError as exc:
            await self.audit(
                AuditEvent.WEBHOOK_REJECTED,
                user_id=row.user_id,
                ip=ip,
                detail={"webhook": webhook_id, "reason": exc.code},
            )
            raise
        user = await self.store.get_user(row.user_id)
        if user is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return Principal(
            user.id, user.role, "webhook", frozenset({Scope.READ, Scope.TRADE}), row.id
        )


AUTH = web.AppKey("auth", AuthService)
"""The app's authentication service."""

BOOTSTRAP = web.AppKey("bootstrap_admin", BootstrapAdmin)
"""The admin this start created, with its one-time password (``valux`` prints it once)."""
