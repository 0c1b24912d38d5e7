"""A WHEP player that nobody here wrote, for the browser test: Eyevinn's ``@eyevinn/webrtc-player``
from the npm registry, bundled for the page with esbuild (also from npm), made once and kept in
``tests/.cache`` (ignored by git)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

PACKAGES = ["@eyevinn/webrtc-player@0.13.0", "esbuild@0.25.12"]  # pinned: the test meets one player
FOLDER = Path(__file__).resolve().parent / ".cache" / "whep-player"
_lock = threading.Lock()


class PlayerUnavailableError(RuntimeError):
    """npm is missing, or the registry could not be reached."""


def player_bundle() -> Path:
    """``player.js``: ``window.WebRTCPlayer``, the package's player, for a plain ``<script>``."""
    bundle = FOLDER / "player.js"
    with _lock:
        if bundle.is_file():
            return bundle
        npm = shutil.which("npm")
        if npm is None:
            raise PlayerUnavailableError("npm not found: the WHEP player test installs @eyevinn/webrtc-player with it")
        FOLDER.mkdir(parents=True, exist_ok=True)
        (FOLDER / "package.json").write_text('{"name": "whep-player-for-tests", "private": true}\n')
        _step(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES], f"npm install {PACKAGES}", 300
        )
        (FOLDER / "entry.js").write_text('window.WebRTCPlayer = require("@eyevinn/webrtc-player").WebRTCPlayer;\n')
        esbuild = str(FOLDER / "node_modules" / ".bin" / "esbuild")
        _step(
            [esbuild, "entry.js", "--bundle", "--format=iife", f"--outfile={bundle.name}.tmp"], "esbuild's bundle", 120
        )
        (FOLDER / f"{bundle.name}.tmp").rename(bundle)
    return bundle


def _step(command: list[str], what: str, timeout: float) -> None:
    """Run one step of the setup in the cache folder; its failure (or a registry that does not
    answer) makes the player unavailable, saying why."""
    try:
        run = subprocess.run(command, cwd=FOLDER, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PlayerUnavailableError(f"{what} took over {timeout:g} s (is the npm registry reachable?)") from None
    if run.returncode != 0:
        raise PlayerUnavailableError(f"{what} failed: {run.stderr.strip()[-500:]}")
