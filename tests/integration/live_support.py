"""What the live-trading integration tests share: ``valux sandbox`` as its own process,
a valux system of their own (namespace, database) on the session's Ray, and the
sandbox's control endpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.conftest import fresh_database, make_settings
from tests.integration.test_restart import kill_namespace
from valux.system.runtime import Runtime


@contextmanager
def sandbox_process(data_dir: Path, *args: str, within: float = 300.0) -> Iterator[dict[str, Any]]:
    """``valux sandbox --data-dir DATA_DIR ARGS`` until the block ends; yields its
    manifest (the first start may install anvil from npm: up to ``within`` seconds)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "valux.main", "sandbox", "--data-dir", str(data_dir), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    manifest_path = data_dir / "sandbox.json"
    deadline = time.monotonic() + within
    while not manifest_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"sandbox did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.1)
    try:
        yield json.loads(manifest_path.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@asynccontextmanager
async def own_system(
    server_urls: tuple[str, str],
    redis_url: str,
    data_dir: Path,
    ray_session: str,
    label: str,
    **overrides: Any,
) -> AsyncIterator[Runtime]:
    """A valux system in a namespace and database of its own, torn down afterwards."""
    namespace = f"{ray_session}-{label}-{uuid.uuid4().hex[:4]}"
    with fresh_database(server_urls[0]) as database_url:
        runtime = Runtime(make_settings(data_dir, database_url, redis_url, namespace, **overrides))
        await runtime.start()
        try:
            yield runtime
        finally:
            kill_namespace(namespace)
            await runtime.runner.cleanup()  # type: ignore[union-attr]
            await runtime.pool.close()  # type: ignore[union-attr]


async def control(sandbox: dict[str, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the sandbox's control endpoints; fail the test on an error answer."""
    url = f"{sandbox['control_url']}/{path}"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer
