"""EmbeddedPostgres.start() against an adopted postmaster that refuses connections.

A SIGKILL is asynchronous: on a loaded machine the killed postmaster can look alive
(not yet a zombie) for a moment after the kill, so start() adopts it, finds its socket
refusing connections, and must wait for it to die and start a new server — not give up
and leave a lock file naming a process that ``pg_ctl stop`` then waits on for 30 s. A
live one that refuses for a moment (starting, crash recovery) is asked again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from valux.errors import Unavailable
from valux.ops import embedded
from valux.ops.embedded import EmbeddedPostgres


def _server_with_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedPostgres:
    """An EmbeddedPostgres whose data directory holds a postmaster.pid, pgserver not imported."""
    monkeypatch.setattr(embedded, "_import_pgserver", lambda: None)
    server = EmbeddedPostgres(tmp_path)
    server.pgdata.mkdir(parents=True)
    (server.pgdata / "postmaster.pid").write_text("lock file\n")
    return server


def test_start_waits_out_an_adopted_postmaster_that_is_dying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server_with_lock_file(tmp_path, monkeypatch)
    # Stands for the killed postmaster: alive for another half second, then dead.
    dying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    adopted: list[int] = []

    def start_server(_pgserver: Any) -> tuple[str, int, int]:
        pid = dying.pid if not adopted else 4_000_000  # then a fresh server
        adopted.append(pid)
        return str(server.pgdata), 5432, pid

    def ensure_database(_socket_dir: str, _port: int) -> None:
        if len(adopted) == 1:
            raise Unavailable("connection refused")

    monkeypatch.setattr(server, "_start_server", start_server)
    monkeypatch.setattr(server, "_ensure_database", ensure_database)
    try:
        url = server.start()
    finally:
        dying.wait()
    assert adopted == [dying.pid, 4_000_000]
    assert url.endswith("port=5432")


def test_start_gives_up_on_a_live_server_that_keeps_refusing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server_with_lock_file(tmp_path, monkeypatch)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def ensure_database(_socket_dir: str, _port: int) -> None:
        raise Unavailable("connection refused")

    monkeypatch.setattr(embedded, "_DYING_POSTMASTER_WAIT_S", 0.3)
    monkeypatch.setattr(server, "_start_server", lambda _p: (str(server.pgdata), 5432, alive.pid))
    monkeypatch.setattr(server, "_ensure_database", ensure_database)
    try:
        with pytest.raises(Unavailable, match="connection refused"):
            server.start()
    finally:
        alive.kill()
        alive.wait()


def test_start_asks_again_a_live_server_that_refuses_for_a_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live postmaster that refuses at first (starting, or in crash recovery) is asked
    again until it answers; it is neither given up on nor replaced."""
    server = _server_with_lock_file(tmp_path, monkeypatch)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    refusals = [Unavailable("the database system is starting up")] * 3

    def ensure_database(_socket_dir: str, _port: int) -> None:
        if refusals:
            raise refusals.pop()

    starts: list[int] = []

    def start_server(_pgserver: Any) -> tuple[str, int, int]:
        starts.append(alive.pid)
        return str(server.pgdata), 5432, alive.pid

    monkeypatch.setattr(server, "_start_server", start_server)
    monkeypatch.setattr(server, "_ensure_database", ensure_database)
    try:
        assert server.start().endswith("port=5432")
    finally:
        alive.kill()
        alive.wait()
    assert starts == [alive.pid] and not refusals
