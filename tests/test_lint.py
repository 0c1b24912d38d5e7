"""The code stays clean: ruff's lint rules and formatting, and mypy's types (pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_lint_and_format() -> None:
    """`ruff check` and `ruff format --check` pass on the whole project."""
    for args in (["check", "."], ["format", "--check", "."]):
        run = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_strict_on_the_package() -> None:
    """`mypy` (strict, less the two checks pyproject.toml turns off and says why) passes on streamer/."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True, text=True, timeout=540
    )
    assert run.returncode == 0, run.stdout + run.stderr
