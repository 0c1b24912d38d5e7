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
import fractions
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from av.video.frame import PictureType

from .aio import stop_tasks
from .display import Output
from .preprocess import scaled_size
from .results import wall_clock
from .worker import VIDEO_NICE, WorkerThread

if TYPE_CHECKING:
    from .pipeline import Stream

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
KEYFRAME_MIN_GAP_S = 0.25
HISTORY = 60  # packets kept for viewers that are briefly behind (~2 s at 30 fps)
SHOWN = 256  # encoded frames whose source frame is remembered (clicks name them by RTP time)
RETRY_S = 0.1  # pause after a failed encode
RTP_WRAP = 1 << 32

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


CODECS = {"vp8": "video/VP8", "h264": "video/H264"}  # in the server's order of preference
_RTPMAP = re.compile(r"^a=rtpmap:\d+ ([A-Za-z0-9-]+)/90000", re.M)


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """``codec`` (and its retransmission codec): a shared bitstream is in exactly one codec."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in codecs if c.mimeType in (CODECS[codec], "video/rtx")]


def offered_codec(offer_sdp: str) -> str | None:
    """The codec to send a viewer: VP8 if its offer takes it, else H.264, else None."""
    offered = {name.upper() for name in _RTPMAP.findall(offer_sdp)}
    return next((codec for codec, mime in CODECS.items() if mime.split("/")[1].upper() in offered), None)


@dataclass(frozen=True)
class EncodedFrame:
    seq: int
    packet: av.Packet
    keyframe: bool
    source: int  # the camera frame it shows
    captured: float  # that frame's capture time, seconds since the epoch


class PacketHistory:
    """One stream's last ``HISTORY`` encoded frames in one codec, for every viewer of it: each
    viewer reads them in order, and a new or lagging one waits for the next keyframe (asked for
    through ``request_keyframe``). It also remembers which camera frame the last ``SHOWN``
    frames showed, by pts (a click names the frame on screen by its RTP timestamp)."""

    def __init__(self, request_keyframe: Callable[[], None]) -> None:
        self.request_keyframe = request_keyframe
        self._frames: deque[EncodedFrame] = deque(maxlen=HISTORY)
        self._shown: OrderedDict[int, int] = OrderedDict()  # pts mod 2**32 -> source frame
        self._changed = asyncio.Condition()
        self._next_seq = 0  # never reset: a viewer's place stays meaningful across a clear()

    @property
    def newest_seq(self) -> int:
        return self._next_seq - 1

    async def append(self, packet: av.Packet, keyframe: bool, source: int, captured: float) -> EncodedFrame:
        """The next frame (numbered one after the last: viewers rely on it)."""
        async with self._changed:
            frame = EncodedFrame(self._next_seq, packet, keyframe, source, captured)
            self._next_seq += 1
            self._frames.append(frame)
            self._changed.notify_all()
        self._shown[packet.pts % RTP_WRAP] = source
        while len(self._shown) > SHOWN:
            self._shown.popitem(last=False)
        return frame

    def clear(self) -> None:
        """Forget the frames: every viewer then waits for a keyframe."""
        self._frames.clear()

    def forget_shown(self) -> None:
        """A new bitstream whose pts start afresh: earlier ones no longer name camera frames."""
        self._shown.clear()

    def source_index(self, pts: int) -> int | None:
        """The camera frame of a recently encoded frame, by its pts (modulo 2**32, as RTP has it)."""
        return self._shown.get(pts % RTP_WRAP)

    async def next_frame(self, after: int | None) -> EncodedFrame:
        """The frame after ``after``; or, for a new or lagging viewer, the next keyframe."""
        async with self._changed:
            oldest = self._frames[0].seq if self._frames else None
            if after is not None and (oldest is None or after + 1 >= oldest):
                await self._changed.wait_for(lambda: self.newest_seq > after)
                found = next((f for f in self._frames if f.seq == after + 1), None)
                if found is not None:
                    return found
            self.request_keyframe()  # joining, lagging, or after a clear()
            newest = self.newest_seq
            await self._changed.wait_for(lambda: any(f.keyframe and f.seq > newest for f in self._frames))
            return next(f for f in self._frames if f.keyframe and f.seq > newest)


class StreamEncoder:
    """Encodes one stream's outputs once, for however many viewers subscribe."""

    def __init__(
        self,
        stream: Stream,
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
        self.encode_cpu_s = 0.0  # CPU time spent drawing and encoding (benchmarks read it)
        self.history = PacketHistory(self.request_keyframe)
        self._thread = WorkerThread(f"encoder {stream.name} {codec}", nice=VIDEO_NICE)
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
        await self._thread.drain()
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
        if self.codec == "h264":
            return packet, any(p.is_keyframe for p in packets)
        return packet, data[0] & 1 == 0  # VP8 frame tag: bit 0 clear means a key frame

    def _new_codec(self, width: int, height: int) -> av.VideoCodecContext:
        if self.codec == "h264":
            return self._new_h264(width, height)
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = TIME_BASE
        codec.bit_rate = self.bitrate
        codec.gop_size = 3000  # keyframes come from this class, not the encoder's own schedule
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            **_VPX_OPTIONS,
            "bufsize": str(self.bitrate),
            "minrate": str(self.bitrate),
            "maxrate": str(self.bitrate),
        }
        # One thread: libvpx's threads wait on each other by spinning, and beside a busy tracker
        # that tripled the CPU per frame and halved the frame rate (measured on 2 cores).
        codec.thread_count = 1
        return codec

    def _new_h264(self, width: int, height: int) -> av.VideoCodecContext:
        """Constrained baseline, as aiortc's H.264 encoder makes it (what browsers' packetization
        mode 1 and hardware decoders take); keyframes are IDR frames with their SPS and PPS."""
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = self.bitrate
        codec.time_base = TIME_BASE
        codec.gop_size = 3000
        codec.profile = "Baseline"
        codec.options = {"level": "31", "tune": "zerolatency", "preset": "veryfast", "forced-idr": "1"}
        codec.thread_count = 1
        return codec


