"""The project's pinned npm packages (anvil, Uniswap, WETH9, OpenZeppelin), installed on demand.

Contract:

- ``package.json`` and ``package-lock.json`` at the repository root pin every package
  exactly (devDependencies). Their files — the ``anvil`` binary and the compiled contract
  artifacts — are read from ``node_modules/`` at run time and never committed (the
  Uniswap artifacts are GPL/BUSL-licensed; they stay npm's to distribute).
- :func:`ensure_node_modules` runs ``npm ci --no-audit --no-fund`` in the repository root
  when ``node_modules/`` is missing, or older than the lockfile (npm rewrites
  ``node_modules/.package-lock.json`` on every install, so its mtime is the install's), or
  lacks one of the files valux reads. Otherwise it does nothing and costs a few ``stat``
  calls. It is safe to call from several processes at once: an exclusive file lock
  serialises the installs, and the second caller finds the work done.
- Missing tools fail with :class:`NodeToolsMissing`, saying what to install; a failed
  ``npm ci`` raises :class:`NpmInstallFailed` with the end of npm's output.
- :func:`artifact_path` and :func:`anvil_binary` name files inside ``node_modules`` and
  raise :class:`NpmInstallFailed` when the file is absent.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from valux.errors import ValuxError

__all__ = [
    "REPO_ROOT",
    "REQUIRED_FILES",
    "NodeToolsMissing",
    "NpmInstallFailed",
    "anvil_binary",
    "artifact_path",
    "ensure_node_modules",
    "needs_install",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Where ``package.json`` and ``package-lock.json`` live."""

ANVIL = "@foundry-rs/anvil-linux-amd64/bin/anvil"

REQUIRED_FILES: tuple[str, ...] = (
    ANVIL,
    "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json",
    "@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
    "@uniswap/v3-periphery/artifacts/contracts/NonfungiblePositionManager.sol/"
    "NonfungiblePositionManager.json",
    "@uniswap/swap-router-contracts/artifacts/contracts/SwapRouter02.sol/SwapRouter02.json",
    "@uniswap/swap-router-contracts/artifacts/contracts/lens/QuoterV2.sol/QuoterV2.json",
    "canonical-weth/build/contracts/WETH9.json",
    "@openzeppelin/contracts/build/contracts/ERC20PresetMinterPauser.json",
)
"""Files under ``node_modules/`` that the EVM sandbox reads."""

_INSTALL_TIMEOUT_S = 600.0
_OUTPUT_TAIL = 2000


class NodeToolsMissing(ValuxError):
    """``node`` or ``npm`` is not on the PATH."""

    code = "NODE_TOOLS_MISSING"


class NpmInstallFailed(ValuxError):
    """``npm ci`` failed, or a file it should have installed is absent."""

    code = "NPM_INSTALL_FAILED"


def needs_install(root: Path = REPO_ROOT) -> bool:
    """Whether ``node_modules`` is missing, older than the lockfile, or incomplete."""
    lockfile = root / "package-lock.json"
    marker = root / "node_modules" / ".package-lock.json"
    if not marker.is_file():
        return True
    if lockfile.is_file() and lockfile.stat().st_mtime > marker.stat().st_mtime:
        return True
    modules = root / "node_modules"
    return not all((modules / rel).is_file() for rel in REQUIRED_FILES)


def ensure_node_modules(root: Path = REPO_ROOT, *, timeout_s: float = _INSTALL_TIMEOUT_S) -> bool:
    """Run ``npm ci`` in ``root`` if :func:`needs_install`; True if it ran.

    Raises:
        NodeToolsMissing: ``node`` or ``npm`` is not installed.
        NpmInstallFailed: ``npm ci`` exited non-zero, timed out, or left a required file out.
    """
    if not needs_install(root):
        return False
    if not (root / "package-lock.json").is_file():
        raise NpmInstallFailed(f"no package-lock.json in {root}: cannot install the npm packages")
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise NodeToolsMissing(
            f"{' and '.join(missing)} not found on the PATH: the EVM sandbox needs Node.js "
            f"(20 or newer) and npm to install its pinned packages (e.g. `apt-get install "
            f"nodejs npm`), then `npm ci` in {root}"
        )
    lock_path = Path(tempfile.gettempdir()) / f"valux-npm-{_digest(root)}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not needs_install(root):
                return False
            _npm_ci(root, timeout_s)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if needs_install(root):
        absent = [r for r in REQUIRED_FILES if not (root / "node_modules" / r).is_file()]
        raise NpmInstallFailed(f"npm ci finished but these files are absent: {absent}")
    return True


def _npm_ci(root: Path, timeout_s: float) -> None:
    env = dict(os.environ)
    env.setdefault("npm_config_update_notifier", "false")
    try:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NpmInstallFailed(f"npm ci in {root} did not finish within {timeout_s:g} s") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-_OUTPUT_TAIL:]
        raise NpmInstallFailed(f"npm ci in {root} exited with {done.returncode}:\n{tail}")
    # npm ci keeps file mtimes from the tarballs; touch the marker so a lockfile edited
    # later is seen as newer than this install.
    (root / "node_modules" / ".package-lock.json").touch()


def _digest(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def artifact_path(relative: str, root: Path = REPO_ROOT) -> Path:
    """``node_modules/<relative>``, which must exist (run :func:`ensure_node_modules` first)."""
    path = root / "node_modules" / relative
    if not path.is_file():
        raise NpmInstallFailed(
            f"{path} is missing: run valux.sandbox.npm.ensure_node_modules() (npm ci) first"
        )
    return path


def anvil_binary(root: Path = REPO_ROOT) -> Path:
    """The ``anvil`` executable from ``@foundry-rs/anvil-linux-amd64``."""
    return artifact_path(ANVIL, root)
