"""The cluster's parts that need no cluster: placement policy, the compact wire format of tracked
frames, worker metrics carried to the front, a remote stream's video across workers, and what a
front says before any worker (or without Ray)."""

from __future__ import annotations

import asyncio
import sys

import av
import numpy as np
import pytest

from streamer.cluster.front import ClusterError, ClusterPipeline
from streamer.cluster.placement import Load, choose, rebalance
from streamer.cluster.remote_stream import RemoteStream
from streamer.cluster.reports import CompactTracked, Packet, WorkerReport
from streamer.config import (
    ClusterConfig,
    ConfigError,
    DisplayConfig,
    ModelConfig,
    ServerConfig,
    TrackerConfig,
    WorkerSettings,
    load_config,
)
from streamer.errors import UnavailableError
from streamer.live.landing import PromptRequest
from streamer.metrics import Metrics
from streamer.outputs.results import Tracked
from streamer.serve.server import StreamServer

SETTINGS = WorkerSettings(ModelConfig(random_weights=True), TrackerConfig(), DisplayConfig())


def test_a_stream_goes_where_capacity_is_free_and_moves_only_when_it_pays() -> None:
    """The least busy worker with room takes a stream (fewer streams on a tie); full workers take
    none; a move is planned only when one worker has two streams more than another."""
    loads = [Load("a", 2, 0.9), Load("b", 3, 0.2), Load("c", 1, 0.21)]
    assert choose(loads, max_streams=8) == "c"  # b and c are as busy: c has fewer streams
    assert choose(loads, max_streams=3) == "c"  # b is full
    assert choose([Load("a", 2, 0.9), Load("b", 2, 0.1)], max_streams=2) is None
    assert choose([], max_streams=8) is None
    assert rebalance([Load("a", 3, 0.5), Load("b", 1, 0.5)]) == ("a", "b")
    assert rebalance([Load("a", 2, 0.9), Load("b", 1, 0.0)]) is None
    assert rebalance([Load("a", 5, 0.9)]) is None


def test_compact_tracked_frames_keep_every_mask_pixel_and_are_small() -> None:
    """Logits sent as deflated int8: ``> 0`` is exactly the tracker's mask, even for logits a hair
    either side of 0 (which move up to 1/16 for it); others within 1/32 (clipped at +-8); a mostly
    flat mask is a few kB."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (2, 270, 480)).astype(np.float32)
    logits[0, :5, :5] = [1e-6, -1e-6, 0.0, 0.03, -0.03]
    tracked = Tracked("cam", 7, 70, 1.5e9, 540, 960, (3, 5), logits, np.array([2.0, -1.0], np.float32))
    compact = CompactTracked.of(tracked)
    back = compact.tracked()
    assert np.array_equal(back.logits > 0, logits > 0)
    error = np.abs(back.logits - np.clip(logits, -127 / 16, 127 / 16))
    assert error.max() <= 1 / 16 and error[np.abs(logits) >= 1 / 16].max() <= 1 / 32 + 1e-6
    assert (back.obj_ids, back.frame_index, back.source_frame, back.height) == ((3, 5), 7, 70, 540)
    assert back.results().objects[0].bbox == tracked.results().objects[0].bbox
    masks = compact.masks()
    assert sorted(masks) == [3, 5] and np.array_equal(masks[5], logits[1] > 0)
    flat = np.full((1, 270, 480), -20.0, np.float32)
    flat[0, 100:200, 150:300] = 20.0
    small = CompactTracked.of(Tracked("cam", 1, 1, 0.0, 540, 960, (1,), flat, np.ones(1, np.float32)))
    assert len(small.logits) < 4000
    report = WorkerReport(tracked=[small])
    assert WorkerReport.unpack(report.pack()).tracked[0].masks()[1].sum() == 100 * 150


def test_worker_metrics_reach_the_front_as_deltas() -> None:
    """What a worker's pipeline counts is taken once (a second take is empty) and added to the
    front's series of the same stream, errors by kind included."""
    worker, front = Metrics(tap=True), Metrics()
    there, here = worker.stream("cam"), front.stream("cam")
    there.frames_processed.inc()
    there.frames_processed.inc(2)
    there.inference_s.observe(0.04)
    there.inference_s.observe(0.06)
    there.frames_captured.set(90)
    there.error("camera")
    delta = there.take()
    assert delta.counters == {"frames_processed": 3.0} and delta.observations == {"inference_s": [0.04, 0.06]}
    assert delta.gauges == {"frames_captured": 90} and delta.errors == {"camera": 1}
    assert there.take().counters == {} and there.take().errors == {}
    here.apply(delta)
    here.apply(delta)
    text = front.render().decode()
    assert 'streamer_frames_processed_total{stream="cam"} 6.0' in text
    assert 'streamer_inference_seconds_count{stream="cam"} 4.0' in text
    assert 'streamer_frames_captured{stream="cam"} 90.0' in text
    assert 'streamer_errors_total{kind="camera",stream="cam"} 2.0' in text
    with pytest.raises(TypeError, match="tap=True"):
        here.take()


class _Calls:
    """A cluster front's calls to workers, recorded instead of made."""

    def __init__(self) -> None:
        self.watched: list[tuple[str, bool]] = []
        self.keyframes = 0
        self.metrics = Metrics()

    def watch(self, stream: RemoteStream, codec: str, on: bool) -> None:
        self.watched.append((codec, on))

    def keyframe(self, stream: RemoteStream, codec: str) -> None:
        self.keyframes += 1


def _packet(pts: int, source: int, keyframe: bool = False, since: float = 0.0) -> Packet:
    """A worker's packet: its encoder's pts count capture time from ``since`` (s after 1e9)."""
    return Packet("cam", "vp8", bytes([pts % 251]) * 10, pts, keyframe, source, 1.0e9 + since + pts / 90_000)


