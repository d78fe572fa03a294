"""Connecting to Ray: an explicit address, the cluster of ``ray start``, or a local instance.

The rules, in order:
1. ``ray.address`` / ``RAY_ADDRESS`` / ``--address`` given → connect there.
2. A cluster started with ``ray start`` on this machine (its address file under
   the Ray temp dir) → connect, unless the file is stale (nothing answers at
   that address): then say so and start a local instance instead.
3. Otherwise start a local instance (GCS on a free port; the dashboard on
   ``ray.dashboard_port``, checked before Ray starts), bound to loopback only: its GCS,
   raylet, object manager and workers listen on 127.0.0.1, so nothing else on the
   network can reach them (:func:`bind_to_loopback`). A cluster is ``ray start``'s.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray

from valux.config.settings import Settings
from valux.errors import ConfigurationError
from valux.ops.ports import ensure_port_free


@dataclass(frozen=True)
class RayConnection:
    mode: str  # "address" | "ray start" | "local"
    address: str
    description: str
    owns_cluster: bool  # True when valux started this Ray instance itself


def _cluster_address_file() -> Path:
    tmp = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    return Path(tmp) / "ray" / "ray_current_cluster"


def _answers(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def running_cluster_address() -> tuple[str | None, str | None]:
    """(address of a live ``ray start`` cluster, warning about a stale address file)."""
    path = _cluster_address_file()
    try:
        address = path.read_text().strip()
    except OSError:
        return None, None
    if not address:
        return None, None
    if _answers(address):
        return address, None
    return None, (
        f"found {path} naming a Ray cluster at {address}, but nothing answers there "
        "(a `ray start` that was killed leaves this file behind); ignoring it and starting "
        f"a local Ray instance — delete the file or run `ray stop --force` to silence this"
    )


def use_cluster_token() -> None:
    """Ray 2.60 clusters started with `ray start` require the auth token from ~/.ray/auth_token.

    A driver joining such a cluster must run in token mode; do what the operator would
    otherwise have to remember (``RAY_AUTH_MODE=token``) when a token exists and no mode
    was chosen explicitly.
    """
    if "RAY_AUTH_MODE" in os.environ or not (Path.home() / ".ray" / "auth_token").exists():
        return
    try:  # sets the mode *and* refreshes Ray's cached C++ config
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # a Ray without token auth: nothing to do
        return


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for single-machine mode: off, a node takes 127.0.0.1 as its address and
every Ray server binds to it (Ray's own default on macOS and Windows)."""


def bind_to_loopback() -> None:
    """Make the local Ray instance about to start listen on loopback only.

    Ray picks the node's address when it starts (it ignores ``_node_ip_address=127.0.0.1``
    on Linux and binds its gRPC servers to that address); in single-machine mode the
    address is loopback. The switch is read from the environment by the Ray processes
    this one starts (they inherit it) and, in this process, from a constant Ray set when
    it was imported, so both are set."""
    os.environ[LOOPBACK_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def connect(settings: Settings, *, log_to_driver: bool = False) -> tuple[RayConnection, list[str]]:
    """Connect this process to Ray; returns the connection and any warnings.

    Call it from the main thread: ``ray.init`` installs signal handlers only there.
    """
    warnings: list[str] = []
    namespace = settings.ray.namespace
    address = settings.ray.address
    if address:
        use_cluster_token()
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
        except ConnectionError as exc:
            raise ConfigurationError(
                f"cannot connect to the Ray cluster at {address} (ray.address / RAY_ADDRESS): {exc}"
            ) from None
        return RayConnection("address", address, f"Ray cluster at {address}", False), warnings
    existing, stale = running_cluster_address()
    if stale:
        warnings.append(stale)
    if existing:
        use_cluster_token()
        ray.init(address=existing, namespace=namespace, log_to_driver=log_to_driver)
        return (
            RayConnection(
                "ray start", existing, f"Ray cluster started with `ray start` at {existing}", False
            ),
            warnings,
        )
    dashboard_port = settings.ray.dashboard_port
    ensure_port_free(
        settings.ray.dashboard_host,
        dashboard_port,
        who="the Ray dashboard of valux's local Ray instance",
        setting="ray.dashboard_port",
    )
    bind_to_loopback()
    context = ray.init(
        namespace=namespace,
        include_dashboard=True,
        dashboard_host=settings.ray.dashboard_host,
        dashboard_port=dashboard_port,
        log_to_driver=log_to_driver,
    )
    gcs = getattr(context, "address_info", {}).get("gcs_address", "?")
    dashboard = context.dashboard_url or "disabled"
    return (
        RayConnection("local", gcs, f"local Ray instance (GCS {gcs}, dashboard {dashboard})", True),
        warnings,
    )
