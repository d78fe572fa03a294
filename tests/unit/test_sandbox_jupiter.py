"""The Jupiter-shaped swap service: quote → swap → wallet signs → RPC sends → it lands,
moving exactly what the quote said, on real SPL token accounts in the same SVM.

Clients are production's: aiohttp for the HTTP service, solana-py's AsyncClient for the
RPC, solders for signing. The ledger clock is manual, so landing and confirmation are exact.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

from solana.rpc.commitment import Confirmed, Processed
from solana.rpc.core import RPCException
from solana.rpc.models import TokenAccountOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.state import TokenAccount
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus

from tests.unit.sandbox_support import (
    SOL,
    SandboxEnv,
    control,
    get_quote,
    post_swap,
    raw_rpc,
    sandbox_env,
    wallet_sign,
)
from valux.sandbox.spl import (
    NATIVE_MINT,
    TOKEN_ACCOUNT_SIZE,
    TOKEN_PROGRAM_ID,
    associated_token_address,
    compute_budget_of,
)

WSOL = str(NATIVE_MINT)
ATA_RENT = 2_039_280


async def funded_wallet(env: SandboxEnv, sol: int = 10) -> Keypair:
    """A fresh wallet with ``sol`` SOL, funded through ``/control/fund``."""
    wallet = Keypair()
    await control(env, "fund", {"address": str(wallet.pubkey()), "amount": sol})
    return wallet


async def land(env: SandboxEnv, tx: VersionedTransaction) -> Signature:
    """Send through the RPC, let one slot pass, and require a confirmed success."""
    sig = (await env.client.send_transaction(tx)).value
    env.ledger.advance(1)
    status = (await env.client.get_signature_statuses([sig])).value[0]
    assert status is not None and status.err is None
    assert status.confirmation_status == TransactionConfirmationStatus.Confirmed
    return sig


async def token_amount(env: SandboxEnv, owner: Pubkey, mint: str) -> int:
    """Base units of ``mint`` in ``owner``'s associated token account (0 if absent)."""
    ata = associated_token_address(owner, Pubkey.from_string(mint))
    if (await env.client.get_account_info(ata, Processed)).value is None:
        return 0
    return int((await env.client.get_token_account_balance(ata, Processed)).value.amount)


async def lamports(env: SandboxEnv, owner: Pubkey) -> int:
    return (await env.client.get_balance(owner, Processed)).value


async def pool(env: SandboxEnv, symbol: str) -> dict[str, Any]:
    async with env.http.get("/control/state") as resp:
        state = await resp.json()
    return next(p for p in state["pools"] if p["symbol"] == symbol)


