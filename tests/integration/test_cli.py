"""The ``valux`` command as a user runs it: clear errors, graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import ray

from tests.integration.conftest import fresh_database

PYTHON = sys.executable


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALUX_")}
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def test_invalid_configuration_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    """Bad values from the environment and an unknown key in the config file stop start-up
    with exit code 2 and one message naming each key and where it came from."""
    config = tmp_path / "valux.toml"
    config.write_text("[api]\nport = 8080\nbogus = 1\n")
    result = subprocess.run(
        [PYTHON, "-m", "valux.main", "--config", str(config)],
        env=_env(VALUX_API__PORT="not-a-port", VALUX_HOSTING__EVALUATORS="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "api.port" in result.stderr and "VALUX_API__PORT" in result.stderr
    assert "hosting.evaluators" in result.stderr
    assert "api.bogus" in result.stderr


def test_port_in_use_is_one_line_naming_port_owner_and_setting(tmp_path: Path) -> None:
    """With the API port taken, start-up stops at once with exit code 2 and a single line
    naming the port, what wanted it and the setting that moves it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [PYTHON, "-m", "valux.main", "--port", str(port), "--data-dir", str(tmp_path)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 20
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"port {port}" in lines[0]
    assert "HTTP API" in lines[0]
    assert "api.port" in lines[0] and "VALUX_API__PORT" in lines[0]
    assert "Traceback" not in result.stderr


def test_sigterm_drains_the_api_and_leaves_cluster_actors_running(
    server_urls: tuple[str, str], redis_url: str, ray_session: str
) -> None:
    """Attached to a running Ray cluster, `python -m valux.main` serves, and on SIGTERM drains
    and exits 0 within the bounded time while the trading actors keep running; `valux stop`
    then shuts the system down in order."""
    namespace = f"{ray_session}-cli-{uuid.uuid4().hex[:4]}"
    address = ray.get_runtime_context().gcs_address
    with fresh_database(server_urls[0]) as database_url:
        env = _env(
            RAY_ADDRESS=address,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            VALUX_RAY__NAMESPACE=namespace,
            VALUX_HOSTING__EVALUATORS="1",
            VALUX_FEEDS__SIMULATED__INTERVAL_MS="100",
            VALUX_LOGGING__LEVEL="warning",
        )
        proc = subprocess.Popen(
            [PYTHON, "-m", "valux.main", "--port", "0"],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "API listening on" in line:
                break
        assert any("API listening on" in line for line in lines), lines
        assert any("Ray cluster at" in line for line in lines), lines
        assert any("database: PostgreSQL from DATABASE_URL" in line for line in lines), lines
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, out
        assert "trading actors keep running" in out
        names = {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace
        }
        assert "valux-root" in names and "valux-evaluator-0" in names
        stop = subprocess.run(
            [PYTHON, "-m", "valux.main", "stop"], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert stop.returncode == 0, stop.stderr
        assert "actor system stopped" in stop.stderr
        left = [
            a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace
        ]  # fmt: skip
        assert left == []
