"""The house style is enforced, not hoped for: ruff and mypy --strict pass on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=280
    )


def test_ruff_lint_and_format_are_clean() -> None:
    """`ruff check` and `ruff format --check` report nothing for valux, tests and bench."""
    lint = _run("ruff", "check", "valux", "tests", "bench")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", "valux", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    """`mypy` (strict, configured in pyproject.toml) finds no error in the valux package."""
    result = _run("mypy", "valux")
    assert result.returncode == 0, result.stdout + result.stderr
