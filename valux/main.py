"""``python -m valux.main`` / ``valux``: start or attach to valux and serve the API.

Commands:
    valux [run]   connect to Ray, PostgreSQL and Redis; apply migrations; attach to the
                  running actor system or start it; serve the HTTP API until Ctrl-C/SIGTERM.
    valux stop    orderly shutdown of a running system (no new entries, final snapshots,
                  actors exit).
    valux status  print the supervision tree of a running system.

Shutdown rule (one rule, documented in the README): when this process started
its own local Ray instance, the trading actors stop with it after a final
snapshot; when it attached to a cluster, they keep protecting positions and
``valux stop`` shuts them down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from valux.errors import ConfigurationError, PortInUseError, ValuxError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valux", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=("run", "stop", "status"))
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument(
        "--address", help="Ray cluster address (else RAY_ADDRESS, `ray start`, local)"
    )
    parser.add_argument("--host", help="API bind host (api.host)")
    parser.add_argument("--port", type=int, help="API port (api.port); 0 picks a free port")
    parser.add_argument("--data-dir", type=Path, help="where embedded servers keep data")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from valux.config.settings import FromFlag

    flags = {
        "ray.address": ("--address", args.address),
        "api.host": ("--host", args.host),
        "api.port": ("--port", args.port),
        "data_dir": ("--data-dir", args.data_dir),
        "logging.level": ("--log-level", args.log_level),
    }
    return {k: FromFlag(v, flag) for k, (flag, v) in flags.items() if v is not None}


def say(message: str) -> None:
    """Operator-facing progress lines go to stderr; logs are JSON on stdout."""
    print(f"valux: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        from valux.config.settings import load_settings

        settings = load_settings(config_file=args.config, overrides=_overrides(args))
        if args.command == "run":
            code = asyncio.run(_run(settings))
        elif args.command == "stop":
            code = asyncio.run(_stop(settings))
        else:
            code = asyncio.run(_status(settings))
    except (ConfigurationError, PortInUseError) as exc:
        say(f"error: {exc.message}")
        code = 2
    except ValuxError as exc:
        say(f"error: {exc.message}")
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


async def _run(settings: Any) -> int:
    from valux.system.runtime import Runtime

    runtime = Runtime(settings, say=say)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handle_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    handle_signals()
    await runtime.start()  # a signal during start-up is honoured right after it
    handle_signals()  # ray.init installs its own SIGTERM handler; ours must win
    say(f"API listening on http://{settings.api.host}:{runtime.port}")  # only now: signals are ours
    await stop.wait()
    say("stopping (signal received)")
    await runtime.stop()
    return 0


async def _stop(settings: Any) -> int:
    from valux.system.runtime import stop_cluster

    report = await stop_cluster(settings, say=say)
    print(json.dumps(report, indent=2, default=str))
    return 0


async def _status(settings: Any) -> int:
    from valux.system.runtime import cluster_status

    started = time.perf_counter()
    tree = await cluster_status(settings)
    print(json.dumps(tree, indent=2, default=str))
    with suppress(Exception):
        say(f"status in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    main()