def test_remote_video_continues_one_stream_across_workers() -> None:
    """A viewer reading a stream's packets gets the next worker's, after a failover, as the very
    next frames: timestamps keep rising (the new encoder starts at 0) as far as capture time went
    meanwhile (a worker's clock behind: a frame's worth), the first is a keyframe, and RTP times
    no longer name the old camera's frames. The first viewer of a codec asks the
    worker to send it, the last one to stop."""
    calls = _Calls()
    stream = RemoteStream("cam", "synthetic", None, calls)  # type: ignore[arg-type]
    video = stream.video("vp8")

    async def main() -> None:
        track = video.subscribe()
        assert calls.watched == [("vp8", True)]
        first = asyncio.create_task(video.next_frame(None))  # a new viewer: waits for a keyframe
        await asyncio.sleep(0)
        assert calls.keyframes == 1
        for pts, source in ((0, 10), (3000, 11), (6000, 12)):
            await video.receive(_packet(pts, source, keyframe=pts == 0), epoch=1)
        got = [await first]
        for _ in range(2):
            got.append(await video.next_frame(got[-1].seq))
        assert video.source_index(3000) == 11
        moved = 6000 / 90_000 + 2.0  # the stream moved 2 s later: a new worker, a new camera
        for pts, source in ((0, 0), (3000, 1)):
            await video.receive(_packet(pts, source, keyframe=pts == 0, since=moved), epoch=2)
        await video.receive(_packet(0, 0, keyframe=True, since=moved - 1.0), epoch=3)  # a clock behind
        for _ in range(3):
            got.append(await video.next_frame(got[-1].seq))
        pts = [frame.packet.pts for frame in got]
        assert pts == [0, 3000, 6000, 186000, 189000, 192000] and got[3].keyframe
        assert [frame.seq for frame in got] == list(range(6))
        assert video.source_index(3000) is None and video.source_index(192000) == 0
        assert isinstance(got[3].packet, av.Packet)
        await video.unsubscribe()
        assert calls.watched == [("vp8", True), ("vp8", False)] and track.encoder is video

    asyncio.run(main())


def test_a_front_without_workers_says_so_and_refuses_prompts_clearly() -> None:
    """Before any worker has room a stream waits: /healthz is not ok and says why, a prompt gets
    `unavailable`; a browser camera (its frames would cross the network) and a local camera (on one
    machine only) are refused."""
    pipeline = ClusterPipeline(ClusterConfig(address="auto"), SETTINGS)
    stream = pipeline.add_stream("cam", "rtsp://user:secret@10.0.0.5/stream")

    async def main() -> None:
        with pytest.raises(UnavailableError, match="not running now") as refused:
            await stream.prompt(PromptRequest(1, box=(0.1, 0.1, 0.5, 0.5)))
        assert refused.value.code == "unavailable"
        health = StreamServer(pipeline, ServerConfig(port=0)).health()
        cam = health["streams"]["cam"]
        assert not health["ok"] and cam["placement"] == "waiting" and "waiting for a worker" in cam["last_error"]
        assert cam["source"] == "rtsp://***@10.0.0.5/stream" and health["cluster"]["workers"] == []

    asyncio.run(main())
    with pytest.raises(ClusterError, match="browser camera"):
        pipeline.add_stream("me", "browser")
    with pytest.raises(ClusterError, match="plugged into one machine"):
        pipeline.add_stream("usb", "webcam:0")


def test_cluster_settings_errors_and_a_missing_ray_are_said_plainly(monkeypatch, tmp_path) -> None:
    """--cluster and --max-streams-per-worker fill the cluster section; nonsense values, a browser
    camera or --out with a cluster are refused by name; without Ray, joining says what to install."""
    from streamer.cli import parse_args

    cluster = parse_args(["--cluster", "ray://head:10001", "--max-streams-per-worker", "4", "--source", "x.mp4"])
    assert cluster.config_data.cluster == ClusterConfig(address="ray://head:10001", max_streams_per_worker=4)
    refused = (["--source", "browser"], ["--source", "0"], ["--source", "synthetic", "--out", "x.mp4"])
    refused += (["--max-streams-per-worker", "0"],)
    for argv in refused:
        with pytest.raises(SystemExit):
            parse_args(["--cluster", "auto", *argv])
    path = tmp_path / "bad.yaml"
    path.write_text("cluster:\n  workers: tpu\n")
    with pytest.raises(ConfigError, match="workers must be one of auto, gpu, cpu"):
        load_config(path)
    path.write_text("cluster:\n  head_timeout_s: 0\n")
    with pytest.raises(ConfigError, match="head_timeout_s must be 1 to 3600 seconds, got 0"):
        load_config(path)

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ClusterError, match=r"pip install 'sam2-streamer\[cluster\]'"):
        asyncio.run(ClusterPipeline(ClusterConfig(address="auto"), SETTINGS).connect())


def test_workers_go_one_per_gpu_or_one_per_cpu_node() -> None:
    """On a cluster with GPUs every GPU gets a worker (a CPU-only head none); on a CPU cluster every
    node with enough CPUs gets one; dead nodes none."""
    from streamer.cluster.placement import worker_slots

    nodes = [
        {"NodeID": "head", "Alive": True, "Resources": {"CPU": 8}},
        {"NodeID": "gpus", "Alive": True, "Resources": {"CPU": 32, "GPU": 2}},
        {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 8, "GPU": 4}},
    ]
    assert worker_slots(nodes, "auto", 1.0) == (True, {"head": 0, "gpus": 2})
    assert worker_slots(nodes, "cpu", 16.0) == (False, {"head": 0, "gpus": 1})
    assert worker_slots(nodes[:1], "auto", 1.0) == (False, {"head": 1})
