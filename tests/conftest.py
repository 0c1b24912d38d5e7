"""Shared fixtures: frames of the clips the tests make (tests/clips.py) and helpers."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from .clips import DEFAULT_CLIP, clip_path

# Ray (the cluster tests) finds a node's address by asking the kernel for a route to a public
# address (no packet is sent), which here is the machine's outward interface. Ray's own switch
# (named for clusters on macOS and Windows, where it is off by default) keeps every Ray process
# of the tests on 127.0.0.1 instead, so no traffic can leave the machine. Ray reads it once, on
# import: hence here, before any test module imports it.
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(RAY_LOOPBACK)
# No test asks the Hugging Face Hub for a detector's weights: one that is not cached fails at once
# with the offline error, as on a machine without internet (subprocesses inherit it).
os.environ["HF_HUB_OFFLINE"] = "1"

IMAGE_SIZE = 256  # the official predictor runs ~0.2 s/frame here at this size


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until a server run as a subprocess has written ``text`` to its ``log`` file."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{text!r} never logged: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def read_frames(count: int, name: str = DEFAULT_CLIP, step: int = 1, path: Path | None = None) -> list[np.ndarray]:
    """The first ``count`` frames (every ``step``-th) of a test clip (or of the file ``path``), as RGB uint8."""
    capture = cv2.VideoCapture(str(path or clip_path(name)))
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, bgr = capture.read()
        assert ok, f"{name} has fewer than {count * step} frames"
        if index % step == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


@pytest.fixture(scope="session")
def jpeg_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """24 clip frames as a JPEG folder (the official loader's input) and as the decoded arrays.

    The arrays are read back from the JPEGs with PIL, as the official loader reads them, so
    both trackers see the very same pixels.
    """
    from PIL import Image

    folder = tmp_path_factory.mktemp("jpeg_clip")
    frames = []
    for i, rgb in enumerate(read_frames(24)):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(rgb).save(path, quality=95)
        frames.append(np.array(Image.open(path).convert("RGB")))
    return folder, frames


@pytest.fixture(autouse=True)
def _quiet_sam2_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamer")
