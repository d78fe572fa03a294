"""A live EVM wallet in a wallet host, trading on anvil's real Uniswap V3 bytecode.

The agent host, its wallet host, the vault, the Uniswap venue and the wallet's TxSender
are the production classes wired as in production (:mod:`valux.custody.live`); the chain
is the shared anvil of :mod:`tests.unit.evm_support` between a snapshot and a revert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from tests.unit.evm_support import chain as evm_chain
from tests.unit.harness import FAST_RECONCILE, STOP_ONLY, System, small_system, until
from valux.custody.keys import ScryptParams, encrypt, import_secret
from valux.sandbox.evm import EvmSandbox
from valux.schema.messages import ExitRequest, Signal

PASSPHRASE = "an evm wallet passphrase"


@pytest.fixture
async def anvil() -> AsyncIterator[EvmSandbox]:
    async with evm_chain() as sandbox:
        yield sandbox


async def evm_system(sandbox: EvmSandbox, **overrides: Any) -> System:
    d = sandbox.description()
    return await small_system(
        **{
            "evm.rpc_url": d["evm_rpc_url"],
            "evm.chain_id": d["chain_id"],
            "evm.router": d["router"],
            "evm.quoter": d["quoter"],
            "evm.factory": d["evm_factory"],
            "evm.weth": d["evm_tokens"]["WETH"],
            "evm.confirm_poll_s": 0.02,
            "custody.chain_audit_every_s": 0.001,
            "venue.quote_asset": "WETH",
            **overrides,
        }
    )


async def evm_wallet(system: System, account: LocalAccount, wallet_id: str = "w-evm") -> None:
    secret = import_secret("arbitrum", account.key.hex())
    record = encrypt(secret, PASSPHRASE, scrypt=ScryptParams(n=2**10))
    live = {"chain": "arbitrum", "venue": "uniswap", "address": account.address,
            "key": record.to_dict()}  # fmt: skip
    await system.wallets.create_wallet(wallet_id, "", Decimal(0), "WETH", live)


async def add_agent(system: System, agent_id: str, wallet_id: str = "w-evm") -> None:
    await system.wallets.link_agent(wallet_id, agent_id)
    await system.agents.create_agent(agent_id, agent_id, STOP_ONLY, wallet_id, 0, 0)


async def signal(system: System, signal_id: str, token: str, size: str) -> dict[str, Any]:
    message = Signal(id=signal_id, token=token, strength=5, type="test", size=Decimal(size),
                     received_at=time.time())  # fmt: skip
    return (await system.agents.on_signal(message))[0]


async def audit(system: System, held: dict[str, Decimal]) -> dict[str, Any]:
    return (await system.wallets.audit([("w-evm", held)]))[0]


async def funded(sandbox: EvmSandbox, weth: str = "5") -> LocalAccount:
    account: LocalAccount = Account.create()
    await sandbox.fund(account.address, Decimal(1))  # gas
    await sandbox.fund(account.address, Decimal(weth), "WETH")
    return account


async def test_a_live_evm_agent_buys_and_its_stop_sells_with_books_equal_to_the_chain(
    anvil: EvmSandbox,
) -> None:
    """The audit books the WETH deposit; a locked wallet refuses the entry; after the
    unlock the buy is mined (its hash in the outcome) with the books equal to the chain
    to the base unit; the stop sells it all; a restart leaves the key locked."""
    system = await evm_system(anvil)
    account = await funded(anvil)
    arb = anvil.token("ARB")
    await evm_wallet(system, account)
    await add_agent(system, "eve")
    assert (await audit(system, {}))["status"] == "ok"
    wallet = system.wallets.entities["w-evm"]
    assert wallet.balance("WETH") == Decimal(5)

    refused = await signal(system, "s-locked", arb, "0.1")
    assert refused["status"] == "failed" and "KEY_LOCKED" in refused["reason"], refused
    await system.wallets.unlock("w-evm", PASSPHRASE, 600)

    bought = await signal(system, "s-1", arb, "0.1")
    assert bought["status"] == "bought", bought
    receipt = await anvil.w3.eth.get_transaction_receipt(bought["signature"])
    assert receipt["status"] == 1
    (position,) = system.agents.entities["eve"].positions.values()
    assert position["remaining"] == wallet.balance(arb) == await anvil.balance(account.address, arb)
    assert wallet.balance("WETH") == await anvil.balance(account.address, "WETH")
    assert (await audit(system, {arb: position["remaining"]}))["status"] == "ok"

    request = ExitRequest("eve", position["id"], arb, "stop_loss", 1e-9, time.time())
    closed = (await system.agents.on_exits([request]))[0]
    assert closed["status"] == "closed", closed
    assert await anvil.balance(account.address, arb) == 0 == wallet.balance(arb)
    assert wallet.balance("WETH") == await anvil.balance(account.address, "WETH")

    await system.restart_agents()
    assert system.wallets.vault.status("w-evm").state.value == "locked"
    assert (await audit(system, {}))["status"] == "ok"
    await system.agents.stop_background()


async def test_the_policy_refuses_a_contract_it_does_not_allow_before_signing(
    anvil: EvmSandbox,
) -> None:
    system = await evm_system(anvil)
    account = await funded(anvil)
    arb, link = anvil.token("ARB"), anvil.token("LINK")
    await evm_wallet(system, account)
    await add_agent(system, "fred")
    await audit(system, {})
    await system.wallets.unlock("w-evm", PASSPHRASE, 600)
    d = anvil.description()
    policy = {"max_per_order": "1", "max_per_day": None,
              "allowed_contracts": [d["router"], d["evm_tokens"]["WETH"]],
              "allowed_tokens": [arb]}  # fmt: skip
    await system.wallets.set_policy("w-evm", policy)
    nonce = await anvil.w3.eth.get_transaction_count(account.address)
    wrong = await signal(system, "s-link", link, "0.1")
    assert wrong["status"] == "failed" and "POLICY_TOKEN_NOT_ALLOWED" in wrong["reason"]
    too_big = await signal(system, "s-big", arb, "2")
    assert too_big["status"] == "failed" and "POLICY_MAX_PER_ORDER" in too_big["reason"]
    assert await anvil.w3.eth.get_transaction_count(account.address) == nonce  # nothing sent
    ok = await signal(system, "s-ok", arb, "0.1")
    assert ok["status"] == "bought", ok
    await system.agents.stop_background()


async def test_a_wrong_chain_id_is_refused_before_anything_is_signed(anvil: EvmSandbox) -> None:
    system = await evm_system(anvil, **{"evm.chain_id": 1})
    account = await funded(anvil)
    await evm_wallet(system, account)
    await add_agent(system, "gus")
    await audit(system, {})
    await system.wallets.unlock("w-evm", PASSPHRASE, 600)
    refused = await signal(system, "s-1", anvil.token("ARB"), "0.1")
    assert refused["status"] == "failed" and "signs for chain 1 only" in refused["reason"], refused
    assert await anvil.w3.eth.get_transaction_count(account.address) == 0
    await system.agents.stop_background()


async def test_a_host_that_dies_after_sending_resolves_the_swap_by_its_hash(
    anvil: EvmSandbox,
) -> None:
    """Mining paused, the buy is sent and the host dies; the restarted host (key locked)
    resolves it by the journaled hash once mined: one swap, booked once, the position
    opened by the reconciler."""
    system = await evm_system(anvil, **FAST_RECONCILE)
    account = await funded(anvil)
    arb = anvil.token("ARB")
    await evm_wallet(system, account)
    await add_agent(system, "hal")
    await audit(system, {})
    await system.wallets.unlock("w-evm", PASSPHRASE, 600)
    wallet = system.wallets.entities["w-evm"]
    first = await signal(system, "s-0", anvil.token("LINK"), "0.1")  # approves WETH once
    assert first["status"] == "bought", first
    await anvil.set_automine(False)
    buying = asyncio.create_task(signal(system, "s-1", arb, "0.1"))

    def swap_sent() -> bool:
        return any(
            a["fields"].get("kind") == "swap"
            for i in wallet.pending.values()
            for a in i.get("attempts", [])
        )

    await until(swap_sent, 15)
    (intent_id,) = wallet.pending
    buying.cancel()
    await asyncio.gather(buying, return_exceptions=True)
    await system.restart_agents()
    await anvil.set_automine(True)
    await anvil.mine(1)
    # the current wallet each time: the dead incarnation's last send may still journal,
    # and the restarted host then reloads the wallet (a new object) from its stream
    await until(lambda: intent_id in system.wallets.entities["w-evm"].finished, 20)
    wallet = system.wallets.entities["w-evm"]
    assert wallet.finished[intent_id]["state"] == "filled"
    assert wallet.balance(arb) == await anvil.balance(account.address, arb)
    # approve WETH, swap LINK, swap ARB: one swap for the intent, nothing signed again
    assert await anvil.w3.eth.get_transaction_count(account.address) == 3
    agent = system.agents.entities["hal"]
    await until(lambda: len(agent.positions) == 2, 20)
    await system.agents.stop_background()
