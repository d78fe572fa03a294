"""Agents and their wallets: ``/api/v1/agents...``."""

from __future__ import annotations

from aiohttp import web

from valux.api.auth_service import AUTH
from valux.api.errors import ConflictError
from valux.api.http import ip, json_response, owner, path_id, read_body
from valux.api.keys import BACKEND
from valux.api.models import AgentCreate, AgentPatch, DepositIn, StateIn
from valux.api.routes import ARRAY_OF_OBJECTS, OBJECT, Reply, Route
from valux.auth.audit import AuditEvent
from valux.errors import Conflict, FieldError

AGENT = Reply("The agent.", schema=OBJECT)
WALLET = Reply("The agent's wallet (balances per asset; never key material).", schema=OBJECT)


async def create_agent(request: web.Request) -> web.Response:
    body = await read_body(request, AgentCreate)
    try:
        agent = await request.app[BACKEND].create_agent(
            name=body.name,
            config=body.config,
            balance=body.balance,
            agent_id=body.id,
            owner=owner(request),
            venue=body.venue,
            wallet_id=body.wallet_id,
        )
    except Conflict as exc:
        raise ConflictError(exc.message, errors=[FieldError("id", "already taken")]) from None
    agent_id = agent.get("id")
    headers = {"Location": f"/api/v1/agents/{agent_id}"} if isinstance(agent_id, str) else None
    return json_response(agent, status=201, headers=headers)


async def list_agents(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].list_agents(owner=owner(request)))


async def get_agent(request: web.Request) -> web.Response:
    return json_response(
        await request.app[BACKEND].get_agent(path_id(request), owner=owner(request))
    )


async def update_agent(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    body = await read_body(request, AgentPatch)
    agent = await request.app[BACKEND].update_agent(
        agent_id, name=body.name, config_patch=body.config, owner=owner(request)
    )
    return json_response(agent)


async def delete_agent(request: web.Request) -> web.Response:
    return json_response(
        await request.app[BACKEND].delete_agent(path_id(request), owner=owner(request))
    )


async def _audit_state(request: web.Request, agent_id: str, state: str, reason: str | None) -> None:
    who = owner(request)
    await request.app[AUTH].audit(
        AuditEvent.RISK_STATE_CHANGED,
        user_id=who,
        actor_id=who,
        ip=ip(request),
        detail={"scope": "agent", "agent_id": agent_id, "state": state, "reason": reason},
    )


async def pause_agent(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    agent = await request.app[BACKEND].pause_agent(agent_id, owner=owner(request))
    await _audit_state(request, agent_id, "REDUCING", "paused")
    return json_response(agent)


async def resume_agent(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    agent = await request.app[BACKEND].resume_agent(agent_id, owner=owner(request))
    await _audit_state(request, agent_id, "ACTIVE", "resumed")
    return json_response(agent)


async def set_state(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    body = await read_body(request, StateIn)
    agent = await request.app[BACKEND].set_agent_state(
        agent_id, state=body.state, reason=body.reason, owner=owner(request)
    )
    await _audit_state(request, agent_id, body.state, body.reason)
    return json_response(agent)


async def get_wallet(request: web.Request) -> web.Response:
    return json_response(
        await request.app[BACKEND].get_wallet(path_id(request), owner=owner(request))
    )


async def deposit(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    body = await read_body(request, DepositIn)
    wallet = await request.app[BACKEND].deposit(
        agent_id, asset=body.asset, amount=body.amount, owner=owner(request)
    )
    return json_response(wallet)


_A = "/api/v1/agents"
ROUTES = [
    Route("POST", _A, create_agent, "createAgent", "Create an agent", "agents",
          {201: AGENT}, body=AgentCreate, errors=(409,)),
    Route("GET", _A, list_agents, "listAgents", "List your agents", "agents",
          {200: Reply("Every agent of the caller.", schema=ARRAY_OF_OBJECTS)}),
    Route("GET", _A + "/{id}", get_agent, "getAgent", "Get an agent", "agents", {200: AGENT}),
    Route("PATCH", _A + "/{id}", update_agent, "updateAgent",
          "Rename an agent and/or patch its config", "agents", {200: AGENT}, body=AgentPatch),
    Route("DELETE", _A + "/{id}", delete_agent, "deleteAgent",
          "Delete an agent (refused while it has open positions)", "agents",
          {200: AGENT}, errors=(409,)),
    Route("POST", _A + "/{id}/pause", pause_agent, "pauseAgent",
          "Pause entries: the agent goes REDUCING (exits keep running)", "agents",
          {200: AGENT}, errors=(409,)),
    Route("POST", _A + "/{id}/resume", resume_agent, "resumeAgent",
          "Resume entries: the agent goes ACTIVE (a quarantine is lifted too)", "agents",
          {200: AGENT}, errors=(409,)),
    Route("POST", _A + "/{id}/state", set_state, "setAgentState",
          "Set the agent's trading state (ACTIVE / REDUCING / HALTED)", "agents",
          {200: AGENT}, body=StateIn,
          description="REDUCING: no entries, every exit runs. HALTED: nothing runs, exits "
                      "included; `/health/ready` lists the positions left unprotected. The "
                      "state that applies is the strictest of the agent's own and the global "
                      "one (`effective_state`)."),
    Route("GET", _A + "/{id}/wallet", get_wallet, "getWallet", "Get an agent's wallet",
          "wallets", {200: WALLET}),
    Route("POST", _A + "/{id}/wallet/deposit", deposit, "deposit",
          "Credit a paper wallet", "wallets", {200: WALLET}, body=DepositIn, errors=(409,)),
]  # fmt: skip
