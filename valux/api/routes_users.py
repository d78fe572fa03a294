"""A user's credentials for machines, their own trading state, and the audit log.

- ``/api/v1/keys``: API keys (scoped ``read`` / ``trade`` / ``admin``, shown once,
  stored hashed, revocable) — managed with a login session only.
- ``/api/v1/webhooks``: signal webhooks with an HMAC secret each (shown once), and
  ``POST /api/v1/webhooks/{id}/signals``, the intake a TradingView alert or a
  script posts to, signed with ``X-Valux-Signature: t=<unix s>,v1=<hex>``.
- ``POST /api/v1/risk/user-state``: put every agent of the caller in one state.
- ``GET /api/v1/audit``: the audit log (admins).
"""

from __future__ import annotations

from aiohttp import web

from valux.api.auth_service import AUTH
from valux.api.http import (
    caller,
    ip,
    json_response,
    loads,
    owner,
    path_id,
    read_body,
    read_query,
    read_raw,
    validate,
)
from valux.api.keys import BACKEND
from valux.api.models import (
    ApiKeyIn,
    ApiKeyOut,
    AuditQuery,
    SignalIn,
    SignalResultOut,
    StateIn,
    UserStateOut,
    WebhookIn,
    WebhookOut,
)
from valux.api.routes import ARRAY_OF_OBJECTS, Access, Reply, Route
from valux.api.routes_trading import answer_signal
from valux.auth.audit import AuditEvent
from valux.auth.webhooks import HEADER


async def create_key(request: web.Request) -> web.Response:
    body = await read_body(request, ApiKeyIn)
    key = await request.app[AUTH].create_api_key(
        caller(request), body.name, list(body.scopes), ip=ip(request)
    )
    return json_response(key, status=201)


async def list_keys(request: web.Request) -> web.Response:
    return json_response(await request.app[AUTH].list_api_keys(caller(request)))


async def revoke_key(request: web.Request) -> web.Response:
    key = await request.app[AUTH].revoke_api_key(caller(request), path_id(request), ip=ip(request))
    return json_response(key)


async def create_webhook(request: web.Request) -> web.Response:
    body = await read_body(request, WebhookIn)
    hook = await request.app[AUTH].create_webhook(caller(request), body.name, ip=ip(request))
    return json_response(hook, status=201, headers={"Location": hook["url"]})


async def list_webhooks(request: web.Request) -> web.Response:
    return json_response(await request.app[AUTH].list_webhooks(caller(request)))


async def revoke_webhook(request: web.Request) -> web.Response:
    hook = await request.app[AUTH].revoke_webhook(caller(request), path_id(request), ip=ip(request))
    return json_response(hook)


async def webhook_signal(request: web.Request) -> web.Response:
    """Verify the HMAC over the raw body first, then parse it as a signal."""
    webhook_id = path_id(request)
    raw = await read_raw(request)
    auth = request.app[AUTH]
    principal = await auth.webhook_principal(
        webhook_id, request.headers.get(HEADER), raw, ip=ip(request)
    )
    await auth.limit_signals(ip(request), principal.user_id)
    signal = validate(SignalIn, loads(raw), what="signal")
    return await answer_signal(request, signal, principal.user_id)


async def set_user_state(request: web.Request) -> web.Response:
    body = await read_body(request, StateIn)
    who = owner(request)
    result = await request.app[BACKEND].set_user_state(
        owner=who, state=body.state, reason=body.reason
    )
    await request.app[AUTH].audit(
        AuditEvent.USER_STATE_CHANGED,
        user_id=who,
        actor_id=who,
        ip=ip(request),
        detail={"state": body.state, "reason": body.reason, "agents": len(result["agents"]),
                "failed": len(result["failed"])},
    )  # fmt: skip
    return json_response(result)


async def audit_log(request: web.Request) -> web.Response:
    q = read_query(request, AuditQuery)
    rows = await request.app[AUTH].store.audit_log(
        limit=q.limit, offset=q.offset, event=q.event, user_id=q.user
    )
    return json_response(rows)


