"""The package as users get it: build the wheel and sdist, install the wheel (not editable) into a
fresh venv of a given Python, and serve from that venv. tests/test_install.py asserts on it;
bench/install.py times it.

Run as a script it makes a venv with every dependency at its lowest allowed version, to check
pyproject's lower bounds with the full suite:
``python -m tests.install --lowest --python 3.10 /tmp/lowest`` then ``/tmp/lowest/bin/python -m pytest``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"


def supported_pythons() -> list[str]:
    """The Python versions pyproject's classifiers name, oldest first."""
    text = (ROOT / "pyproject.toml").read_text()
    found = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text)
    return sorted(found, key=lambda v: int(v.split(".")[1]))


def find_python(version: str) -> Path | None:
    """``pythonX.Y`` on PATH if it runs, else pyenv's install of that version."""
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "--version"], capture_output=True).returncode == 0:
        return Path(found)
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
    return candidates[-1] if candidates else None


@dataclass
class Dist:
    wheel: Path
    sdist: Path
    seconds: float


def build_dist(out: Path) -> Dist:
    """``python -m build``: the sdist, then the wheel built from that sdist (so the sdist is complete)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True, capture_output=True)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist, time.monotonic() - started)


@dataclass
class Install:
    """A fresh venv with the wheel installed, and how long each step took."""

    python: str
    venv: Path
    seconds_torch: float
    seconds_package: float

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def size_mb(self) -> float:
        return sum(p.stat().st_size for p in self.venv.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def _pip(venv: Path, *args: str, env: dict[str, str] | None = None) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def install(python: Path, venv: Path, target: str, constraints: Path = CONSTRAINTS, editable: bool = False) -> Install:
    """As the README says: a venv, torch first, then the project (sam2 builds against that torch)."""
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pins = ["-c", str(constraints)]
    _pip(venv, *pins, "--upgrade", "pip", "setuptools", "wheel")
    started = time.monotonic()
    _pip(venv, *pins, "torch", "torchvision")
    torch_done = time.monotonic()
    env = {**os.environ, "SAM2_BUILD_CUDA": "0"}
    _pip(venv, *pins, "--no-build-isolation", *(["-e"] if editable else []), target, env=env)
    return Install(version, venv, torch_done - started, time.monotonic() - torch_done)


@dataclass
class Served:
    """A running ``sam2-stream`` and the URL it printed."""

    process: subprocess.Popen[str]
    url: str
    log: list[str]

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body (an HTTP error status too)."""
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def health(self) -> dict:
        return json.loads(self.get("/healthz")[1])

    def stop(self, timeout: float = 15.0) -> int:
        """Ctrl-C, as a user stops it; the exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def serve(command: list[str], cwd: Path, timeout: float = 180.0) -> Served:
    """Start ``command`` (a live server) in ``cwd`` and wait for the URL it prints."""
    process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log: list[str] = []
    found: list[str] = []

    def read() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            log.append(line)
            if not found and (match := re.search(r"open (http://\S+)", line)):
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not print its URL:\n" + "".join(log[-40:]))
        time.sleep(0.2)
    return Served(process, found[0], log)


def lowest_constraints() -> str:
    """Every dependency pyproject bounds from below, pinned to that bound."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    block += re.search(r"^cluster = \[(.*)\]$", text, re.M).group(1)  # type: ignore[union-attr]
    pins = re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[a-z,]+\])?(?:>=|==)([0-9][^",;]*)"', block)
    return "".join(f"{name}=={version}\n" for name, version in pins)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lowest", action="store_true", help="every dependency at its lower bound (editable checkout)")
    parser.add_argument("--python", default=supported_pythons()[0], help="version, e.g. 3.10")
    parser.add_argument("venv", type=Path)
    args = parser.parse_args()
    python = find_python(args.python)
    if python is None:
        parser.error(f"no python{args.python} found (pyenv install {args.python})")
    constraints = CONSTRAINTS
    if args.lowest:
        constraints = args.venv.with_suffix(".constraints.txt")
        constraints.write_text(lowest_constraints())
    done = install(python, args.venv, f"{ROOT}[dev,cluster]", constraints, editable=args.lowest)
    print(f"Python {done.python}: torch {done.seconds_torch:.0f} s, package {done.seconds_package:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
