"""RTSP restream: a stream's annotated video pushed to an RTSP server (ANNOUNCE and RECORD), the way
go2rtc, mediamtx, Frigate and most NVRs take a camera.

It remuxes the stream's own H.264 packets, from the encoder its H.264 viewers share, and never
encodes again: beside an H.264 viewer a restream costs the socket writes only, and otherwise one
H.264 encode that every later H.264 viewer shares. It reads the packets as a viewer does: in order
while it keeps up, from the next keyframe when it falls behind the packet history. So a slow
server costs the restream frames, never the viewers or the tracker time: the socket work runs on
the restream's own thread, with a socket timeout (``IO_TIMEOUT_S``) so that a server that stops
reading ends the connection rather than holding the thread. When the server is away, refuses or
drops the connection, the restream says why (log, /metrics, the stream's status) and tries again
with backoff, each connection starting on a keyframe whose SPS and PPS describe the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import av

from ..concurrency.thread import WorkerThread
from ..concurrency.waits import CLOSE_TIMEOUT_S, stop_tasks, within
from ..config.values import check_restream_url
from ..metrics import StreamMetrics
from ..sources.source import mask_credentials
from .codecs import VIDEO_CLOCK
from .packets import EncodedFrame, PacketFeed
from .remux import Remux

logger = logging.getLogger(__name__)

RETRY_S = (1.0, 30.0)  # backoff between connection attempts: doubles from the first to the second
IO_TIMEOUT_S = 5.0  # a connect, a reply or a write that takes longer ends the connection
PTS_GAP = VIDEO_CLOCK // 10  # ticks kept between two bitstreams of the encoder (it restarted)


class NewBitstreamError(Exception):
    """The encoder started a bitstream with other parameters (a new size): its SDP no longer holds."""


@dataclass
class RestreamStatus:
    """What /healthz and the viewers' state say about a restream."""

    url: str  # credentials masked
    connected: bool = False
    frames_sent: int = 0
    connections: int = 0  # connections that got as far as sending (the first one included)
    last_error: str | None = None


class Restream:
    """Publishes one stream's H.264 packets to ``url`` for as long as it runs (``start``/``close``)."""

    def __init__(self, stream: str, url: str, video: PacketFeed, metrics: StreamMetrics) -> None:
        self.stream, self.url, self.video, self.metrics = stream, check_restream_url(url), video, metrics
        self.status = RestreamStatus(mask_credentials(url))
        self._thread = WorkerThread(f"restream {stream}")
        self._task: asyncio.Task[None] | None = None
        self._connection: _Connection | None = None  # only touched on ``_thread``
        self._sent = 0  # frames sent on the current connection

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"restream {self.stream}")

    async def close(self) -> None:
        """Stop publishing: the loop, then the connection (TEARDOWN), bounded. Safe to call twice."""
        if self._task is not None:
            task, self._task = self._task, None
            await stop_tasks(task, what=f"restream {self.stream}")
        try:
            await within(self._thread.run(self._disconnect), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.warning("%s: the restream's connection did not close within %g s", self.stream, CLOSE_TIMEOUT_S)
        except RuntimeError:  # closed before: the thread takes no more calls
            pass
        await self._thread.close()
        self._set_connected(False)

    async def _run(self) -> None:
        self.video.subscribe()  # the encoder runs while the restream does (the track is not used)
        retry = RETRY_S[0]
        try:
            while True:
                try:
                    await self._publish()
                except NewBitstreamError as exc:  # the stream's size changed: a new session says so
                    logger.info("%s: %s; reconnecting to %s", self.stream, exc, self.status.url)
                    continue  # the next connect closes this connection first
                except (av.FFmpegError, OSError, ValueError) as exc:
                    failure: BaseException = exc
                except Exception as exc:  # a bug: log it, and keep the stream's other outputs going
                    logger.exception("%s: restream to %s failed", self.stream, self.status.url)
                    failure = exc
                await self._thread.run(self._disconnect)
                self._set_connected(False)
                if self._sent:
                    retry = RETRY_S[0]  # it worked for a while: the next attempt is soon
                self._failed(failure, retry)
                await asyncio.sleep(retry)
                retry = min(2 * retry, RETRY_S[1])
        finally:
            await self.video.unsubscribe()

    async def _publish(self) -> None:
        """Connect on a keyframe, then send every frame after it; returns only by raising."""
        frame = await self.video.next_frame(None)  # a keyframe (it asks the encoder for one)
        self._sent = 0
        await self._thread.run(self._connect, frame)
        while True:
            await self._thread.run(self._send, frame)
            if not self._sent:
                self.status.connections += 1
                self.status.last_error = None
                self._set_connected(True)
                logger.info("%s: restreaming to %s", self.stream, self.status.url)
            self._sent += 1
            self.status.frames_sent += 1
            self.metrics.restream_frames.inc()
            frame = await self.video.next_frame(frame.seq)

    def _failed(self, exc: BaseException, retry: float) -> None:
        reason = mask_credentials(str(exc) or type(exc).__name__)
        message = f"restream to {self.status.url} failed: {reason}; trying again in {retry:g} s"
        if message != self.status.last_error:
            logger.warning("%s: %s", self.stream, message)
        self.status.last_error = message
        self.metrics.error("restream")

    def _set_connected(self, connected: bool) -> None:
        self.status.connected = connected
        self.metrics.restream_connected.set(1 if connected else 0)

    # -- on the restream's thread ---------------------------------------------------------------

    def _connect(self, keyframe: EncodedFrame) -> None:
        self._disconnect()
        self._connection = _Connection(self.url, keyframe)

    def _send(self, frame: EncodedFrame) -> None:
        assert self._connection is not None, "connect first"
        self._connection.send(frame)

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _Connection:
    """One RTSP session publishing one bitstream; its timestamps start at 0 and only go forward."""

    def __init__(self, url: str, keyframe: EncodedFrame) -> None:
        options = {
            "rtsp_transport": "tcp",
            "timeout": str(int(IO_TIMEOUT_S * 1_000_000)),  # microseconds
            # RTCP sender reports date frames by their capture time: a receiver can tell latency.
            "start_time_realtime": str(int(keyframe.captured * 1_000_000)),
        }
        self.container = av.open(url, "w", format="rtsp", container_options=options)
        try:
            self.remux = Remux(self.container, keyframe)
        except BaseException:
            self.container.close()
            raise
        self._first: int | None = None
        self._offset = 0
        self._last = -1

    def send(self, frame: EncodedFrame) -> None:
        if self.remux.new_picture(frame):
            raise NewBitstreamError("the stream's picture changed (size or encoder settings)")
        source_pts = frame.packet.pts
        assert source_pts is not None  # the encoder dates every packet
        if self._first is None:
            self._first = source_pts
        pts = source_pts - self._first + self._offset
        if pts <= self._last:  # the encoder started a new bitstream: carry on after the last frame
            self._offset += self._last + PTS_GAP - pts
            pts = self._last + PTS_GAP
        self._last = pts
        self.remux.mux(frame, pts)

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self.container.close()  # TEARDOWN, when the server is still there
