"""A cluster worker: one model on one GPU (one per CPU worker in tests), and the streams the front
placed on it, each tracked, drawn and encoded here, next to its camera.

``front.py`` runs this class as a Ray actor (an async one: every method runs on the actor's
event loop, beside the local ``Pipeline`` it holds). The worker opens each camera itself, so raw
frames never cross the network; what leaves is what the front needs to serve (``reports.py``):
the encoded packets of the codecs its viewers watch, status and metrics, tracked frames. The
front long-polls ``poll()``, which answers as soon as there is something to send and at least
every ``STATUS_INTERVAL_S``: that steady answer is also how the front knows the worker lives.

Every call returns plain data; an error this package raises on purpose comes back as a
``("error", code, message)`` reply instead of an exception, so the front can hand viewers the
same coded error a local server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..concurrency.waits import event_set, stop_tasks, within
from ..config import AutoConfig, WorkerSettings
from ..errors import NoFrameError, StreamerError
from ..live.auto import Detectors
from ..live.landing import PromptRequest
from ..live.pipeline import Pipeline
from ..live.stream import Stream
from ..metrics import Metrics, StreamMetrics
from ..outputs.results import ObjectLabel, Tracked
from .reports import CompactTracked, Packet, StreamReport, WorkerReport

if TYPE_CHECKING:
    from ..model.tracker import StreamingTracker

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S = 0.25  # status, metrics and the heartbeat the front listens for
CHECKPOINT_S = 0.5  # a stream's masks go to the front at least this often (what failover restores)
MAX_OUTBOX = 90  # packets of one stream and codec the front has not collected (~3 s): then drop to a keyframe
BUSY_WINDOW_S = 3.0
RESTORE_TRIES = 20  # first frames a restore waits for (a camera may take a moment to deliver)
RESTORE_WAIT_S = 10.0  # add_stream answers once objects are back, or after this (restoring goes on)

Reply = tuple  # ("ok", value) or ("error", code, message)


class ReportOutputs:
    """The worker's end of the front's outputs: each stream's newest tracked frame, kept for the
    next report (measured at the front, if anything there wants it)."""

    def __init__(self, wake: asyncio.Event) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._latest: dict[str, Tracked] = {}
        self._unsent: dict[str, Tracked] = {}
        self._sent: dict[str, tuple[float, tuple[int, ...]]] = {}  # when, and with which objects

    def register(self, stream: str, metrics: StreamMetrics) -> None:
        pass

    def offer(self, tracked: Tracked) -> None:
        with self._lock:
            tracked = tracked.replacing(self._unsent.get(tracked.stream))
            self._latest[tracked.stream] = self._unsent[tracked.stream] = tracked
            sent = self._sent.get(tracked.stream)
        if sent is None or sent[1] != tracked.obj_ids:  # objects came or went: the front hears now
            self._wake.set()

    def latest(self, stream: str) -> Tracked | None:
        with self._lock:
            return self._latest.get(stream)

    def forget(self, stream: str) -> None:
        with self._lock:
            self._latest.pop(stream, None)
            self._unsent.pop(stream, None)
            self._sent.pop(stream, None)

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def take(self, wanted: set[str]) -> list[Tracked]:
        """The frames to send now: the newest of each stream the front's outputs want; of the
        others, one whose objects changed, or one every ``CHECKPOINT_S``."""
        now = time.monotonic()
        taken = []
        with self._lock:
            for name, tracked in list(self._unsent.items()):
                sent_at, sent_ids = self._sent.get(name, (-1e9, None))
                if name in wanted or sent_ids != tracked.obj_ids or now - sent_at >= CHECKPOINT_S:
                    taken.append(tracked)
                    del self._unsent[name]
                    self._sent[name] = (now, tracked.obj_ids)
        return taken


class StreamWorker:
    """One model and the streams placed on it (a Ray actor of ``front.py``)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._pipeline: Pipeline | None = None
        self._wake: asyncio.Event | None = None
        self._outputs: ReportOutputs | None = None
        self._outbox: list[Packet] = []
        self._queued: dict[tuple[str, str], int] = {}  # packets in the outbox per stream and codec
        self._relays: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._restores: dict[str, asyncio.Task[None]] = {}
        self._errors: deque[tuple[str, str, str]] = deque(maxlen=100)
        self._errors_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status_at = 0.0
        self._busy: deque[tuple[float, float]] = deque()

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> dict:
        """Build the model (minutes at most, on first use of a checkpoint) and get ready."""
        from ..model.tracker import StreamingTracker

        started = time.perf_counter()
        settings = self.settings
        options = settings.model.build_options(settings.tracker, device=settings.device)
        model = await asyncio.to_thread(StreamingTracker.build, **options)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._outputs = ReportOutputs(self._wake)
        self._pipeline = Pipeline(
            Metrics(tap=True),
            display=settings.display,
            max_batch=settings.model.max_batch,
            on_error=self._error,
            outputs=self._outputs,
            model=model,
            auto=settings.auto,
            detectors=Detectors(settings.auto.device or settings.device, random_weights=settings.model.random_weights),
        )
        self._pipeline.start()
        device = _device_name(model)
        logger.info("cluster worker ready on %s in %.1f s", device, time.perf_counter() - started)
        return {"device": device, "load_s": time.perf_counter() - started, "pid": os.getpid()}

    async def stop(self) -> None:
        """Close every stream and the model's thread."""
        await stop_tasks(*self._relays.values(), *self._restores.values(), what="worker's relays")
        self._relays.clear()
        self._restores.clear()
        if self._pipeline is not None:
            await self._pipeline.stop()

    # -- streams --------------------------------------------------------------------------------

    async def add_stream(
        self,
        name: str,
        spec: str,
        options: dict | None = None,
        restore: dict[int, np.ndarray] | None = None,
        codecs: list[str] | None = None,
        auto: AutoConfig | None = None,
        labels: dict[int, ObjectLabel] | None = None,
        styles: dict | None = None,
    ) -> Reply:
        """Open ``spec`` here as stream ``name``; ``restore``: objects to bring back under their
        ids from these masks (a stream moved here; the answer waits for that, up to
        ``RESTORE_WAIT_S``), with their ``labels``; ``codecs``: what its viewers already watch;
        ``auto``: its automatic tracking (None: this worker's); ``styles``: how its objects look
        (``Stream.styles()``)."""
        pipeline = self._ready()
        try:
            stream = await pipeline.open_stream(name, spec, options, auto)
            if styles:
                stream.restyle(styles)
        except (StreamerError, ValueError) as exc:
            return ("error", getattr(exc, "code", "bad_field"), str(exc))
        for codec in codecs or []:
            self._watch(stream, codec, True)
        if restore:
            restoring = self._restore(stream, restore, labels)
            task = self._restores[name] = asyncio.create_task(restoring, name=f"restore {name}")
            with contextlib.suppress(asyncio.TimeoutError):
                await within(asyncio.shield(task), RESTORE_WAIT_S)
        return ("ok", None)

    async def remove_stream(self, name: str) -> Reply:
        pipeline = self._ready()
        if name not in pipeline.streams:
            return ("ok", None)
        for key in [key for key in self._relays if key[0] == name]:
            await stop_tasks(self._relays.pop(key), what=f"relay {key}")
        restore = self._restores.pop(name, None)
        if restore is not None:
            await stop_tasks(restore, what=f"restoring {name}")
        await pipeline.remove_stream(name)
        self._outbox = [p for p in self._outbox if p.stream != name]
        self._queued = {key: n for key, n in self._queued.items() if key[0] != name}
        return ("ok", None)

    async def prompt(self, name: str, request: PromptRequest) -> Reply:
        return await self._call(name, lambda stream: stream.prompt(request))

    async def remove_object(self, name: str, obj_id: int) -> Reply:
        return await self._call(name, lambda stream: stream.remove_object(obj_id))

    async def reset(self, name: str) -> Reply:
        return await self._call(name, lambda stream: stream.reset())

    async def auto_settings(self, name: str, changes: dict) -> Reply:
        return await self._call(name, lambda stream: stream.auto_settings(changes))

    async def set_style(self, name: str, style: str | None, obj_id: int | None) -> Reply:
        return await self._call(name, lambda stream: stream.set_style(style, obj_id))

    async def text(self, name: str, labels: list[str]) -> Reply:
        return await self._call(name, lambda stream: stream.text(labels))

    async def watch(self, name: str, codec: str, on: bool) -> Reply:
        """Start (or stop) sending ``name``'s video in ``codec``: a viewer at the front wants it."""
        try:
            stream = self._ready().stream(name)
        except StreamerError as exc:
            return ("error", exc.code, str(exc))
        self._watch(stream, codec, on)
        return ("ok", None)

    async def keyframe(self, name: str, codec: str) -> None:
        """A viewer at the front joined or lost packets."""
        pipeline = self._ready()
        stream = pipeline.streams.get(name)
        if stream is not None and codec in stream.encoders:
            stream.encoders[codec].request_keyframe()

    async def _call(self, name: str, fn: Callable[[Stream], Awaitable[Any]]) -> Reply:
        try:
            stream = self._ready().stream(name)
            return ("ok", await fn(stream))
        except StreamerError as exc:
            return ("error", exc.code, str(exc))

    async def _restore(
        self, stream: Stream, masks: dict[int, np.ndarray], labels: dict[int, ObjectLabel] | None
    ) -> None:
        """Objects back under their ids (and labels), once the camera has shown a frame here."""
        for _ in range(RESTORE_TRIES):
            try:
                await within(stream.next_output(-1), stream.source.open_timeout)
                obj_ids = await stream.restore(masks, labels)
                logger.info("%s: restored objects %s", stream.name, obj_ids)
                return
            except (asyncio.TimeoutError, NoFrameError):
                await asyncio.sleep(0.5)
            except Exception as exc:  # a bad mask, a GPU failure: say so, keep the stream
                logger.exception("%s: restoring objects failed", stream.name)
                self._error(stream.name, "restore", f"objects {sorted(masks)} could not be restored: {exc}")
                return
        self._error(stream.name, "restore", f"no frame to restore objects {sorted(masks)} on")

    def _watch(self, stream: Stream, codec: str, on: bool) -> None:
        key = (stream.name, codec)
        if on and key not in self._relays:
            self._relays[key] = asyncio.create_task(self._relay(stream, codec), name=f"relay {key}")
        elif not on and key in self._relays:
            self._relays.pop(key).cancel()  # its finally releases the encoder

    async def _relay(self, stream: Stream, codec: str) -> None:
        """Every packet of ``stream``'s encoder for ``codec`` into the outbox, in order; if the
        front stops collecting, the backlog goes and the next packet sent is a keyframe."""
        encoder = stream.video(codec)
        encoder.subscribe()
        key = (stream.name, codec)
        try:
            after, skipping = None, False
            while True:
                frame = await encoder.next_frame(after)
                after = frame.seq
                if self._queued.get(key, 0) >= MAX_OUTBOX:
                    self._outbox = [p for p in self._outbox if (p.stream, p.codec) != key]
                    self._queued[key] = 0
                    encoder.request_keyframe()
                    skipping = True
                if skipping and not frame.keyframe:
                    continue
                skipping = False
                packet = frame.packet
                assert packet.pts is not None  # the encoder dates every packet
                self._outbox.append(
                    Packet(stream.name, codec, bytes(packet), packet.pts, frame.keyframe, frame.source, frame.captured)
                )
                self._queued[key] = self._queued.get(key, 0) + 1
                assert self._wake is not None  # made by start(), before any relay
                self._wake.set()
        finally:
            self._queued.pop(key, None)
            await encoder.unsubscribe()

    # -- reports --------------------------------------------------------------------------------

    async def poll(self, wanted: list[str]) -> bytes:
        """The next report: as soon as there are packets, results or errors, and at the latest
        when the next status is due."""
        pipeline, wake = self._ready(), self._wake
        assert wake is not None and self._outputs is not None
        due = self._status_at + STATUS_INTERVAL_S - time.monotonic()
        if due > 0 and not self._outbox:
            await event_set(wake, due)
        wake.clear()
        packets, self._outbox, self._queued = self._outbox, [], {}
        tracked = self._outputs.take(set(wanted))
        compact = await asyncio.to_thread(lambda: [CompactTracked.of(t) for t in tracked]) if tracked else []
        with self._errors_lock:
            errors, self._errors = list(self._errors), deque(maxlen=100)
        streams = []
        now = time.monotonic()
        if now - self._status_at >= STATUS_INTERVAL_S:
            self._status_at = now
            streams = [StreamReport(s.name, s.status(), s.metrics.take()) for s in pipeline.streams.values()]
        engine = pipeline.engine
        report = WorkerReport(packets, compact, streams, errors, self._busy_fraction(now), engine.round_ms, time.time())
        return report.pack()

    def _busy_fraction(self, now: float) -> float:
        busy = self._ready().engine.busy_s
        self._busy.append((now, busy))
        while len(self._busy) > 2 and now - self._busy[0][0] > BUSY_WINDOW_S:
            self._busy.popleft()
        (t0, b0), (t1, b1) = self._busy[0], self._busy[-1]
        return min(1.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0

    def _error(self, stream: str, code: str, message: str) -> None:
        """From any thread: an error for the front to tell viewers."""
        with self._errors_lock:
            self._errors.append((stream, code, message))
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _ready(self) -> Pipeline:
        if self._pipeline is None:
            raise StreamerError("this cluster worker has not started: call start() first")
        return self._pipeline


def _device_name(model: StreamingTracker) -> str:
    """What a worker's model runs on, for /healthz: which GPU Ray gave it, and in what precision."""
    device = model.device
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)}, {model.precision})"
    return f"{device.type} ({model.precision})"
