"""The model's side of serving streams: every stream's tracker, the one inference thread they
share, and the out-of-memory batch policy.

The pipeline decides *when* (which streams' frames go into a round) and publishes what comes
out; the engine does the tracking. Each stream owns its display and hands it to its ``Track``:
the engine reads the recent frames there (where a click lands) and leaves each round's or
prompt's masks on it (``Display`` is thread-safe), but never shows a frame. Everything that
touches a tracker runs on the inference thread, one call at a time: rounds, prompts, removals,
resets. A change (a prompt, a removal) that arrives during a round does not wait for all of
it: the round pauses once its frames' image features exist and runs the changes queued so far
(``step_streams``'s ``meanwhile``). So a click shows after the rest of the round's image
encoder, not after the whole round, and its object is tracked on the round's frames; a change
that would hand a tracker of the round a frame of its own, or that finds no frame to land on
because the frame on screen went to a round not yet done, runs at that round's end. Prompts
arrive as protocol-neutral ``PromptRequest``s, so the same engine serves the websocket of a
local server and a cluster worker alike. A round that fails (a GPU out of memory included) is reported
through ``on_error``, and its streams show their frames without masks until a round succeeds;
a round that ran out of memory halves the batch limit, which grows back after
``GOOD_ROUNDS_TO_GROW`` good rounds.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from ..concurrency.thread import TRACKER_NICE, WorkerThread
from ..concurrency.waits import CLOSE_TIMEOUT_S
from ..errors import NoFrameError, UnavailableError
from ..model.interface import Tracker
from ..model.preprocess import scaled_size
from ..model.prompts import Mask
from ..model.tracker import FrameOrigin, FrameResult
from ..sources import Frame
from ..video.frame import Masks
from .display import Display
from .landing import Landed, PromptRequest, land, landed_frames

logger = logging.getLogger(__name__)

GOOD_ROUNDS_TO_GROW = 100


@dataclass(frozen=True)
class Change:
    """What a prompt (or a restore) did: the objects now tracked, and the tracker's result on the
    frame it ends on (full size), with that result's logits at the display's mask size."""

    obj_ids: list[int]
    result: FrameResult
    frame: Landed
    logits: np.ndarray  # float32 [N, h, w] at the mask size
    stepped: int  # frames the tracker was handed for it (a prompt on a frame newer than any tracked)
    waited_s: float = 0.0  # queued behind the round in flight (where a click waits)
    ran_s: float = 0.0  # its own time on the tracker


@dataclass(frozen=True)
class Outcome:
    """One stream's share of a round: the tracker's result (None: the round failed)."""

    frame: Frame
    result: FrameResult | None
    elapsed_ms: float


MAX_PUT_OFF = 4  # rounds a change may wait for a frame to land on before it fails


class _LaterError(Exception):
    """Raised by a change, inside a round, that would step one of the round's trackers."""


class Track:
    """One stream's part of the engine: its tracker, and the display its stream gave it."""

    def __init__(self, name: str, tracker: Tracker, display: Display) -> None:
        self.name, self.tracker, self.display = name, tracker, display
        self._obj_ids: tuple[int, ...] = ()  # snapshot for the event loop; the tracker lives on its thread

    @property
    def obj_ids(self) -> list[int]:
        """Objects tracked as of the last frame or prompt (safe to read from any thread)."""
        return list(self._obj_ids)

    @property
    def frame_index(self) -> int | None:
        """The tracker's index of its newest frame (what ``frame_index`` in a prompt names)."""
        return self.tracker.frame_index


@dataclass
class _Queued:
    """A change waiting for the tracker, and where its result goes."""

    track: Track
    fn: Callable[[], Any]
    done: concurrent.futures.Future[Any]
    put_off: int = 0  # times it waited for a round's end


