"""Load generators run as a second process by :mod:`bench.api_load` (stdout: one JSON line).

``python -m bench.loadgen http URL --connections C --duration S``
    C keep-alive connections, each issuing GET ``URL`` back to back for S
    seconds (the fallback when ``wrk`` is not installed).

Both send ``X-API-Key: $VALUX_API_KEY`` when it is set (the benchmark's admin key).

``python -m bench.loadgen ws URL --clients N --tokens A,B``
    N WebSocket clients subscribe to the tokens, print ``READY`` once all are
    subscribed, then count ``prices`` messages (by their ``seq``) until a line
    arrives on stdin; then report per-client counts, gaps, server closes and
    delivery latency (``sent`` field → receipt, same machine clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp


def _summary(values: list[float]) -> dict[str, float]:
    data = sorted(values)
    if not data:
        return {"n": 0}

    def pick(q: float) -> float:
        return data[min(len(data) - 1, max(0, int(q * len(data) + 0.999999) - 1))]

    return {"n": len(data), "p50": pick(0.5), "p99": pick(0.99), "max": data[-1]}


def _auth() -> dict[str, str]:
    """The API key the benchmark made (``VALUX_API_KEY``), as a request header."""
    key = os.environ.get("VALUX_API_KEY")
    return {"X-API-Key": key} if key else {}


async def http_load(url: str, connections: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + duration

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), headers=_auth()
    ) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    ok = statuses.get(200, 0)
    return {
        "requests": len(latencies),
        "ok": ok,
        "errors": errors + sum(v for k, v in statuses.items() if k != 200),
        "elapsed_s": elapsed,
        "rps": ok / elapsed,
        "latency_ms": _summary(latencies),
    }


async def ws_clients(url: str, clients: int, tokens: list[str]) -> dict[str, Any]:
    counts = [0] * clients
    seqs: list[set[int]] = [set() for _ in range(clients)]
    closed_by_server: dict[int, int] = {}
    latencies: list[float] = []
    stop = asyncio.Event()
    subscribed = 0
    all_subscribed = asyncio.Event()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), headers=_auth()
    ) as session:
        connect_gate = asyncio.Semaphore(100)

        async def client(i: int) -> None:
            nonlocal subscribed
            async with connect_gate:
                ws = await session.ws_connect(url, heartbeat=None)
                await ws.send_json({"op": "subscribe", "tokens": tokens, "types": ["prices"]})
                ack = await ws.receive_json(timeout=30)
                if ack.get("type") != "subscribed":
                    raise RuntimeError(f"client {i}: {ack}")
            subscribed += 1
            if subscribed == clients:
                all_subscribed.set()
            receiver = asyncio.create_task(ws.receive())
            stopper = asyncio.create_task(stop.wait())
            try:
                while True:
                    done, _ = await asyncio.wait(
                        {receiver, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if stopper in done:
                        break
                    msg = receiver.result()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        now = time.time()
                        body = json.loads(msg.data)
                        if body.get("type") == "prices" and "seq" in body:
                            counts[i] += 1
                            seqs[i].add(int(body["seq"]))
                            latencies.append((now - float(body["sent"])) * 1000)
                        receiver = asyncio.create_task(ws.receive())
                    else:  # closed by the server (1008: too slow) or an error
                        code = ws.close_code or 0
                        closed_by_server[code] = closed_by_server.get(code, 0) + 1
                        break
            finally:
                receiver.cancel()
                stopper.cancel()
                await ws.close()

        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        waiter = asyncio.create_task(all_subscribed.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"a client failed to subscribe: {failed[0].exception()}")
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    distinct = [len(s) for s in seqs]
    return {
        "clients": clients,
        "messages_min": min(counts),
        "messages_max": max(counts),
        "messages_total": sum(counts),
        "distinct_seq_min": min(distinct),
        "distinct_per_client": distinct,
        "closed_by_server": closed_by_server,
        "latency_ms": _summary(latencies),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("mode", choices=("http", "ws"))
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--tokens", default="")
    args = parser.parse_args(argv)
    if args.mode == "http":
        out = asyncio.run(http_load(args.url, args.connections, args.duration))
    else:
        out = asyncio.run(ws_clients(args.url, args.clients, args.tokens.split(",")))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
