"""Where a frame goes: sources -> one inference worker for every stream -> overlay -> each
stream's latest output.

Each ``Stream`` has a feeder task that keeps only its camera's newest frame. The ``Pipeline``'s
worker wakes when any stream has one, takes the newest frame of every stream that has one and
steps them together (``step_streams``): one model, one batch, so N cameras cost much less than
N times one. A stalled camera simply has no frame to offer and holds nobody back; when more
streams are ready than ``max_batch``, the ones served longest ago go first, so none starves.
Tracker calls (frames and prompts alike) run one at a time on a single worker thread, off the
event loop. Errors in a round (a GPU out of memory included) are reported and its frames are
shown without masks; tracking goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .metrics import Metrics, StreamMetrics
from .overlay import draw_masks, draw_masks_torch
from .protocol import AddBox, AddPoints, ProtocolError
from .sources import Frame, FrameSource, SourceError, SourceTimeoutError
from .tracker import FrameResult, StreamingTracker, step_streams

logger = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
GOOD_ROUNDS_TO_GROW = 100


@dataclass(frozen=True)
class Output:
    """One processed frame, ready to encode."""

    image: np.ndarray  # HxWx3 uint8 RGB with masks drawn
    frame_index: int | None  # the tracker's index; None if the frame failed before it got one
    captured_at: float  # monotonic, from the source
    obj_ids: list[int]
    seq: int = -1  # counts published outputs: what viewers use to tell a new frame


@dataclass
class StreamState:
    fps: float = 0.0
    inference_ms: float = 0.0
    latency_ms: float = 0.0
    last_error: str | None = None
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=30))
    recent_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=300))

    def latency_percentiles(self) -> dict[str, float | None]:
        """Median and p90 of the last 300 capture-to-sent latencies."""
        values = sorted(self.recent_latency_ms)
        if not values:
            return {"p50": None, "p90": None}
        return {"p50": values[len(values) // 2], "p90": values[int(0.9 * (len(values) - 1))]}


class Stream:
    """One camera: its source, its tracker state, its latest output and its prompts."""

    def __init__(self, name: str, source: FrameSource, tracker: StreamingTracker, pipeline: Pipeline) -> None:
        self.name, self.source, self.tracker, self.pipeline = name, source, tracker, pipeline
        self.metrics: StreamMetrics = pipeline.metrics.stream(name)
        self.state = StreamState()
        self.pending: Frame | None = None  # the newest frame the worker has not taken yet
        self.served_at = 0.0  # when the worker last took a frame from this stream
        self._latest: Output | None = None
        self._changed = asyncio.Condition()
        self._frames: deque[tuple[int, int, int, float]] = deque(maxlen=tracker.history)  # index, h, w, wall ms
        self._obj_ids: tuple[int, ...] = ()  # snapshot for the event loop; the tracker lives on its thread
        self._seq = 0
        self._feeder: asyncio.Task[None] | None = None
        self._taken = 0

    @property
    def obj_ids(self) -> list[int]:
        """Objects tracked as of the last frame or prompt (safe to read from the event loop)."""
        return list(self._obj_ids)

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

    def record_sent(self, output: Output) -> None:
        """The encoder took ``output``: record capture-to-sent latency."""
        latency = 1000 * (time.monotonic() - output.captured_at)
        self.metrics.latency_ms.observe(latency)
        self.state.latency_ms = latency
        self.state.recent_latency_ms.append(latency)

    async def prompt(self, message: AddPoints | AddBox) -> list[int]:
        """Apply a viewer's prompt on the frame they saw; return the object ids now tracked."""
        index, height, width = self._resolve_frame(message.frame_index, message.frame_ts)
        if isinstance(message, AddPoints):
            kwargs = {
                "points": [[x * width, y * height] for x, y in message.points],
                "labels": message.labels,
            }
        else:
            x0, y0, x1, y1 = message.box
            kwargs = {"box": [x0 * width, y0 * height, x1 * width, y1 * height]}
        return await self._call(lambda: self.tracker.add_prompt(message.obj_id, frame_index=index, **kwargs).obj_ids)

    async def remove_object(self, obj_id: int) -> list[int]:
        def remove() -> list[int]:
            self.tracker.remove_object(obj_id)
            return self.tracker.obj_ids

        return await self._call(remove)

    async def reset(self) -> list[int]:
        objects = await self._call(lambda: (self.tracker.reset(), self.tracker.obj_ids)[1])
        self._frames.clear()  # the tracker forgot them: prompts go to the next frames
        return objects

    async def _call(self, fn: Callable[[], list[int]]) -> list[int]:
        """Run a tracker change on the tracker thread; returns (and snapshots) the object ids."""

        def call() -> list[int]:
            try:
                return fn()
            finally:
                self._obj_ids = tuple(self.tracker.obj_ids)

        return await self.pipeline.run_on_tracker_thread(call)

    def _resolve_frame(self, frame_index: int | None, frame_ts: float | None) -> tuple[int, int, int]:
        """The remembered frame a prompt refers to: by index, by capture time, else the newest."""
        frames = list(self._frames)
        if not frames:
            raise ProtocolError("no_frame", "no frame has been processed yet; wait for the video")
        if frame_index is not None:
            for index, h, w, _ in frames:
                if index == frame_index:
                    return index, h, w
            raise ProtocolError(
                "stale_frame",
                f"frame {frame_index} is no longer available (have {frames[0][0]}..{frames[-1][0]})",
            )
        if frame_ts is not None:
            index, h, w, _ = min(frames, key=lambda f: abs(f[3] - frame_ts))
            return index, h, w
        index, h, w, _ = frames[-1]
        return index, h, w

    # -- the worker's side ----------------------------------------------------------------------

    def start(self, wake: asyncio.Event) -> None:
        self._feeder = asyncio.create_task(self._feed(wake), name=f"feeder {self.name}")

    async def stop(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
            self._feeder = None
        await self.source.close()

    async def _feed(self, wake: asyncio.Event) -> None:
        """Keep the newest frame in ``pending``; a frame replaced before the worker took it is dropped."""
        while True:
            try:
                async for frame in self.source:
                    self.pending = frame
                    self._sync_source_metrics()
                    wake.set()
                return  # the source ended (a file without looping)
            except SourceTimeoutError as exc:
                self.state.last_error = str(exc)
                self._sync_source_metrics()
                logger.warning("%s: %s", self.name, exc)
            except SourceError as exc:
                self.state.last_error = str(exc)
                logger.error("%s: source stopped: %s", self.name, exc)
                return

    def take(self) -> Frame:
        frame, self.pending = self.pending, None
        assert frame is not None
        self.served_at = time.monotonic()
        self._taken += 1
        return frame

    def finish(
        self, frame: Frame, result: FrameResult | None, previous: int | None, elapsed_ms: float, labels: bool
    ) -> Output:
        """Draw one stream's result of a round (on the tracker thread); ``previous`` is the
        tracker's frame index before the round, which tells whether a failed frame got one."""
        if result is None:
            index = self.tracker.frame_index
            return Output(frame.image, index if index != previous else None, frame.captured_at, [])
        self._obj_ids = tuple(result.obj_ids)
        self.metrics.inference_ms.observe(elapsed_ms)
        self.metrics.frames_processed.inc()
        self.state.inference_ms = elapsed_ms
        if not result.obj_ids:
            drawn = frame.image
        elif isinstance(result.masks, torch.Tensor):
            upload = self.tracker.preprocess.upload(frame.image)
            drawn = draw_masks_torch(upload, result.masks, result.obj_ids, labels=labels)
        else:
            drawn = draw_masks(frame.image, result.masks, result.obj_ids, labels=labels)
        return Output(drawn, result.frame_index, frame.captured_at, result.obj_ids)

    async def publish(self, output: Output, frame: Frame) -> None:
        if output.frame_index is not None:
            wall = time.time() * 1000 - (time.monotonic() - frame.captured_at) * 1000
            self._frames.append((output.frame_index, *frame.image.shape[:2], wall))
        now = time.monotonic()
        times = self.state.frame_times
        times.append(now)
        if len(times) > 1:
            self.state.fps = (len(times) - 1) / max(1e-6, times[-1] - times[0])
        async with self._changed:
            self._latest = dataclasses.replace(output, seq=self._seq)
            self._seq += 1
            self._changed.notify_all()

    def _sync_source_metrics(self) -> None:
        stats = self.source.stats
        self.metrics.frames_captured.set(stats.decoded)
        # Dropped anywhere before the tracker: by the source's slot or by our own pending slot.
        self.metrics.frames_dropped.set(max(0, stats.decoded - self._taken - (self.pending is not None)))
        self.metrics.reconnects.set(stats.reconnects)


class Pipeline:
    """Every stream of the server and the one inference worker that serves them all."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        labels: bool = True,
        max_batch: int = 16,
        draw_on_device: bool | None = None,
        on_error: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.metrics = metrics or Metrics()
        self.labels, self.max_batch = labels, max_batch
        self.draw_on_device = draw_on_device  # None: where the model runs on a GPU
        self.on_error = on_error  # (stream, code, message) -> None, e.g. broadcast to viewers
        self.streams: dict[str, Stream] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracker")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._model_tracker: StreamingTracker | None = None
        # Halved when a round runs out of GPU memory, doubled back after a run of good rounds.
        self.batch_limit = max_batch
        self._good_rounds = 0

    def add_stream(self, name: str, source: FrameSource, tracker: StreamingTracker | None = None) -> Stream:
        """Add a camera. The first stream's tracker holds the model; later ones are its siblings
        unless given their own (which must then share the model)."""
        self.check_new_name(name)
        if tracker is None:
            if self._model_tracker is None:
                raise ValueError("the first stream needs a tracker: it brings the model")
            tracker = self._model_tracker.sibling()
        elif self._model_tracker is not None:
            self._model_tracker._check_sibling(tracker)
        self._model_tracker = self._model_tracker or tracker
        stream = Stream(name, source, tracker, self)
        self.streams[name] = stream
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
        self._executor.shutdown(wait=False, cancel_futures=True)
        drained = asyncio.to_thread(self._executor.shutdown, wait=True)
        try:
            await asyncio.wait_for(drained, timeout=1.5)
        except TimeoutError:
            logger.warning("a tracker step is still running; it will finish in the background")

    async def run_on_tracker_thread(self, fn: Callable[[], object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def ready(self) -> list[Stream]:
        """Streams with a new frame, longest-unserved first, at most the current batch limit."""
        waiting = [s for s in self.streams.values() if s.pending is not None]
        return sorted(waiting, key=lambda s: s.served_at)[: self.batch_limit]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
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
                outputs = await loop.run_in_executor(self._executor, self._process, batch, frames)
            except Exception:  # a bug in drawing, say: never let it stop every stream for good
                logger.exception("round of %s failed after tracking", [s.name for s in batch])
                continue
            for stream, frame, output in zip(batch, frames, outputs):
                await stream.publish(output, frame)

    def _process(self, batch: list[Stream], frames: list[Frame]) -> list[Output]:
        """Track one round and draw it (on the tracker thread)."""
        started = time.perf_counter()
        previous = [s.tracker.frame_index for s in batch]
        # Drawing on the GPU copies one finished frame back instead of N full-size masks.
        on_device = self.draw_on_device
        if on_device is None:
            on_device = batch[0].tracker.device.type == "cuda"
        results: list[FrameResult | None]
        try:
            trackers, images = [s.tracker for s in batch], [f.image for f in frames]
            results = list(step_streams(trackers, images, device_output=on_device))
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
        return [s.finish(f, r, p, elapsed, self.labels) for s, f, r, p in zip(batch, frames, results, previous)]

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
