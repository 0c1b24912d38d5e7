"""A wheel installed anywhere serves the viewer: built with ``python -m build``, installed (not
editable) into fresh venvs of the oldest and the newest supported Python, run from outside the
checkout. Slow (each venv downloads torch), so it runs with ``-m install`` (CI does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .install import Dist, build_dist, find_python, install, serve, supported_pythons
from .webrtc_scenarios import free_port

pytestmark = [pytest.mark.install, pytest.mark.timeout(1800)]

SHIPPED = [
    "streamer/__main__.py",
    "streamer/serve/web/index.html",
    "streamer/serve/web/app.js",
    "streamer/serve/web/style.css",
    "streamer/outputs/results.schema.json",
    "streamer/configs/defaults.yaml",
    *(f"streamer/configs/sam2.1_hiera_{size}.yaml" for size in ("tiny", "small", "base_plus", "large")),
]


@pytest.fixture
def venv(tmp_path: Path) -> Iterator[Path]:
    """A path for a fresh venv, removed afterwards (each holds ~5.5 GB of torch)."""
    yield tmp_path / "venv"
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    return build_dist(tmp_path_factory.mktemp("dist"))


def test_wheel_and_sdist_carry_the_page_and_configs(dist: Dist) -> None:
    """The viewer page and the configs are package data, in both archives; tests and benches are not."""
    wheel_names = set(zipfile.ZipFile(dist.wheel).namelist())
    assert set(SHIPPED) <= wheel_names, set(SHIPPED) - wheel_names
    assert not any(n.startswith(("tests/", "bench/")) for n in wheel_names)
    entry_points = zipfile.ZipFile(dist.wheel).read(
        next(n for n in wheel_names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"sam2-stream = streamer.__main__:main" in entry_points
    with tarfile.open(dist.sdist) as sdist:
        sdist_names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert set(SHIPPED) <= sdist_names, set(SHIPPED) - sdist_names


@pytest.mark.parametrize("version", [supported_pythons()[0], supported_pythons()[-1]])
def test_wheel_serves_the_viewer_from_a_fresh_venv(version: str, dist: Dist, venv: Path, tmp_path: Path) -> None:
    """As a user on that Python: install the wheel, check the machine, serve the synthetic camera
    with a shipped config named on the command line, fetch the page and /healthz, Ctrl-C."""
    python = find_python(version)
    if python is None:
        pytest.fail(f"python{version} is not installed: `pyenv install {version}` to run the install tests")
    done = install(python, venv, str(dist.wheel))
    assert done.python.startswith(version + ".")
    outside = tmp_path / "elsewhere"  # not the checkout: only the installed package can be imported
    outside.mkdir()

    def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(c) for c in command], cwd=outside, capture_output=True, text=True, timeout=300)

    where = run(done.bin / "python", "-c", "import streamer; print(streamer.__file__)").stdout
    assert where.startswith(str(done.venv)) and "site-packages" in where, where
    for command in ([done.bin / "sam2-stream", "--version"], [done.bin / "python", "-m", "streamer", "--version"]):
        assert run(*command).stdout.strip() == f"sam2-stream 0.1.0 (Python {done.python})"

    port = free_port()
    doctor = run(done.bin / "sam2-stream", "doctor", "--json", "--port", str(port))
    findings = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert doctor.returncode == 0, doctor.stdout
    for check in ("package", "torch", "sam2", "codecs", "libraries", "port"):
        assert findings[check]["status"] == "ok", findings[check]

    served = serve(
        [str(done.bin / "sam2-stream"), "--config", "tiny", "--source", "synthetic", "--random-weights"]
        + ["--device", "cpu", "--image-size", "128", "--port", str(port)],
        cwd=outside,
    )
    try:
        status, page = served.get("/")
        assert status == 200 and b'<script src="app.js">' in page
        assert served.get("/app.js")[0] == 200
        deadline = time.monotonic() + 60
        while (health := served.health())["streams"]["synthetic"]["video_fps"] <= 0:
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        assert health["ok"] and health["streams"]["synthetic"]["source_alive"]
        while (answer := served.get("/results?masks=rle"))[0] != 200:  # measured by the installed package
            assert time.monotonic() < deadline, answer
            time.sleep(0.5)
        assert json.loads(answer[1])["type"] == "results"
    finally:
        code = served.stop()
    assert code == 0, "".join(served.log[-20:])
    assert not any("Traceback" in line for line in served.log), "".join(served.log)
