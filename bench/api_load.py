"""api_load: GET throughput under concurrent load, and WebSocket fan-out to many clients.

Both load generators run in a second process, so the API process (this one)
only serves.

1. ``GET /api/v1/positions?agent=ID`` (an agent with a few open positions; the
   handler reads the positions read model in PostgreSQL) from ``wrk`` when it
   is installed (``apt-get install wrk``), else from
   ``python -m bench.loadgen http``; ``connections`` keep-alive connections for
   ``duration`` seconds. Reported: successful requests/s and latency.
2. ``clients`` WebSocket clients (``python -m bench.loadgen ws``) subscribe to
   the bench's tokens; then ``rate`` price batches per second for ``duration``
   seconds are published on the API's Redis price channel (``valux:prices``,
   the channel the feeds publish to, as :func:`valux.api.ws.channel` names it;
   published directly because a feed throttles its own publishing to 10
   batches/s with jitter), each carrying a sequence number and its send time.
   Every client counts the batches it received; a client that is missing any,
   or that the server closed for being slow (1008), fell behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from bench.common import BenchEnv, Benchmark, BenchResult, Row, Target, valux_system
from valux.api.ws import channel

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles and errors from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.MULTILINE):
        latency[f"p{pct}"] = _duration_ms(value)
    stats = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output)
    if stats:
        latency["max"] = _duration_ms(stats.group(1))
    total = re.search(r"(\d+) requests in", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", output)
    bad = int(non2xx.group(1)) if non2xx else 0
    if errors:
        bad += sum(int(errors.group(i)) for i in range(1, 5))
    if total:
        latency["n"] = float(total.group(1))
    return {"rps": rps * (1 - bad / max(1.0, latency.get("n", 1.0))), "latency_ms": latency,
            "errors": bad}  # fmt: skip


async def _http_load(
    url: str, connections: int, duration: float, api_key: str
) -> tuple[str, dict[str, Any]]:
    wrk = shutil.which("wrk")
    if wrk:
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
               "-H", f"X-API-Key: {api_key}", url]  # fmt: skip
        tool = "wrk"
    else:
        cmd = [sys.executable, "-m", "bench.loadgen", "http", url,
               "--connections", str(connections), "--duration", str(duration)]  # fmt: skip
        tool = "bench.loadgen (aiohttp)"
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VALUX_API_KEY": api_key},
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed: {err.decode()[-500:]}")
    text = out.decode()
    return tool, parse_wrk(text) if wrk else json.loads(text.strip().splitlines()[-1])


async def _ws_fanout(
    env: BenchEnv, url: str, clients: int, rate: float, duration: float, api_key: str
) -> dict[str, Any]:
    tokens = [f"WS{i}{uuid.uuid4().hex[:5].upper()}" for i in range(3)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", "ws", url, "--clients", str(clients),
        "--tokens", ",".join(tokens),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "VALUX_API_KEY": api_key},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"READY":
            raise RuntimeError(f"WebSocket clients did not start: {line!r}")
        await asyncio.sleep(0.5)  # the hub's subscription is long settled; let sockets idle
        redis = aioredis.Redis.from_url(env.redis_url)
        batches = round(rate * duration)
        late = 0
        try:
            start = time.perf_counter() + 0.05
            for k in range(batches):
                delay = start + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late += 1
                now = time.time()
                body = {"type": "prices", "source": "bench", "seq": k, "sent": now,
                        "ticks": [{"token": t, "price": 1.0 + k / 1000, "ts": now}
                                  for t in tokens]}  # fmt: skip
                await redis.publish(channel("prices"), json.dumps(body))
        finally:
            await redis.aclose()
        await asyncio.sleep(1.0)  # in-flight deliveries
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        out = await asyncio.wait_for(proc.stdout.readline(), 120)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    report: dict[str, Any] = json.loads(out)
    report["published"] = batches
    report["publisher_late"] = late
    return report


async def run(
    env: BenchEnv,
    result: BenchResult,
    *,
    duration: float,
    connections: int = 32,
    clients: int,
    rate: float = 10.0,
) -> None:
    async with valux_system(env, "api") as system:
        tokens = [f"AL{i}{uuid.uuid4().hex[:4].upper()}" for i in range(5)]
        await system.ticks([(t, 1.0) for t in tokens])
        (agent_id,) = await system.create_agents(1, balance="100")
        for token in tokens:
            body = {"id": f"al-{uuid.uuid4().hex}", "token": token, "strength": 5,
                    "type": "buy", "size": "1", "agents": [agent_id]}  # fmt: skip
            await system.request("POST", "/api/v1/signals", body, expect=201)
        url = f"{system.base}/api/v1/positions?agent={agent_id}"
        positions = await system.request("GET", f"/api/v1/positions?agent={agent_id}")
        tool, http = await _http_load(url, connections, duration, system.api_key)
        ws = await _ws_fanout(env, f"{system.base}/ws", clients, rate, duration, system.api_key)
    result.add(Row(f"GET an agent's positions ({connections} connections, {tool})", "req/s",
                   value=float(http["rps"]), targets=[Target("value", ">=", 1500.0)]))  # fmt: skip
    result.add(Row("  GET latency under that load", "ms", stats=http["latency_ms"]))
    behind = sum(1 for n in ws.pop("distinct_per_client") if n < ws["published"])
    dropped = sum(ws["closed_by_server"].values())
    result.add(Row(f"WebSocket: clients that fell behind ({clients:,} clients, {rate:g} batches/s)",
                   "clients", value=float(max(behind, dropped)),
                   targets=[Target("value", "<=", 0.0)]))  # fmt: skip
    result.add(Row(f"  batches received per client (min; {ws['published']} published)", "",
                   value=float(ws["messages_min"])))  # fmt: skip
    result.add(Row("  delivery latency (publish → client)", "ms", stats=ws["latency_ms"]))
    result.details["http"] = http
    result.details["ws"] = ws
    if http.get("errors"):
        result.notes.append(f"{http['errors']} GET requests failed or were not 200.")
    result.notes.append(
        f"GET returned {len(positions)} positions per request; {duration:g} s of load each; "
        "WebSocket clients in one second process; server closes: "
        f"{ws['closed_by_server'] or 'none'}."
    )


SPEC = Benchmark(
    name="api_load",
    title="API GET throughput and WebSocket fan-out",
    needs_ray=True,
    quick={"duration": 2.0, "clients": 50},
    full={"duration": 10.0, "clients": 1000},
    run=run,
)
