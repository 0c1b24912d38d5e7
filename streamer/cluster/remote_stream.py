"""A stream of a cluster's front, wherever it runs now: what the server serves of it, and its
video as its worker sends it.

``RemoteStream`` is what ``served.ServedStream`` asks of a stream: its status (the worker's last
report, with what the front measures itself and where the stream runs), its prompts (calls to its
worker, through the front), and ``video(codec)``: a ``RemoteVideo`` that serves the worker's packets
to the front's viewers from the same ``PacketHistory`` a local encoder uses. The front
(``front.py``) places the stream and feeds it what the worker reports.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from typing import Any, Protocol

import av

from ..config import AutoConfig
from ..live.landing import PromptRequest
from ..live.status import StreamState, StreamStatus
from ..metrics import Metrics
from ..outputs.hub import Outputs, drop_objects
from ..sources import mask_credentials
from ..video.codecs import TIME_BASE, VIDEO_CLOCK
from ..video.packets import EncodedFrame, PacketHistory
from ..video.restream import Restream
from ..video.track import EncodedTrack
from .handle import WorkerHandle
from .reports import CompactTracked, Packet

KEYFRAME_GAP_S = 0.25
PTS_STEP = 3000  # 90 kHz ticks at least between the last packet of one worker and the first of the next


class StreamHost(Protocol):
    """What a remote stream needs of the front that serves it (``front.ClusterPipeline``)."""

    metrics: Metrics
    outputs: Outputs

    def watch(self, stream: RemoteStream, codec: str, on: bool) -> None: ...

    def keyframe(self, stream: RemoteStream, codec: str) -> None: ...

    async def call(self, stream: RemoteStream, method: str, *args: Any) -> Any: ...


class RemoteVideo:
    """A stream's video in one codec, as its worker sends it: packets in, viewers served from the
    same ``PacketHistory`` a local encoder uses. Packets of a new worker (or of an encoder that
    started afresh) continue the timestamps viewers already follow, still counting capture time
    (what a viewer's jitter buffer paces by, and its video clock dates frames by)."""

    def __init__(self, stream: RemoteStream, codec: str) -> None:
        self.stream, self.codec = stream, codec
        self.history = PacketHistory(self.request_keyframe)
        self.subscribers = 0
        self._epoch: int | None = None
        self._offset = 0
        self._last_raw: int | None = None
        self._last_pts: int | None = None
        self._last_captured = 0.0
        self._keyframe_asked = 0.0

    def subscribe(self) -> EncodedTrack:
        self.subscribers += 1
        if self.subscribers == 1:
            self.stream.cluster.watch(self.stream, self.codec, True)
        return EncodedTrack(self)

    async def unsubscribe(self) -> None:
        self.subscribers -= 1
        if self.subscribers == 0:
            self.stream.cluster.watch(self.stream, self.codec, False)
            self.history.clear()

    def request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._keyframe_asked >= KEYFRAME_GAP_S:
            self._keyframe_asked = now
            self.stream.cluster.keyframe(self.stream, self.codec)

    def source_index(self, pts: int) -> int | None:
        return self.history.source_index(pts)

    async def next_frame(self, after: int | None) -> EncodedFrame:
        return await self.history.next_frame(after)

    async def receive(self, packet: Packet, epoch: int) -> None:
        if epoch != self._epoch or (self._last_raw is not None and packet.pts <= self._last_raw):
            if self._last_pts is None:
                self._offset = 0
            else:  # as far on as capture time went (the nodes' clocks agree), and forward at least
                step = max(PTS_STEP, round((packet.captured - self._last_captured) * VIDEO_CLOCK))
                self._offset = self._last_pts + step - packet.pts
            self._epoch = epoch
            self.history.forget_shown()  # the new camera's frame numbers start afresh
        self._last_raw, self._last_captured = packet.pts, packet.captured
        pts = self._last_pts = packet.pts + self._offset
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.time_base = pts, TIME_BASE
        await self.history.append(av_packet, packet.keyframe, packet.source, packet.captured)


class RemoteStream:
    """A stream as the front serves it, wherever it runs now."""

    camera = None  # a viewer's browser camera cannot feed a worker elsewhere

    def __init__(
        self,
        name: str,
        spec: str,
        options: dict | None,
        cluster: StreamHost,
        auto: AutoConfig | None = None,
        restream: str | None = None,
        style: str | None = None,
    ) -> None:
        self.name, self.spec, self.options, self.cluster = name, spec, dict(options or {}), cluster
        self.auto = auto  # its automatic tracking (None: the workers'); kept across a failover
        self.metrics = cluster.metrics.stream(name)
        self.state = StreamState()  # what the front measures itself: packets' capture-to-arrival
        self.placement = "waiting"
        self.worker: WorkerHandle | None = None
        self.epoch = 0  # counts placements: packets of an earlier one are stale
        self.note: str | None = "waiting for a worker"  # why it is not running
        self.last_tracked: CompactTracked | None = None  # the masks a failover restores from
        self.videos: dict[str, RemoteVideo] = {}
        self.placing: asyncio.Task[None] | None = None
        self.retry_at = 0.0
        self.lost_at: float | None = None
        self._status: StreamStatus | None = None
        self._obj_ids: list[int] = []
        self._last_source: int | None = None
        self.metrics.video_fps.set_function(lambda: self.status().video_fps)
        self.metrics.mask_fps.set_function(lambda: self.status().mask_fps)
        # How its objects look (the worker's Stream.styles()), sent again to the next worker.
        self.styles: dict = {"style": style, "objects": {}} if style else {}
        # Published from here, the front: the restream goes on through a failover.
        self.restream = Restream(name, restream, self.video("h264"), self.metrics) if restream else None

    @property
    def obj_ids(self) -> list[int]:
        return list(self._obj_ids)

    def status(self) -> StreamStatus:
        running = self.placement == "running"
        status = self._status
        worker = None if self.worker is None else self.worker.id
        percentiles = self.state.latency_percentiles()  # measured here: capture to the front
        if status is None or not running:
            return StreamStatus(
                source=mask_credentials(self.spec) if status is None else status.source,
                source_alive=False,
                reconnecting=False,
                source_fps=0.0,
                video_fps=0.0,
                mask_fps=0.0,
                mask_age_ms=None,
                latency_ms=self.state.latency_ms,
                latency_p50=percentiles["p50"],
                latency_p90=percentiles["p90"],
                inference_ms=0.0,
                frame_index=None,
                objects=self.obj_ids,
                last_error=self.note if not running else None,
                placement=self.placement,
                worker=worker,
                restream=self._restream_status(),
                styles=self.styles,
            )
        return replace(
            status,
            latency_ms=self.state.latency_ms,
            latency_p50=percentiles["p50"],
            latency_p90=percentiles["p90"],
            objects=self.obj_ids,
            placement=self.placement,
            worker=worker,
            restream=self._restream_status(),
            styles=self.styles or status.styles,
        )

    def _restream_status(self) -> dict | None:
        return None if self.restream is None else asdict(self.restream.status)

    def video(self, codec: str) -> RemoteVideo:
        video = self.videos.get(codec)
        if video is None:
            video = self.videos[codec] = RemoteVideo(self, codec)
        return video

    def watched(self) -> list[str]:
        return [codec for codec, video in self.videos.items() if video.subscribers > 0]

    async def prompt(self, request: PromptRequest) -> list[int]:
        return await self._change("prompt", request)

    async def remove_object(self, obj_id: int) -> list[int]:
        obj_ids = await self._change("remove_object", obj_id)
        self._results_without({obj_id}, "viewer")
        return obj_ids

    async def reset(self) -> list[int]:
        obj_ids = await self._change("reset")
        self._results_without(None, "reset")
        return obj_ids

    async def auto_settings(self, changes: dict) -> dict:
        settings: dict = await self.cluster.call(self, "auto_settings", changes)
        self.auto = AutoConfig(**settings)  # the next worker, after a failover, starts with them
        return settings

    async def text(self, labels: list[str]) -> None:
        await self.cluster.call(self, "text", labels)

    async def set_style(self, style: str | None, obj_id: int | None = None) -> dict:
        self.styles = await self.cluster.call(self, "set_style", style, obj_id)
        return self.styles

    async def _change(self, method: str, *args: Any) -> list[int]:
        self._obj_ids = list(await self.cluster.call(self, method, *args))
        return self.obj_ids

    def _results_without(self, obj_ids: set[int] | None, reason: str) -> None:
        """Removed objects leave the newest results now, and are not restored by a failover."""
        drop_objects(self.cluster.outputs, self.name, obj_ids, reason)
        if self.last_tracked is not None:
            full = self.last_tracked.tracked()
            kept = full.without(set(full.obj_ids) if obj_ids is None else obj_ids, full.time)
            self.last_tracked = CompactTracked.of(kept) if kept.obj_ids else None

    # -- from the worker ------------------------------------------------------------------------

    def placed(self, worker: WorkerHandle) -> None:
        self.worker, self.placement, self.note = worker, "running", None
        self.epoch += 1
        self._status = None

    def unplaced(self, placement: str, note: str) -> None:
        self.worker, self.placement, self.note = None, placement, note
        self._status = None

    async def receive_packet(self, packet: Packet) -> None:
        if packet.source != self._last_source:  # once per frame, whatever the number of codecs
            self._last_source = packet.source
            latency = 1000 * max(0.0, time.time() - packet.captured)
            self.metrics.latency_s.observe(latency / 1000)
            self.state.record_latency(latency)
        video = self.videos.get(packet.codec)
        if video is not None and video.subscribers > 0:
            await video.receive(packet, self.epoch)

    def receive_status(self, status: StreamStatus) -> None:
        self._status = status
        self._obj_ids = list(status.objects)

    def restore_masks(self) -> dict | None:
        """Each object's last mask, to restore it on another worker (None: nothing to restore)."""
        tracked = self.last_tracked
        if tracked is None or not tracked.obj_ids:
            return None
        return tracked.masks()