class Engine:
    """Trackers of every stream on one model, stepped in batched rounds on one thread."""

    def __init__(
        self,
        mask_width: int = 480,
        *,
        max_batch: int = 16,
        on_error: Callable[[str, str, str], None] | None = None,
        model: Tracker | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.mask_width = mask_width  # results' logits are kept at most this wide (the display's)
        self.max_batch = max_batch
        self.on_error = on_error  # (stream, kind, message): a round failed for that stream
        self.tracks: dict[str, Track] = {}
        # Halved when a round runs out of GPU memory, doubled back after a run of good rounds.
        self.batch_limit = max_batch
        self.busy_s = 0.0  # time spent in rounds and prompts (a cluster's placement reads it)
        self.round_ms = 0.0  # the last round's
        self._good_rounds = 0
        self._thread = WorkerThread("tracker", nice=TRACKER_NICE)  # below the video path
        self._model_tracker = model  # the model's tracker: every stream's is it or its sibling
        self._model_free = model is not None  # no stream has it yet
        self._changes: collections.deque[_Queued] = collections.deque()  # touched on the thread, and appended to
        self._stepping: set[int] = set()  # on the thread: ids of the trackers of the round in its pause

    @property
    def random_weights(self) -> bool:
        """Whether the model runs on seeded random weights (the page then says so)."""
        return bool(getattr(self._model_tracker, "random_weights", False))

    @property
    def on_cpu(self) -> bool:
        """Whether the model runs on the CPU (where rounds share the cores with the video)."""
        device = getattr(self._model_tracker, "device", None)
        return device is not None and torch.device(device).type == "cpu"

    @property
    def model(self) -> dict[str, Any]:
        """Which model tracks (its family, size, input size, device): for /healthz and the page."""
        describe = getattr(self._model_tracker, "describe", None)
        return describe() if describe else {"title": type(self._model_tracker).__name__}

    def add(self, name: str, display: Display, tracker: Tracker | None = None) -> Track:
        """A stream's track, on its ``display``. The first one's tracker holds the model (given here, or to the
        engine); later ones are its siblings unless given their own (which must share the model)."""
        if tracker is None:
            if self._model_tracker is None:
                raise ValueError("the first stream needs a tracker: it brings the model")
            if self._model_free:
                tracker, self._model_free = self._model_tracker, False
            else:
                tracker = self._model_tracker.sibling()
        elif any(track.tracker is tracker for track in self.tracks.values()):
            raise ValueError("that tracker already tracks another stream: give each stream its own (sibling())")
        elif self._model_tracker is None:
            self._model_tracker = tracker
        else:
            self._model_tracker.check_sibling(tracker)
            self._model_free = self._model_free and tracker is not self._model_tracker
        track = Track(name, tracker, display)
        self.tracks[name] = track
        return track

    async def remove(self, track: Track) -> None:
        """Forget a stream: after any round that still holds its tracker."""
        self.tracks.pop(track.name, None)
        await self._thread.run(track.tracker.reset)

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Let a round in flight finish (trackers never run on two threads), then free the
        thread; False if it was still running after ``timeout`` (it ends in the background).
        Changes that never got to run are refused."""
        finished = await self._thread.close(timeout)
        while self._changes:
            queued = self._changes.popleft()
            if not queued.done.done():
                queued.done.set_exception(UnavailableError("the tracker is shutting down; nothing was changed"))
        return finished

    async def run(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the inference thread, after whatever is queued there."""
        return await self._thread.run(self._timed, fn)

    # -- rounds ---------------------------------------------------------------------------------

    async def round(self, batch: Sequence[tuple[Track, Frame]], threads: int | None = None) -> list[Outcome]:
        """Track one frame of each stream in ``batch`` together, on ``threads`` CPU threads if given."""
        outcomes = await self._thread.run(self._timed, lambda: self._round(batch, threads))
        return outcomes  # type: ignore[return-value]  # _timed returns what it ran

    def _round(self, batch: Sequence[tuple[Track, Frame]], threads: int | None = None) -> list[Outcome]:
        if threads:
            # OpenMP's count is the calling thread's own, but MKL's is the process's: said again
            # every round, in case another thread (a detector's) set it since.
            torch.set_num_threads(threads)
        if not batch:
            self._run_changes()
            return []
        started = time.perf_counter()
        tracks = [track for track, _ in batch]
        frames = [frame for _, frame in batch]
        results: list[FrameResult | None]
        try:
            step = type(tracks[0].tracker).step_round
            results = list(
                step(
                    [t.tracker for t in tracks],
                    [f.image for f in frames],
                    mask_width=self.mask_width,
                    origins=[FrameOrigin(f.index, f.captured_at) for f in frames],
                    meanwhile=lambda: self._changes_meanwhile(tracks),
                )
            )
            self._good_rounds += 1
            if self._good_rounds >= GOOD_ROUNDS_TO_GROW and self.batch_limit < self.max_batch:
                self.batch_limit, self._good_rounds = min(self.max_batch, 2 * self.batch_limit), 0
        except Exception as exc:  # keep streaming: show the frames without masks
            self._report(tracks, exc)
            results = [None] * len(batch)
            if isinstance(exc, torch.OutOfMemoryError):
                self._shrink(len(batch))
        elapsed = self.round_ms = 1000 * (time.perf_counter() - started)
        for track, frame, result in zip(tracks, frames, results):
            if result is None:
                track.display.set_masks(None)  # until a round succeeds, the masks would be guesses
                continue
            track._obj_ids = tuple(result.obj_ids)
            track.display.set_masks(Masks(frame.index, frame.captured_at, list(result.obj_ids), result.logits))
        self._run_changes()  # those that waited for this round's frames
        return [Outcome(frame, result, elapsed) for frame, result in zip(frames, results)]

    def _shrink(self, failed_size: int) -> None:
        """After an out-of-memory round: smaller rounds from now on (each stream still gets its
        turn, the longest-waiting first), and the allocator's cache back to the device."""
        self._good_rounds = 0
        if failed_size > 1:
            self.batch_limit = max(1, failed_size // 2)
            logger.warning(
                "out of GPU memory with %d streams in a round: now at most %d", failed_size, self.batch_limit
            )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _report(self, tracks: list[Track], exc: Exception) -> None:
        kind = "out_of_memory" if isinstance(exc, torch.OutOfMemoryError) else "inference"
        message = f"{kind.replace('_', ' ')} error: {exc}"
        if kind == "out_of_memory":
            message += " (frames are shown without masks; remove objects or streams, or use a smaller --image-size)"
        logger.exception("round of %s failed: %s", [t.name for t in tracks], message)
        if self.on_error is not None:
            for track in tracks:
                self.on_error(track.name, kind, message)

    def _timed(self, fn: Callable[[], object]) -> object:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.busy_s += time.perf_counter() - started

    # -- prompts --------------------------------------------------------------------------------

    async def prompt(self, track: Track, request: PromptRequest) -> Change:
        """Apply a viewer's prompt on the frame they saw; its result is shown at once."""
        asked = time.perf_counter()
        started: list[float] = []

        def run() -> Change:
            started.append(time.perf_counter())
            return self._prompt(track, request)

        change: Change = await self._change(track, run)
        done = time.perf_counter()
        return dataclasses.replace(change, waited_s=started[-1] - asked, ran_s=done - started[-1])

    async def restore(self, track: Track, masks: dict[int, np.ndarray]) -> Change:
        """Bring objects back under their ids, each prompted by a mask (any size: scaled to the
        frame) on the newest frame shown: a stream moved to this engine from a lost one."""
        return await self._change(track, lambda: self._restore(track, masks))

    async def remove_object(self, track: Track, obj_id: int) -> list[int]:
        def remove() -> list[int]:
            track.tracker.remove_object(obj_id)
            track.display.drop_object(obj_id)
            return track.tracker.obj_ids

        obj_ids: list[int] = await self._change(track, remove)
        return obj_ids

    async def reset(self, track: Track) -> list[int]:
        def reset() -> list[int]:
            track.tracker.reset()
            track.display.tracker_forgot()
            track.display.set_masks(None)
            return track.tracker.obj_ids

        obj_ids: list[int] = await self._change(track, reset)
        return obj_ids

    async def _change(self, track: Track, fn: Callable[[], Any]) -> Any:
        """Run a tracker change on the inference thread: in the pause of a round in flight, else
        just after whatever is queued there; snapshots the object ids."""

        def call() -> Any:
            try:
                return fn()
            finally:
                track._obj_ids = tuple(track.tracker.obj_ids)

        queued = _Queued(track, call, concurrent.futures.Future())
        self._changes.append(queued)
        self._thread.submit(self._timed, self._run_changes)  # finds nothing if a round ran it first
        return await asyncio.wrap_future(queued.done)

    def _changes_meanwhile(self, tracks: list[Track]) -> None:
        """A round's pause (its image features made, its frames not yet tracked): the changes
        queued so far."""
        self._stepping = {id(track.tracker) for track in tracks}
        try:
            self._run_changes()
        finally:
            self._stepping = set()

    def _run_changes(self) -> None:
        """Every queued change in order, each one's result or error to its future. One that must
        wait for a round's end stops the run, first in line: it would step a tracker of the
        round in its pause, or it found no frame to land on while the frame on screen is with a
        round not yet done (every round runs the queue when it ends)."""
        while self._changes:
            queued = self._changes[0]
            try:
                result = queued.fn()
            except (_LaterError, NoFrameError) as exc:
                if queued.put_off < MAX_PUT_OFF and (
                    isinstance(exc, _LaterError) or self._frame_on_its_way(queued.track)
                ):
                    queued.put_off += 1
                    return
                queued.done.set_exception(exc)
            except BaseException as exc:  # the caller's to handle, as if it had run the change itself
                queued.done.set_exception(exc)
            else:
                queued.done.set_result(result)
            self._changes.popleft()

    @staticmethod
    def _frame_on_its_way(track: Track) -> bool:
        """Whether a frame newer than the tracker's newest was handed to a round not yet done."""
        frames = landed_frames(track.tracker.tracked_frames)
        return track.display.handed_since(frames[-1].source if frames else None)

    def _prompt(self, track: Track, request: PromptRequest) -> Change:
        stepped: list[Landed] = []
        target, prompt = land(request, track.tracker.tracked_frames, track.display, self._stepper(track, stepped))
        result = track.tracker.prompt(request.obj_id, prompt, target.index)
        return self._shown(track, result, len(stepped))

    def _restore(self, track: Track, masks: dict[int, np.ndarray]) -> Change:
        newest = track.display.newest()
        image = None if newest is None else track.display.image(newest)
        captured_at = None if newest is None else track.display.captured_at(newest)
        stepped: list[Landed] = []
        if newest is not None and image is not None and captured_at is not None:
            target = self._stepper(track, stepped)(FrameOrigin(newest, captured_at), image)
        else:  # the newest frame shown is already tracked: restore there
            frames = landed_frames(track.tracker.tracked_frames)
            if not frames:
                raise NoFrameError("no frame to restore objects on yet; wait for the video")
            target = frames[-1]
        result = None
        for obj_id, mask in masks.items():
            full = cv2.resize(mask.astype(np.uint8), (target.width, target.height), interpolation=cv2.INTER_NEAREST)
            result = track.tracker.prompt(obj_id, Mask(full.astype(bool)), target.index)
        if result is None:
            raise ValueError("restore needs at least one object's mask")
        return self._shown(track, result, len(stepped))

    def _stepper(self, track: Track, stepped: list[Landed]) -> Callable[[FrameOrigin, np.ndarray], Landed]:
        """Hands a camera frame to the tracker ahead of the rounds (a prompt names it)."""

        def step(origin: FrameOrigin, image: np.ndarray) -> Landed:
            if id(track.tracker) in self._stepping:
                raise _LaterError  # a frame stepped now would be newer than the round's own
            result = track.tracker.step(image, origin)
            track.display.tracker_took(origin.source)
            frame = Landed(result.frame_index, origin.source, origin.captured_at, *image.shape[:2])
            stepped.append(frame)
            return frame

        return step

    def _shown(self, track: Track, result: FrameResult, stepped: int) -> Change:
        """A prompt's result (the tracker's newest frame, full size) becomes the shown masks."""
        frames = landed_frames(track.tracker.tracked_frames)
        frame = next(f for f in reversed(frames) if f.index == result.frame_index)
        size = scaled_size(frame.height, frame.width, self.mask_width)
        logits = np.zeros((0, *size), np.float32)
        if len(result.logits):
            logits = np.stack([cv2.resize(x, size[::-1], interpolation=cv2.INTER_AREA) for x in result.logits])
        track.display.set_masks(Masks(frame.source, frame.captured_at, list(result.obj_ids), logits))
        return Change(list(result.obj_ids), result, frame, logits, stepped)