def _yuv_frame(image: np.ndarray) -> av.VideoFrame:
    """RGB to a yuv420p frame: OpenCV's conversion (BT.601, limited range, as swscale's default)
    is ten times cheaper than PyAV's reformat; odd sizes, which it cannot do, go through PyAV."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    return av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")


class EncodedTrack(MediaStreamTrack):
    """One viewer's view of a ``StreamEncoder``: yields encoded packets for aiortc to send."""

    kind = "video"

    def __init__(self, encoder: StreamEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.sender: RTCRtpSender | None = None  # set once the track is added to a peer
        self._sent: int | None = None
        self._last_pts: int | None = None
        self._last_captured = 0.0
        self._rtp_origin: int | None = None

    async def recv(self) -> av.Packet:  # type: ignore[override]
        self._learn_rtp_origin()
        frame = await self.encoder.next_frame(self._sent)
        self._sent = frame.seq
        self._last_pts, self._last_captured = frame.packet.pts, frame.captured
        return frame.packet

    def clock(self) -> tuple[int, float] | None:
        """The RTP timestamp and the capture time (ms since the epoch) of the last frame sent.
        RTP timestamps count capture time at 90 kHz, so with this pair a viewer knows any frame's
        capture time from its RTP timestamp, and measures capture → screen where the user is."""
        if self._rtp_origin is None or self._last_pts is None:
            return None
        return (self._rtp_origin + self._last_pts) % RTP_WRAP, self._last_captured * 1000

    def source_index(self, rtp_timestamp: int) -> int | None:
        """The camera frame a viewer saw, from the RTP timestamp its browser reports for it."""
        if self._rtp_origin is None:
            return None
        return self.encoder.source_index((rtp_timestamp - self._rtp_origin) % RTP_WRAP)

    def _learn_rtp_origin(self) -> None:
        """aiortc adds a random origin to our pts, unexposed; but aiortc asks for the next packet
        only after sending the last one, so its last RTP timestamp minus that pts gives it away."""
        last_rtp = getattr(self.sender, "_RTCRtpSender__rtp_timestamp", None)
        if self._last_pts is not None and isinstance(last_rtp, int):
            self._rtp_origin = (last_rtp - self._last_pts) % RTP_WRAP
