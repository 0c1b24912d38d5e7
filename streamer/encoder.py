"""Encode once per stream: one VP8 encoder per stream, its packets relayed to every viewer.

aiortc encodes per RTCRtpSender, so ten viewers would cost ten encoders. Instead each stream's
``StreamEncoder`` encodes every new output once, and each viewer's ``EncodedTrack`` hands aiortc
the encoded ``av.Packet``, which aiortc only packetises (``RTCRtpSender`` accepts packets from a
track). Because a viewer decodes a shared bitstream, it can only start on a keyframe: joining,
falling behind the packet history, or losing packets (RTCP PLI/FIR, which aiortc would route to its
own encoder) asks this encoder for one, at most once per ``KEYFRAME_MIN_GAP_S``; a periodic
keyframe bounds how long any glitch lasts. The encoder runs only while someone watches.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from dataclasses import dataclass

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from av.video.frame import PictureType

from .pipeline import Output, Stream

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
KEYFRAME_MIN_GAP_S = 0.25
HISTORY = 60  # packets kept for viewers that are briefly behind (~2 s at 30 fps)

# libvpx realtime settings, as aiortc's own VP8 encoder uses them.
_VPX_OPTIONS = {
    "cpu-used": "-6",
    "deadline": "realtime",
    "lag-in-frames": "0",
    "noise-sensitivity": "4",
    "overshoot-pct": "15",
    "partitions": "0",
    "static-thresh": "1",
    "undershoot-pct": "100",
}


def vp8_preferences() -> list[RTCRtpCodecCapability]:
    """VP8 (and its retransmission codec): the only codec the shared bitstream can be."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in codecs if c.mimeType in ("video/VP8", "video/rtx")]


@dataclass(frozen=True)
class EncodedFrame:
    seq: int
    packet: av.Packet
    keyframe: bool


class StreamEncoder:
    """Encodes one stream's outputs once, for however many viewers subscribe."""

    def __init__(self, stream: Stream, bitrate: int = 2_500_000, keyframe_interval_s: float = 4.0) -> None:
        self.stream, self.bitrate, self.keyframe_interval_s = stream, bitrate, keyframe_interval_s
        self.frames_encoded = 0
        self.encode_cpu_s = 0.0  # CPU time spent encoding (benchmarks read it)
        self._history: deque[EncodedFrame] = deque(maxlen=HISTORY)
        self._changed = asyncio.Condition()
        self._codec: av.VideoCodecContext | None = None
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
            await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._codec = None
        self._history.clear()

    def request_keyframe(self) -> None:
        self._keyframe_wanted = True

    async def next_frame(self, after: int | None) -> EncodedFrame:
        """The frame after ``after``; or, for a new or lagging viewer, the next keyframe."""
        async with self._changed:
            oldest = self._history[0].seq if self._history else None
            if after is not None and (oldest is None or after + 1 >= oldest):
                await self._changed.wait_for(lambda: bool(self._history) and self._history[-1].seq > after)
                return next(f for f in self._history if f.seq == after + 1)
            self.request_keyframe()
            newest = self._history[-1].seq if self._history else -1
            await self._changed.wait_for(lambda: any(f.keyframe and f.seq > newest for f in self._history))
            return next(f for f in self._history if f.keyframe and f.seq > newest)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sent = -1
        while True:
            output = await self.stream.next_output(sent)
            sent = output.seq
            now = time.monotonic()
            keyframe = (self._keyframe_wanted and now - self._last_keyframe >= KEYFRAME_MIN_GAP_S) or (
                now - self._last_keyframe >= self.keyframe_interval_s
            )
            if keyframe:
                self._keyframe_wanted = False
                self._last_keyframe = now
            encoded = await loop.run_in_executor(None, self._encode, output, keyframe)
            if encoded is None:
                continue
            self.stream.record_sent(output)
            async with self._changed:
                seq = self._history[-1].seq + 1 if self._history else 0
                self._history.append(EncodedFrame(seq, *encoded))
                self._changed.notify_all()

    def _encode(self, output: Output, keyframe: bool) -> tuple[av.Packet, bool] | None:
        """One frame to one VP8 packet and whether it is a keyframe (on a worker thread)."""
        started = time.thread_time()
        frame = av.VideoFrame.from_ndarray(output.image, format="rgb24").reformat(format="yuv420p")
        if self._codec is None or (self._codec.width, self._codec.height) != (frame.width, frame.height):
            self._codec = self._new_codec(frame.width, frame.height)
            self._origin = output.captured_at
        assert self._origin is not None
        frame.pts = int((output.captured_at - self._origin) * VIDEO_CLOCK)
        frame.time_base = TIME_BASE
        if keyframe:
            frame.pict_type = PictureType.I
        data = b"".join(bytes(p) for p in self._codec.encode(frame))
        self.encode_cpu_s += time.thread_time() - started
        if not data:
            return None
        self.frames_encoded += 1
        packet = av.Packet(data)
        packet.pts, packet.time_base = frame.pts, TIME_BASE
        return packet, data[0] & 1 == 0  # VP8 frame tag: bit 0 clear means a key frame

    def _new_codec(self, width: int, height: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = self.bitrate
        codec.gop_size = 3000  # keyframes come from this class, not the encoder's own schedule
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            **_VPX_OPTIONS,
            "bufsize": str(self.bitrate),
            "minrate": str(self.bitrate),
            "maxrate": str(self.bitrate),
        }
        codec.thread_count = 2
        return codec


class EncodedTrack(MediaStreamTrack):
    """One viewer's view of a ``StreamEncoder``: yields encoded packets for aiortc to send."""

    kind = "video"

    def __init__(self, encoder: StreamEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self._sent: int | None = None

    async def recv(self) -> av.Packet:  # type: ignore[override]
        frame = await self.encoder.next_frame(self._sent)
        self._sent = frame.seq
        return frame.packet
