"""WebRTC to the viewers (aiortc): each peer connection watches one stream.

A peer gets an ``EncodedTrack`` of its stream's video in its codec (``stream.video(codec)``: the
stream's own encoder, or on a cluster the packets its worker sends), so a stream is encoded once
per codec in use whatever the number of viewers; the peer's codec is pinned to that one (VP8
when the offer takes it, else H.264). A stream whose source is the browser's camera takes the
first viewer that sends video as its camera.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..concurrency.waits import stop_tasks
from ..config.values import IceConfig
from ..errors import StreamerError
from ..live.serving import ServedStream, Serving, Video
from ..sources import BrowserSource
from ..video.codecs import CODECS, codec_preferences, offered_codec
from ..video.track import EncodedTrack

logger = logging.getLogger(__name__)


def rtc_configuration(ice: IceConfig) -> RTCConfiguration:
    """The server's own peer connections' configuration, from the ICE servers the page also gets."""
    servers = [RTCIceServer(list(s.urls), s.username, s.credential) for s in ice.servers]
    if ice.policy == "all":
        return RTCConfiguration(iceServers=servers)
    try:  # aiortc 1.16 and newer (Python 3.11+)
        from aiortc import RTCIceTransportPolicy
    except ImportError:
        _warn_no_relay_policy()
        return RTCConfiguration(iceServers=servers)
    relay = RTCIceTransportPolicy.RELAY
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=relay)


@functools.cache  # said once per process
def _warn_no_relay_policy() -> None:
    logger.warning(
        "this aiortc cannot restrict the server's own candidates to relays (1.16+ can); viewers still use relays only"
    )


class TooManyViewersError(StreamerError):
    """The server already serves its maximum number of peer connections."""

    code = "too_many_viewers"


class OfferError(StreamerError):
    """A viewer's WebRTC offer cannot be answered."""

    code = "offer"


class NoCodecError(OfferError):
    """The offer takes no codec the server sends (WHEP answers it 406)."""


@dataclass
class _Peer:
    stream: ServedStream
    video: Video
    track: EncodedTrack | None = None
    camera_task: asyncio.Task[None] | None = None


class Viewers:
    """Owns every RTCPeerConnection; caps the number of peers."""

    def __init__(self, pipeline: Serving, max_peers: int = 16, ice: IceConfig | None = None) -> None:
        self.pipeline, self.max_peers, self.ice = pipeline, max_peers, ice or IceConfig()
        self.peers: dict[RTCPeerConnection, _Peer] = {}

    def count(self, stream: str) -> int:
        return sum(1 for p in self.peers.values() if p.stream.name == stream)

    def camera_streams(self) -> list[str]:
        return [s.name for s in self.pipeline.streams.values() if s.camera is not None]

    async def answer(
        self, offer_sdp: str, stream_name: str | None = None, receive_only: bool = False
    ) -> tuple[RTCPeerConnection, str]:
        """Answer a viewer's offer with a peer sending the stream's video (ICE servers as configured).

        On a browser-camera stream the first viewer that sends video becomes the camera (unless
        ``receive_only``: a player that only watches, as over WHEP).
        """
        stream = self.pipeline.stream(stream_name)
        if len(self.peers) >= self.max_peers:
            raise TooManyViewersError(f"this server already has {self.max_peers} viewers; try again later")
        sends_video = "a=sendrecv" in offer_sdp or "a=sendonly" in offer_sdp
        camera = None if receive_only else stream.camera
        if sends_video and receive_only:
            raise OfferError("this endpoint only sends video: offer to receive (recvonly)")
        if sends_video and (camera is None or self._camera_peer(stream) is not None):
            raise OfferError(
                f"stream {stream.name!r} does not take a camera from viewers"
                if camera is None
                else "another viewer's camera is already the source; reconnect without sending video"
            )
        # A stream that restreams encodes H.264 anyway: a viewer who takes it costs no second encode.
        codec = offered_codec(offer_sdp, prefer="h264" if stream.restream is not None else None)
        if codec is None:
            raise NoCodecError(f"the offer takes no video codec this server sends ({', '.join(CODECS)})")
        video = stream.video(codec)
        peer = RTCPeerConnection(rtc_configuration(self.ice))
        entry = self.peers[peer] = _Peer(stream, video)
        self._update_gauge(stream)

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed"):
                await self.close(peer)

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and camera is not None and self._camera_peer(stream) is None:
                entry.camera_task = asyncio.create_task(self._pull_camera(track, camera), name="browser camera")

        try:
            entry.track = video.subscribe()
            sender = peer.addTrack(entry.track)
            entry.track.sender = sender
            # A viewer's PLI/FIR reaches aiortc's sender, which has no encoder of its own here.
            sender._send_keyframe = video.request_keyframe  # type: ignore[method-assign]  # aiortc's PLI hook, to our encoder
            transceiver = next(t for t in peer.getTransceivers() if t.sender is sender)
            transceiver.setCodecPreferences(codec_preferences(codec))
            await peer.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:
            await self.close(peer)
            raise OfferError(f"cannot use this WebRTC offer ({codec} video): {exc}") from exc
        return peer, peer.localDescription.sdp

    def shown_frame(self, peers: list[RTCPeerConnection], stream: str, rtp_timestamp: int) -> int | None:
        """The camera frame of ``stream`` that one of ``peers`` (a viewer's own) showed at
        ``rtp_timestamp``, while its encoder still remembers it."""
        for peer in peers:
            entry = self.peers.get(peer)
            if entry is not None and entry.stream.name == stream and entry.track is not None:
                index = entry.track.source_index(rtp_timestamp)
                if index is not None:
                    return index
        return None

    def clocks(self, peers: list[RTCPeerConnection]) -> list[dict]:
        """For each of ``peers`` (a viewer's own) that has sent video: its stream, and the RTP
        timestamp and capture time of its last frame (``EncodedTrack.clock``)."""
        clocks = []
        for peer in peers:
            entry = self.peers.get(peer)
            clock = None if entry is None or entry.track is None else entry.track.clock()
            if entry is not None and clock is not None:
                clocks.append({"stream": entry.stream.name, "rtp": clock[0], "capture_ms": round(clock[1], 2)})
        return clocks

    async def close(self, peer: RTCPeerConnection) -> None:
        entry = self.peers.pop(peer, None)
        if entry is None:
            return
        self._update_gauge(entry.stream)
        if entry.camera_task is not None:
            await stop_tasks(entry.camera_task, what="browser camera")
        await peer.close()
        if entry.track is not None:
            await entry.video.unsubscribe()

    async def close_stream(self, name: str) -> None:
        """Close the peers watching a stream that is going away."""
        await asyncio.gather(*(self.close(p) for p, e in list(self.peers.items()) if e.stream.name == name))

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(peer) for peer in list(self.peers)))

    def _camera_peer(self, stream: ServedStream) -> RTCPeerConnection | None:
        return next((p for p, e in self.peers.items() if e.stream is stream and e.camera_task is not None), None)

    async def _pull_camera(self, track: MediaStreamTrack, camera: BrowserSource) -> None:
        """Feed the viewer's camera frames to the stream's source (every frame is consumed, so
        aiortc's receive queue never grows; the source keeps only the newest)."""
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)  # a video track's frames
                image = await asyncio.to_thread(frame.to_ndarray, format="rgb24")
                camera.push(image, None if frame.time is None else float(frame.time))
        except MediaStreamError:
            logger.info("the viewer's camera stopped")
        finally:
            camera.disconnected()

    def _update_gauge(self, stream: ServedStream) -> None:
        stream.metrics.viewers.set(self.count(stream.name))
