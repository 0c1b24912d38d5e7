"""Where results and events go: tracked frames in, each one measured once, out to every consumer.

Streams hand every tracked frame (and every change a prompt makes) to ``Outputs.offer``, from the
tracker thread: a reference, nothing measured. The outputs task takes the newest frame of each
stream, and only if some sink wants that stream: measures it on the results thread in every mask
format the sinks ask for (``Tracked`` caches each), runs the stream's ``EventDetector``, and hands
the frame and the events to each sink. A sink never blocks this loop: ``QueuedSink`` keeps the
newest frame per stream (sent at most ``max_rate`` a second) and a bounded queue of events, and
sends from a task of its own; what a sink cannot keep up with is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from websockets.exceptions import ConnectionClosed

from ..concurrency.thread import WorkerThread
from ..concurrency.waits import event_set, stop_tasks
from ..config import EventsConfig, check_mask_format
from ..metrics import Metrics, StreamMetrics
from .events import Event, EventDetector
from .results import Tracked

logger = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 256  # per websocket subscriber


class Sink(Protocol):
    """A consumer of results: a websocket subscription, the JSON Lines file, MQTT."""

    kind: str  # its label in streamer_results_dropped

    def wants(self, stream: str) -> str | None:
        """The mask format it wants for ``stream``'s results, or None: not this stream."""

    def results(self, tracked: Tracked, masks: str) -> None:
        """A measured frame (``tracked.message(masks)`` is ready); must not block."""

    def event(self, event: Event) -> None:
        """An event; must not block."""


class TrackedOutputs(Protocol):
    """Where a pipeline hands its tracked frames: ``Outputs`` in a server, or on a cluster
    worker what collects them for the front (``cluster.worker.ReportOutputs``)."""

    def register(self, stream: str, metrics: StreamMetrics) -> None: ...

    def offer(self, tracked: Tracked) -> None: ...

    def latest(self, stream: str) -> Tracked | None: ...

    def forget(self, stream: str) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def drop_objects(outputs: TrackedOutputs, stream: str, obj_ids: set[int] | None, reason: str | None = None) -> None:
    """Objects were removed (None: all), for ``reason``: the stream's newest results lose them now."""
    latest = outputs.latest(stream)
    if latest is not None:
        gone = set(latest.obj_ids) if obj_ids is None else obj_ids
        outputs.offer(latest.without(gone, time.time(), reason))


class Outputs:
    """Every stream's results and events, delivered to the sinks that want them."""

    def __init__(self, metrics: Metrics, events: EventsConfig | None = None) -> None:
        self.metrics, self.events = metrics, events or EventsConfig()
        self.sinks: list[Sink] = []
        self._lock = threading.Lock()
        self._pending: dict[str, Tracked] = {}
        self._latest: dict[str, Tracked] = {}
        self._detectors: dict[str, EventDetector] = {}
        self._stream_metrics: dict[str, StreamMetrics] = {}
        self._thread = WorkerThread("results")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def discard(self, sink: Sink) -> None:
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)

    def register(self, stream: str, metrics: StreamMetrics) -> None:
        """A new stream, with the series its results are counted in."""
        self._stream_metrics[stream] = metrics

    def offer(self, tracked: Tracked) -> None:
        """A stream's newest tracked frame (from any thread; newest wins)."""
        with self._lock:
            replaced = self._pending.get(tracked.stream)
            tracked = tracked.replacing(replaced)
            self._pending[tracked.stream] = tracked
            self._latest[tracked.stream] = tracked
        metrics = self._stream_metrics.get(tracked.stream)
        if replaced is not None and self.sinks and metrics is not None:
            metrics.results_skipped.inc()
        if self._loop is not None and self.sinks:
            self._loop.call_soon_threadsafe(self._wake.set)

    def latest(self, stream: str) -> Tracked | None:
        """The stream's newest tracked frame (measured or not)."""
        with self._lock:
            return self._latest.get(stream)

    async def snapshot(self, stream: str, masks: str = "none") -> str | None:
        """The stream's newest results as JSON (measured now if no sink wanted them), or None
        before its first tracked frame."""
        check_mask_format(masks)
        tracked = self.latest(stream)
        return None if tracked is None else await self._thread.run(tracked.message, masks)

    def announce(self, event: Event) -> None:
        """An event from outside the tracked frames (a recording is ready), to every sink that
        wants its stream; on the event loop."""
        metrics = self._stream_metrics.get(event.stream)
        if metrics is not None:
            metrics.event(event.type)
        for sink in list(self.sinks):
            if sink.wants(event.stream) is not None:
                try:
                    sink.event(event)
                except Exception:
                    logger.exception("%s output failed on %s's %s event", sink.kind, event.stream, event.type)

    def forget(self, stream: str) -> None:
        """A stream was removed: drop what is kept for it."""
        with self._lock:
            self._pending.pop(stream, None)
            self._latest.pop(stream, None)
        self._detectors.pop(stream, None)
        self._stream_metrics.pop(stream, None)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="outputs")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task, what="outputs")
            self._task = None
        await self._thread.close(timeout=1.0)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._pending = list(self._pending.values()), {}
            for tracked in batch:
                try:
                    await self._deliver(tracked)
                except Exception:  # a bug: log it, keep the other frames and streams going
                    logger.exception("%s: results of frame %d failed", tracked.stream, tracked.frame_index)
                    if tracked.stream in self._stream_metrics:
                        self._stream_metrics[tracked.stream].error("results")

    async def _deliver(self, tracked: Tracked) -> None:
        stream = tracked.stream
        wanted = [(sink, sink.wants(stream)) for sink in list(self.sinks)]
        takers = [(sink, masks) for sink, masks in wanted if masks is not None]
        if not takers:  # nobody listens: measure nothing, and start afresh when someone does
            self._detectors.pop(stream, None)
            return
        detector = self._detectors.get(stream)
        if detector is None:
            detector = self._detectors[stream] = EventDetector(stream, self.events)
        started = time.perf_counter()
        events = await self._thread.run(_measure, tracked, {masks for _, masks in takers}, detector)
        metrics = self._stream_metrics.get(stream)
        if metrics is not None:
            metrics.results_s.observe(time.perf_counter() - started)
            metrics.results_frames.inc()
            for event in events:
                metrics.event(event.type)
        for sink, masks in takers:
            try:
                sink.results(tracked, masks)
                for event in events:
                    sink.event(event)
            except Exception:
                logger.exception("%s output failed on %s's results", sink.kind, stream)


