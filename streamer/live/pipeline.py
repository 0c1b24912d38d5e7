"""Every stream of a server, and the scheduler that feeds their frames to the engine.

Each ``Stream`` (``stream.py``) shows every frame its camera delivers and leaves the newest in
``pending``, a one-frame slot for the tracker. The ``Pipeline``'s scheduler wakes when any
stream has one, takes the newest frame of every stream that has one and hands them to the engine
as one round: one model, one batch, so N cameras cost much less than N times one. A stalled
camera simply has no frame to offer and holds nobody back; when more streams are ready than the
engine's batch limit, the ones served longest ago go first, so none starves. What a round or a
prompt gives is published: the stream's state, its metrics, and its results to the outputs. The
tracking itself (trackers, their thread, the out-of-memory policy) is the engine's
(``engine.py``); how many CPU threads each round may take, the video coming first, is decided
here before each round (``concurrency/share.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from ..concurrency.share import CpuShare
from ..concurrency.waits import stop_tasks
from ..config import AutoConfig, DisplayConfig, EventsConfig
from ..metrics import Metrics
from ..model.interface import Tracker
from ..outputs.hub import Outputs, TrackedOutputs
from ..sources import (
    FrameSource,
)
from .auto import Detectors
from .engine import Engine
from .serving import stream_named
from .stream import Stream, check_stream_name, open_camera

logger = logging.getLogger(__name__)

SHARE_EVERY_S = 1.0  # how often the tracker's share of the CPU is looked at again


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
        auto: AutoConfig | None = None,
        detectors: Detectors | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.display = display or DisplayConfig()
        self.engine = Engine(self.display.mask_width, max_batch=max_batch, on_error=self._round_failed, model=model)
        self.on_error = on_error  # (stream, code, message) -> None, e.g. broadcast to viewers
        self.streams: dict[str, Stream] = {}
        self.outputs = outputs or Outputs(self.metrics, events)  # results and events, for whoever listens
        self.auto = auto or AutoConfig()  # every stream's, unless it is given its own
        self.detectors = detectors or Detectors(self.auto.device)
        self.cpu = CpuShare(torch.get_num_threads())  # the video first, the tracker the rest
        self._video_seen: tuple[int, int, float] = (0, 0, 0.0)  # offered, skipped, when
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def random_weights(self) -> bool:
        """Whether the model runs on seeded random weights (the page then says so)."""
        return self.engine.random_weights

    @property
    def model(self) -> dict[str, Any]:
        return self.engine.model

    @property
    def hub(self) -> Outputs:
        """Where sinks take this pipeline's results (a served one's; a cluster worker's go to its front)."""
        if not isinstance(self.outputs, Outputs):
            raise TypeError("this pipeline hands its results to a cluster front, not to sinks here")
        return self.outputs

    @property
    def batch_limit(self) -> int:
        return self.engine.batch_limit

    def add_stream(
        self,
        name: str,
        source: FrameSource,
        tracker: Tracker | None = None,
        auto: AutoConfig | None = None,
        restream: str | None = None,
        style: str | None = None,
    ) -> Stream:
        """Add a camera. The first stream's tracker holds the model; later ones are its siblings
        unless given their own (which must then share the model). ``auto``: its automatic
        tracking (None: the pipeline's); ``restream``: an RTSP server its video is published to;
        ``style``: how its objects look (None: ``display.style``)."""
        self.check_new_name(name)
        stream = Stream(
            name,
            source,
            self.engine,
            self.outputs,
            self.metrics.stream(name),
            self.display,
            tracker,
            auto=auto or self.auto,
            detectors=self.detectors,
            on_error=self._stream_error,
            restream=restream,
            style=style,
        )
        self.streams[name] = stream
        self.outputs.register(name, stream.metrics)
        if self._task is not None:
            stream.start(self._wake)
        return stream

    async def open_stream(
        self,
        name: str,
        spec: str,
        options: dict | None = None,
        auto: AutoConfig | None = None,
        style: str | None = None,
    ) -> Stream:
        """Open camera ``spec`` and add it as stream ``name`` (stream control at run time)."""
        self.check_new_name(name)
        source = await open_camera(spec, options)
        try:
            return self.add_stream(name, source, auto=auto, style=style)
        except BaseException:
            await source.close()
            raise

    def check_new_name(self, name: str) -> None:
        """Raise unless ``name`` is valid and free (callers check before opening a camera)."""
        check_stream_name(name, self.streams)

    async def remove_stream(self, name: str) -> None:
        stream = self.stream(name)
        del self.streams[name]
        await stream.stop()  # its feeder and display thread first: nothing shows a frame after
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
        if not await self.detectors.close(timeout=1.5):
            logger.warning("a detector is still loading or running; it will finish in the background")
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
                threads = self._tracker_threads()
                outcomes = await self.engine.round([(s.track, f) for s, f in zip(batch, frames)], threads)
                self.metrics.batch_size.observe(len(batch))
                for stream, outcome in zip(batch, outcomes):
                    stream.finish(outcome)
            except Exception:  # a bug in a stream's bookkeeping, say: never let it stop every stream
                logger.exception("round of %s failed after tracking", [s.name for s in batch])

    def _tracker_threads(self) -> int | None:
        """How many threads the next round may use on a CPU (None on a GPU: leave torch be),
        from whether anyone watches and the share of frames the encoders skipped over about
        the last second."""
        if not self.engine.on_cpu:
            return None
        now = time.monotonic()
        offered0, skipped0, since = self._video_seen
        if now - since < SHARE_EVERY_S:
            return self.cpu.threads
        frames = [stream.video_frames() for stream in self.streams.values()]
        offered, skipped = sum(f[0] for f in frames), sum(f[1] for f in frames)
        self._video_seen = (offered, skipped, now)
        new = offered - offered0
        share = (skipped - skipped0) / new if new > 0 else 0.0
        watched = any(stream.watched for stream in self.streams.values())
        before = self.cpu.threads
        threads = self.cpu.update(watched, share, now)
        if threads != before:
            logger.info(
                "tracker threads %d -> %d (%s, %.0f%% of video frames skipped)",
                before,
                threads,
                "watched" if watched else "nobody watches",
                100 * share,
            )
        self.metrics.tracker_threads.set(threads)
        return threads

    def _stream_error(self, name: str, code: str, message: str) -> None:
        if self.on_error is not None:
            self.on_error(name, code, message)

    def _round_failed(self, name: str, kind: str, message: str) -> None:
        """On the inference thread: a round failed for stream ``name``."""
        stream = self.streams.get(name)
        if stream is None:
            return
        stream.metrics.error(kind)
        stream.state.last_error = message
        if self.on_error is not None:
            self.on_error(name, kind, message)


__all__ = ["Pipeline"]
