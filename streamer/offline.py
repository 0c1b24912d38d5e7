"""Offline tracking (``--out``): one source tracked frame by frame into a video file, with the
first frame's prompts, and its results and events as JSON Lines.

Every frame of a file is tracked (no frame is skipped, unlike live), drawn the way the viewers'
video is drawn (``video.frame.Output``: the same masks, colours and labels) and measured the way
the live results are (``outputs.results.Tracked``, ``outputs.jsonl``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .config import Config, StreamConfig
from .errors import StreamerError
from .model.tracker import FrameResult, StreamingTracker
from .outputs.jsonl import OfflineResultsFile
from .outputs.results import Tracked, wall_clock
from .sources import open_source
from .video.frame import Output
from .video.styles import Look, load_background

logger = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # a live source's output rate (files keep their own)


@dataclass
class OfflineJob:
    """What to track: ``stream`` into ``out``; ``points`` (x, y) and ``boxes`` (x0, y0, x1, y1), in
    0..1 of the frame, each a new object on the first frame; ``max_frames``: 0 for all."""

    stream: StreamConfig
    out: str
    points: Sequence[Sequence[float]] = field(default_factory=list)
    boxes: Sequence[Sequence[float]] = field(default_factory=list)
    max_frames: int = 0


async def track_offline(job: OfflineJob, config: Config, tracker: StreamingTracker) -> int:
    """Track ``job`` with ``tracker``; return the number of frames written."""
    fps, frames = _frames(job.stream.source)
    results = None
    if config.results.path:
        results = OfflineResultsFile(job.stream.name, config.results, config.events)
    writer: cv2.VideoWriter | None = None
    count, started = 0, time.perf_counter()
    display = config.display  # drawn in the style asked for, as the live video would be
    background = load_background(display.background) if display.background else None
    look = Look(display.style, background=background, margin=display.privacy_margin)
    try:
        async for rgb, captured in frames:
            result = await asyncio.to_thread(tracker.step, rgb)
            if writer is None:
                result = _prompt_first_frame(tracker, job, *rgb.shape[:2]) or result
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(job.out, cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
            shown = Output(
                rgb, count, captured, list(result.obj_ids), result.logits, labels=config.display.labels, look=look
            )
            writer.write(cv2.cvtColor(shown.image, cv2.COLOR_RGB2BGR))
            if results is not None:
                tracked = Tracked.of(job.stream.name, result, count, captured, rgb.shape[:2])
                await asyncio.to_thread(results.write, tracked)
            count += 1
            if count % 30 == 0:
                rate = count / (time.perf_counter() - started)
                logger.info("frame %d, %.1f fps, objects %s", count, rate, result.obj_ids)
            if job.max_frames and count >= job.max_frames:
                break
    finally:
        await frames.aclose()
        if writer is not None:
            writer.release()
        if results is not None:
            results.close()
    return count


def _prompt_first_frame(tracker: StreamingTracker, job: OfflineJob, h: int, w: int) -> FrameResult | None:
    result = None
    for obj_id, (x, y) in enumerate(job.points, start=1):
        result = tracker.add_prompt(obj_id, points=[[x * w, y * h]], labels=[1])
    for obj_id, box in enumerate(job.boxes, start=len(job.points) + 1):
        result = tracker.add_prompt(obj_id, box=[box[0] * w, box[1] * h, box[2] * w, box[3] * h])
    return result


def _frames(spec: str) -> tuple[float, AsyncGenerator[tuple[np.ndarray, float], None]]:
    """A file's every frame at its own rate, or a live source's frames; each with its wall time."""
    if not Path(spec).is_file():
        return DEFAULT_FPS, _live_frames(spec)
    capture = cv2.VideoCapture(spec)
    if not capture.isOpened():
        raise StreamerError(f"cannot open video {spec!r}: is it a video file?")
    fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    return fps, _file_frames(capture, fps)


async def _file_frames(capture: cv2.VideoCapture, fps: float) -> AsyncGenerator[tuple[np.ndarray, float], None]:
    """Every frame of an opened video file, in order, with its time: the start of tracking plus its
    position in the video."""
    started = time.time()
    try:
        for n in itertools.count():
            ok, bgr = await asyncio.to_thread(capture.read)
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), started + n / fps
    finally:
        capture.release()


async def _live_frames(spec: str) -> AsyncGenerator[tuple[np.ndarray, float], None]:
    async with open_source(spec) as source:
        async for frame in source:
            yield frame.image, wall_clock(frame.captured_at)


__all__ = ["OfflineJob", "track_offline"]
