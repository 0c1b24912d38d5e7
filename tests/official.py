"""A family's official code in a venv of its own, for parity: ``edgetam-dimos`` (Meta's EdgeTAM,
repackaged) installs a top-level ``sam2`` that is not sam2 1.1.0, so it can never share the
suite's venv.

The venv reuses the suite's torch, timm and the rest through a ``.pth`` line appended after its
own site-packages (its own ``sam2`` comes first; a second 5 GB torch is not installed), and gets
the official package with ``pip install --no-deps`` from PyPI.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import venv
from pathlib import Path

EDGETAM_DIST = "edgetam-dimos==1.0.1"
RUNNER = Path(__file__).with_name("edgetam_official.py")


class RegistryUnreachableError(RuntimeError):
    """The official package could not be installed (no package registry): the test skips."""


def official_venv(folder: Path, dist: str = EDGETAM_DIST) -> Path:
    """Make a venv in ``folder`` with ``dist`` installed; return its Python."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "_suite_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", dist],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise RegistryUnreachableError(f"pip install {dist} failed: {done.stderr.strip()[-300:]}")
    where = subprocess.run(
        [python, "-c", "import sam2; print(sam2.__file__)"], check=True, capture_output=True, text=True
    ).stdout
    assert where.startswith(str(folder)), f"the official venv imports the suite's sam2: {where}"
    return python


def run_official(python: Path, job: dict, folder: Path) -> dict[str, object]:
    """Run the official predictor on ``job`` (see edgetam_official.py); its outputs by key."""
    import numpy as np

    job_path, out_path = folder / "job.json", folder / "official.npz"
    job_path.write_text(json.dumps(job))
    done = subprocess.run([python, RUNNER, job_path, out_path], capture_output=True, text=True, timeout=900, cwd=folder)
    if done.returncode:
        raise RuntimeError(f"the official predictor failed:\n{done.stderr[-4000:]}")
    with np.load(out_path) as data:
        return {key: data[key] for key in data.files}


__all__ = ["EDGETAM_DIST", "RegistryUnreachableError", "official_venv", "run_official"]
