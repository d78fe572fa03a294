"""The short chaos run (``python -m bench.chaos --minutes 1``) as part of the suite.

It runs as its own process, attached to the session's Ray instance, with its own namespace
and a fresh database; it SIGKILLs agent hosts, wallet hosts, evaluators, feeds, supervisors
and its API process under load, then checks from PostgreSQL and the actors that nothing
acknowledged was lost, nothing was filled twice, every balance is exact and every open
position is armed. Its exit code and final line are the verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_chaos_one_minute_loses_nothing(server_urls: tuple[str, str], redis_url: str,
                                        ray_session: str) -> None:  # fmt: skip
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "DATABASE_URL": server_urls[0],
        "REDIS_URL": redis_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "1", "--agents", "12"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    verdict = [line for line in done.stdout.splitlines() if line.startswith("chaos: lost=")]
    report = "\n".join(done.stdout.splitlines()[-40:]) + "\n" + done.stderr[-3000:]
    assert verdict == ["chaos: lost=0 duplicates=0 mismatches=0 unarmed=0"], report
    assert done.returncode == 0, report
    assert "| kills: total" in done.stdout and "| recovered / not recovered" in done.stdout
