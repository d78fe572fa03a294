"""The Jupiter Swap API client against the sandbox's Jupiter-shaped service, with a
recording proxy in front of it that can answer 5xx/429 or stall to test retries."""

from __future__ import annotations

import asyncio
import pickle

import aiohttp
import pytest
from aiohttp import web

from tests.unit.jupiter_support import Call, SleepLog, jupiter_env
from valux.venues.base import OrderRejected, VenueUnavailable
from valux.venues.jupiter import (
    WSOL_MINT,
    JupiterClient,
    JupiterRejected,
    JupiterUnavailable,
    NotExecutable,
    ResignRefused,
    SignatureMissing,
    SignerMismatch,
    SlippageExceeded,
    should_retry,
)


async def test_quote_and_swap_parse_and_send_what_jupiter_expects() -> None:
    """A quote comes back parsed (integer amounts, price impact as a fraction) with its raw
    JSON; /swap receives that JSON verbatim with the API key, wrapAndUnwrapSol, a dynamic
    compute-unit limit and a capped priority fee, and answers a v0 transaction."""
    async with jupiter_env() as env:
        client = env.jupiter()
        bonk = env.mint("BONK")
        quote = await client.quote(
            input_mint=WSOL_MINT, output_mint=bonk, amount=10**9, slippage_bps=75
        )
        assert quote.in_amount == 10**9 and quote.out_amount > 0
        assert quote.slippage_bps == 75
        assert quote.other_amount_threshold == quote.out_amount * 9_925 // 10_000
        assert 0 < quote.price_impact < 1
        swap = await client.swap(
            user_public_key=str((await env.wallet()).pubkey()),
            quote=quote,
            max_priority_fee_lamports=5_000,
            priority_level="high",
        )
        assert swap.last_valid_block_height > 0 and swap.swap_transaction
        assert swap.prioritization_fee_lamports <= 5_000
        assert swap.compute_unit_limit < 1_400_000  # the dynamic limit was applied
        get, post = env.jup_proxy.calls[-2:]
        assert post.body["quoteResponse"] == quote.raw
        assert post.body["wrapAndUnwrapSol"] is True
        assert post.body["dynamicComputeUnitLimit"] is True
        assert post.body["prioritizationFeeLamports"] == {
            "priorityLevelWithMaxLamports": {"maxLamports": 5_000, "priorityLevel": "high"}
        }
        assert "slippageBps=75" in get.path
        assert client.requests == 2


async def test_a_missing_api_key_is_a_rejection_not_retried() -> None:
    """Without the x-api-key header the service answers 401: a JupiterRejected (an
    OrderRejected) after exactly one request; the key never shows in the client's repr."""
    async with jupiter_env() as env:
        anonymous = env.jupiter(api_key=None)
        with pytest.raises(JupiterRejected) as refused:
            await anonymous.quote(
                input_mint=WSOL_MINT, output_mint=env.mint("WIF"), amount=1000, slippage_bps=50
            )
        assert refused.value.status == 401 and refused.value.error_code == "UNAUTHORIZED"
        assert not should_retry(refused.value) and anonymous.requests == 1
        keyed = env.jupiter()
        assert env.api_key is not None and env.api_key not in repr(keyed)


async def test_no_route_and_untradable_tokens_are_rejected_with_jupiters_code() -> None:
    """A token → token pair has no route (COULD_NOT_FIND_ANY_ROUTE); an unknown mint is
    TOKEN_NOT_TRADABLE; both are OrderRejected, one request each."""
    async with jupiter_env() as env:
        client = env.jupiter()
        with pytest.raises(JupiterRejected) as no_route:
            await client.quote(
                input_mint=env.mint("BONK"),
                output_mint=env.mint("WIF"),
                amount=1000,
                slippage_bps=50,
            )
        assert no_route.value.error_code == "COULD_NOT_FIND_ANY_ROUTE"
        with pytest.raises(OrderRejected) as unknown:
            await client.quote(
                input_mint=WSOL_MINT,
                output_mint="9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
                amount=1000,
                slippage_bps=50,
            )
        assert isinstance(unknown.value, JupiterRejected)
        assert unknown.value.error_code == "TOKEN_NOT_TRADABLE"
        assert client.requests == 2


async def test_a_moved_pool_refuses_the_swap_for_slippage() -> None:
    """The pool moves between /quote and /swap beyond slippageBps: SlippageExceeded, a
    rejection that retrying the same quote cannot fix."""
    async with jupiter_env() as env:
        client = env.jupiter()
        quote = await client.quote(
            input_mint=WSOL_MINT, output_mint=env.mint("BONK"), amount=10**9, slippage_bps=10
        )
        await env.set_price("BONK", "0.00003")
        with pytest.raises(SlippageExceeded) as refused:
            await client.swap(
                user_public_key=str((await env.wallet()).pubkey()),
                quote=quote,
                max_priority_fee_lamports=10_000,
            )
        assert refused.value.error_code == "SLIPPAGE_TOLERANCE_EXCEEDED"
        assert not should_retry(refused.value)


