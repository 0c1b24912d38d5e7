"""Encode once per stream and codec: one VP8 (or H.264) encoder per stream, its packets relayed
to every viewer that takes that codec.

aiortc encodes per RTCRtpSender, so ten viewers would cost ten encoders. Instead each stream's
``StreamEncoder`` encodes every new output once, and each viewer's ``EncodedTrack`` hands aiortc
the encoded ``av.Packet``, which aiortc only packetises (``RTCRtpSender`` accepts packets from a
track). Because a viewer decodes a shared bitstream, it can only start on a keyframe: joining,
falling behind the packet history, or losing packets (RTCP PLI/FIR, which aiortc would route to its
own encoder) asks this encoder for one, at most once per ``KEYFRAME_MIN_GAP_S``; a periodic
keyframe bounds how long any glitch lasts. The encoder runs only while someone watches, and it
draws the masks onto each frame itself (``Output.image``), so nobody draws for nobody.

VP8 is what the server prefers (libvpx is cheaper here); a viewer whose offer has no VP8, such
as a Safari or a hardware decoder that wants H.264, gets constrained-baseline H.264 from libx264
with the settings aiortc's own H.264 encoder uses. Each codec in use has one encoder per stream.

The codec context lives on the encoder's own thread (``WorkerThread``): when the last viewer
leaves, ``stop()`` waits for the encode in flight before it lets the codec go, so a viewer who
joins a moment later never gets a second codec running beside the first, or one freed under it.
An encode that fails is logged, counted (``streamer_errors_total{kind="encode"}``) and followed
by a fresh codec and a keyframe; the video goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from ..concurrency.thread import WorkerThread
from ..concurrency.waits import stop_tasks
from ..model.preprocess import scaled_size
from ..outputs.results import wall_clock
from .codecs import CODECS, TIME_BASE, VIDEO_CLOCK
from .feed import VideoFeed
from .frame import Output
from .packets import EncodedFrame, PacketHistory
from .track import EncodedTrack

logger = logging.getLogger(__name__)

KEYFRAME_MIN_GAP_S = 0.25
RETRY_S = 0.1  # pause after a failed encode


class StreamEncoder:
    """Encodes one stream's outputs once, for however many viewers subscribe."""

    def __init__(
        self,
        stream: VideoFeed,
        bitrate: int = 2_500_000,
        keyframe_interval_s: float = 4.0,
        codec: str = "vp8",
        max_width: int | None = None,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        self.stream, self.bitrate, self.keyframe_interval_s = stream, bitrate, keyframe_interval_s
        self.codec, self.max_width = codec, max_width
        self.frames_encoded = 0
        self.frames_offered = 0  # outputs published while this encoder ran
        self.frames_skipped = 0  # of those, published while it was busy: never encoded (newest wins)
        self.encode_cpu_s = 0.0  # CPU time spent drawing and encoding (benchmarks read it)
        self.history = PacketHistory(self.request_keyframe)
        self._thread = WorkerThread(f"encoder {stream.name} {codec}")  # the video first: normal priority
        self._codec: av.VideoCodecContext | None = None  # only touched on ``_thread``
        self._origin: float | None = None
        self._keyframe_wanted = True
        self._last_keyframe = 0.0
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> EncodedTrack:
        self._subscribers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"encoder {self.stream.name}")
        return EncodedTrack(self)

    async def unsubscribe(self) -> None:
        self._subscribers -= 1
        if self._subscribers == 0:
            await self.stop()

    async def stop(self) -> None:
        """Stop encoding (nobody watches): wait for the encode in flight, then drop the codec."""
        if self._task is not None:
            task, self._task = self._task, None
            await stop_tasks(task, what="encoder")
        if not await self._thread.drain():
            return  # an encode still holds the codec: it stays the thread's (logged there)
        if self._task is None:  # nobody subscribed meanwhile
            self._codec = None
            self.history.clear()

    async def close(self) -> None:
        """Stop for good and let the encoder's thread go. Safe to call twice."""
        await self.stop()
        await self._thread.close()

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True

    def source_index(self, pts: int) -> int | None:
        return self.history.source_index(pts)

    async def next_frame(self, after: int | None) -> EncodedFrame:
        return await self.history.next_frame(after)

    async def _run(self) -> None:
        sent = -1
        with self.stream.watching():
            while True:
                output = await self.stream.next_output(sent)
                if sent >= 0:
                    self.frames_offered += output.seq - sent
                    self.frames_skipped += output.seq - sent - 1
                sent = output.seq
                now = time.monotonic()
                keyframe = (self._keyframe_wanted and now - self._last_keyframe >= KEYFRAME_MIN_GAP_S) or (
                    now - self._last_keyframe >= self.keyframe_interval_s
                )
                if keyframe:
                    self._keyframe_wanted = False
                    self._last_keyframe = now
                try:
                    encoded = await self._thread.run(self._encode, output, keyframe)
                except Exception:  # libvpx or drawing failed on this frame: a fresh codec, a keyframe, go on
                    logger.exception("%s: encoding a frame failed; restarting the encoder", self.stream.name)
                    self.stream.metrics.error("encode")
                    self._codec = None  # safe: the call on the encoder's thread has ended
                    self._keyframe_wanted = True
                    await asyncio.sleep(RETRY_S)
                    continue
                if encoded is None:
                    continue
                self.stream.record_sent(output)
                await self.history.append(*encoded, output.index, wall_clock(output.captured_at))

    def _encode(self, output: Output, keyframe: bool) -> tuple[av.Packet, bool] | None:
        """One frame to one packet and whether it is a keyframe (on the encoder's thread)."""
        started = time.thread_time()
        image = output.image
        if self.max_width is not None and image.shape[1] > self.max_width:  # a 4K camera shown smaller
            height, width = scaled_size(image.shape[0], image.shape[1], self.max_width)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if self.codec == "h264":  # libx264's yuv420p needs even sizes: drop an odd last row or column
            image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
        frame = _yuv_frame(image)
        if self._codec is None or (self._codec.width, self._codec.height) != (frame.width, frame.height):
            self._codec = self._new_codec(frame.width, frame.height)
            self._origin = output.captured_at
            self.history.forget_shown()
        assert self._origin is not None
        # Capture time at 90 kHz: what RTP timestamps count, so a viewer can date every frame.
        pts = frame.pts = int((output.captured_at - self._origin) * VIDEO_CLOCK)
        frame.time_base = TIME_BASE
        if keyframe:
            frame.pict_type = PictureType.I
        packets = self._codec.encode(frame)
        data = b"".join(bytes(p) for p in packets)
        self.encode_cpu_s += time.thread_time() - started
        if not data:
            return None
        self.frames_encoded += 1
        packet = av.Packet(data)
        packet.pts, packet.time_base = pts, TIME_BASE  # not frame.pts: encode() rebased it to the codec's
        return packet, CODECS[self.codec].is_keyframe(packets, data)

    def _new_codec(self, width: int, height: int) -> av.VideoCodecContext:
        return CODECS[self.codec].new(width, height, self.bitrate)


def _yuv_frame(image: np.ndarray) -> av.VideoFrame:
    """RGB to a yuv420p frame: OpenCV's conversion (BT.601, limited range, as swscale's default)
    is ten times cheaper than PyAV's reformat; odd sizes, which it cannot do, go through PyAV."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    yuv: np.ndarray = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)  # uint8, as the frame
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
