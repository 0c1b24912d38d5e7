"""Where a frame goes: source -> one inference worker -> overlay -> the latest output.

One worker owns the tracker and always takes the newest frame, so latency never accumulates;
tracker calls (frames and prompts alike) run one at a time on a single worker thread, off the
event loop. Every output keeps its capture timestamp. Errors in a frame (including a GPU out of
memory) are reported and that frame is shown without masks; tracking goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .metrics import Metrics
from .overlay import draw_masks
from .protocol import AddBox, AddPoints, ProtocolError
from .sources import FrameSource, SourceError, SourceTimeoutError
from .tracker import StreamingTracker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One processed frame, ready to encode."""

    image: np.ndarray  # HxWx3 uint8 RGB with masks drawn
    frame_index: int | None  # the tracker's index; None if the frame failed before it got one
    captured_at: float  # monotonic, from the source
    obj_ids: list[int]
    seq: int = -1  # counts published outputs: what viewers use to tell a new frame


@dataclass
class PipelineState:
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


class Pipeline:
    """Runs the tracker on a source; viewers await ``next_output`` and send prompts."""

    def __init__(
        self,
        source: FrameSource,
        tracker: StreamingTracker,
        metrics: Metrics | None = None,
        *,
        on_error: Callable[[str, str], None] | None = None,
        labels: bool = True,
    ) -> None:
        self.source, self.tracker = source, tracker
        self.metrics = metrics or Metrics()
        self.state = PipelineState()
        self.on_error = on_error  # (code, message) -> None, e.g. broadcast to viewers
        self.labels = labels
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracker")
        self._latest: Output | None = None
        self._changed = asyncio.Condition()
        self._frames: deque[tuple[int, int, int, float]] = deque(maxlen=tracker.history)  # index, h, w, wall ms
        self._task: asyncio.Task[None] | None = None
        self._obj_ids: tuple[int, ...] = ()  # snapshot for the event loop; the tracker lives on its thread
        self._seq = 0

    @property
    def obj_ids(self) -> list[int]:
        """Objects tracked as of the last frame or prompt (safe to read from the event loop)."""
        return list(self._obj_ids)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline worker")

    async def stop(self) -> None:
        """Stop the worker, close the source, then free the tracker thread. Safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.source.close()
        # Let a frame in flight finish (the tracker must never run on two threads), but do not
        # hold Ctrl-C hostage to a slow CPU frame.
        self._executor.shutdown(wait=False, cancel_futures=True)
        drained = asyncio.to_thread(self._executor.shutdown, wait=True)
        try:
            await asyncio.wait_for(drained, timeout=1.5)
        except TimeoutError:
            logger.warning("a tracker step is still running; it will finish in the background")

    @property
    def source_alive(self) -> bool:
        return self.source.stats.connected

    @property
    def reconnecting(self) -> bool:
        """The camera is gone and the source is trying to get it back."""
        running = self._task is not None and not self._task.done()
        return running and not self.source.stats.connected

    @property
    def latest(self) -> Output | None:
        return self._latest

    async def next_output(self, after: int) -> Output:
        """The newest output with a ``seq`` above ``after`` (waits for one)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._latest is not None and self._latest.seq > after)
            return self._latest  # type: ignore[return-value]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async for frame in self.source:
                    self._sync_source_metrics()
                    output = await loop.run_in_executor(self._executor, self._process, frame.image, frame.captured_at)
                    if output.frame_index is not None:
                        wall = time.time() * 1000 - (time.monotonic() - frame.captured_at) * 1000
                        self._frames.append((output.frame_index, *frame.image.shape[:2], wall))
                    await self._publish(output)
                return  # the source ended (a file without looping)
            except SourceTimeoutError as exc:
                self.state.last_error = str(exc)
                self._sync_source_metrics()
                logger.warning("%s", exc)
            except SourceError as exc:
                self.state.last_error = str(exc)
                logger.error("source stopped: %s", exc)
                return

    def _process(self, image: np.ndarray, captured_at: float) -> Output:
        """Track one frame and draw it (on the tracker thread)."""
        started = time.perf_counter()
        previous = self.tracker.frame_index
        try:
            result = self.tracker.step(image)
        except Exception as exc:  # keep streaming: show the frame without masks
            kind = "out_of_memory" if isinstance(exc, torch.OutOfMemoryError) else "inference"
            self._report(kind, exc)
            index = self.tracker.frame_index
            return Output(image, index if index != previous else None, captured_at, [])
        self._obj_ids = tuple(result.obj_ids)
        elapsed = 1000 * (time.perf_counter() - started)
        self.metrics.inference_ms.observe(elapsed)
        self.metrics.frames_processed.inc()
        self.state.inference_ms = elapsed
        drawn = draw_masks(image, result.masks, result.obj_ids, labels=self.labels)
        return Output(drawn, result.frame_index, captured_at, result.obj_ids)

    def _report(self, kind: str, exc: Exception) -> None:
        message = f"{kind.replace('_', ' ')} error: {exc}"
        if kind == "out_of_memory":
            message += " (the frame is shown without masks; remove objects or use a smaller --image-size)"
        logger.exception("frame failed: %s", message)
        self.metrics.errors.labels(kind).inc()
        self.state.last_error = message
        if self.on_error is not None:
            self.on_error(kind, message)

    async def _publish(self, output: Output) -> None:
        now = time.monotonic()
        self.state.frame_times.append(now)
        times = self.state.frame_times
        if len(times) > 1:
            self.state.fps = (len(times) - 1) / max(1e-6, times[-1] - times[0])
        async with self._changed:
            self._latest = dataclasses.replace(output, seq=self._seq)
            self._seq += 1
            self._changed.notify_all()

    def _sync_source_metrics(self) -> None:
        stats = self.source.stats
        self.metrics.frames_captured.set(stats.decoded)
        self.metrics.frames_dropped.set(stats.dropped)
        self.metrics.reconnects.set(stats.reconnects)

    def record_sent(self, output: Output) -> None:
        """A viewer's encoder took ``output``: record capture-to-sent latency."""
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

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

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