async def test_server_errors_are_retried_with_backoff_then_unavailable() -> None:
    """A service that keeps answering 500 is asked max_attempts times, with exponential
    waits between, then raises JupiterUnavailable (retryable); two 502s followed by a
    good answer succeed."""
    async with jupiter_env() as env:
        failures = {"left": 100}

        async def broken(call: Call) -> web.Response | None:
            if failures["left"] > 0:
                failures["left"] -= 1
                return web.json_response({"error": "boom"}, status=500)
            return None

        env.jup_proxy.hooks.append(broken)
        waits = SleepLog()
        client = env.jupiter(sleep=waits, max_attempts=3)
        with pytest.raises(JupiterUnavailable) as down:
            await client.quote(
                input_mint=WSOL_MINT, output_mint=env.mint("BONK"), amount=1000, slippage_bps=50
            )
        assert down.value.status == 500 and should_retry(down.value)
        assert isinstance(down.value, VenueUnavailable)
        assert client.requests == 3 and waits.waits == [0.25, 0.5]

        failures["left"] = 2
        healed = env.jupiter(sleep=SleepLog())
        quote = await healed.quote(
            input_mint=WSOL_MINT, output_mint=env.mint("BONK"), amount=1000, slippage_bps=50
        )
        assert quote.out_amount > 0 and healed.requests == 3


async def test_rate_limits_wait_at_least_retry_after() -> None:
    """A 429 with Retry-After: 7 makes the next attempt wait 7 s (longer than the backoff);
    one without the header waits the backoff."""
    async with jupiter_env() as env:
        answers = [
            web.json_response({"error": "slow"}, status=429, headers={"Retry-After": "7"}),
            web.json_response({"error": "slow"}, status=429),
        ]

        async def limited(call: Call) -> web.Response | None:
            return answers.pop(0) if answers else None

        env.jup_proxy.hooks.append(limited)
        waits = SleepLog()
        client = env.jupiter(sleep=waits)
        await client.quote(
            input_mint=WSOL_MINT, output_mint=env.mint("WIF"), amount=10**6, slippage_bps=50
        )
        assert waits.waits == [7.0, 0.5]


async def test_connection_errors_timeouts_and_garbage_are_unavailable() -> None:
    """A closed port, a service slower than the timeout and a 200 whose body is not JSON
    all raise JupiterUnavailable after the retries; should_retry says yes to each."""
    async with jupiter_env() as env:
        closed = JupiterClient("http://127.0.0.1:9", sleep=SleepLog(), max_attempts=2)
        with pytest.raises(JupiterUnavailable) as refused:
            await closed.quote(
                input_mint=WSOL_MINT, output_mint=env.mint("WIF"), amount=1, slippage_bps=1
            )
        await closed.close()
        assert refused.value.status == 0 and closed.requests == 2

        async def stall(call: Call) -> web.Response | None:
            await asyncio.sleep(0.5)
            return None

        env.jup_proxy.hooks.append(stall)
        slow = env.jupiter(timeout_s=0.05, max_attempts=1)
        with pytest.raises(JupiterUnavailable):
            await slow.quote(
                input_mint=WSOL_MINT, output_mint=env.mint("WIF"), amount=1, slippage_bps=1
            )
        env.jup_proxy.hooks.clear()

        async def garbage(call: Call) -> web.Response | None:
            return web.Response(text="<html>ok</html>", status=200)

        env.jup_proxy.hooks.append(garbage)
        confused = env.jupiter(max_attempts=1)
        with pytest.raises(JupiterUnavailable, match="not JSON"):
            await confused.quote(
                input_mint=WSOL_MINT, output_mint=env.mint("WIF"), amount=1, slippage_bps=1
            )
        for exc in (TimeoutError(), ConnectionResetError(), aiohttp.ClientPayloadError()):
            assert should_retry(exc)
        assert not should_retry(ValueError("bug"))


def test_errors_pickle_with_every_field() -> None:
    """The venue's errors cross Ray: each pickles back with its message, venue, status,
    Jupiter error code and Retry-After."""
    for error in (
        JupiterUnavailable("down", "jupiter", 429, 3.0),
        JupiterRejected("no", "jupiter", "TOKEN_NOT_TRADABLE", 400),
        SlippageExceeded("moved", "jupiter", "SLIPPAGE_TOLERANCE_EXCEEDED", 400),
        NotExecutable("poor", "jupiter"),
        SignatureMissing("unsigned", "jupiter"),
        ResignRefused("in flight", "jupiter"),
        SignerMismatch("other key", "jupiter"),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and back.message == error.message
        assert vars(back) == vars(error)


def test_bad_client_settings_are_refused() -> None:
    """A base URL that is not http(s), an empty API key, a non-positive timeout or no
    attempts are refused at construction."""
    for kwargs in (
        {"base_url": "ftp://x"},
        {"api_key": ""},
        {"timeout_s": 0},
        {"max_attempts": 0},
    ):
        with pytest.raises(ValueError):
            JupiterClient(**kwargs)  # type: ignore[arg-type]


async def test_a_client_for_the_sandbox_reads_its_manifest() -> None:
    """JupiterClient.for_sandbox takes the service URL and API key from sandbox.json's
    keys and quotes against it."""
    async with jupiter_env() as env:
        manifest = env.sandbox.sandbox.manifest()
        async with JupiterClient.for_sandbox(manifest) as client:
            quote = await client.quote(
                input_mint=manifest["sol_mint"],
                output_mint=manifest["tokens"]["WIF"],
                amount=10**8,
                slippage_bps=50,
            )
        assert quote.out_amount > 0 and client.base_url == manifest["jupiter_url"]
