"""Live frame sources that always hand out the newest frame, and survive cameras going away.

Each source decodes on its own thread at the camera's pace into a one-slot buffer. A consumer
slower than the camera skips frames (counted in ``stats.dropped``) instead of building a queue,
so latency never accumulates. Network streams that stall or fail are reopened with capped
exponential backoff, forever by default; consumers just get frames again when the camera returns."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..concurrency.waits import CLOSE_TIMEOUT_S, within
from ..errors import StreamerError

logger = logging.getLogger(__name__)


NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "srt://", "udp://", "tcp://")


class SourceError(StreamerError):
    """A source cannot be opened, or stopped for good."""

    code = "source"


class SourceTimeoutError(SourceError):
    """A source produced no first frame within its open timeout (it keeps retrying)."""

    code = "source_timeout"


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB pixels, a running index, the source's own time, and when we got it."""

    image: np.ndarray  # HxWx3 uint8 RGB
    index: int  # counts every decoded frame, including ones a slow consumer skipped
    pts: float | None  # presentation time in seconds from the source (restarts when a file loops)
    captured_at: float  # time.monotonic() when the frame left the decoder


@dataclass
class SourceStats:
    decoded: int = 0
    dropped: int = 0  # frames replaced before any consumer took them
    reconnects: int = 0
    fps: float = 0.0  # decode rate over the last ~2 seconds
    last_error: str | None = None
    connected: bool = False


def mask_credentials(text: str) -> str:
    """Hide user:password in any URL inside ``text`` (for logs and error messages)."""
    return re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)


class FrameSource:
    """Base class: a reader thread runs ``_produce`` and publishes frames into a one-slot buffer.

    ``_produce`` returns at a natural end (a file without looping) and raises on failure; the
    base class then reconnects with backoff when ``reconnect`` is set. Iterate it from one
    consumer; anyone may call ``latest()``.
    """

    def __init__(
        self,
        name: str,
        *,
        reconnect: bool,
        open_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_retries: int | None = None,
    ) -> None:
        self.name = mask_credentials(name)
        self.stats = SourceStats()
        self.open_timeout = open_timeout
        self._reconnect = reconnect
        self._backoff = (backoff_initial, backoff_max)
        self._max_retries = max_retries
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slot: Frame | None = None
        self._taken = True
        self._last_index = -1
        self._next_index = 0
        self._finished = False
        self._fatal: SourceError | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._recent: deque[float] = deque(maxlen=64)
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"source {self.name}", daemon=True)

    def start(self) -> FrameSource:
        self._thread.start()
        return self

    def latest(self) -> Frame | None:
        """The newest frame, or None before the first."""
        return self._slot

    def __aiter__(self) -> FrameSource:
        return self

    async def __anext__(self) -> Frame:
        """The newest frame not yet handed out; waits for one if needed.

        Raises SourceTimeoutError if no frame at all arrived within ``open_timeout`` (the reader keeps
        trying, so iterating again later works), and StopAsyncIteration at the end of a
        non-looping file or after close().
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                frame = self._slot
                if frame is not None and frame.index > self._last_index:
                    self._last_index, self._taken = frame.index, True
                    return frame
                if self._fatal is not None:
                    raise self._fatal
                if self._finished or self._stop.is_set():
                    raise StopAsyncIteration
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            timeout = None
            if frame is None and math.isfinite(self.open_timeout):
                timeout = max(0.0, self._started_at + self.open_timeout - time.monotonic())
            try:
                await within(waiter, timeout)
            except asyncio.TimeoutError:  # not the builtin on Python 3.10
                self._started_at = time.monotonic()  # the next wait gets a full timeout again
                raise SourceTimeoutError(
                    f"{self.name}: no frame within {self.open_timeout:g} s"
                    + (f" (last error: {self.stats.last_error})" if self.stats.last_error else "")
                    + "; still retrying in the background"
                ) from None

    async def close(self) -> None:
        """Stop the reader and release the camera, file or socket. Safe to call twice."""
        self._stop.set()
        self._wake_all()
        if self._thread.is_alive():
            await asyncio.shield(asyncio.to_thread(self._thread.join, CLOSE_TIMEOUT_S))
            if self._thread.is_alive():  # stuck in a native call: it ends when that returns
                logger.warning("%s: the reader did not stop within %g s; going on", self.name, CLOSE_TIMEOUT_S)

    async def __aenter__(self) -> FrameSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _publish(self, image: np.ndarray, pts: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            frame = Frame(image, self._next_index, pts, now)
            self._next_index += 1
            if not self._taken:
                self.stats.dropped += 1
            self._slot, self._taken = frame, False
            self.stats.decoded += 1
            self.stats.connected = True
            self._recent.append(now)
            while now - self._recent[0] > 2.0:
                self._recent.popleft()
            span = now - self._recent[0]
            self.stats.fps = (len(self._recent) - 1) / span if span > 0 else 0.0
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, waiter)

    def _run(self) -> None:
        delay, tries = self._backoff[0], 0
        try:
            while not self._stop.is_set():
                decoded_before = self.stats.decoded
                try:
                    if self._produce() is not False:
                        break  # natural end
                    error = "stream ended"
                except Exception as exc:  # any decoder/network failure means: reconnect
                    error = mask_credentials(f"{type(exc).__name__}: {exc}")
                self.stats.connected = False
                self.stats.last_error = error
                if self._stop.is_set():
                    break
                if not self._reconnect:
                    self._fatal = SourceError(f"{self.name}: {error}")
                    logger.error("%s stopped: %s", self.name, error)
                    break
                if self.stats.decoded > decoded_before:
                    delay, tries = self._backoff[0], 0  # it worked for a while: start over
                tries += 1
                if self._max_retries is not None and tries > self._max_retries:
                    self._fatal = SourceError(f"{self.name}: gave up after {tries - 1} retries: {error}")
                    break
                logger.warning("%s: %s; reconnecting in %.1f s (try %d)", self.name, error, delay, tries)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self._backoff[1])
                self.stats.reconnects += 1
        finally:
            self._finished = True
            self._wake_all()

    def _produce(self) -> bool | None:
        """Open, decode and publish until the end (return None/True) or the stream ends (False)."""
        raise NotImplementedError

    def _play(self, fps: float, frame: Callable[[int], np.ndarray]) -> None:
        """Publish ``frame(n)`` at ``n / fps`` seconds, n = 0, 1, ..., until stopped (synthetic sources)."""
        start = time.monotonic()
        n = 0
        while not self._stop.wait(max(0.0, start + n / fps - time.monotonic())):
            self._publish(frame(n), n / fps)
            n += 1


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
