"""Executing Solana programs in LiteSVM leaves the calling thread's x87/MMX register state
dirty (solders 0.29: its program runtime uses MMX registers and never runs ``EMMS``). In that
thread every later ``long double`` computation yields NaN — Ray's core worker, sizing a hash
table with ``long double``, then aborts the whole process with ``std::bad_alloc`` (a CI run
of the suite died this way after the in-process ``live_swap`` benchmark smoke). The sandbox
ledger runs program execution on a thread of its own, so the threads that host it stay
sound: checked here on the thread that drove a swap end to end."""

from __future__ import annotations

import numpy as np

from tests.unit.sandbox_support import SOL, get_quote, post_swap, sandbox_env, wallet_sign
from tests.unit.test_sandbox_jupiter import WSOL, funded_wallet, land


def _long_double_sound() -> bool:
    """``long double`` arithmetic (the x87 unit) on this thread gives exact answers."""
    eleven = np.longdouble(11) / np.longdouble(1.0) * np.longdouble(3)
    return bool(np.isfinite(eleven) and eleven == np.longdouble(33))


async def test_long_double_arithmetic_survives_a_swap_on_this_thread() -> None:
    assert _long_double_sound()
    async with sandbox_env() as env:
        wallet = await funded_wallet(env)
        quote = await get_quote(env, WSOL, env.mint("BONK"), SOL, slippageBps=50)
        status, swap = await post_swap(env, quote, wallet.pubkey())  # simulates the swap
        assert status == 200 and swap["simulationError"] is None, swap
        await land(env, wallet_sign(swap["swapTransaction"], wallet))  # executes it
        assert _long_double_sound()
