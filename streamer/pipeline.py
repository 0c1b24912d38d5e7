"""Where a frame goes: source -> display (every frame, newest masks carried onto it) -> viewers,
and, when the inference worker is free, -> tracker -> the stream's newest masks.

Each ``Stream`` has a feeder task that takes every frame its camera delivers, hands it to its
``Display`` (on the stream's display thread) and publishes the result at the camera's rate; it
also leaves the frame in ``pending``, a one-frame slot for the tracker. The ``Pipeline``'s worker
wakes when any stream has one, takes the newest frame of every stream that has one and steps
them together (``step_streams``): one model, one batch, so N cameras cost much less than N times
one. A stalled camera simply has no frame to offer and holds nobody back; when more streams are
ready than ``max_batch``, the ones served longest ago go first, so none starves. Tracker calls
(frames and prompts alike) run one at a time on a single worker thread, off the event loop.
Errors in a round (a GPU out of memory included) are reported and the stream shows its frames
without masks until the next good round; tracking goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from .display import Display, DisplayConfig, Masks, Output
from .events import EventsConfig
from .landing import TrackedFrame, TrackedFrames, land
from .metrics import Metrics, StreamMetrics
from .outputs import Outputs
from .preprocess import scaled_size
from .protocol import AddBox, AddPoints, ProtocolError
from .results import Tracked, wall_clock
from .sources import Frame, FrameSource, SourceError, SourceTimeoutError
from .tracker import FrameResult
from .worker import WorkerThread

logger = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
GOOD_ROUNDS_TO_GROW = 100
FEED_RETRY_S = (0.1, 5.0)  # backoff after an unexpected error in a camera's loop


class Tracker(Protocol):
    """What the pipeline needs of a tracker: ``StreamingTracker``, or a stand-in for tests."""

    history: int

    @property
    def obj_ids(self) -> list[int]: ...

    @property
    def frame_index(self) -> int | None: ...

    def step(self, frame: np.ndarray) -> FrameResult: ...

    def add_prompt(self, obj_id: int, **prompt: Any) -> FrameResult: ...

    def remove_object(self, obj_id: int) -> None: ...

    def reset(self) -> None: ...

    def sibling(self) -> Tracker: ...

    def check_sibling(self, other: Any) -> None: ...

    @staticmethod
    def step_round(
        trackers: Sequence[Any], frames: Sequence[np.ndarray], *, mask_width: int | None = None
    ) -> list[FrameResult]: ...


def event_rate(times: deque[float], now: float, window: float = 5.0) -> float:
    """Events per second from ``times`` (monotonic stamps): over the last ``window`` seconds, or
    the last two events if they are further apart; it decays when events stop coming."""
    recent = [t for t in times if t >= now - window]
    if len(recent) < 2:
        recent = list(times)[-2:]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    gap = now - recent[-1]
    if gap > 2 * span / (len(recent) - 1):
        span += gap
    return (len(recent) - 1) / max(span, 1e-6)


@dataclass
class StreamState:
    inference_ms: float = 0.0
    latency_ms: float = 0.0
    mask_age_ms: float | None = None  # of the newest published frame (None: no masks on it)
    last_error: str | None = None
    video_times: deque[float] = field(default_factory=lambda: deque(maxlen=60))  # frames published
    mask_times: deque[float] = field(default_factory=lambda: deque(maxlen=30))  # masks from the tracker
    recent_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=300))

    @property
    def video_fps(self) -> float:
        return event_rate(self.video_times, time.monotonic())

    @property
    def mask_fps(self) -> float:
        return event_rate(self.mask_times, time.monotonic())

    def latency_percentiles(self) -> dict[str, float | None]:
        """Median and p90 of the last 300 capture-to-sent latencies."""
        values = sorted(self.recent_latency_ms)
        if not values:
            return {"p50": None, "p90": None}
        return {"p50": values[len(values) // 2], "p90": values[int(0.9 * (len(values) - 1))]}


class Stream:
    """One camera: its source, its display, its tracker state and its prompts."""

    def __init__(self, name: str, source: FrameSource, tracker: Tracker, pipeline: Pipeline) -> None:
        self.name, self.source, self.tracker, self.pipeline = name, source, tracker, pipeline
        self.metrics: StreamMetrics = pipeline.metrics.stream(name)
        self.state = StreamState()
        self.display = Display(pipeline.display)
        self.metrics.video_fps.set_function(lambda: self.state.video_fps)
        self.metrics.mask_fps.set_function(lambda: self.state.mask_fps)
        self.pending: Frame | None = None  # the newest frame the worker has not taken yet
        self.served_at = 0.0  # when the worker last took a frame from this stream
        self._latest: Output | None = None
        self._changed = asyncio.Condition()
        self._tracked = TrackedFrames(tracker.history)  # changed on the tracker thread only
        self._obj_ids: tuple[int, ...] = ()  # snapshot for the event loop; the tracker lives on its thread
        self._seq = 0
        self._feeder: asyncio.Task[None] | None = None
        self._display_thread = WorkerThread(f"display {name}")
        self._taken = 0
        self._watchers = 0

    @property
    def obj_ids(self) -> list[int]:
        """Objects tracked as of the last frame or prompt (safe to read from the event loop)."""
        return list(self._obj_ids)

    @property
    def frame_index(self) -> int | None:
        """The tracker's index of its newest frame (what ``frame_index`` in a prompt names)."""
        newest = self._tracked.newest  # a deque's last item: safe to read from the event loop
        return None if newest is None else newest.index

    @property
    def source_alive(self) -> bool:
        return self.source.stats.connected

    @property
    def reconnecting(self) -> bool:
        """The camera is gone and the source is trying to get it back."""
        running = self._feeder is not None and not self._feeder.done()
        return running and not self.source.stats.connected

    @property
    def latest(self) -> Output | None:
        return self._latest

    async def next_output(self, after: int) -> Output:
        """The newest output with a ``seq`` above ``after`` (waits for one)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._latest is not None and self._latest.seq > after)
            return self._latest  # type: ignore[return-value]

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Someone uses this stream's frames (an encoder, for its viewers): only then are the
        masks carried onto every frame; unwatched, the display just remembers frames."""
        self._watchers += 1
        try:
            yield
        finally:
            self._watchers -= 1

    def record_sent(self, output: Output) -> None:
        """The encoder took ``output``: record capture-to-sent latency."""
        latency = 1000 * (time.monotonic() - output.captured_at)
        self.metrics.latency_ms.observe(latency)
        self.state.latency_ms = latency
        self.state.recent_latency_ms.append(latency)

    # -- prompts --------------------------------------------------------------------------------

    async def prompt(self, message: AddPoints | AddBox, shown: int | None = None) -> list[int]:
        """Apply a viewer's prompt on the frame they saw; return the object ids now tracked.

        ``shown`` is the source's index of the frame on the viewer's screen when it is known
        exactly (from the video's RTP timestamp); otherwise ``frame_ts`` estimates it, and
        ``frame_index`` names a tracked frame directly. See docs/protocol.md for where it lands.
        """
        return await self._call(lambda: self._apply(message, shown))

    async def remove_object(self, obj_id: int) -> list[int]:
        def remove() -> list[int]:
            self.tracker.remove_object(obj_id)
            self.display.drop_object(obj_id)
            self._results_without({obj_id})
            return self.tracker.obj_ids

        return await self._call(remove)

    async def reset(self) -> list[int]:
        def reset() -> list[int]:
            self.tracker.reset()
            self._tracked.clear()  # the tracker forgot them: prompts go to the next frames
            self.display.set_masks(None)
            self._results_without(None)
            return self.tracker.obj_ids

        return await self._call(reset)

    async def _call(self, fn: Callable[[], list[int]]) -> list[int]:
        """Run a tracker change on the tracker thread; returns (and snapshots) the object ids."""

        def call() -> list[int]:
            try:
                return fn()
            finally:
                self._obj_ids = tuple(self.tracker.obj_ids)

        return await self.pipeline.run_on_tracker_thread(call)  # type: ignore[return-value]

    def _apply(self, message: AddPoints | AddBox, shown: int | None) -> list[int]:
        """On the tracker thread: find the frame, put the prompt on it, show the result at once."""
        target, prompt = land(message, shown, self._tracked, self.display, self._step_now)
        result = self.tracker.add_prompt(message.obj_id, frame_index=target.index, **prompt)
        self._show_result(result)
        return result.obj_ids

    def _step_now(self, source: int, image: np.ndarray) -> TrackedFrame:
        """Hand camera frame ``source`` to the tracker ahead of the worker (a prompt names it)."""
        result = self.tracker.step(image)
        captured_at = self.display.captured_at(source)
        frame = self._tracked.add(
            result.frame_index, source, time.monotonic() if captured_at is None else captured_at, image
        )
        self.display.tracker_took(source)
        self.metrics.frames_processed.inc()
        return frame

    def _show_result(self, result: FrameResult) -> None:
        """A prompt's result (the tracker's newest frame, full size) becomes the shown masks."""
        frame = self._tracked.find(result.frame_index)
        if frame is None:  # not a frame this stream handed over (cannot happen; never worth a crash)
            return
        size = scaled_size(frame.height, frame.width, self.display.config.mask_width)
        logits = np.zeros((0, *size), np.float32)
        if len(result.logits):
            logits = np.stack([cv2.resize(x, size[::-1], interpolation=cv2.INTER_AREA) for x in result.logits])
        self.display.set_masks(Masks(frame.source, frame.captured_at, list(result.obj_ids), logits))
        self.state.mask_times.append(time.monotonic())
        at, size = wall_clock(frame.captured_at), (frame.height, frame.width)
        self.pipeline.outputs.offer(Tracked.of(self.name, result, frame.source, at, size, logits))

    # -- results as data ------------------------------------------------------------------------

    def _results_without(self, obj_ids: set[int] | None) -> None:
        """Objects were removed by a prompt (None: all): the newest results lose them now."""
        latest = self.pipeline.outputs.latest(self.name)
        if latest is not None:
            gone = set(latest.obj_ids) if obj_ids is None else obj_ids
            self.pipeline.outputs.offer(latest.without(gone, time.time()))

    # -- the camera's side ----------------------------------------------------------------------

    def start(self, wake: asyncio.Event) -> None:
        self._feeder = asyncio.create_task(self._feed(wake), name=f"feeder {self.name}")

    async def stop(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
            self._feeder = None
        await self._display_thread.close()
        await self.source.close()

    async def _feed(self, wake: asyncio.Event) -> None:
        """Show every frame the camera delivers, and leave the newest in ``pending`` for the
        tracker (a frame replaced before the worker took it is simply not tracked)."""
        retry = FEED_RETRY_S[0]
        while True:
            try:
                async for frame in self.source:
                    output = await self._show(frame)
                    self.pending = frame
                    self._sync_source_metrics()
                    wake.set()
                    await self.publish(output)
                    retry = FEED_RETRY_S[0]
                return  # the source ended (a file without looping)
            except SourceTimeoutError as exc:
                self.state.last_error = str(exc)
                self._sync_source_metrics()
                logger.warning("%s: %s", self.name, exc)
            except SourceError as exc:
                self.state.last_error = str(exc)
                logger.error("%s: source stopped: %s", self.name, exc)
                return
            except Exception as exc:  # a bug: never let it end this camera's video for good
                logger.exception("%s: camera loop failed; going on in %.1f s", self.name, retry)
                self.state.last_error = f"camera loop error: {exc}"
                self.metrics.error("camera")
                await asyncio.sleep(retry)
                retry = min(2 * retry, FEED_RETRY_S[1])

    async def _show(self, frame: Frame) -> Output:
        try:
            return await self._display_thread.run(self.display.show, frame, self._watchers > 0)
        except Exception:  # the video goes on, without masks on this frame
            logger.exception("%s: drawing a frame's masks failed", self.name)
            self.metrics.error("display")
            return Output(frame.image, frame.index, frame.captured_at)

    async def publish(self, output: Output) -> None:
        self.state.video_times.append(time.monotonic())
        self.state.mask_age_ms = output.mask_age_ms
        self.metrics.frames_displayed.inc()
        if output.mask_age_ms is not None:
            self.metrics.mask_age_ms.observe(output.mask_age_ms)
        async with self._changed:
            self._latest = dataclasses.replace(output, seq=self._seq)
            self._seq += 1
            self._changed.notify_all()

    def take(self) -> Frame:
        frame, self.pending = self.pending, None
        assert frame is not None
        self.served_at = time.monotonic()
        self._taken += 1
        self.display.tracker_took(frame.index)
        return frame

    def finish(self, frame: Frame, result: FrameResult | None, previous: int | None, elapsed_ms: float) -> None:
        """Take one stream's result of a round (on the tracker thread); ``previous`` is the
        tracker's frame index before the round, which tells whether a failed frame got one."""
        if result is None:
            index = self.tracker.frame_index
            if index is not None and index != previous:
                self._tracked.add(index, frame.index, frame.captured_at, frame.image)
            self.display.set_masks(None)  # until a round succeeds, the masks would be guesses
            return
        self._obj_ids = tuple(result.obj_ids)
        self._tracked.add(result.frame_index, frame.index, frame.captured_at, frame.image)
        self.metrics.inference_ms.observe(elapsed_ms)
        self.metrics.frames_processed.inc()
        self.state.inference_ms = elapsed_ms
        if result.obj_ids:
            self.state.mask_times.append(time.monotonic())
        self.display.set_masks(Masks(frame.index, frame.captured_at, list(result.obj_ids), result.logits))
        # To the outputs: a reference, measured only if someone listens.
        at = wall_clock(frame.captured_at)
        self.pipeline.outputs.offer(Tracked.of(self.name, result, frame.index, at, frame.image.shape[:2]))

    def _sync_source_metrics(self) -> None:
        stats = self.source.stats
        self.metrics.frames_captured.set(stats.decoded)
        # Not tracked: dropped by the source's slot (not shown either) or replaced in ``pending``.
        self.metrics.frames_dropped.set(max(0, stats.decoded - self._taken - (self.pending is not None)))
        self.metrics.reconnects.set(stats.reconnects)


class Pipeline:
    """Every stream of the server and the one inference worker that serves them all."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        display: DisplayConfig | None = None,
        events: EventsConfig | None = None,
        max_batch: int = 16,
        on_error: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.metrics = metrics or Metrics()
        self.display = display or DisplayConfig()
        self.max_batch = max_batch
        self.on_error = on_error  # (stream, code, message) -> None, e.g. broadcast to viewers
        self.streams: dict[str, Stream] = {}
        self.outputs = Outputs(self.metrics, events)  # results and events, for whoever listens
        self._tracker_thread = WorkerThread("tracker")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._model_tracker: Tracker | None = None
        # Halved when a round runs out of GPU memory, doubled back after a run of good rounds.
        self.batch_limit = max_batch
        self._good_rounds = 0

    @property
    def random_weights(self) -> bool:
        """Whether the model runs on seeded random weights (the page then says so)."""
        return bool(getattr(self._model_tracker, "random_weights", False))

    def add_stream(self, name: str, source: FrameSource, tracker: Tracker | None = None) -> Stream:
        """Add a camera. The first stream's tracker holds the model; later ones are its siblings
        unless given their own (which must then share the model)."""
        self.check_new_name(name)
        if tracker is None:
            if self._model_tracker is None:
                raise ValueError("the first stream needs a tracker: it brings the model")
            tracker = self._model_tracker.sibling()
        elif self._model_tracker is not None:
            self._model_tracker.check_sibling(tracker)
        self._model_tracker = self._model_tracker or tracker
        stream = Stream(name, source, tracker, self)
        self.streams[name] = stream
        self.outputs.register(name, stream.metrics)
        if self._task is not None:
            stream.start(self._wake)
        return stream

    def check_new_name(self, name: str) -> None:
        """Raise a ProtocolError unless ``name`` is valid and free (callers check before opening a camera)."""
        if not STREAM_NAME.fullmatch(name):
            raise ProtocolError(
                "bad_field",
                f"stream name {name!r} must be 1-32 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        if name in self.streams:
            raise ProtocolError("stream_exists", f"there is already a stream named {name!r}")

    async def remove_stream(self, name: str) -> None:
        stream = self.stream(name)
        del self.streams[name]
        await stream.stop()
        await self.run_on_tracker_thread(stream.tracker.reset)  # after any round that still holds it
        stream.metrics.removed = True
        self.outputs.forget(name)
        self.metrics.forget(name)

    def stream(self, name: str | None) -> Stream:
        """The named stream, or the first one when ``name`` is None."""
        if name is None and self.streams:
            return next(iter(self.streams.values()))
        if name not in self.streams:
            raise ProtocolError("unknown_stream", f"no stream named {name!r}; streams are {list(self.streams)}")
        return self.streams[name]

    def start(self) -> None:
        for stream in self.streams.values():
            stream.start(self._wake)
        self.outputs.start()
        self._task = asyncio.create_task(self._run(), name="inference worker")

    async def stop(self) -> None:
        """Stop the worker, close every source, then free the tracker thread. Safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(stream.stop() for stream in self.streams.values()))
        # Let a round in flight finish (the trackers must never run on two threads), but do not
        # hold Ctrl-C hostage to a slow CPU frame.
        if not await self._tracker_thread.close(timeout=1.5):
            logger.warning("a tracker step is still running; it will finish in the background")
        await self.outputs.stop()

    async def run_on_tracker_thread(self, fn: Callable[[], object]) -> object:
        return await self._tracker_thread.run(fn)

    def ready(self) -> list[Stream]:
        """Streams with a new frame, longest-unserved first, at most the current batch limit."""
        waiting = [s for s in self.streams.values() if s.pending is not None]
        return sorted(waiting, key=lambda s: s.served_at)[: self.batch_limit]

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = self.ready()
            if not batch:
                continue
            frames = [stream.take() for stream in batch]
            if any(s.pending is not None for s in self.streams.values()):
                self._wake.set()  # streams left out of a full batch go next
            try:
                await self._tracker_thread.run(self._process, batch, frames)
            except Exception:  # a bug in a stream's bookkeeping, say: never let it stop every stream
                logger.exception("round of %s failed after tracking", [s.name for s in batch])

    def _process(self, batch: list[Stream], frames: list[Frame]) -> None:
        """Track one round (on the tracker thread) and hand each stream its masks."""
        started = time.perf_counter()
        previous = [s.tracker.frame_index for s in batch]
        results: list[FrameResult | None]
        try:
            trackers, images = [s.tracker for s in batch], [f.image for f in frames]
            step = type(trackers[0]).step_round
            results = list(step(trackers, images, mask_width=self.display.mask_width))
            self._good_rounds += 1
            if self._good_rounds >= GOOD_ROUNDS_TO_GROW and self.batch_limit < self.max_batch:
                self.batch_limit, self._good_rounds = min(self.max_batch, 2 * self.batch_limit), 0
        except Exception as exc:  # keep streaming: show the frames without masks
            self._report(batch, exc)
            results = [None] * len(batch)
            if isinstance(exc, torch.OutOfMemoryError):
                self._shrink(len(batch))
        elapsed = 1000 * (time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        for stream, frame, result, before in zip(batch, frames, results, previous):
            stream.finish(frame, result, before, elapsed)

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

    def _report(self, batch: list[Stream], exc: Exception) -> None:
        kind = "out_of_memory" if isinstance(exc, torch.OutOfMemoryError) else "inference"
        message = f"{kind.replace('_', ' ')} error: {exc}"
        if kind == "out_of_memory":
            message += " (frames are shown without masks; remove objects or streams, or use a smaller --image-size)"
        logger.exception("round of %s failed: %s", [s.name for s in batch], message)
        for stream in batch:
            stream.metrics.error(kind)
            stream.state.last_error = message
            if self.on_error is not None:
                self.on_error(stream.name, kind, message)


__all__ = ["STREAM_NAME", "Output", "Pipeline", "Stream", "StreamState", "Tracker", "event_rate"]
