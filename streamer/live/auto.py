"""Automatic tracks on a live stream: its detector beside the tracker, and the policy's plans
applied to the stream.

After a round, a stream hands its tracked frame here. When a detection is due (every
``every_frames`` tracked frames, or ``every_s`` seconds) and the stream has none in flight, the
frame, with the tracker's masks of it, goes to the detector thread (``Detectors``: one thread and
one loaded model per detector, shared by every stream; newest frame wins per stream, so a slow
detector skips frames instead of piling them up). The tracker's rounds and the video never wait
for it. Its detections and those masks go to the stream's ``AutoPolicy``; the plan is applied
through the stream as prompts and removals, landed exactly as a viewer's box on the frame they saw
(``landing.py``): on that very frame while the tracker remembers it, else carried along the
optical flow to the nearest one it has. New objects, re-seeded ones, ended ones.

A text prompt ("person, red car") runs the open-vocabulary detector on the next tracked frame,
once; what it finds becomes objects at once (a person asked). A detector that cannot be loaded
(no weights offline, no library) is reported to the stream's viewers and automatic tracking
pauses on that stream until its settings change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..auto.detections import Detections, Detector
from ..auto.detectors import load_detector
from ..auto.policy import AutoPolicy, Observed, Plan
from ..concurrency.thread import DETECTOR_NICE, WorkerThread
from ..concurrency.waits import CLOSE_TIMEOUT_S, stop_tasks
from ..config import AutoConfig
from ..errors import DetectorError, PromptError, StreamerError, UnknownObjectError
from ..model.tracker import FrameResult
from ..outputs.results import ObjectLabel
from ..sources import Frame
from .landing import PromptRequest

logger = logging.getLogger(__name__)


class Detectors:
    """Every detector a server uses, loaded once each on first use, run one call at a time on a
    thread of their own. ``preloaded``: detectors by name (tests' stand-ins, a user's own)."""

    def __init__(
        self, device: str | None = None, *, random_weights: bool = False, preloaded: dict[str, Detector] | None = None
    ) -> None:
        self.device, self.random_weights = device, random_weights
        self._loaded: dict[str, Detector] = dict(preloaded or {})
        self._failed: dict[str, str] = {}
        self._thread = WorkerThread("detector", nice=DETECTOR_NICE)
        self._threads = 0  # torch threads detections run on (0: not decided yet)

    async def detect(self, name: str, image: np.ndarray, queries: Sequence[str] = ()) -> Detections:
        """``name``'s detections on ``image`` (it is loaded first if need be)."""
        if name in self._failed:
            raise DetectorError(self._failed[name])
        return await self._thread.run(self._detect, name, image, tuple(queries))

    def retry(self, name: str) -> None:
        """Forget that ``name`` failed to load (its settings changed: try again)."""
        self._failed.pop(name, None)

    def _detect(self, name: str, image: np.ndarray, queries: tuple[str, ...]) -> Detections:
        self._threads = _share_cores(self._threads)
        detector = self._loaded.get(name)
        if detector is None:
            try:
                detector = self._loaded[name] = load_detector(name, self.device, random_weights=self.random_weights)
            except DetectorError as exc:
                self._failed[name] = str(exc)
                raise
            except Exception as exc:  # a user's module failing on import, a broken install
                self._failed[name] = f"detector {name} could not be loaded: {exc}"
                raise DetectorError(self._failed[name]) from exc
        return detector(image, queries)

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Let a detection (or a detector's load) in flight finish; False if it was still running
        after ``timeout`` (it ends in the background)."""
        return await self._thread.close(timeout)


def _share_cores(threads: int) -> int:
    """On the detector's thread: half the CPU threads torch had when it first ran (``threads``: 0
    then). torch's OpenMP threads are per calling thread, so a detector at full width beside the
    tracker would run twice as many threads as there are cores, and both would slow (bench/live.py
    --auto); MKL's count is the process's, so it is said again before every detection."""
    import torch

    threads = threads or max(1, torch.get_num_threads() // 2)
    torch.set_num_threads(threads)
    return threads


class AutoHost(Protocol):
    """What automatic tracking needs of a stream (``live.stream.Stream``)."""

    name: str
    labels: dict[int, ObjectLabel]
    hidden: set[int]

    @property
    def obj_ids(self) -> list[int]: ...

    async def prompt(self, request: PromptRequest, origin: str | None = None) -> list[int]: ...

    async def remove_object(self, obj_id: int, reason: str = "viewer") -> list[int]: ...

    def report(self, code: str, message: str) -> None: ...


class AutoTracking:
    """One stream's automatic objects."""

    def __init__(self, host: AutoHost, config: AutoConfig, detectors: Detectors) -> None:
        self.host, self.detectors = host, detectors
        self.policy = AutoPolicy(config, self._next_id)
        self.runs = 0
        self._frames = 0  # tracked frames since the last run
        self._last_run = 0.0
        self._top = 0  # the highest object id handed out
        self._text: list[str] | None = None  # a text prompt waiting for the next tracked frame
        self._task: asyncio.Task[None] | None = None

    @property
    def config(self) -> AutoConfig:
        """The settings in force (the policy's)."""
        return self.policy.config

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def configure(self, config: AutoConfig) -> None:
        """New settings (the websocket's ``auto`` message): the policy keeps its objects."""
        self.detectors.retry(config.detector)
        self.policy.config = config

    def text(self, labels: list[str]) -> None:
        """Look for ``labels`` with the open-vocabulary detector on the next tracked frame."""
        self.detectors.retry(self.config.text_detector)
        self._text = labels

    def touched(self, obj_id: int) -> None:
        """A person prompted ``obj_id``: an automatic object is now theirs, announced at once."""
        self.policy.protect(obj_id)
        self.host.hidden.discard(obj_id)

    def forget(self, obj_id: int | None) -> None:
        """``obj_id`` (None: every object) was removed by a person."""
        if obj_id is None:
            self.policy = AutoPolicy(self.config, self._next_id)
        else:
            self.policy.forget(obj_id)

    def after_round(self, frame: Frame, result: FrameResult) -> None:
        """A tracked frame: start a detection on it if one is due and none is running."""
        self._frames += 1
        if self.busy:
            return
        text, config = self._text, self.config
        if text is None:
            if not config.enabled:
                return
            due = self._frames >= config.every_frames
            if config.every_s is not None:
                due = time.monotonic() - self._last_run >= config.every_s
            if not due:
                return
        self._frames, self._last_run, self._text = 0, time.monotonic(), None
        observed = Observed(
            list(result.obj_ids),
            np.asarray(result.masks, bool),
            np.asarray(result.scores) > 0,
            frame.image.shape[:2],
            frame.captured_at,
            [self.host.labels.get(i, ObjectLabel()).origin for i in result.obj_ids],
        )
        job = self._look(frame.image, frame.index, observed, text)
        self._task = asyncio.create_task(job, name=f"auto {self.host.name}")

    async def close(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task, what=f"auto {self.host.name}")
            self._task = None

    # -- one run --------------------------------------------------------------------------------

    async def _look(self, image: np.ndarray, seen: int, observed: Observed, text: list[str] | None) -> None:
        config = self.config
        name = config.detector if text is None else config.text_detector
        queries = config.labels if text is None else text
        try:
            detections = await self.detectors.detect(name, image, queries)
            self.runs += 1
            plan = self.policy.update(detections, observed) if text is None else self.policy.adopt(detections, observed)
            await self._apply(plan, seen, observed.size)
        except DetectorError as exc:
            logger.error("%s: %s", self.host.name, exc)
            self.host.report("detector", str(exc))
            if text is None:
                self.policy.config = dataclasses.replace(config, enabled=False)
        except Exception as exc:  # a bug: log it, the stream goes on (the next run tries again)
            logger.exception("%s: automatic tracking failed", self.host.name)
            self.host.report("detector", f"automatic tracking failed: {exc}")

    async def _apply(self, plan: Plan, seen: int, size: tuple[int, int]) -> None:
        host = self.host
        for end in plan.ends:
            await self._end(end.obj_id, end.reason)
        for obj_id, (label, score) in plan.labelled.items():
            if obj_id in host.labels:
                host.labels[obj_id] = dataclasses.replace(host.labels[obj_id], label=label, label_score=score)
        for obj_id in plan.announced:
            host.hidden.discard(obj_id)
        for birth in plan.births:
            host.labels[birth.obj_id] = ObjectLabel(birth.label, birth.score, birth.origin)
            if not birth.announced:
                host.hidden.add(birth.obj_id)
            if not await self._prompt(birth.obj_id, birth.box, seen, size, birth.origin):
                host.labels.pop(birth.obj_id, None)
                host.hidden.discard(birth.obj_id)
                self.policy.forget(birth.obj_id)
        for reseed in plan.reseeds:
            await self._prompt(reseed.obj_id, reseed.box, seen, size, None)

    async def _prompt(
        self,
        obj_id: int,
        box: tuple[float, float, float, float],
        seen: int,
        size: tuple[int, int],
        origin: str | None,
    ) -> bool:
        """A box on camera frame ``seen`` (the one the detector looked at), landed as a viewer's
        box on the frame they saw is: there while the tracker has it, else carried along the
        optical flow to the nearest frame it has (a detector slower than the camera's frames,
        say, on a stream with no objects yet, which the tracker steps at the camera's rate).
        False if no frame is left to put it on."""
        height, width = size
        x0, y0, x1, y1 = box
        request = PromptRequest(obj_id, box=(x0 / width, y0 / height, x1 / width, y1 / height), shown=seen)
        try:
            await self.host.prompt(request, origin)
            return True
        except (PromptError, UnknownObjectError) as exc:  # no frame to land on (a reset meanwhile)
            logger.debug("%s: automatic prompt for object %d skipped: %s", self.host.name, obj_id, exc)
            return False

    async def _end(self, obj_id: int, reason: str) -> None:
        try:
            await self.host.remove_object(obj_id, reason)
        except StreamerError as exc:  # gone already (a person removed it meanwhile)
            logger.debug("%s: object %d already gone: %s", self.host.name, obj_id, exc)

    def _next_id(self) -> int:
        self._top = max(self._top, *self.host.obj_ids, *self.host.labels, 0) + 1
        return self._top


__all__ = ["AutoHost", "AutoTracking", "Detectors"]
