"""One camera as a live stream: its source, its feeder, its display, and what is published of it.

A stream's feeder task takes every frame its camera delivers, has the stream's display carry the
newest masks onto it (on the stream's own display thread), and publishes it at the camera's rate
to its encoders (one per codec in use); it also leaves the frame in ``pending``, a one-frame slot
the pipeline's scheduler takes for the tracker. Its track on the engine holds its tracker; what
a round or a prompt gives is published here: the stream's state, its metrics, and its results.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Container, Iterator

import numpy as np

from ..concurrency.thread import WorkerThread
from ..concurrency.waits import stop_tasks
from ..config import AutoConfig, DisplayConfig
from ..config.values import OBJECT_STYLES, check_style
from ..errors import BadSourceError, StreamExistsError, StreamNameError, StyleError, UnknownObjectError
from ..metrics import StreamMetrics
from ..model.interface import Tracker
from ..model.tracker import FrameResult
from ..outputs.hub import TrackedOutputs, drop_objects
from ..outputs.results import ObjectLabel, Tracked, wall_clock
from ..sources import BrowserSource, Frame, FrameSource, SourceError, SourceTimeoutError, mask_credentials, open_source
from ..video.encoder import StreamEncoder
from ..video.frame import Output
from ..video.restream import Restream
from ..video.styles import Look, load_background
from .auto import AutoTracking, Detectors
from .display import Display
from .engine import Change, Engine, Outcome
from .landing import PromptRequest
from .status import StreamState, StreamStatus

logger = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
FEED_RETRY_S = (0.1, 5.0)  # backoff after an unexpected error in a camera's loop


def check_stream_name(name: str, taken: Container[str]) -> None:
    """Raise unless ``name`` is valid and not in ``taken``."""
    if not STREAM_NAME.fullmatch(name):
        raise StreamNameError(
            f"stream name {name!r} must be 1-32 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    if name in taken:
        raise StreamExistsError(f"there is already a stream named {name!r}")


async def open_camera(spec: str, options: dict | None = None) -> FrameSource:
    """Open a source off the event loop; a spec or option it cannot take is a ``bad_source``."""
    try:
        return await asyncio.to_thread(open_source, spec, **(options or {}))
    except (SourceError, ValueError, OSError, TypeError) as exc:
        reason = str(exc) if str(exc).startswith("cannot open") else f"cannot open {spec!r}: {exc}"
        raise BadSourceError(mask_credentials(reason)) from None


class Stream:
    """One camera: its source, its display, its track on the engine, and what is published of it.
    The first stream's ``tracker`` holds the model; later ones get its sibling unless given one."""

    def __init__(
        self,
        name: str,
        source: FrameSource,
        engine: Engine,
        outputs: TrackedOutputs,
        metrics: StreamMetrics,
        display: DisplayConfig,
        tracker: Tracker | None = None,
        *,
        auto: AutoConfig | None = None,
        detectors: Detectors | None = None,
        on_error: Callable[[str, str, str], None] | None = None,
        restream: str | None = None,
        style: str | None = None,
    ) -> None:
        self.name, self.source, self.engine, self.outputs = name, source, engine, outputs
        self.on_error = on_error  # (stream, code, message): something viewers should hear about
        self.config = display
        self.display = Display(display)
        self._display_thread = WorkerThread(f"display {name}")
        self.track = engine.add(name, self.display, tracker)
        self.metrics = metrics
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
        self.labels: dict[int, ObjectLabel] = {}  # what each object is and how it came (absent: a click)
        self.hidden: set[int] = set()  # automatic objects on probation: tracked, not yet announced
        self._changed_at = -1  # the tracker's frame a prompt's result was last published for
        self.auto = AutoTracking(self, auto or AutoConfig(), detectors or Detectors())
        # How objects look in its video: its style, each object's chosen one (the page's).
        self.style = check_style(style or display.style)
        self.chosen_styles: dict[int, str] = {}
        self._background = load_background(display.background) if display.background else None
        if self.style == "replace_background" and self._background is None:
            raise ValueError(f"stream {name}: style replace_background needs display.background, an image")
        self._restyle()
        # The annotated video pushed to an RTSP server, from the H.264 encoder viewers share.
        self.restream = Restream(name, restream, self.video("h264"), metrics) if restream else None

    @property
    def tracker(self) -> Tracker:
        return self.track.tracker

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
            labels=self.object_labels(),
            auto=self.auto.config.enabled,
            styles=self.styles(),
            restream=dataclasses.asdict(self.restream.status) if self.restream else None,
        )

    def object_labels(self) -> dict[int, dict]:
        """Each object's label, origin and probation, as ``state`` and /healthz carry them."""
        described = {}
        for obj_id in self.obj_ids:
            label = self.labels.get(obj_id, ObjectLabel())
            described[obj_id] = {"label": label.label, "origin": label.origin, "pending": obj_id in self.hidden}
        return described

    def styles(self) -> dict:
        """The stream's style and each object's chosen one (the ``style`` ack, and a failover's)."""
        return {"style": self.style, "objects": dict(self.chosen_styles)}

    async def set_style(self, style: str | None, obj_id: int | None = None) -> dict:
        """The stream's style (``obj_id`` None), or one object's (``style`` None: back to the
        stream's, or its label's); from the next frame shown on, in every video output."""
        if obj_id is None:
            try:
                check_style(style, "style")
            except ValueError as exc:
                raise StyleError(str(exc)) from None
            if style == "replace_background" and self._background is None:
                raise StyleError("replace_background needs an image: start the server with display.background set")
            self.style = str(style)
        elif obj_id not in self.obj_ids:
            raise UnknownObjectError(f"no object {obj_id} in stream {self.name!r}; objects are {self.obj_ids}")
        elif style is None:
            self.chosen_styles.pop(obj_id, None)
        elif style not in OBJECT_STYLES:
            raise StyleError(f"an object's style must be one of {', '.join(OBJECT_STYLES)}, got {style!r}")
        else:
            self.chosen_styles[obj_id] = style
        self._restyle()
        return self.styles()

    def restyle(self, styles: dict) -> None:
        """Take ``styles()`` of this stream as it ran elsewhere (a cluster stream that moved here)."""
        self.style = check_style(styles.get("style", self.style))
        self.chosen_styles = {
            int(i): check_style(v, "an object's style", OBJECT_STYLES) for i, v in styles.get("objects", {}).items()
        }
        self._restyle()

    def _restyle(self) -> None:
        labels = {obj_id: label.label for obj_id, label in self.labels.items()}
        margin = self.config.privacy_margin
        self.display.look = Look.of(
            self.style, self.config.styles, labels, dict(self.chosen_styles), self._background, margin
        )

    def report(self, code: str, message: str) -> None:
        """A problem of this stream's (a detector that cannot load) for its viewers and its status."""
        self.state.last_error = message
        self.metrics.error(code)
        if self.on_error is not None:
            self.on_error(self.name, code, message)

    def video(self, codec: str) -> StreamEncoder:
        """This stream's encoder for ``codec``: one for however many viewers take that codec."""
        encoder = self.encoders.get(codec)
        if encoder is None:
            encoder = StreamEncoder(self, self.config.bitrate, codec=codec, max_width=self.config.max_width)
            self.encoders[codec] = encoder
        return encoder

    async def next_output(self, after: int) -> Output:
        """The newest output with a ``seq`` above ``after`` (waits for one)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._latest is not None and self._latest.seq > after)
            assert self._latest is not None  # what it waited for
            return self._latest

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Someone uses this stream's frames (an encoder, for its viewers): only then are the
        masks carried onto every frame; unwatched, the display just remembers frames."""
        self._watchers += 1
        try:
            yield
        finally:
            self._watchers -= 1

    @property
    def watched(self) -> bool:
        """Someone watches this stream's video (an encoder runs for its viewers)."""
        return self._watchers > 0

    def video_frames(self) -> tuple[int, int]:
        """(offered, skipped) frames of every encoder so far: skipped ones came while it was
        busy, so a rising share says the video falls behind the camera."""
        encoders = list(self.encoders.values())
        return sum(e.frames_offered for e in encoders), sum(e.frames_skipped for e in encoders)

    def record_sent(self, output: Output) -> None:
        """The encoder took ``output``: record capture-to-sent latency."""
        latency = 1000 * (time.monotonic() - output.captured_at)
        self.metrics.latency_s.observe(latency / 1000)
        self.state.record_latency(latency)

    # -- prompts --------------------------------------------------------------------------------

    async def prompt(self, request: PromptRequest, origin: str | None = None) -> list[int]:
        """Apply a prompt on the frame it names; return the object ids now tracked. ``origin``:
        None for a person's (a click or a box), else what started it (``auto``, ``text``)."""
        obj_id, new = request.obj_id, request.obj_id not in self.labels
        if new:
            self.labels[obj_id] = ObjectLabel(origin=origin or ("box" if request.box is not None else "click"))
        elif origin is None:
            self.auto.touched(obj_id)
        if self.config.styles:  # its label's style is in place before its first mask is shown
            self._restyle()
        try:
            return self._published(await self.engine.prompt(self.track, request))
        except BaseException:
            if new and obj_id not in self.track.obj_ids:
                self.labels.pop(obj_id, None)
            raise

    async def auto_settings(self, changes: dict) -> dict:
        """Change this stream's automatic tracking (the websocket's ``auto``); its settings now."""
        config = dataclasses.replace(self.auto.config, **changes)
        self.auto.configure(config)
        return dataclasses.asdict(config)

    async def text(self, labels: list[str]) -> None:
        """Look for ``labels`` on the next tracked frame (the open-vocabulary detector)."""
        self.auto.text(labels)

    async def restore(self, masks: dict[int, np.ndarray], labels: dict[int, ObjectLabel] | None = None) -> list[int]:
        """Bring objects back under their ids from their last masks (a stream that moved here),
        with what they were (``labels``: their label and origin, by id)."""
        self.labels.update({obj_id: label for obj_id, label in (labels or {}).items() if obj_id in masks})
        return self._published(await self.engine.restore(self.track, masks))

    async def remove_object(self, obj_id: int, reason: str = "viewer") -> list[int]:
        """Stop tracking ``obj_id``, for ``reason`` (viewer: a person; else the detector's)."""
        obj_ids = await self.engine.remove_object(self.track, obj_id)
        self.labels.pop(obj_id, None)
        self.hidden.discard(obj_id)
        self.chosen_styles.pop(obj_id, None)
        self._restyle()
        self.auto.forget(obj_id)
        drop_objects(self.outputs, self.name, {obj_id}, reason)
        return obj_ids

    async def reset(self) -> list[int]:
        obj_ids = await self.engine.reset(self.track)
        self.labels.clear()
        self.hidden.clear()
        self.chosen_styles.clear()
        self._restyle()
        self.auto.forget(None)
        drop_objects(self.outputs, self.name, None, "reset")
        return obj_ids

    def _published(self, change: Change) -> list[int]:
        """A prompt's result is on the display at once (the engine left it there) and goes to the outputs."""
        for _ in range(change.stepped):
            self.metrics.frames_processed.inc()
        if change.ran_s:
            self.metrics.prompt_wait_s.observe(change.waited_s)
            self.metrics.prompt_run_s.observe(change.ran_s)
        self.state.mask_times.append(time.monotonic())
        self._changed_at = max(self._changed_at, change.result.frame_index)
        frame = change.frame
        at, size = wall_clock(frame.captured_at), (frame.height, frame.width)
        self.outputs.offer(self._tracked(change.result, frame.source, at, size, change.logits))
        return change.obj_ids

    def _tracked(
        self, result: FrameResult, source: int, at: float, size: tuple[int, int], logits: np.ndarray | None = None
    ) -> Tracked:
        """A result for the outputs: labelled, less the objects still on probation."""
        tracked = Tracked.of(self.name, result, source, at, size, logits, self.labels, self.hidden)
        self.display.names = {i: label.label for i, label in self.labels.items() if label.label}
        if self.config.styles:  # a style by label: an object's label may have come or changed
            self._restyle()
        by_label: dict[str, int] = {}
        for obj_id in tracked.obj_ids:
            label = tracked.label(obj_id).label or ""
            by_label[label] = by_label.get(label, 0) + 1
        self.metrics.set_objects(by_label)
        return tracked

    # -- the camera's side ----------------------------------------------------------------------

    def start(self, wake: asyncio.Event) -> None:
        self._feeder = asyncio.create_task(self._feed(wake), name=f"feeder {self.name}")
        if self.restream is not None:
            self.restream.start()

    async def stop(self) -> None:
        await self.auto.close()
        if self._feeder is not None:
            await stop_tasks(self._feeder, what=f"stream {self.name}")
            self._feeder = None
        if self.restream is not None:
            await self.restream.close()
        for encoder in self.encoders.values():
            await encoder.close()
        await self._display_thread.close(timeout=2.0)
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
        if result.frame_index <= self._changed_at:
            return  # a prompt run at the round's end published this frame since, with its object
        # To the outputs: a reference, measured only if someone listens.
        at = wall_clock(frame.captured_at)
        self.outputs.offer(self._tracked(result, frame.index, at, frame.image.shape[:2]))
        self.auto.after_round(frame, result)

    def _sync_source_metrics(self) -> None:
        stats = self.source.stats
        self.metrics.frames_captured.set(stats.decoded)
        # Not tracked: dropped by the source's slot (not shown either) or replaced in ``pending``.
        self.metrics.frames_dropped.set(max(0, stats.decoded - self._taken - (self.pending is not None)))
        self.metrics.reconnects.set(stats.reconnects)


__all__ = ["STREAM_NAME", "Stream", "check_stream_name", "open_camera"]
