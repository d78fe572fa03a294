"""Agents and their wallets: ``/api/v1/agents...``."""

from __future__ import annotations

from aiohttp import web

from valux.api.http import json_response, path_id, read_body
from valux.api.keys import BACKEND
from valux.api.models import AgentCreate, AgentPatch, DepositIn
from valux.api.routes import ARRAY_OF_OBJECTS, OBJECT, Reply, Route

AGENT = Reply("The agent.", schema=OBJECT)
WALLET = Reply("The agent's wallet (balances per asset; never key material).", schema=OBJECT)


async def create_agent(request: web.Request) -> web.Response:
    body = await read_body(request, AgentCreate)
    agent = await request.app[BACKEND].create_agent(
        name=body.name, config=body.config, balance=body.balance, agent_id=body.id
    )
    agent_id = agent.get("id")
    headers = {"Location": f"/api/v1/agents/{agent_id}"} if isinstance(agent_id, str) else None
    return json_response(agent, status=201, headers=headers)


async def list_agents(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].list_agents())


async def get_agent(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].get_agent(path_id(request)))


async def update_agent(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    body = await read_body(request, AgentPatch)
    agent = await request.app[BACKEND].update_agent(
        agent_id, name=body.name, config_patch=body.config
    )
    return json_response(agent)


async def delete_agent(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].delete_agent(path_id(request)))


async def pause_agent(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].pause_agent(path_id(request)))


async def resume_agent(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].resume_agent(path_id(request)))


async def get_wallet(request: web.Request) -> web.Response:
    return json_response(await request.app[BACKEND].get_wallet(path_id(request)))


async def deposit(request: web.Request) -> web.Response:
    agent_id = path_id(request)
    body = await read_body(request, DepositIn)
    wallet = await request.app[BACKEND].deposit(agent_id, asset=body.asset, amount=body.amount)
    return json_response(wallet)


_A = "/api/v1/agents"
ROUTES = [
    Route("POST", _A, create_agent, "createAgent", "Create an agent", "agents",
          {201: AGENT}, body=AgentCreate, errors=(409,)),
    Route("GET", _A, list_agents, "listAgents", "List agents", "agents",
          {200: Reply("Every agent.", schema=ARRAY_OF_OBJECTS)}),
    Route("GET", _A + "/{id}", get_agent, "getAgent", "Get an agent", "agents", {200: AGENT}),
    Route("PATCH", _A + "/{id}", update_agent, "updateAgent",
          "Rename an agent and/or patch its config", "agents", {200: AGENT}, body=AgentPatch),
    Route("DELETE", _A + "/{id}", delete_agent, "deleteAgent",
          "Delete an agent (refused while it has open positions)", "agents",
          {200: AGENT}, errors=(409,)),
    Route("POST", _A + "/{id}/pause", pause_agent, "pauseAgent",
          "Pause new entries (exits keep running)", "agents", {200: AGENT}, errors=(409,)),
    Route("POST", _A + "/{id}/resume", resume_agent, "resumeAgent",
          "Resume new entries", "agents", {200: AGENT}, errors=(409,)),
    Route("GET", _A + "/{id}/wallet", get_wallet, "getWallet", "Get an agent's wallet",
          "wallets", {200: WALLET}),
    Route("POST", _A + "/{id}/wallet/deposit", deposit, "deposit",
          "Credit a paper wallet", "wallets", {200: WALLET}, body=DepositIn, errors=(409,)),
]  # fmt: skip
