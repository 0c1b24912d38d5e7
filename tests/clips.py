"""Test clips made here: real H.264 MP4 files of a synthetic scene, so a fresh clone needs nothing
beside it.

The scene is ``streamer.sources.shapes.ShapesScene`` (textured shapes gliding over a textured background),
encoded by PyAV's libx264 the way cameras and phones write files (yuv420p, a keyframe a second).
Each clip is made once per test session, into the folder named by ``STREAMER_TEST_CLIPS`` (set
here on first use, so subprocesses the tests start find the same files). Natural video (the
benchmarks' clips) is in ``natural_clip``, for the few tests that need it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streamer.sources.shapes import ShapesScene

CLIPS_ENV = "STREAMER_TEST_CLIPS"
MEDIA_ENV = "STREAMER_TEST_MEDIA"
SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@dataclass(frozen=True)
class ClipSpec:
    width: int
    height: int
    frames: int
    fps: int = 30
    seed: int = 0
    speed: float = 4.0


# The sizes of the two kinds of camera the tests meet: a 960x540 file and a 1280x720 camera (10 s,
# as long as an RTSP test watches without it ending).
CLIPS = {
    "scene_540p.mp4": ClipSpec(960, 540, 120, seed=1),
    "scene_720p.mp4": ClipSpec(1280, 720, 300, seed=2),
}
DEFAULT_CLIP = "scene_540p.mp4"

_lock = threading.Lock()


def clip_path(name: str = DEFAULT_CLIP) -> Path:
    """The made clip ``name`` (one of ``CLIPS``), encoded on first use."""
    if name not in CLIPS:
        raise KeyError(f"no test clip {name!r}; known: {', '.join(CLIPS)}")
    with _lock:
        path = _folder() / name
        if not path.is_file():
            _encode(path, CLIPS[name])
    return path


def natural_clip(name: str) -> Path:
    """A real camera clip from ``$STREAMER_TEST_MEDIA`` or ``../shared/media``; the test is skipped,
    saying where it looked, when it is not there."""
    folder = Path(os.environ.get(MEDIA_ENV, SHARED_MEDIA))
    path = folder / name
    if not path.is_file():
        pytest.skip(f"natural clip {path} not found: put it there or set {MEDIA_ENV} to a folder holding {name}")
    return path


def _folder() -> Path:
    folder = os.environ.get(CLIPS_ENV)
    if folder and Path(folder).is_dir():
        return Path(folder)
    made = Path(tempfile.mkdtemp(prefix="streamer-test-clips-"))
    atexit.register(shutil.rmtree, made, True)
    os.environ[CLIPS_ENV] = str(made)
    return made


def _encode(path: Path, spec: ClipSpec) -> None:
    scene = ShapesScene(spec.width, spec.height, speed=spec.speed, count=3, seed=spec.seed)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, spec.fps)
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(spec.fps), "bf": "0"}  # as IP cameras send
        for n in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(scene.render(n)[0], format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    partial.rename(path)


__all__ = ["CLIPS", "ClipSpec", "clip_path", "natural_clip"]
