"""Sign-in and sessions: ``/api/v1/auth/...`` (register, login, nonce, refresh, logout, me).

Scripts depend on these paths. A login answers ``{access_token, refresh_token,
expires_in, token_type}``; send ``Authorization: Bearer <access_token>`` with every
other request, and trade the refresh token for a new pair before the access token
expires (each refresh token works once: a second use signs out its whole family).
"""

from __future__ import annotations

from aiohttp import web

from valux.api.auth_service import AUTH
from valux.api.errors import BadRequest, ConflictError
from valux.api.http import caller, ip, json_response, read_body, read_optional_body
from valux.api.models import (
    LoginIn,
    LogoutIn,
    NonceOut,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    TokensOut,
    UserOut,
    WalletIn,
)
from valux.api.routes import OBJECT, Access, Reply, Route
from valux.errors import Conflict, FieldError

TOKENS = Reply("The access and refresh tokens (the refresh token is shown once).", model=TokensOut)


async def register(request: web.Request) -> web.Response:
    body = await read_body(request, RegisterIn)
    try:
        session = await request.app[AUTH].register(body.email, body.password, ip=ip(request))
    except Conflict as exc:
        raise ConflictError(
            exc.message, errors=[FieldError("email", "already registered")]
        ) from None
    return json_response(session, status=201)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginIn)
    auth = request.app[AUTH]
    password_login = body.email is not None or body.password is not None
    wallet_login = body.message is not None or body.signature is not None
    if password_login and wallet_login:
        raise BadRequest(
            "send {email, password} or {message, signature}, not both",
            errors=[FieldError("message", "not with email/password")],
        )
    if password_login:
        missing = [f for f in ("email", "password") if getattr(body, f) is None]
        if missing:
            raise BadRequest(
                "a password login needs email and password",
                errors=[FieldError(f, "required") for f in missing],
            )
        assert body.email is not None and body.password is not None
        session = await auth.login_password(body.email, body.password, ip=ip(request))
        return json_response(session)
    missing = [f for f in ("message", "signature") if getattr(body, f) is None]
    if missing:
        raise BadRequest(
            "send {email, password} or a signed sign-in {message, signature}",
            errors=[FieldError(f, "required") for f in missing],
        )
    assert body.message is not None and body.signature is not None
    session = await auth.login_wallet(
        body.message, body.signature, request_host=request.host, ip=ip(request)
    )
    return json_response(session)


async def nonce(request: web.Request) -> web.Response:
    return json_response(await request.app[AUTH].nonce())


async def refresh(request: web.Request) -> web.Response:
    body = await read_body(request, RefreshIn)
    return json_response(await request.app[AUTH].refresh(body.refresh_token, ip=ip(request)))


async def logout(request: web.Request) -> web.Response:
    body = await read_optional_body(request, LogoutIn)
    result = await request.app[AUTH].logout(
        caller(request), body.refresh_token, body.everywhere, ip=ip(request)
    )
    return json_response(result)


async def me(request: web.Request) -> web.Response:
    return json_response(await request.app[AUTH].me(caller(request)))


async def change_password(request: web.Request) -> web.Response:
    body = await read_body(request, PasswordChangeIn)
    result = await request.app[AUTH].change_password(
        caller(request), body.current_password, body.new_password, ip=ip(request)
    )
    return json_response(result)


async def link_wallet(request: web.Request) -> web.Response:
    body = await read_body(request, WalletIn)
    result = await request.app[AUTH].link_wallet(
        caller(request), body.message, body.signature, request_host=request.host, ip=ip(request)
    )
    return json_response(result)


_A = "/api/v1/auth"
_LOGIN_DESCRIPTION = """\
Password: `{"email", "password"}`. Five wrong passwords within 15 minutes lock the
account for 15 minutes (401 `ACCOUNT_LOCKED` with `Retry-After`).

Wallet: `{"message", "signature"}` — an EIP-4361 (Sign-In with Ethereum) message
signed with `personal_sign` (signature as 0x-hex), or a Sign-In with Solana message
signed with ed25519 (signature as base58). The message must carry a nonce from
`GET /api/v1/auth/nonce` (single use), this site's domain, an allowed chain, and
an Issued At within the last 10 minutes. A first wallet login creates its user.
"""
ROUTES = [
    Route("POST", _A + "/register", register, "register", "Create an account", "auth",
          {201: Reply("The new account, signed in (`user` and the tokens).", model=TokensOut)},
          body=RegisterIn, errors=(403, 409), access=Access.PUBLIC, rate_limit="auth",
          description="Off when `auth.open_registration` is false (403 "
                      "`REGISTRATION_CLOSED`). The password needs at least 10 characters."),
    Route("POST", _A + "/login", login, "login",
          "Log in with a password or a wallet signature (SIWE / SIWS)", "auth",
          {200: TOKENS}, body=LoginIn, errors=(401, 403), access=Access.PUBLIC,
          rate_limit="auth", description=_LOGIN_DESCRIPTION),
    Route("GET", _A + "/nonce", nonce, "nonce", "A single-use nonce for a wallet sign-in",
          "auth", {200: Reply("Valid for `expires_in` seconds, for one login.", model=NonceOut)},
          access=Access.PUBLIC, rate_limit="auth"),
    Route("POST", _A + "/refresh", refresh, "refresh",
          "Trade a refresh token for a new access and refresh token", "auth", {200: TOKENS},
          body=RefreshIn, errors=(401,), access=Access.PUBLIC, rate_limit="auth",
          description="Each refresh token works once. Presenting one a second time revokes "
                      "its whole family (every session descended from the same login): "
                      "401 `REFRESH_TOKEN_REUSED`."),
    Route("POST", _A + "/logout", logout, "logout", "Log out", "auth",
          {200: Reply("What was revoked.", schema=OBJECT)}, body=LogoutIn, body_optional=True,
          access=Access.SESSION,
          description="Revokes the access token used at once; `refresh_token` ends that "
                      "session, `everywhere: true` every session of the user."),
    Route("GET", _A + "/me", me, "me", "The signed-in user and their identities", "auth",
          {200: Reply("The user (never a secret or a hash).", model=UserOut)}),
    Route("POST", _A + "/password", change_password, "changePassword",
          "Change the password (signs out every session)", "auth",
          {200: Reply("Changed.", schema=OBJECT)}, body=PasswordChangeIn, errors=(401,),
          access=Access.SESSION),
    Route("POST", _A + "/wallets", link_wallet, "linkWallet",
          "Link another wallet (a signed SIWE / SIWS message) to this user", "auth",
          {200: Reply("The user with its identities.", model=UserOut)}, body=WalletIn,
          errors=(401, 409), access=Access.SESSION),
]  # fmt: skip
