"""``python -m valux.sandbox``: run the Solana sandbox on loopback until SIGTERM or Ctrl-C.

Prints the manifest (JSON, one object) on stdout once everything listens, writes it to
``<data-dir>/sandbox.json``, and removes it again on a clean stop. Exit status 0 after a
signal-initiated stop, 2 for bad arguments.

Example — point a shell at the sandbox::

    python -m valux.sandbox --data-dir /tmp/sbx &
    eval "$(python -c 'import json; e=json.load(open("/tmp/sbx/sandbox.json"))["env"];
    print("\\n".join(f"export {k}={v}" for k, v in e.items()))')"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from valux.sandbox.runtime import DEFAULT_DATA_DIR, Sandbox, SandboxConfig

__all__ = ["main", "parse_args"]


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value.is_finite() and value > 0):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="valux sandbox",
        description="Local stand-in for Solana mainnet, Jupiter and the price APIs.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where sandbox.json is written (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of keys, drops and skips")
    parser.add_argument(
        "--slot-ms", type=float, default=400.0, help="milliseconds per slot (default 400)"
    )
    parser.add_argument(
        "--landing-delay", type=int, default=0, help="slots before a sent transaction lands"
    )
    parser.add_argument(
        "--drop-rate", type=float, default=0.0, help="probability a sent transaction is dropped"
    )
    parser.add_argument("--rpc-port", type=int, default=0, help="Solana RPC port (0 = free)")
    parser.add_argument("--port", type=int, default=0, help="Jupiter/price/control port")
    parser.add_argument("--sol-usd", type=_decimal, default=Decimal(150), help="SOL price")
    parser.add_argument("--api-key", help="Jupiter x-api-key (default: derived from the seed)")
    parser.add_argument(
        "--no-api-key", action="store_true", help="serve the Jupiter API without a key"
    )
    parser.add_argument(
        "--no-evm",
        action="store_true",
        help="run the Solana side only (no anvil; the EVM side needs node and npm)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> SandboxConfig:
    """The :class:`SandboxConfig` the command line asks for (exits 2 on bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return SandboxConfig(
            data_dir=args.data_dir.expanduser(),
            seed=args.seed,
            slot_ms=args.slot_ms,
            landing_delay_slots=args.landing_delay,
            drop_rate=args.drop_rate,
            rpc_port=args.rpc_port,
            service_port=args.port,
            sol_usd=args.sol_usd,
            api_key=args.api_key,
            require_api_key=not args.no_api_key,
            evm=not args.no_evm,
        )
    except ValueError as exc:
        parser.error(str(exc))


async def _serve(config: SandboxConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Sandbox(config) as sandbox:
            print(json.dumps(sandbox.manifest(), indent=2), flush=True)
            print(f"valux sandbox ready; manifest at {sandbox.manifest_path}", file=sys.stderr)
            await stop.wait()
            print("valux sandbox stopping", file=sys.stderr, flush=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until SIGTERM/SIGINT; return the exit status."""
    config = parse_args(argv)
    try:
        asyncio.run(_serve(config))
    except OSError as exc:  # a configured port in use, an unwritable data dir
        print(f"valux sandbox: {exc}", file=sys.stderr)
        return 1
    return 0
