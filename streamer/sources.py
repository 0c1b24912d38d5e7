"""Live frame sources that always hand out the newest frame, and survive cameras going away.

Each source decodes on its own thread at the camera's pace into a one-slot buffer. A consumer
slower than the camera skips frames (counted in ``stats.dropped``) instead of building a queue,
so latency never accumulates. Network streams that stall or fail are reopened with capped
exponential backoff, forever by default; consumers just get frames again when the camera returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from .aio import within
from .errors import StreamerError

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
            await asyncio.shield(asyncio.to_thread(self._thread.join))

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


class SyntheticSource(FrameSource):
    """Moving shapes made in code, so that everything runs with no camera and no file."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, **kwargs: Any) -> None:
        super().__init__("synthetic", reconnect=False, **kwargs)
        self.size, self.fps = (width, height), fps
        yy, xx = np.mgrid[:height, :width]
        self._background = np.stack(
            [xx * 160 // max(1, width), yy * 160 // max(1, height), np.full_like(xx, 90)], axis=-1
        ).astype(np.uint8)

    def render(self, t: float) -> np.ndarray:
        """The pattern at time ``t`` seconds: a circle, a square and a bar moving independently."""
        w, h = self.size
        image = self._background.copy()
        cx = int(w * (0.5 + 0.3 * np.sin(t * 1.3)))
        cy = int(h * (0.5 + 0.25 * np.cos(t * 0.9)))
        cv2.circle(image, (cx, cy), max(4, h // 8), (235, 70, 60), -1)
        sx = int(w * (0.5 + 0.35 * np.cos(t * 0.7)))
        side = max(4, h // 6)
        cv2.rectangle(image, (sx - side // 2, h // 4), (sx + side // 2, h // 4 + side), (60, 200, 90), -1)
        by = int(h * (0.75 + 0.1 * np.sin(t * 2.1)))
        cv2.rectangle(image, (w // 10, by), (w // 10 + w // 3, by + max(2, h // 30)), (250, 230, 80), -1)
        return image

    def _produce(self) -> None:
        self._play(self.fps, lambda n: self.render(n / self.fps))


class WebcamSource(FrameSource):
    """A local camera through OpenCV, reopened with backoff if it vanishes."""

    def __init__(self, index: int, **kwargs: Any) -> None:
        super().__init__(f"webcam:{index}", reconnect=kwargs.pop("reconnect", True), **kwargs)
        self.index = index
        capture = self._open()
        if not capture.isOpened():
            raise SourceError(
                f"cannot open webcam:{index}: no such camera or it is busy "
                "(check /dev/video*, or use --source synthetic)"
            )
        self._capture: cv2.VideoCapture | None = capture

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self.index)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _produce(self) -> bool:
        capture, self._capture = self._capture or self._open(), None
        try:
            if not capture.isOpened():
                raise SourceError("camera not available")
            while not self._stop.is_set():
                ok, bgr = capture.read()
                if not ok:
                    return False
                self._publish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None)
            return True
        finally:
            capture.release()


class BrowserSource(FrameSource):
    """A viewer's own camera, sent up over WebRTC: frames are pushed in, no reader thread.

    Until a viewer connects its camera, consumers simply wait (the open timeout is effectively off).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("open_timeout", float("inf"))
        super().__init__("browser camera", reconnect=False, **kwargs)

    def start(self) -> BrowserSource:
        return self

    def push(self, image: np.ndarray, pts: float | None) -> None:
        if not self._stop.is_set():
            self._publish(image, pts)

    def disconnected(self) -> None:
        self.stats.connected = False


@dataclass
class StreamOptions:
    """FFmpeg input settings for network streams, tuned for latency over smoothness."""

    transport: str = "tcp"  # RTSP transport: tcp (robust) or udp (lowest latency)
    stall_timeout: float = 2.0  # no data for this long: reconnect
    extra: dict[str, str] = field(default_factory=dict)

    def ffmpeg_options(self, url: str) -> dict[str, str]:
        # No "fflags=nobuffer": with FFmpeg 7 it delayed the first RTSP frame by ~8 s here, while
        # a small probe alone opens in 30 ms and shows the first frame 50 ms later.
        options = {
            "flags": "low_delay",
            "probesize": "32768",
            "analyzeduration": "500000",
        }
        if url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.transport
            options["timeout"] = str(int(self.stall_timeout * 1_000_000))  # microseconds
        options.update(self.extra)
        return options


class AVSource(FrameSource):
    """Anything FFmpeg reads, through PyAV: network streams (reconnecting) and files (paced)."""

    def __init__(
        self,
        url: str,
        *,
        loop: bool = True,
        realtime: bool = True,
        options: StreamOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.url = url
        self.is_file = not url.startswith(NETWORK_SCHEMES)
        self.loop, self.realtime = loop, realtime
        self.options = options or StreamOptions()
        reconnect = kwargs.pop("reconnect", not self.is_file)
        super().__init__(url, reconnect=reconnect, **kwargs)
        if self.is_file:
            path = Path(url)
            if not path.is_file():
                raise SourceError(f"cannot open {url!r}: no such file")
            try:
                with av.open(url) as probe:
                    if not probe.streams.video:
                        raise SourceError(f"cannot open {url!r}: it has no video stream")
            except av.FFmpegError as exc:
                raise SourceError(f"cannot open {url!r}: {exc}") from None

    def _open(self) -> av.container.InputContainer:
        if self.is_file:
            return av.open(self.url)
        timeout = (self.open_timeout, self.options.stall_timeout)
        return av.open(self.url, options=self.options.ffmpeg_options(self.url), timeout=timeout)

    def _produce(self) -> bool:
        while not self._stop.is_set():
            with self._open() as container:
                stream = container.streams.video[0]
                stream.thread_type = "SLICE"  # frame threading would add frames of latency
                start = first = None
                for frame in container.decode(stream):
                    if self._stop.is_set():
                        return True
                    pts = frame.time
                    if self.is_file and self.realtime and pts is not None:
                        if start is None:
                            start, first = time.monotonic(), pts
                        wait = start + (pts - first) - time.monotonic()  # type: ignore[operator]
                        if wait > 0 and self._stop.wait(wait):
                            return True
                    self._publish(frame.to_ndarray(format="rgb24"), pts)
            if not self.is_file:
                return False  # the server ended the stream: reconnect
            if not self.loop:
                return True
        return True


def open_source(spec: str, **options: Any) -> FrameSource:
    """Open and start a source from its spec; the options go to its class.

    ``"0"`` or ``"webcam:0"``: a local camera. ``"browser"``: the viewer's camera over WebRTC.
    ``rtsp://``, ``rtsps://``, ``http(s)://`` and other FFmpeg URLs: a network stream. A file path:
    played at its own frame rate, looping unless ``loop=False``. ``"synthetic"``: moving shapes;
    ``"synthetic:shapes?speed=5"``: textured shapes at a set speed, with ground-truth masks.
    """
    if spec == "synthetic":
        return SyntheticSource(**options).start()
    if spec == "synthetic:shapes" or spec.startswith("synthetic:shapes?"):
        from .shapes import ShapesSource, parse_shapes_spec  # shapes builds on this module

        return ShapesSource(**{**parse_shapes_spec(spec), **options}).start()
    if spec == "browser":
        return BrowserSource(**options).start()
    if spec.isdigit() or spec.startswith("webcam:"):
        index = spec.removeprefix("webcam:")
        if not index.isdigit():
            raise ValueError(f"webcam spec must be webcam:N with N a number, got {spec!r}")
        return WebcamSource(int(index), **options).start()
    if spec.startswith(NETWORK_SCHEMES) or Path(spec).suffix or Path(spec).exists():
        # StreamOptions' fields may come flat (from a YAML config): transport="udp", ...
        names = {f.name for f in dataclasses.fields(StreamOptions)}
        flat = {key: options.pop(key) for key in list(options) if key in names}
        if flat:
            options["options"] = dataclasses.replace(options.get("options") or StreamOptions(), **flat)
        return AVSource(spec, **options).start()
    raise ValueError(
        f"unknown source {mask_credentials(spec)!r}: use a camera number ('0' or 'webcam:0'), "
        "an rtsp://, rtsps:// or http(s):// URL, a video file path, 'synthetic', 'synthetic:shapes', or 'browser'"
    )


__all__ = [
    "AVSource",
    "BrowserSource",
    "Frame",
    "FrameSource",
    "SourceError",
    "SourceStats",
    "SourceTimeoutError",
    "StreamOptions",
    "SyntheticSource",
    "WebcamSource",
    "mask_credentials",
    "open_source",
]
