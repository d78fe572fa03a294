"""The short adversarial chaos run (``python -m bench.chaos --minutes 1``) in the suite.

It runs as its own process, attached to the session's Ray instance, with its own namespace
and a fresh database. Under load it SIGKILLs every kind of process (overlapping kills),
refuses and blackholes the database link, and runs the venue with latency, failures and
unknown outcomes; then checks custody, balances against the exchange's own accounts,
that nothing is pending, nothing was bought twice or lost, every open position is armed,
and no answer was a 5xx a client cannot act on. Its exit code and final line are the
verdict; :mod:`bench.chaos_checks` says what each check compares.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from bench.chaos_checks import CHECKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(960)
def test_chaos_one_minute_loses_nothing(server_urls: tuple[str, str], redis_url: str,
                                        ray_session: str) -> None:  # fmt: skip
    _chaos(server_urls, redis_url, ["--agents", "12"])


@pytest.mark.slow
@pytest.mark.timeout(960)
def test_chaos_on_the_sandbox_chain_loses_nothing(
    server_urls: tuple[str, str], redis_url: str, ray_session: str
) -> None:
    """The Jupiter mode: live agents on `valux sandbox` (a real SVM, 10 % of sends dropped,
    landing 2 slots late), their wallets unlocked again after each restart of their host,
    balances checked against the chain."""
    _chaos(server_urls, redis_url, ["--venue", "jupiter", "--agents", "6"])


def _chaos(server_urls: tuple[str, str], redis_url: str, args: list[str]) -> None:
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "DATABASE_URL": server_urls[0],
        "REDIS_URL": redis_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "1", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # 1 min of load, then recoveries (<= 180 s), readiness (<= 240 s), quiet
        check=False,
    )
    verdict = [line for line in done.stdout.splitlines() if line.startswith("chaos: lost=")]
    report = "\n".join(done.stdout.splitlines()[-40:]) + "\n" + done.stderr[-3000:]
    zero = " ".join(f"{check}=0" for check in CHECKS)
    assert verdict == [f"chaos: {zero}"], report
    assert done.returncode == 0, report
    assert "| kills: total" in done.stdout and "| recovered / not recovered" in done.stdout
    assert "| global HALT fan-out" in done.stdout
