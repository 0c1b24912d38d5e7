"""The codecs the server sends, as a table: VP8 (libvpx, preferred: cheaper here) and
constrained-baseline H.264 (libx264, for viewers whose offer has no VP8). Adding a codec is one
entry here."""

from __future__ import annotations

import fractions
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import av
from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

logger = logging.getLogger(__name__)


VIDEO_CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)  # what RTP timestamps count
# The frame rate libx264's rate control budgets bits per frame by (it ignores the timestamps);
# without it, it takes the 90 kHz time base for 90,000 frames a second and starves every frame.
NOMINAL_FPS = 30

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


def _new_vp8(width: int, height: int, bitrate: int) -> av.VideoCodecContext:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = TIME_BASE
    codec.bit_rate = bitrate
    codec.gop_size = 3000  # keyframes come from the encoder class, not the codec's own schedule
    codec.qmin, codec.qmax = 2, 56
    codec.options = {**_VPX_OPTIONS, "bufsize": str(bitrate), "minrate": str(bitrate), "maxrate": str(bitrate)}
    # One thread: libvpx's threads wait on each other by spinning, and beside a busy tracker
    # that tripled the CPU per frame and halved the frame rate (measured on 2 cores).
    codec.thread_count = 1
    return codec


def _new_h264(width: int, height: int, bitrate: int) -> av.VideoCodecContext:
    """Constrained baseline, as aiortc's H.264 encoder makes it (what browsers' packetization
    mode 1 and hardware decoders take); keyframes are IDR frames with their SPS and PPS."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = TIME_BASE
    codec.framerate = fractions.Fraction(NOMINAL_FPS)
    codec.gop_size = 3000
    codec.profile = "Baseline"
    codec.options = {"level": "31", "tune": "zerolatency", "preset": "veryfast", "forced-idr": "1"}
    codec.thread_count = 1
    return codec


@dataclass(frozen=True)
class VideoCodec:
    """One codec the server sends: its RTP name, how to open an encoder, and how to tell a keyframe
    in what it wrote (``packets``, joined as ``data``)."""

    mime: str
    new: Callable[[int, int, int], av.VideoCodecContext]  # (width, height, bits per second)
    is_keyframe: Callable[[list[av.Packet], bytes], bool]


CODECS = {  # in the server's order of preference
    "vp8": VideoCodec("video/VP8", _new_vp8, lambda _, data: data[0] & 1 == 0),  # frame tag bit 0 clear: key
    "h264": VideoCodec("video/H264", _new_h264, lambda packets, _: any(p.is_keyframe for p in packets)),
}
_RTPMAP = re.compile(r"^a=rtpmap:\d+ ([A-Za-z0-9-]+)/90000", re.M)


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """``codec`` (and its retransmission codec): a shared bitstream is in exactly one codec."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in codecs if c.mimeType in (CODECS[codec].mime, "video/rtx")]


def offered_codec(offer_sdp: str, prefer: str | None = None) -> str | None:
    """The codec to send a viewer: ``prefer`` (a codec the stream encodes anyway, e.g. H.264 for
    its restream) if the offer takes it, else VP8 if it does, else H.264, else None."""
    offered = {name.upper() for name in _RTPMAP.findall(offer_sdp)}
    order = [prefer, *CODECS] if prefer in CODECS else list(CODECS)
    return next((name for name in order if CODECS[name].mime.split("/")[1].upper() in offered), None)
