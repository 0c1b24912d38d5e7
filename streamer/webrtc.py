"""WebRTC to the viewers (aiortc): each peer gets a track of the pipeline's overlaid frames.

A track hands its encoder the newest output it has not sent yet, so a slow viewer skips frames
rather than queueing them. aiortc encodes per RTCRtpSender, i.e. once per viewer; encoding once
for all viewers is left for issue D.
"""

from __future__ import annotations

import asyncio
import fractions
import logging

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from .errors import StreamerError
from .pipeline import Pipeline
from .sources import BrowserSource

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class TooManyViewersError(StreamerError):
    """The server already serves its maximum number of peer connections."""


class OfferError(StreamerError):
    """A viewer's WebRTC offer cannot be answered."""


class OverlayTrack(VideoStreamTrack):
    """The pipeline's overlaid frames, newest first, timestamped from their capture time."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self._sent = -1
        self._origin: float | None = None

    async def recv(self) -> VideoFrame:
        output = await self.pipeline.next_output(self._sent)
        self._sent = output.seq
        if self._origin is None:
            self._origin = output.captured_at
        frame = VideoFrame.from_ndarray(output.image, format="rgb24")
        frame.pts = int((output.captured_at - self._origin) * VIDEO_CLOCK)
        frame.time_base = TIME_BASE
        self.pipeline.record_sent(output)
        return frame


class Viewers:
    """Owns every RTCPeerConnection: creates them from offers, closes them, caps their number."""

    def __init__(self, pipeline: Pipeline, max_peers: int = 16) -> None:
        self.pipeline, self.max_peers = pipeline, max_peers
        self.peers: set[RTCPeerConnection] = set()
        source = pipeline.source
        self.camera = source if isinstance(source, BrowserSource) else None
        self._camera_peer: RTCPeerConnection | None = None
        self._camera_task: asyncio.Task[None] | None = None

    async def answer(self, offer_sdp: str) -> tuple[RTCPeerConnection, str]:
        """Answer a viewer's offer with a peer sending the overlaid video (no STUN: local ICE only).

        In browser-camera mode the first viewer that sends video becomes the source.
        """
        if len(self.peers) >= self.max_peers:
            raise TooManyViewersError(f"this server already has {self.max_peers} viewers; try again later")
        sends_video = "a=sendrecv" in offer_sdp or "a=sendonly" in offer_sdp
        if sends_video and (self.camera is None or self._camera_peer is not None):
            raise OfferError(
                "this server does not take a camera from viewers"
                if self.camera is None
                else "another viewer's camera is already the source; reconnect without sending video"
            )
        peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.add(peer)
        self._update_gauge()

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed"):
                await self.close(peer)

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.camera is not None and self._camera_peer in (None, peer):
                self._camera_peer = peer
                self._camera_task = asyncio.create_task(self._pull_camera(track), name="browser camera")

        try:
            peer.addTrack(OverlayTrack(self.pipeline))
            await peer.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:
            await self.close(peer)
            raise OfferError(f"cannot use this WebRTC offer: {exc}") from exc
        return peer, peer.localDescription.sdp

    async def close(self, peer: RTCPeerConnection) -> None:
        if peer in self.peers:
            self.peers.discard(peer)
            self._update_gauge()
            if peer is self._camera_peer and self._camera_task is not None:
                self._camera_task.cancel()
                await asyncio.gather(self._camera_task, return_exceptions=True)
                self._camera_peer = self._camera_task = None
            await peer.close()

    async def _pull_camera(self, track: MediaStreamTrack) -> None:
        """Feed the viewer's camera frames to the pipeline's source (every frame is consumed, so
        aiortc's receive queue never grows; the source keeps only the newest)."""
        assert self.camera is not None
        try:
            while True:
                frame = await track.recv()
                image = await asyncio.to_thread(frame.to_ndarray, format="rgb24")
                self.camera.push(image, None if frame.time is None else float(frame.time))
        except MediaStreamError:
            logger.info("the viewer's camera stopped")
        finally:
            self.camera.disconnected()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(peer) for peer in list(self.peers)))

    def _update_gauge(self) -> None:
        self.pipeline.metrics.viewers.set(len(self.peers))
