"""A live wallet in a wallet host, trading on the sandbox's real SVM through Jupiter.

The agent host, its wallet host, the vault, the Jupiter venue and the sender are the
production classes wired as in production (:mod:`valux.custody.live`); the chain is the
sandbox's LiteSVM behind its JSON-RPC server and its Jupiter-shaped service. Only
PostgreSQL (the memory store) and the evaluator are the harness's stand-ins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.signature import Signature

from tests.unit.harness import FAST_RECONCILE, STOP_ONLY, System, small_system, until
from tests.unit.sandbox_support import (
    SandboxEnv,
    control,
    fresh_blockhash,
    sandbox_env,
    status_of,
    transfer_tx,
)
from valux.config.secrets import JUPITER_KEY_ENV
from valux.custody.keys import ScryptParams, WrongPassphrase, encrypt, import_secret
from valux.errors import Conflict, InvalidRequest
from valux.schema.messages import ExitRequest, Signal
from valux.venues.jupiter import SolanaRpc, read_holdings

PASSPHRASE = "correct horse battery staple"
FAST_SCRYPT = ScryptParams(n=2**10)


@pytest.fixture
async def chain(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxEnv]:
    async with sandbox_env(slot_ms=40) as env:
        monkeypatch.setenv(JUPITER_KEY_ENV, env.headers["x-api-key"])
        yield env


async def live_system(env: SandboxEnv, **overrides: Any) -> System:
    return await small_system(
        **{
            "solana.rpc_url": env.sandbox.rpc.url,
            "jupiter.url": env.sandbox.service.url,
            "custody.chain_audit_every_s": 0.001,
            **overrides,
        }
    )


async def live_wallet(system: System, keypair: Keypair, wallet_id: str = "w-live") -> None:
    secret = import_secret("solana", str(keypair))
    record = encrypt(secret, PASSPHRASE, scrypt=FAST_SCRYPT)
    live = {
        "chain": "solana",
        "venue": "jupiter",
        "address": str(keypair.pubkey()),
        "key": record.to_dict(),
    }
    await system.wallets.create_wallet(wallet_id, "", Decimal(0), "SOL", live)


async def add_live_agent(system: System, agent_id: str, wallet_id: str = "w-live") -> None:
    await system.wallets.link_agent(wallet_id, agent_id)
    await system.agents.create_agent(agent_id, agent_id, STOP_ONLY, wallet_id, 0, 0)


async def chain_balances(env: SandboxEnv, address: str) -> tuple[Decimal, dict[str, int]]:
    """SOL (wrapped included, as the books keep it) and token base units on chain."""
    async with AsyncClient(env.sandbox.rpc.url) as client:
        held = await read_holdings(SolanaRpc(client), address)
    return held.sol_with_wrapped, {m: h.units for m, h in held.tokens.items() if h.units}


async def audit(system: System, wallet_id: str, held: dict[str, Decimal]) -> dict[str, Any]:
    return (await system.wallets.audit([(wallet_id, held)]))[0]


async def signal(system: System, signal_id: str, token: str, size: str = "1") -> dict[str, Any]:
    message = Signal(
        id=signal_id, token=token, strength=5, type="test", size=Decimal(size),
        received_at=time.time(),
    )  # fmt: skip
    return (await system.agents.on_signal(message))[0]


async def test_a_live_agent_buys_and_its_stop_sells_with_books_equal_to_the_chain(
    chain: SandboxEnv,
) -> None:
    """Fund from the faucet (the audit books the deposit), a locked wallet refuses the
    entry naming the lock, a wrong passphrase is refused, the buy lands once with the
    books equal to the chain to the lamport, the stop sells it all, and after a restart
    of the host the key is locked again while the books still match the chain."""
    system = await live_system(chain)
    keypair = Keypair()
    address = str(keypair.pubkey())
    bonk = chain.mint("BONK")
    await live_wallet(system, keypair)
    await add_live_agent(system, "alice")
    await control(chain, "fund", {"address": address, "amount": 5})

    report = await audit(system, "w-live", {})
    assert report["status"] == "ok", report
    sol, _ = await chain_balances(chain, address)
    assert system.wallets.entities["w-live"].balance("SOL") == sol

    refused = await signal(system, "s-locked", bonk)
    assert refused["status"] == "failed"
    assert "KEY_LOCKED" in refused["reason"] or "locked" in refused["reason"], refused

    with pytest.raises(WrongPassphrase):
        await system.wallets.unlock("w-live", "not the passphrase")
    status = await system.wallets.unlock("w-live", PASSPHRASE, 600)
    assert status["state"] == "unlocked"

    bought = await signal(system, "s-1", bonk, "1")
    assert bought["status"] == "bought", bought
    async with AsyncClient(chain.sandbox.rpc.url) as client:  # the outcome names the swap
        landed = await status_of(client, Signature.from_string(bought["signature"]))
    assert landed is not None and landed.err is None
    agent = system.agents.entities["alice"]
    (position,) = agent.positions.values()
    wallet = system.wallets.entities["w-live"]
    sol, tokens = await chain_balances(chain, address)
    assert wallet.balance("SOL") == sol
    assert position["remaining"] == wallet.balance(bonk)
    assert tokens == {bonk: int(wallet.balance(bonk).scaleb(5))}
    assert (await audit(system, "w-live", {bonk: position["remaining"]}))["status"] == "ok"

    exit_request = ExitRequest("alice", position["id"], bonk, "stop_loss", 0.001, time.time())
    closed = (await system.agents.on_exits([exit_request]))[0]
    assert closed["status"] in ("closed", "sold"), closed
    sol, tokens = await chain_balances(chain, address)
    assert tokens == {}
    assert wallet.balance("SOL") == sol
    assert not wallet.holds_tokens()

    await system.restart_agents()
    wallet = system.wallets.entities["w-live"]
    assert system.wallets.vault.status("w-live").state.value == "locked"
    assert wallet.balance("SOL") == sol
    assert (await audit(system, "w-live", {}))["status"] == "ok"
    await system.agents.stop_background()


async def test_the_spend_policy_refuses_before_signing_and_names_the_rule(
    chain: SandboxEnv,
) -> None:
    """A buy above ``max_per_order`` and one in a token outside ``allowed_tokens`` are
    refused with the rule's code, journaled as the intent's outcome, and nothing reached
    the chain; an invalid policy is refused as a whole."""
    system = await live_system(chain)
    keypair = Keypair()
    bonk, wif = chain.mint("BONK"), chain.mint("WIF")
    await live_wallet(system, keypair)
    await add_live_agent(system, "bob")
    await control(chain, "fund", {"address": str(keypair.pubkey()), "amount": 5})
    await audit(system, "w-live", {})
    await system.wallets.unlock("w-live", PASSPHRASE, 600)
    with pytest.raises(InvalidRequest):
        await system.wallets.set_policy("w-live", {"max_per_order": "-1", "max_per_day": None})
    policy = {"max_per_order": "0.5", "max_per_day": "2", "allowed_tokens": [bonk]}
    view = await system.wallets.set_policy("w-live", policy)
    assert view["policy"]["max_per_order"] == "0.5"
    before, _ = await chain_balances(chain, str(keypair.pubkey()))

    too_big = await signal(system, "s-big", bonk, "1")
    assert too_big["status"] == "failed" and "MAX_PER_ORDER" in too_big["reason"], too_big
    wrong_token = await signal(system, "s-wif", wif, "0.4")
    assert wrong_token["status"] == "failed"
    assert "TOKEN_NOT_ALLOWED" in wrong_token["reason"], wrong_token
    after, tokens = await chain_balances(chain, str(keypair.pubkey()))
    assert (after, tokens) == (before, {})
    wallet = system.wallets.entities["w-live"]
    reasons = [r["reason"] for r in wallet.finished.values()]
    assert any("MAX_PER_ORDER" in r for r in reasons)
    assert wallet.spent_on(wallet.spent_day) == 0  # refused buys spend nothing

    with pytest.raises(Conflict):  # a paper wallet has no key to lock
        await system.add_agent("paper-agent")
        await system.wallets.lock("w-paper-agent")
    await system.agents.stop_background()


async def test_delete_is_refused_while_tokens_are_held_and_wipes_the_key_after(
    chain: SandboxEnv,
) -> None:
    system = await live_system(chain)
    keypair = Keypair()
    bonk = chain.mint("BONK")
    await live_wallet(system, keypair)
    await add_live_agent(system, "carol")
    await control(chain, "fund", {"address": str(keypair.pubkey()), "amount": 5})
    await audit(system, "w-live", {})
    await system.wallets.unlock("w-live", PASSPHRASE, 600)
    bought = await signal(system, "s-1", bonk, "0.5")
    assert bought["status"] == "bought", bought
    with pytest.raises(Conflict, match="still holds"):
        await system.wallets.delete_wallet("w-live")
    # A plain lock keeps signing exits while positions are open; a forced one wipes it.
    assert (await system.wallets.lock("w-live"))["state"] == "exits_only"
    assert (await system.wallets.lock("w-live", True))["state"] == "locked"
    await system.agents.stop_background()


async def test_a_host_that_dies_after_sending_resolves_the_swap_by_its_signature(
    chain: SandboxEnv,
) -> None:
    """The host dies with the buy's transaction sent but not landed: the restarted host
    (its key locked, so it could not sign again) resolves the intent by the journaled
    signature once it lands — one swap on chain, booked once, the position opened by
    the agent's reconciler."""
    system = await live_system(chain, **FAST_RECONCILE)
    keypair = Keypair()
    bonk = chain.mint("BONK")
    await live_wallet(system, keypair)
    await add_live_agent(system, "dave")
    await control(chain, "fund", {"address": str(keypair.pubkey()), "amount": 5})
    await audit(system, "w-live", {})
    await system.wallets.unlock("w-live", PASSPHRASE, 600)
    chain.ledger.landing_delay_slots = 40  # ~1.6 s in flight
    buying = asyncio.create_task(signal(system, "s-1", bonk, "1"))
    wallet = system.wallets.entities["w-live"]
    await until(lambda: any(i.get("attempts") for i in wallet.pending.values()), 10)
    (intent_id,) = wallet.pending
    buying.cancel()  # the process dies: nothing after the send runs
    await asyncio.gather(buying, return_exceptions=True)
    chain.ledger.landing_delay_slots = 0

    await system.restart_agents()
    assert system.wallets.vault.status("w-live").state.value == "locked"
    # the current wallet each time: a reload from its stream replaces the object
    await until(lambda: intent_id in system.wallets.entities["w-live"].finished, 15)
    wallet = system.wallets.entities["w-live"]
    assert wallet.finished[intent_id]["state"] == "filled"
    sol, tokens = await chain_balances(chain, str(keypair.pubkey()))
    assert tokens == {bonk: int(wallet.balance(bonk).scaleb(5))}  # one swap, booked once
    assert wallet.balance("SOL") == sol
    agent = system.agents.entities["dave"]
    await until(lambda: len(agent.positions) == 1, 15)
    (position,) = agent.positions.values()
    assert position["remaining"] == wallet.balance(bonk)
    await system.agents.stop_background()


