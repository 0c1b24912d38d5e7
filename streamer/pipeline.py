"""Where a frame goes: source -> display (every frame, newest masks carried onto it) -> viewers,
and, when the engine is free, -> a round of tracking -> the stream's newest masks.

Each ``Stream`` has a feeder task that takes every frame its camera delivers, has the engine's
display carry the newest masks onto it, and publishes it at the camera's rate (to its encoders,
one per codec in use); it also leaves the frame in ``pending``, a one-frame slot for the tracker.
The ``Pipeline``'s scheduler wakes when any stream has one, takes the newest frame of every
stream that has one and hands them to the engine as one round: one model, one batch, so N
cameras cost much less than N times one. A stalled camera simply has no frame to offer and holds
nobody back; when more streams are ready than the engine's batch limit, the ones served longest
ago go first, so none starves. What a round or a prompt gives is published: the stream's state,
its metrics, and its results to the outputs. The tracking itself (trackers, their thread, the
out-of-memory policy, drawing) is the engine's (``engine.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator

import numpy as np

from .aio import stop_tasks
from .display import Display, DisplayConfig, Output
from .encoder import StreamEncoder
from .engine import Change, Engine, Outcome, Track, Tracker
from .errors import BadSourceError, StreamExistsError, StreamNameError
from .events import EventsConfig
from .landing import PromptRequest
from .metrics import Metrics, StreamMetrics
from .outputs import Outputs, TrackedOutputs, drop_objects
from .results import Tracked, wall_clock
from .served import stream_named
from .sources import (
    BrowserSource,
    Frame,
    FrameSource,
    SourceError,
    SourceTimeoutError,
    mask_credentials,
    open_source,
)
from .status import StreamState, StreamStatus

logger = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
FEED_RETRY_S = (0.1, 5.0)  # backoff after an unexpected error in a camera's loop


def check_stream_name(name: str, taken: object) -> None:
    """Raise unless ``name`` is valid and not in ``taken``."""
    if not STREAM_NAME.fullmatch(name):
        raise StreamNameError(
            f"stream name {name!r} must be 1-32 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    if name in taken:  # type: ignore[operator]
        raise StreamExistsError(f"there is already a stream named {name!r}")


async def open_camera(spec: str, options: dict | None = None) -> FrameSource:
    """Open a source off the event loop; a spec or option it cannot take is a ``bad_source``."""
    try:
        return await asyncio.to_thread(open_source, spec, **(options or {}))
    except (SourceError, ValueError, OSError, TypeError) as exc:
        reason = str(exc) if str(exc).startswith("cannot open") else f"cannot open {spec!r}: {exc}"
        raise BadSourceError(mask_credentials(reason)) from None


class Stream:
    """One camera: its source, its track on the engine, and what is published of it."""

    def __init__(self, name: str, source: FrameSource, track: Track, pipeline: Pipeline) -> None:
        self.name, self.source, self.track, self.pipeline = name, source, track, pipeline
        self.metrics: StreamMetrics = pipeline.metrics.stream(name)
        self.state = StreamState()
        self.metrics.video_fps.set_function(lambda: self.state.video_fps)
        self.metrics.mask_fps.set_function(lambda: self.state.mask_fps)
        self.pending: Frame | None = None  # the newest frame the scheduler has not taken yet
        self.served_at = 0.0  # when the scheduler last took a frame from this stream
        self.encoders: dict[str, StreamEncoder] = {}  # by codec, made when a viewer wants one
        self._latest: Output | None = None
        self._changed = asyncio.Condition()
        self._seq = 0
        self._feeder: asyncio.Task[None] | None = None
        self._taken = 0
        self._watchers = 0

    @property
    def tracker(self) -> Tracker:
        return self.track.tracker

    @property
    def display(self) -> Display:
        return self.track.display

    @property
    def obj_ids(self) -> list[int]:
        """Objects tracked as of the last frame or prompt (safe to read from the event loop)."""
        return self.track.obj_ids

    @property
    def frame_index(self) -> int | None:
        """The tracker's index of its newest frame (what ``frame_index`` in a prompt names)."""
        return self.track.frame_index

    @property
    def camera(self) -> BrowserSource | None:
        """The source, when a viewer's browser is its camera."""
        return self.source if isinstance(self.source, BrowserSource) else None

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

    def status(self) -> StreamStatus:
        state, stats = self.state, self.source.stats
        percentiles = state.latency_percentiles()
        return StreamStatus(
            source=self.source.name,
            source_alive=self.source_alive,
            reconnecting=self.reconnecting,
            source_fps=stats.fps,
            video_fps=state.video_fps,
            mask_fps=state.mask_fps,
            mask_age_ms=state.mask_age_ms,
            latency_ms=state.latency_ms,
            latency_p50=percentiles["p50"],
            latency_p90=percentiles["p90"],
            inference_ms=state.inference_ms,
            frame_index=self.frame_index,
            objects=self.obj_ids,
            last_error=state.last_error,
        )

    def video(self, codec: str) -> StreamEncoder:
        """This stream's encoder for ``codec``: one for however many viewers take that codec."""
        encoder = self.encoders.get(codec)
        if encoder is None:
            display = self.pipeline.display
            encoder = StreamEncoder(self, display.bitrate, codec=codec, max_width=display.max_width)
            self.encoders[codec] = encoder
        return encoder

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
        self.metrics.latency_s.observe(latency / 1000)
        self.state.record_latency(latency)

    # -- prompts --------------------------------------------------------------------------------

    async def prompt(self, request: PromptRequest) -> list[int]:
        """Apply a viewer's prompt on the frame they saw; return the object ids now tracked."""
        return self._published(await self.pipeline.engine.prompt(self.track, request))

    async def restore(self, masks: dict[int, np.ndarray]) -> list[int]:
        """Bring objects back under their ids from their last masks (a stream that moved here)."""
        return self._published(await self.pipeline.engine.restore(self.track, masks))

    async def remove_object(self, obj_id: int) -> list[int]:
        obj_ids = await self.pipeline.engine.remove_object(self.track, obj_id)
        drop_objects(self.pipeline.outputs, self.name, {obj_id})
        return obj_ids

    async def reset(self) -> list[int]:
        obj_ids = await self.pipeline.engine.reset(self.track)
        drop_objects(self.pipeline.outputs, self.name, None)
        return obj_ids

    def _published(self, change: Change) -> list[int]:
        """A prompt's result is shown at once (the engine did that) and goes to the outputs."""
        for _ in range(change.stepped):
            self.metrics.frames_processed.inc()
        self.state.mask_times.append(time.monotonic())
        frame = change.frame
        at, size = wall_clock(frame.captured_at), (frame.height, frame.width)
        self.pipeline.outputs.offer(Tracked.of(self.name, change.result, frame.source, at, size, change.logits))
        return change.obj_ids

    # -- the camera's side ----------------------------------------------------------------------

    def start(self, wake: asyncio.Event) -> None:
        self._feeder = asyncio.create_task(self._feed(wake), name=f"feeder {self.name}")

    async def stop(self) -> None:
        if self._feeder is not None:
            await stop_tasks(self._feeder, what=f"stream {self.name}")
            self._feeder = None
        for encoder in self.encoders.values():
            await encoder.close()
        await self.source.close()

    async def _feed(self, wake: asyncio.Event) -> None:
        """Show every frame the camera delivers, and leave the newest in ``pending`` for the
        tracker (a frame replaced before the scheduler took it is simply not tracked)."""
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
            return await self.track.show(frame, self._watchers > 0)
        except Exception:  # the video goes on, without masks on this frame
            logger.exception("%s: drawing a frame's masks failed", self.name)
            self.metrics.error("display")
            return Output(frame.image, frame.index, frame.captured_at)

    async def publish(self, output: Output) -> None:
        self.state.video_times.append(time.monotonic())
        self.state.mask_age_ms = output.mask_age_ms
        self.metrics.frames_displayed.inc()
        if output.mask_age_ms is not None:
            self.metrics.mask_age_s.observe(output.mask_age_ms / 1000)
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

    def finish(self, outcome: Outcome) -> None:
        """Publish one stream's share of a round."""
        result, frame = outcome.result, outcome.frame
        if result is None:
            return
        self.metrics.inference_s.observe(outcome.elapsed_ms / 1000)
        self.metrics.frames_processed.inc()
        self.state.inference_ms = outcome.elapsed_ms
        if result.obj_ids:
            self.state.mask_times.append(time.monotonic())
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
    """Every stream of the server, and the scheduler that feeds their frames to the engine."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        display: DisplayConfig | None = None,
        events: EventsConfig | None = None,
        max_batch: int = 16,
        on_error: Callable[[str, str, str], None] | None = None,
        outputs: TrackedOutputs | None = None,
        model: Tracker | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.display = display or DisplayConfig()
        self.engine = Engine(self.display, max_batch=max_batch, on_error=self._round_failed, model=model)
        self.on_error = on_error  # (stream, code, message) -> None, e.g. broadcast to viewers
        self.streams: dict[str, Stream] = {}
        self.outputs = outputs or Outputs(self.metrics, events)  # results and events, for whoever listens
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def random_weights(self) -> bool:
        """Whether the model runs on seeded random weights (the page then says so)."""
        return self.engine.random_weights

    @property
    def batch_limit(self) -> int:
        return self.engine.batch_limit

    def add_stream(self, name: str, source: FrameSource, tracker: Tracker | None = None) -> Stream:
        """Add a camera. The first stream's tracker holds the model; later ones are its siblings
        unless given their own (which must then share the model)."""
        self.check_new_name(name)
        stream = Stream(name, source, self.engine.add(name, tracker), self)
        self.streams[name] = stream
        self.outputs.register(name, stream.metrics)
        if self._task is not None:
            stream.start(self._wake)
        return stream

    async def open_stream(self, name: str, spec: str, options: dict | None = None) -> Stream:
        """Open camera ``spec`` and add it as stream ``name`` (stream control at run time)."""
        self.check_new_name(name)
        source = await open_camera(spec, options)
        try:
            return self.add_stream(name, source)
        except BaseException:
            await source.close()
            raise

    def check_new_name(self, name: str) -> None:
        """Raise unless ``name`` is valid and free (callers check before opening a camera)."""
        check_stream_name(name, self.streams)

    async def remove_stream(self, name: str) -> None:
        stream = self.stream(name)
        del self.streams[name]
        await stream.stop()
        await self.engine.remove(stream.track)
        stream.metrics.removed = True
        self.outputs.forget(name)
        self.metrics.forget(name)

    def stream(self, name: str | None) -> Stream:
        """The named stream, or the first one when ``name`` is None."""
        return stream_named(self.streams, name)

    def describe(self) -> dict:
        """What /healthz adds about where streams run (nothing: they all run here)."""
        return {}

    def start(self) -> None:
        for stream in self.streams.values():
            stream.start(self._wake)
        self.outputs.start()
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop the scheduler, close every source, then free the engine. Safe to call twice."""
        if self._task is not None:
            await stop_tasks(self._task, what="scheduler")
            self._task = None
        await asyncio.gather(*(stream.stop() for stream in self.streams.values()))
        # Let a round in flight finish, but do not hold Ctrl-C hostage to a slow CPU frame.
        if not await self.engine.close(timeout=1.5):
            logger.warning("a tracker step is still running; it will finish in the background")
        await self.outputs.stop()

    def ready(self) -> list[Stream]:
        """Streams with a new frame, longest-unserved first, at most the engine's batch limit."""
        waiting = [s for s in self.streams.values() if s.pending is not None]
        return sorted(waiting, key=lambda s: s.served_at)[: self.engine.batch_limit]

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
                outcomes = await self.engine.round([(s.track, f) for s, f in zip(batch, frames)])
                self.metrics.batch_size.observe(len(batch))
                for stream, outcome in zip(batch, outcomes):
                    stream.finish(outcome)
            except Exception:  # a bug in a stream's bookkeeping, say: never let it stop every stream
                logger.exception("round of %s failed after tracking", [s.name for s in batch])

    def _round_failed(self, name: str, kind: str, message: str) -> None:
        """On the inference thread: a round failed for stream ``name``."""
        stream = self.streams.get(name)
        if stream is None:
            return
        stream.metrics.error(kind)
        stream.state.last_error = message
        if self.on_error is not None:
            self.on_error(name, kind, message)


__all__ = [
    "STREAM_NAME",
    "Output",
    "Pipeline",
    "Stream",
    "Tracker",
    "check_stream_name",
    "open_camera",
]
