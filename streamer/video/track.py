"""One viewer's WebRTC track: the shared encoder's packets, handed to aiortc to packetise, and the
RTP clock that dates what the viewer sees."""

from __future__ import annotations

import logging
from typing import Protocol

import av
from aiortc import MediaStreamTrack, RTCRtpSender

from .packets import RTP_WRAP, EncodedFrame

logger = logging.getLogger(__name__)


class Encoded(Protocol):
    """Where a track's packets come from: a stream's encoder here, or a cluster worker's relayed."""

    async def next_frame(self, after: int | None) -> EncodedFrame: ...

    def source_index(self, pts: int) -> int | None: ...


class EncodedTrack(MediaStreamTrack):
    """One viewer's view of a shared encoder: yields encoded packets for aiortc to send."""

    kind = "video"

    def __init__(self, encoder: Encoded) -> None:
        super().__init__()
        self.encoder = encoder
        self.sender: RTCRtpSender | None = None  # set once the track is added to a peer
        self._sent: int | None = None
        self._last_pts: int | None = None
        self._last_captured = 0.0
        self._rtp_origin: int | None = None

    async def recv(self) -> av.Packet:  # aiortc's senders take packets as well as frames
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
