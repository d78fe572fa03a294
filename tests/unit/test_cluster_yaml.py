"""``cluster.yaml`` (Ray's cluster launcher, on-prem provider) is a file an operator can
use as it is: Ray's own schema accepts it, the head keeps off Redis's port 6379, and
every command it runs exists in an installed valux."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from valux.config.settings import load_settings
from valux.main import _parser

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path("~/valux-venv/bin/")


def _config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return loaded


def _commands(config: dict[str, Any]) -> list[list[str]]:
    """Every command line of the launcher's command lists, split into words, without the
    environment assignments and ``nohup`` in front of the program."""
    lines: list[str] = []
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        for entry in config[key]:
            lines.extend(part.strip() for part in entry.split(";") if part.strip())
    out = []
    for line in lines:
        words = shlex.split(line, comments=False)
        while words and (("=" in words[0] and not words[0].startswith("-")) or words[0] == "nohup"):
            words = words[1:]
        out.append(words)
    return out


def test_rays_own_schema_accepts_it() -> None:
    """The launcher's defaults filled in, Ray's JSON schema validates the whole file."""
    validate_config(prepare_config(copy.deepcopy(_config())))


def test_the_head_keeps_off_6379_and_workers_join_its_port() -> None:
    """``ray start --head`` names a port other than 6379 (Redis's), and the workers join
    exactly that port; the dashboard stays on the head's localhost."""
    config = _config()
    heads = [c for c in _commands(config) if "start" in c and "--head" in c]
    (head,) = heads
    port = next(a.split("=", 1)[1] for a in head if a.startswith("--port="))
    assert port != "6379"
    assert "--dashboard-host=127.0.0.1" in head
    joins = [c for c in _commands(config) if any(a.startswith("--address=") for a in c)]
    assert joins and all(f"--address=$RAY_HEAD_IP:{port}" in c for c in joins)


def test_every_command_exists_in_an_installed_valux() -> None:
    """Each program the file runs from the node's virtual environment exists in one
    (this checkout's), and valux's start command parses with valux's own flags."""
    here = Path(__import__("sys").executable).parent
    ran = [c for c in _commands(_config()) if c and c[0].startswith(str(VENV_BIN))]
    assert ran
    for command in ran:
        program = Path(command[0]).name
        assert (here / program).exists(), f"{program} is not installed by valux"
    (start,) = [c for c in ran if c[1:3] == ["-m", "valux.main"]]
    args = start[3 : start.index(">")] if ">" in start else start[3:]
    parsed = _parser().parse_args(args)
    assert (parsed.address, parsed.host) == ("auto", "0.0.0.0")


def test_the_placement_it_sets_is_a_valid_setting() -> None:
    """The evaluators and feeds are pinned to nodes offering ``valux_eval`` (which the head
    offers), through a ``placement.resources`` value valux accepts."""
    config = _config()
    (start,) = [e for e in config["head_start_ray_commands"] if "valux.main" in e]
    value = start.split("VALUX_PLACEMENT__RESOURCES=", 1)[1].split("'")[1]
    settings = load_settings(env={"VALUX_PLACEMENT__RESOURCES": value})
    assert set(settings.placement.resources) == {"evaluator", "feed"}
    assert any('"valux_eval"' in e for e in config["head_start_ray_commands"])