async def test_sol_missing_on_chain_is_a_custody_mismatch(chain: SandboxEnv) -> None:
    """SOL leaves the wallet behind valux's back (a transfer signed elsewhere): the next
    chain audit reports the shortfall with the evidence; nothing is booked to hide it."""
    system = await live_system(chain)
    keypair = Keypair()
    await live_wallet(system, keypair)
    await add_live_agent(system, "erin")
    await control(chain, "fund", {"address": str(keypair.pubkey()), "amount": 5})
    assert (await audit(system, "w-live", {}))["status"] == "ok"
    blockhash, _ = await fresh_blockhash(chain.client)
    tx = transfer_tx(keypair, Keypair().pubkey(), 10**9, blockhash)
    signature = (await chain.client.send_raw_transaction(bytes(tx))).value
    await until_landed(chain, signature)
    report = await audit(system, "w-live", {})
    assert report["status"] == "mismatch", report
    assert any(e.startswith("SOL:") and "venue account" in e for e in report["evidence"])
    assert system.wallets.entities["w-live"].balance("SOL") == Decimal(5)
    await system.agents.stop_background()


async def until_landed(env: SandboxEnv, signature: Signature) -> None:
    for _ in range(200):
        found = await status_of(env.client, signature)
        if found is not None and found.confirmation_status is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the transfer did not land")


async def test_concurrent_audits_of_a_fresh_deposit_agree(chain: SandboxEnv) -> None:
    """Two audits read the journal's sums together; the first books the chain deposit.
    The second must see it (it re-reads a wallet that moved), not report memory ahead of
    the journal as a custody mismatch."""
    system = await live_system(chain)
    keypair = Keypair()
    await live_wallet(system, keypair)
    await add_live_agent(system, "fay")
    await control(chain, "fund", {"address": str(keypair.pubkey()), "amount": 5})
    first, second = await asyncio.gather(audit(system, "w-live", {}), audit(system, "w-live", {}))
    assert (first["status"], second["status"]) == ("ok", "ok"), (first, second)
    await system.agents.stop_background()
