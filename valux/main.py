"""``python -m valux.main`` / ``valux``: start or attach to valux and serve the API.

Commands:
    valux [run]   connect to Ray, PostgreSQL and Redis; apply migrations; attach to the
                  running actor system or start it; serve the HTTP API until Ctrl-C/SIGTERM.
                  At the first start (no admin can log in yet) it creates the admin
                  ``auth.admin_email`` and prints its one-time password.
    valux stop    orderly shutdown of a running system (no new entries, final snapshots,
                  actors exit).
    valux status  print the supervision tree of a running system.
    valux user create EMAIL [--admin]
                  create a user with a password read from stdin (a terminal asks twice);
                  same settings and flags as ``valux`` (--config, --data-dir, DATABASE_URL).

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
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "stop", "status", "user", "sandbox"),
        help="run (default), stop, status, user create EMAIL, sandbox (see valux sandbox -h)",
    )
    parser.add_argument("args", nargs="*", help="for `user`: create EMAIL")
    parser.add_argument("--admin", action="store_true", help="`user create`: make an admin")
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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:  # `valux sandbox`: the local chain and APIs (valux.sandbox)
        from valux.sandbox.cli import main as sandbox_main

        sys.exit(sandbox_main(argv[1:]))
    args = _parser().parse_args(argv)
    try:
        from valux.config.settings import load_settings

        settings = load_settings(config_file=args.config, overrides=_overrides(args))
        if args.command != "user" and args.args:
            _parser().error(f"unexpected arguments: {' '.join(args.args)}")
        if args.command == "run":
            code = asyncio.run(_run(settings))
        elif args.command == "user":
            code = _user(settings, args.args, admin=args.admin)
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
    _print_bootstrap_admin(runtime)
    say(f"API listening on http://{settings.api.host}:{runtime.port}")  # only now: signals are ours
    await stop.wait()
    say("stopping (signal received)")
    await runtime.stop()
    return 0


def _print_bootstrap_admin(runtime: Any) -> None:
    """The first start created the admin: print its password, this once (never logged)."""
    from valux.api.app import bootstrap_credentials

    if runtime.runner is None:
        return
    creds = bootstrap_credentials(runtime.runner.app)
    if creds is None:
        return
    email, password = creds
    say(f"created the admin {email}; its one-time password is: {password}")
    say(
        "  (shown only now: log in with POST /api/v1/auth/login, then change it with "
        "POST /api/v1/auth/password; `valux user create EMAIL --admin` makes more admins)"
    )


_USAGE = "usage: valux user create EMAIL [--admin]   (the password is read from stdin)"


def _read_password() -> str:
    """The new password: asked twice on a terminal, else the first line of stdin."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != first:
            raise ConfigurationError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _user(settings: Any, args: list[str], *, admin: bool) -> int:
    if len(args) != 2 or args[0] != "create":
        say(_USAGE)
        return 2
    email = args[1]
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise ConfigurationError(f"{email!r} is not an e-mail address; {_USAGE}")
    password = _read_password()
    if not password:
        raise ConfigurationError(f"no password on stdin; {_USAGE}")
    return asyncio.run(_user_create(settings, email, password, admin=admin))


async def _user_create(settings: Any, email: str, password: str, *, admin: bool) -> int:
    from valux.api.users_pg import PgUserStore
    from valux.auth.audit import AuditEvent
    from valux.auth.passwords import Argon2Params, PasswordHasher, check_password_strength
    from valux.auth.tokens import Role
    from valux.system.runtime import prepare_database

    check_password_strength(password, user_inputs=[email])  # before touching the database
    _, pool = await prepare_database(settings, say)
    try:
        auth = settings.auth
        hasher = PasswordHasher(
            Argon2Params(
                time_cost=auth.password_time_cost,
                memory_kib=auth.password_memory_kib,
                parallelism=auth.password_parallelism,
            )
        )
        secret_hash = await asyncio.to_thread(hasher.hash, password)
        role = Role.ADMIN if admin else Role.USER
        store = PgUserStore(pool)
        user = await store.create_user(email=email, role=role, secret_hash=secret_hash)
        await store.audit(
            AuditEvent.USER_CREATED,
            user_id=user.id,
            detail={"method": "cli", "email": email, "role": role.value},
        )
    finally:
        await pool.close()
    say(f"user {email} created (id {user.id}, role {role.value})")
    return 0


async def _stop(settings: Any) -> int:
    from valux.system.runtime import stop_cluster

    report = await stop_cluster(settings, say=say)
    print(json.dumps(report, indent=2, default=str))
    return 1 if report.get("still_listed") else 0


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
