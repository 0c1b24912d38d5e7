"""Install cost per Python version, as a user pays it: build the wheel, then for each supported
Python a fresh venv with torch (with constraints.txt) and the wheel, and the time to the first
served page. Writes bench/results/install_<label>.json.

The downloads come from whatever index pip is configured with, so the times say as much about
the network as about the project: the JSON records the wheel size and venv size too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from tests.install import build_dist, find_python, install, serve, supported_pythons  # noqa: E402
from tests.webrtc_scenarios import free_port  # noqa: E402


def measure(version: str, wheel: Path, work: Path) -> dict:
    python = find_python(version)
    if python is None:
        return {"python": version, "error": f"python{version} not found"}
    venv = work / f"venv{version}"
    done = install(python, venv, str(wheel))
    started = time.monotonic()
    served = serve(
        [str(done.bin / "sam2-stream"), "--source", "synthetic", "--random-weights", "--device", "cpu"]
        + ["--image-size", "128", "--port", str(free_port())],
        cwd=work,
    )
    try:
        status = served.get("/")[0]
        first_page = time.monotonic() - started
    finally:
        served.stop()
    result = {
        "python": done.python,
        "seconds_torch": round(done.seconds_torch, 1),
        "seconds_package": round(done.seconds_package, 1),
        "seconds_to_first_page": round(first_page, 1),
        "page_status": status,
        "venv_mb": round(done.size_mb()),
    }
    shutil.rmtree(venv)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="versions (default: every supported one)")
    parser.add_argument("--label", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dist = build_dist(work / "dist")
        results = {
            "machine": describe(),
            "wheel": dist.wheel.name,
            "wheel_kb": round(dist.wheel.stat().st_size / 1e3),
            "sdist_kb": round(dist.sdist.stat().st_size / 1e3),
            "seconds_build": round(dist.seconds, 1),
            "versions": [measure(v, dist.wheel, work) for v in args.python or supported_pythons()],
        }
    out = ROOT / "bench" / "results" / f"install_{args.label}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
