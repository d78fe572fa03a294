"""The local Ray instance valux starts listens on loopback only (issue 13, secrets): its
GCS, raylet, object manager, dashboard agent and workers bind 127.0.0.1, so nothing on the
network reaches them. Checked in a process of its own (the session's Ray is a test
fixture, not what valux starts), from the kernel's table of listening sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import ipaddress, json, psutil, ray
from valux.config.settings import load_settings
from valux.ops.ports import free_port
from valux.system.ray_connect import connect

settings = load_settings(env={}, overrides={"ray.dashboard_port": free_port()})
connection, _ = connect(settings)

@ray.remote
class Probe:
    def pid(self):
        import os
        return os.getpid()

probe = Probe.remote()
ray.get(probe.pid.remote())
mine = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
listening = []
for conn in psutil.net_connections(kind="inet"):
    if conn.status == psutil.CONN_LISTEN and conn.pid in mine:
        address = ipaddress.ip_address(conn.laddr.ip)
        mapped = getattr(address, "ipv4_mapped", None)
        listening.append([str(mapped or address), conn.laddr.port, conn.pid])
print(json.dumps({"mode": connection.mode, "listening": listening}))
ray.shutdown()
"""


@pytest.mark.timeout(180)
def test_the_local_ray_instance_listens_on_loopback_only(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="vxlo-", dir="/tmp"))  # Ray's socket paths are short
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_TMPDIR": str(short)},
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["mode"] == "local"
    assert len(report["listening"]) >= 4, report  # GCS, raylet, workers, dashboard...
    exposed = [entry for entry in report["listening"] if entry[0] != "127.0.0.1"]
    assert exposed == [], exposed