KEY = Reply("The API key (never the key itself, except when it is created).", model=ApiKeyOut)
HOOK = Reply("The webhook (never its secret, except when it is created).", model=WebhookOut)
_WEBHOOK_DESCRIPTION = """\
For TradingView alerts and scripts: the body is a signal, exactly as for
`POST /api/v1/signals` (its `id` still makes it idempotent), and the request is
signed with the webhook's secret: `X-Valux-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256 of "<t>." + raw body>`. A signature older (or newer) than
`auth.webhook_window_s` (300 s) is refused; so is a bad one (401).
"""

ROUTES = [
    Route("POST", "/api/v1/keys", create_key, "createApiKey", "Create an API key", "keys",
          {201: Reply("The key, shown this once (`key`).", model=ApiKeyOut)}, body=ApiKeyIn,
          errors=(403,), access=Access.SESSION,
          description="Send it as `X-API-Key: vx_...` (or `Authorization: Bearer vx_...`). "
                      "Scopes: `read` (GET), `trade` (also every state change), `admin` "
                      "(also the system routes; admins only)."),
    Route("GET", "/api/v1/keys", list_keys, "listApiKeys", "List your API keys", "keys",
          {200: Reply("Your keys, revoked ones included.", schema=ARRAY_OF_OBJECTS)},
          access=Access.SESSION),
    Route("DELETE", "/api/v1/keys/{id}", revoke_key, "revokeApiKey", "Revoke an API key",
          "keys", {200: KEY}, access=Access.SESSION),
    Route("POST", "/api/v1/webhooks", create_webhook, "createWebhook",
          "Create a signal webhook", "webhooks",
          {201: Reply("The webhook with its secret, shown this once (`secret`).",
                      model=WebhookOut)}, body=WebhookIn, access=Access.SESSION),
    Route("GET", "/api/v1/webhooks", list_webhooks, "listWebhooks", "List your webhooks",
          "webhooks", {200: Reply("Your webhooks, revoked ones included.",
                                  schema=ARRAY_OF_OBJECTS)}, access=Access.SESSION),
    Route("DELETE", "/api/v1/webhooks/{id}", revoke_webhook, "revokeWebhook",
          "Revoke a webhook", "webhooks", {200: HOOK}, access=Access.SESSION),
    Route("POST", "/api/v1/webhooks/{id}/signals", webhook_signal, "webhookSignal",
          "Submit a signal through a signed webhook", "webhooks",
          {201: Reply("First time: what each agent did.", model=SignalResultOut),
           200: Reply("A repeat of a known id: the first result.", model=SignalResultOut),
           202: Reply("A buy is still in flight.", model=SignalResultOut),
           503: Reply("Some agents could not decide now; post again.",
                      model=SignalResultOut)},
          body=SignalIn, errors=(401,), access=Access.WEBHOOK, rate_limit="signals",
          description=_WEBHOOK_DESCRIPTION),
    Route("POST", "/api/v1/risk/user-state", set_user_state, "setUserState",
          "Put every one of your agents in one trading state", "risk",
          {200: Reply("The agents set, and any not reached.", model=UserStateOut)},
          body=StateIn,
          description="Sets each of your agents' own state (as `POST /api/v1/agents/{id}/"
                      "state` would), in parallel. Agents created later start ACTIVE; the "
                      "global state (admins) still applies on top."),
    Route("GET", "/api/v1/audit", audit_log, "auditLog", "The audit log", "admin",
          {200: Reply("Audit rows, newest first.", schema=ARRAY_OF_OBJECTS)},
          query=AuditQuery, access=Access.ADMIN,
          description="Logins, failures, lockouts, refresh-token reuse, users created, "
                      "API keys and webhooks created or revoked, trading-state changes. "
                      "Never a secret."),
]  # fmt: skip
