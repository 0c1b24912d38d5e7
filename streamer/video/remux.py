"""A stream's H.264 packets into another container as they are, never decoded or encoded again:
what the RTSP restream sends and the recordings write."""

from __future__ import annotations

import io
import re

import av
from av.container import OutputContainer

from .codecs import TIME_BASE
from .packets import EncodedFrame


def h264_sps(access_unit: bytes) -> bytes | None:
    """The sequence parameter set (NAL unit type 7) of an Annex B access unit, if it has one."""
    units = re.split(b"\x00\x00\x01", access_unit)
    return next((unit.rstrip(b"\x00") for unit in units if unit and unit[0] & 0x1F == 7), None)


class Remux:
    """One H.264 bitstream into ``container``, described by its first keyframe (the picture's size,
    and the SPS and PPS an SDP or an MP4's header carries)."""

    def __init__(self, container: OutputContainer, keyframe: EncodedFrame) -> None:
        probe = av.open(io.BytesIO(bytes(keyframe.packet)), format="h264")
        try:
            self.stream = container.add_stream_from_template(probe.streams.video[0])
        finally:
            probe.close()
        self.container = container
        self.sps = h264_sps(bytes(keyframe.packet))

    def new_picture(self, frame: EncodedFrame) -> bool:
        """Whether ``frame`` starts a bitstream with other parameters (a new size): this container's
        header no longer describes it."""
        return frame.keyframe and h264_sps(bytes(frame.packet)) not in (None, self.sps)

    def mux(self, frame: EncodedFrame, pts: int) -> None:
        """Write ``frame`` at ``pts`` (90 kHz ticks)."""
        packet = av.Packet(bytes(frame.packet))  # a copy: the viewers share the original
        packet.stream = self.stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = frame.keyframe
        self.container.mux(packet)


__all__ = ["Remux", "h264_sps"]