def _measure(tracked: Tracked, formats: Iterable[str], detector: EventDetector) -> list[Event]:
    """On the results thread: every format asked for, then what changed since the last frame."""
    for masks in formats:
        tracked.message(masks)
    return detector.update(tracked.results("none"), tracked.ended)


class QueuedSink:
    """A sink that sends from a task of its own: the newest results per stream, at most
    ``max_rate`` a second (None: as they come), and events in order from a bounded queue (the
    oldest are dropped, and counted, when it is full). Subclasses say how to send, and whether
    they can now (``ready``)."""

    kind = "sink"

    def __init__(
        self,
        metrics: Metrics,
        *,
        masks: str = "none",
        max_rate: float | None = None,
        streams: Iterable[str] | None = None,
        events: bool = True,
        max_events: int = MAX_QUEUED_EVENTS,
    ) -> None:
        self.metrics, self.masks, self.max_rate = metrics, check_mask_format(masks), max_rate
        self.streams = None if streams is None else set(streams)
        self.events = events
        self._results: dict[str, Tracked] = {}
        self._sent_at: dict[str, float] = {}
        self._events: deque[Event] = deque(maxlen=max_events)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wants(self, stream: str) -> str | None:
        return self.masks if self.streams is None or stream in self.streams else None

    def results(self, tracked: Tracked, masks: str) -> None:
        if self.max_rate is None and tracked.stream in self._results:  # it fell behind
            self.metrics.results_dropped.labels(self.kind, "results").inc()
        self._results[tracked.stream] = tracked
        self._wake.set()

    def event(self, event: Event) -> None:
        if not self.events:
            return
        if len(self._events) == self._events.maxlen:
            self.metrics.results_dropped.labels(self.kind, "event").inc()
        self._events.append(event)
        self._wake.set()

    def ready(self) -> bool:
        return True

    async def send_results(self, tracked: Tracked) -> None:
        raise NotImplementedError

    async def send_event(self, event: Event) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.kind} sink")

    async def close(self, flush: bool = False) -> None:
        """Stop sending; ``flush``: first send what is queued (whatever the rate), if ``ready``."""
        if self._task is not None:
            await stop_tasks(self._task, what=f"the {self.kind} sink")
            self._task = None
        if flush:
            await self._send_events()
            while self._results and self.ready():
                await self.send_results(self._results.pop(next(iter(self._results))))

    def kick(self) -> None:
        """Look again (after ``ready`` changed)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_events()
                due = await self._send_due_results()
            except Exception:  # a bug: lose that message, not the output
                logger.exception("%s output failed to send; going on", self.kind)
                due = 1.0
            if due is not None:
                await event_set(self._wake, due)
                self._wake.set()

    async def _send_events(self) -> None:
        """Every queued event, in order, while sending is possible."""
        while self._events and self.ready():
            await self.send_event(self._events.popleft())

    async def _send_due_results(self) -> float | None:
        """Send every stream's results whose turn has come; return the wait until the next one."""
        due: float | None = None
        for stream in list(self._results):
            if not self.ready():
                return None
            now = time.monotonic()
            wait = 0.0 if self.max_rate is None else self._sent_at.get(stream, -1e9) + 1 / self.max_rate - now
            if wait > 0:
                due = wait if due is None else min(due, wait)
                continue
            tracked = self._results.pop(stream)
            self._sent_at[stream] = now
            await self.send_results(tracked)
        return due


class Subscription(QueuedSink):
    """One websocket's ``subscribe``: ``results`` and ``event`` messages, newest first."""

    kind = "websocket"

    def __init__(self, send: Callable[[str], Awaitable[None]], metrics: Metrics, **options: object) -> None:
        super().__init__(metrics, **options)  # type: ignore[arg-type]  # the subscribe message's checked options
        self._send = send

    async def send_results(self, tracked: Tracked) -> None:
        with contextlib.suppress(ConnectionClosed):  # the connection's handler cleans up
            await self._send(tracked.message(self.masks))

    async def send_event(self, event: Event) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send(event.envelope())


__all__ = ["Outputs", "QueuedSink", "Sink", "Subscription", "TrackedOutputs", "drop_objects"]