async def test_buy_moves_exactly_what_the_quote_said() -> None:
    """SOL → BONK: the wallet gets exactly outAmount, pays exactly inAmount + fee + the new
    ATA's rent, the pool's vaults move by the same amounts, and getTransaction's pre/post
    token balances show it."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        bonk = env.mint("BONK")
        before_pool = await pool(env, "BONK")
        quote = await get_quote(env, WSOL, bonk, SOL, slippageBps=50)
        assert quote["inAmount"] == str(SOL) and int(quote["outAmount"]) > 0
        assert int(quote["otherAmountThreshold"]) == int(quote["outAmount"]) * 9950 // 10000
        assert quote["routePlan"][0]["swapInfo"]["ammKey"] == before_pool["pool"]
        status, swap = await post_swap(
            env,
            quote,
            wallet.pubkey(),
            dynamicComputeUnitLimit=True,
            prioritizationFeeLamports={
                "priorityLevelWithMaxLamports": {"maxLamports": 4_000, "priorityLevel": "veryHigh"}
            },
        )
        assert status == 200, swap
        assert swap["simulationError"] is None
        assert swap["computeUnitLimit"] < 1_400_000
        assert swap["prioritizationFeeLamports"] <= 4_000
        unsigned = VersionedTransaction.from_bytes(base64.b64decode(swap["swapTransaction"]))
        message = unsigned.message
        assert message.account_keys[0] == wallet.pubkey()  # the user pays the fee
        assert message.header.num_required_signatures == 2
        budget = compute_budget_of(message.account_keys, message.instructions)
        assert budget.unit_limit == swap["computeUnitLimit"]
        signed = wallet_sign(swap["swapTransaction"], wallet)
        assert all(signed.verify_with_results())

        sol_before = await lamports(env, wallet.pubkey())
        sig = await land(env, signed)

        out, spent = int(quote["outAmount"]), int(quote["inAmount"])
        fee = 10_000 + swap["prioritizationFeeLamports"]
        assert await token_amount(env, wallet.pubkey(), bonk) == out
        assert await lamports(env, wallet.pubkey()) == sol_before - spent - fee - ATA_RENT
        after_pool = await pool(env, "BONK")
        assert int(after_pool["sol_reserve"]) - int(before_pool["sol_reserve"]) == spent
        assert int(before_pool["token_reserve"]) - int(after_pool["token_reserve"]) == out

        got = (await env.client.get_transaction(sig, "json", Confirmed, 0)).value
        assert got is not None
        meta = got.transaction.meta
        assert meta.fee == fee and meta.err is None
        keys = got.transaction.transaction.message.account_keys
        user_ata = associated_token_address(wallet.pubkey(), Pubkey.from_string(bonk))
        ata_index = keys.index(user_ata)
        post = {b.account_index: int(b.ui_token_amount.amount) for b in meta.post_token_balances}
        pre = {b.account_index: int(b.ui_token_amount.amount) for b in meta.pre_token_balances}
        assert post[ata_index] == out and ata_index not in pre
        sol_vault = keys.index(Pubkey.from_string(before_pool["sol_vault"]))
        token_vault = keys.index(Pubkey.from_string(before_pool["token_vault"]))
        assert post[sol_vault] - pre[sol_vault] == spent
        assert pre[token_vault] - post[token_vault] == out
        assert meta.pre_balances[0] - meta.post_balances[0] == spent + fee + ATA_RENT


async def test_sell_returns_unwrapped_sol_exactly_as_quoted() -> None:
    """BONK → SOL with wrapAndUnwrapSol: the wallet's lamports rise by exactly outAmount
    minus the fee (the temporary wSOL account's rent comes back), its BONK is gone."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        bonk = env.mint("BONK")
        await control(
            env, "fund", {"address": str(wallet.pubkey()), "amount": "1000000", "token": "BONK"}
        )
        held = await token_amount(env, wallet.pubkey(), bonk)
        assert held == 1_000_000 * 10**5
        quote = await get_quote(env, bonk, WSOL, held)
        status, swap = await post_swap(env, quote, wallet.pubkey(), prioritizationFeeLamports=5_000)
        assert status == 200, swap
        assert swap["computeUnitLimit"] == 1_400_000
        assert swap["prioritizationType"]["computeBudget"]["microLamports"] == 3_571
        assert swap["prioritizationFeeLamports"] == 5_000
        before = await lamports(env, wallet.pubkey())
        await land(env, wallet_sign(swap["swapTransaction"], wallet))
        assert await token_amount(env, wallet.pubkey(), bonk) == 0
        fee = 10_000 + 5_000
        assert await lamports(env, wallet.pubkey()) == before + int(quote["outAmount"]) - fee
        wsol_ata = associated_token_address(wallet.pubkey(), NATIVE_MINT)
        assert (await env.client.get_account_info(wsol_ata, Processed)).value is None


async def test_exact_out_delivers_the_asked_amount() -> None:
    """swapMode=ExactOut: the wallet receives exactly the asked WIF for exactly inAmount,
    and otherAmountThreshold is the maximum input within the slippage."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        wif = env.mint("WIF")
        quote = await get_quote(env, WSOL, wif, 5_000_000, swapMode="ExactOut", slippageBps=100)
        assert quote["outAmount"] == "5000000" and quote["swapMode"] == "ExactOut"
        assert int(quote["otherAmountThreshold"]) == int(quote["inAmount"]) * 10100 // 10000
        status, swap = await post_swap(env, quote, wallet.pubkey())
        assert status == 200, swap
        before = await lamports(env, wallet.pubkey())
        await land(env, wallet_sign(swap["swapTransaction"], wallet))
        assert await token_amount(env, wallet.pubkey(), wif) == 5_000_000
        fee = 10_000 + swap["prioritizationFeeLamports"]
        assert (
            await lamports(env, wallet.pubkey()) == before - int(quote["inAmount"]) - fee - ATA_RENT
        )


async def test_slippage_refused_when_the_pool_moved_and_honoured_within_tolerance() -> None:
    """A 1 % move between quote and swap exceeds 50 bps: 400 SLIPPAGE_TOLERANCE_EXCEEDED.
    A 0.1 % move is within it: the swap is built and still transfers the quoted amount."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        bonk = env.mint("BONK")
        price = Decimal((await pool(env, "BONK"))["price_usd"])
        quote = await get_quote(env, WSOL, bonk, SOL, slippageBps=50)
        await control(env, "price", {"token": "BONK", "price": str(price * Decimal("1.01"))})
        status, answer = await post_swap(env, quote, wallet.pubkey())
        assert status == 400
        assert answer["errorCode"] == "SLIPPAGE_TOLERANCE_EXCEEDED"
        assert answer["error"].startswith("Slippage tolerance exceeded")

        moved = Decimal((await pool(env, "BONK"))["price_usd"])
        quote = await get_quote(env, WSOL, bonk, SOL, slippageBps=50)
        await control(env, "price", {"token": "BONK", "price": str(moved * Decimal("1.001"))})
        now = await get_quote(env, WSOL, bonk, SOL, slippageBps=50)
        assert int(now["outAmount"]) < int(quote["outAmount"])
        status, swap = await post_swap(env, quote, wallet.pubkey())
        assert status == 200, swap
        await land(env, wallet_sign(swap["swapTransaction"], wallet))
        assert await token_amount(env, wallet.pubkey(), bonk) == int(quote["outAmount"])


async def test_swap_transaction_needs_the_wallet_signature() -> None:
    """The service's transaction is unusable until the wallet signs: sent as is it fails
    signature verification (-32003); a different key cannot fill the slot."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        quote = await get_quote(env, WSOL, env.mint("WIF"), SOL // 10)
        _, swap = await post_swap(env, quote, wallet.pubkey())
        raw = await raw_rpc(
            env.sandbox.rpc.url,
            "sendTransaction",
            [swap["swapTransaction"], {"encoding": "base64"}],
        )
        assert raw["error"]["code"] == -32003
        tx = VersionedTransaction.from_bytes(base64.b64decode(swap["swapTransaction"]))
        forged = VersionedTransaction.populate(
            tx.message, [Keypair().sign_message(bytes(tx.message)), tx.signatures[1]]
        )
        assert not all(forged.verify_with_results())


async def test_simulation_error_reported_and_preflight_refuses_an_unfunded_buy() -> None:
    """A wallet without the SOL gets a swap whose simulationError says why, and sending it
    fails preflight with the program's error."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env, sol=1)
        quote = await get_quote(env, WSOL, env.mint("POPCAT"), 5 * SOL)
        status, swap = await post_swap(env, quote, wallet.pubkey(), dynamicComputeUnitLimit=True)
        assert status == 200
        assert swap["simulationError"]["errorCode"] == "TRANSACTION_SIMULATION_FAILED"
        assert swap["computeUnitLimit"] == 1_400_000
        try:
            await env.client.send_transaction(wallet_sign(swap["swapTransaction"], wallet))
        except RPCException as exc:
            assert "Transaction simulation failed" in exc.args[0].message
        else:
            raise AssertionError("an unfunded buy passed preflight")


async def test_quote_errors_have_jupiters_shape() -> None:
    """Unknown mints are TOKEN_NOT_TRADABLE, token-to-token has no route, bad amounts 400."""
    async with sandbox_env() as env:
        stranger = str(Keypair().pubkey())
        cases = [
            ({"inputMint": WSOL, "outputMint": stranger, "amount": "10"}, "TOKEN_NOT_TRADABLE"),
            (
                {"inputMint": env.mint("BONK"), "outputMint": env.mint("WIF"), "amount": "10"},
                "COULD_NOT_FIND_ANY_ROUTE",
            ),
            ({"inputMint": WSOL, "outputMint": env.mint("WIF"), "amount": "-1"}, "INVALID_REQUEST"),
        ]
        for params, code in cases:
            async with env.http.get("/swap/v1/quote", params=params, headers=env.headers) as resp:
                body = await resp.json()
                assert resp.status == 400 and body["errorCode"] == code, body
                assert isinstance(body["error"], str)


async def test_api_key_is_required_on_jupiter_routes_only() -> None:
    """/swap and /price answer 401 without the right x-api-key; the DexScreener, Pyth and
    control routes do not ask for it; a sandbox started without a key is open."""
    async with sandbox_env() as env:
        params = {"inputMint": WSOL, "outputMint": env.mint("BONK"), "amount": "1000"}
        for headers in ({}, {"x-api-key": "wrong"}):
            async with env.http.get("/swap/v1/quote", params=params, headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["errorCode"] == "UNAUTHORIZED"
            async with env.http.post("/swap/v1/swap", json={}, headers=headers) as resp:
                assert resp.status == 401
            async with env.http.get("/price/v3", params={"ids": WSOL}, headers=headers) as resp:
                assert resp.status == 401
        async with env.http.get("/swap/v1/quote", params=params, headers=env.headers) as resp:
            assert resp.status == 200
        async with env.http.get(f"/latest/dex/tokens/{env.mint('BONK')}") as resp:
            assert resp.status == 200
        async with env.http.get("/control/state") as resp:
            assert resp.status == 200
    async with sandbox_env(require_api_key=False) as env:
        assert env.headers == {}
        async with env.http.get(
            "/swap/v1/quote",
            params={"inputMint": WSOL, "outputMint": env.mint("WIF"), "amount": "1000"},
        ) as resp:
            assert resp.status == 200


async def test_price_endpoints_follow_control_price() -> None:
    """After /control/price, Jupiter v3, DexScreener and Pyth all report the new price;
    moving SOL/USD moves every token's USD price with it."""
    async with sandbox_env() as env:
        bonk = env.mint("BONK")
        feeds = env.sandbox.manifest()["pyth_feeds"]
        await control(env, "price", {"token": "BONK", "price": "0.00003"})

        async with env.http.get(
            "/price/v3", params={"ids": f"{bonk},{WSOL},nonsense"}, headers=env.headers
        ) as resp:
            prices = await resp.json()
        assert set(prices) == {bonk, WSOL}
        assert abs(prices[bonk]["usdPrice"] / 0.00003 - 1) < 1e-6
        assert prices[bonk]["decimals"] == 5 and prices[WSOL]["usdPrice"] == 150.0
        assert prices[bonk]["blockId"] == env.ledger.slot

        async with env.http.get(f"/latest/dex/tokens/{bonk}") as resp:
            dex = await resp.json()
        (pair,) = dex["pairs"]
        assert pair["baseToken"]["symbol"] == "BONK" and pair["quoteToken"]["address"] == WSOL
        assert abs(Decimal(pair["priceUsd"]) / Decimal("0.00003") - 1) < Decimal("1e-6")
        assert abs(Decimal(pair["priceNative"]) * 150 / Decimal("0.00003") - 1) < Decimal("1e-6")
        async with env.http.get(f"/latest/dex/tokens/{WSOL}") as resp:
            assert len((await resp.json())["pairs"]) == 3
        async with env.http.get(f"/latest/dex/tokens/{Keypair().pubkey()}") as resp:
            assert (await resp.json()) == {"schemaVersion": "1.0.0", "pairs": None}

        query = [("ids[]", feeds["BONK"]), ("ids[]", "0x" + feeds["SOL"])]
        async with env.http.get("/v2/updates/price/latest", params=query) as resp:
            hermes = await resp.json()
        by_id = {p["id"]: p["price"] for p in hermes["parsed"]}
        bonk_usd = Decimal(by_id[feeds["BONK"]]["price"]).scaleb(by_id[feeds["BONK"]]["expo"])
        assert abs(bonk_usd / Decimal("0.00003") - 1) < Decimal("1e-6")
        assert Decimal(by_id[feeds["SOL"]]["price"]).scaleb(by_id[feeds["SOL"]]["expo"]) == 150
        assert hermes["binary"]["encoding"] == "hex"

        await control(env, "price", {"token": "SOL", "price": "200"})
        async with env.http.get(
            "/price/v3", params={"ids": f"{bonk},{WSOL}"}, headers=env.headers
        ) as resp:
            prices = await resp.json()
        assert prices[WSOL]["usdPrice"] == 200.0
        assert abs(prices[bonk]["usdPrice"] / 0.00004 - 1) < 1e-6

        async with env.http.get("/v2/updates/price/latest", params=[("ids[]", "ab" * 32)]) as resp:
            assert resp.status == 404
            assert "Price ids not found" in await resp.text()


async def test_pyth_stream_pushes_the_new_price() -> None:
    """The Hermes SSE stream sends `data:` events with /latest's JSON and shows a price
    change made through /control/price within a few events."""
    async with sandbox_env(pyth_stream_interval_s=0.02) as env:
        feed = env.sandbox.manifest()["pyth_feeds"]["WIF"]

        def usd(event: dict[str, Any]) -> Decimal:
            price = event["parsed"][0]["price"]
            return Decimal(price["price"]).scaleb(price["expo"])

        async with env.http.get("/v2/updates/price/stream", params=[("ids[]", feed)]) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events: list[dict[str, Any]] = []
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                events.append(json.loads(line[6:]))
                if len(events) == 1:
                    assert abs(usd(events[0]) - Decimal("1.5")) < Decimal("0.000001")
                    await control(env, "price", {"token": "WIF", "price": "2.25"})
                elif abs(usd(events[-1]) - Decimal("2.25")) < Decimal("0.000001"):
                    break
                assert len(events) < 50, "the stream never showed the new price"


async def test_token_accounts_through_the_rpc() -> None:
    """A funded token account answers getTokenAccountBalance, getTokenAccountsByOwner by
    mint (base64) and by program (jsonParsed), and the mint parses as jsonParsed."""
    async with sandbox_env() as env:
        wallet = Keypair()
        funding = await control(
            env, "fund", {"address": str(wallet.pubkey()), "amount": "12.5", "token": "WIF"}
        )
        wif = Pubkey.from_string(env.mint("WIF"))
        ata = associated_token_address(wallet.pubkey(), wif)
        assert funding["account"] == str(ata) and funding["amount"] == "12500000"
        balance = (await env.client.get_token_account_balance(ata)).value
        assert balance.amount == "12500000" and balance.decimals == 6
        assert balance.ui_amount_string == "12.5"
        by_mint = (
            await env.client.get_token_accounts_by_owner(
                wallet.pubkey(), TokenAccountOpts(mint=wif)
            )
        ).value
        assert [a.pubkey for a in by_mint] == [ata]
        assert len(by_mint[0].account.data) == TOKEN_ACCOUNT_SIZE
        assert TokenAccount.from_bytes(by_mint[0].account.data).amount == 12_500_000
        parsed = (
            await env.client.get_token_accounts_by_owner_json_parsed(
                wallet.pubkey(), TokenAccountOpts(program_id=TOKEN_PROGRAM_ID)
            )
        ).value
        info = parsed[0].account.data.parsed["info"]
        assert info["mint"] == str(wif) and info["tokenAmount"]["uiAmountString"] == "12.5"
        mint_info = await raw_rpc(
            env.sandbox.rpc.url, "getAccountInfo", [str(wif), {"encoding": "jsonParsed"}]
        )
        parsed_mint = mint_info["result"]["value"]["data"]["parsed"]
        assert parsed_mint["type"] == "mint" and parsed_mint["info"]["decimals"] == 6
        unknown = await raw_rpc(
            env.sandbox.rpc.url,
            "getTokenAccountsByOwner",
            [str(wallet.pubkey()), {"mint": str(Keypair().pubkey())}],
        )
        assert unknown["error"]["code"] == -32602


async def test_control_network_and_fund_validate_and_apply() -> None:
    """/control/network changes the ledger's knobs and advances slots, refusing bad values;
    /control/fund refuses unknown tokens (404) and amounts finer than the token's decimals."""
    async with sandbox_env() as env:
        slot = env.ledger.slot
        async with env.http.post(
            "/control/network", json={"landing_delay_slots": 2, "drop_rate": "0.25", "advance": 3}
        ) as resp:
            state = await resp.json()
        assert resp.status == 200
        assert (state["slot"], state["landing_delay_slots"], state["drop_rate"]) == (
            slot + 3,
            2,
            0.25,
        )
        assert env.ledger.landing_delay_slots == 2 and env.ledger.drop_rate == 0.25
        for bad in ({"drop_rate": 2}, {"advance": 10**6}, {"slot_ms": -1}):
            async with env.http.post("/control/network", json=bad) as resp:
                assert resp.status == 400, bad
        wallet = str(Keypair().pubkey())
        async with env.http.post(
            "/control/fund", json={"address": wallet, "amount": 1, "token": "NOPE"}
        ) as resp:
            assert resp.status == 404 and (await resp.json())["errorCode"] == "TOKEN_NOT_FOUND"
        async with env.http.post(
            "/control/fund", json={"address": wallet, "amount": "0.000001", "token": "BONK"}
        ) as resp:
            assert resp.status == 400 and (await resp.json())["errorCode"] == "INVALID_AMOUNT"
        async with env.http.post("/control/fund", json={"address": "nope", "amount": 1}) as resp:
            assert resp.status == 400


async def test_altered_quote_is_refused() -> None:
    """A quoteResponse whose outAmount was inflated (with a huge slippage to pass the check)
    is refused with INVALID_QUOTE instead of paying the inflated amount out of the pool."""
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        quote = await get_quote(env, WSOL, env.mint("BONK"), SOL, slippageBps=50)
        forged = quote | {
            "outAmount": str(int(quote["outAmount"]) * 1000),
            "slippageBps": 9_999,
            "otherAmountThreshold": "1",
        }
        status, answer = await post_swap(env, forged, wallet.pubkey())
        assert status == 400 and answer["errorCode"] == "INVALID_QUOTE"
        status, _ = await post_swap(env, quote, wallet.pubkey())
        assert status == 200
