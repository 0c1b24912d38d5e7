"""Cluster benchmark: what the Ray path costs against a local server, what crosses between nodes,
and how long a failover takes, measured where the viewer is.

Serves one real clip with one tracked object twice, to one aiortc viewer (which reassembles
every frame without decoding it, as bench/viewers.py): from a local server, and from a front
whose stream runs on a worker of a local two-node Ray cluster (tests/ray_cluster.py: every node
on this machine's loopback, so "between nodes" is a real Ray transfer between processes, without
a network's latency). For each: frames per second at the viewer, capture-to-sendable latency at
the server the viewer talks to and capture to the viewer (each frame dated by its RTP timestamp
with the viewer's video clock; p50/p90), that server's CPU per frame, and on the cluster the
worker's CPU per frame and the bytes the front received per frame (video alone, then with a
results subscriber, which makes every tracked frame travel). Then the stream's node is killed,
twice (a fresh node joins between): the time from the kill until the stream runs on another
worker, until its objects' masks reach a subscriber again, and until the viewer gets frames
again. Run inside the isolated network namespace (WebRTC needs a real interface):

    ../shared/tools/isolated-net python bench/cluster.py --out bench/results/cluster_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from aiortc import RTCPeerConnection, rtcrtpreceiver
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.live import CountingDecoder  # noqa: E402
from bench.machine import describe, publish  # noqa: E402
from bench.stats import p50_p90  # noqa: E402
from bench.viewers import health  # noqa: E402
from tests.ray_cluster import LocalCluster  # noqa: E402
from tests.webrtc_scenarios import captured_ms, free_port, join, keep_rtp_timestamps, start_server  # noqa: E402

CLIP = ROOT.parent / "shared" / "media" / "bedroom.mp4"
STREAM = "bedroom"
BOX = {"type": "add_box", "id": "box", "obj_id": 1, "box": [0.3, 0.25, 0.7, 0.8]}


def metric(port: int, name: str) -> float:
    """The sum of one Prometheus series over its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class Viewer:
    """One aiortc viewer of the stream: counts frames, remembers when each arrived, and dates
    each by its RTP timestamp with the video clock its state messages carry (capture -> here)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.latencies: list[tuple[float, float]] = []  # (arrived, capture -> arrived ms)
        self._clock: dict | None = None
        self._task: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()

    async def start(self, port: int) -> None:
        self._task = asyncio.create_task(self._run(port))
        await asyncio.wait_for(self._joined.wait(), 60)

    async def _run(self, port: int) -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            peer = RTCPeerConnection()
            track = await join(ws, peer)
            clocks = asyncio.create_task(self._read_clocks(ws))
            try:
                while True:
                    frame = await track.recv()
                    self.arrivals.append(time.monotonic())
                    if self._clock is not None:
                        arrived = time.time() * 1000
                        self.latencies.append((time.monotonic(), arrived - captured_ms(frame.pts, self._clock)))
                    self._joined.set()
            finally:
                clocks.cancel()
                await asyncio.gather(clocks, return_exceptions=True)
                await peer.close()

    async def _read_clocks(self, ws) -> None:  # type: ignore[no-untyped-def]
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "state":
                self._clock = next((c for c in message["video_clock"] if c["stream"] == STREAM), None)

    def latency(self, since: float, until: float) -> dict:
        """Capture -> arrival here (reassembled, before decoding), p50 and p90, in ms."""
        return p50_p90(ms for t, ms in self.latencies if since <= t < until)

    def fps(self, since: float, until: float) -> float:
        return sum(since <= t < until for t in self.arrivals) / (until - since)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Subscriber:
    """A results subscriber (masks as RLE, so that tracked frames travel whole): when each stream's
    results with objects arrived, and the capture time of their frames."""

    def __init__(self) -> None:
        self.results: list[tuple[float, float]] = []  # (arrived, captured), epoch seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self, port: int) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(port, ready))
        await asyncio.wait_for(ready.wait(), 30)

    async def _run(self, port: int, ready: asyncio.Event) -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "subscribe", "masks": "rle", "events": False, "max_rate": 30}))
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "ack":
                    ready.set()
                elif message["type"] == "results" and message["objects"]:
                    self.results.append((time.time(), message["time"]))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def prompt(port: int) -> None:
    """Box the object, once the stream has a frame to box it on."""
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        for _ in range(100):
            await ws.send(json.dumps(BOX))
            reply = json.loads(await ws.recv())
            while reply.get("id") != "box":
                reply = json.loads(await ws.recv())
            if reply["type"] == "ack":
                return
            assert reply["code"] in ("no_frame", "unavailable"), reply
            await asyncio.sleep(0.2)
    raise TimeoutError("the stream never took the prompt")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes if p.is_running())


async def measure(port: int, front: psutil.Process, workers: list[psutil.Process], seconds: float) -> dict:
    """One viewer for ``seconds`` after a settling pause: rates, latency, CPU, bytes."""
    viewer = Viewer()
    await viewer.start(port)
    await asyncio.sleep(2.0)
    t0, front0, workers0 = time.monotonic(), cpu_seconds([front]), cpu_seconds(workers)
    bytes0, published0 = metric(port, "streamer_worker_bytes_total"), metric(port, "streamer_frames_displayed_total")
    await asyncio.sleep(seconds)
    t1 = time.monotonic()
    published = metric(port, "streamer_frames_displayed_total") - published0
    received = metric(port, "streamer_worker_bytes_total") - bytes0
    state = (await asyncio.to_thread(health, port))["streams"][STREAM]
    front_cpu, worker_cpu = cpu_seconds([front]) - front0, cpu_seconds(workers) - workers0
    result = {
        "viewer_fps": viewer.fps(t0, t1),
        "video_fps": state["video_fps"],
        "mask_fps": state["mask_fps"],
        "latency_ms": state["latency_ms"],
        "capture_to_viewer_ms": viewer.latency(t0, t1),
        "server_cpu_ms_per_frame": 1000 * front_cpu / max(published, 1),
    }
    if workers:
        result["worker_cpu_ms_per_frame"] = 1000 * worker_cpu / max(published, 1)
        result["bytes_per_frame"] = received / max(published, 1)
    await viewer.stop()
    return result


async def local_phase(args: argparse.Namespace) -> dict:
    port = free_port()
    server = start_server(str(CLIP), port, args.image_size)
    try:
        await prompt(port)
        return await measure(port, psutil.Process(server.pid), [], args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)


def worker_processes(port: int) -> list[psutil.Process]:
    return [psutil.Process(w["pid"]) for w in health(port)["cluster"]["workers"] if w.get("pid")]


async def until(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def failover(cluster: LocalCluster, port: int, viewer: Viewer, subscriber: Subscriber) -> dict:
    """Kill the node of the stream's worker; time the stream's way back."""
    report = health(port)
    worker = report["streams"][STREAM]["worker"]
    node = next(w["node"] for w in report["cluster"]["workers"] if w["id"] == worker)
    killed, killed_wall = time.monotonic(), time.time()
    await asyncio.to_thread(cluster.kill_node, cluster.node_of(node))

    def moved() -> bool:
        stream = health(port)["streams"][STREAM]
        return stream["placement"] == "running" and stream["worker"] != worker and stream["objects"] == [1]

    running = await until(moved, 60)
    back = killed_wall + running  # from then on, what arrives comes from the new worker
    await until(lambda: any(arrived > back for arrived, _ in subscriber.results), 60)
    masked = min(arrived for arrived, _ in subscriber.results if arrived > back) - killed_wall
    await until(lambda: any(t > killed + running for t in viewer.arrivals), 60)
    video = min(t for t in viewer.arrivals if t > killed + running) - killed
    return {"running_again_s": running, "masks_again_s": masked, "viewer_frames_again_s": video}


async def cluster_phase(args: argparse.Namespace) -> dict:
    cluster = LocalCluster()
    cluster.add_node()
    cluster.add_node()
    port = free_port()
    server = start_server(str(CLIP), port, args.image_size, ["--cluster", cluster.address])
    report: dict = {}
    try:
        await until(lambda: health(port)["streams"][STREAM]["placement"] == "running", 120)
        await prompt(port)
        front = psutil.Process(server.pid)
        report["video_only"] = await measure(port, front, worker_processes(port), args.seconds)
        subscriber = Subscriber()
        await subscriber.start(port)
        report["with_results_subscriber"] = await measure(port, front, worker_processes(port), args.seconds)
        viewer = Viewer()
        await viewer.start(port)
        report["failovers"] = []
        for _ in range(args.failovers):
            report["failovers"].append(await failover(cluster, port, viewer, subscriber))
            cluster.add_node()
            await asyncio.sleep(3.0)  # the new node's worker starts (the next kill has somewhere to go)
        await viewer.stop()
        await subscriber.stop()
    finally:
        server.terminate()
        report["front_exit"] = server.wait(timeout=60)
        with contextlib.suppress(Exception):
            cluster.shutdown()
    return report


async def main_async(args: argparse.Namespace) -> dict:
    rtcrtpreceiver.get_decoder = lambda codec: CountingDecoder()  # type: ignore[assignment]
    keep_rtp_timestamps()
    local = await local_phase(args)
    cluster = await cluster_phase(args)
    video = cluster["video_only"]
    summary = {
        "added_latency_ms_p50": video["latency_ms"]["p50"] - local["latency_ms"]["p50"],
        "added_latency_ms_p90": video["latency_ms"]["p90"] - local["latency_ms"]["p90"],
        "capture_to_viewer_ms_local": local["capture_to_viewer_ms"],
        "capture_to_viewer_ms_cluster": video["capture_to_viewer_ms"],
        "viewer_fps_cluster_vs_local": video["viewer_fps"] / local["viewer_fps"],
        "bytes_per_frame_video": video["bytes_per_frame"],
        "bytes_per_frame_with_results": cluster["with_results_subscriber"]["bytes_per_frame"],
        "front_cpu_ms_per_frame": video["server_cpu_ms_per_frame"],
        "local_server_cpu_ms_per_frame": local["server_cpu_ms_per_frame"],
        "worker_cpu_ms_per_frame": video["worker_cpu_ms_per_frame"],
        "failover_masks_again_s": [f["masks_again_s"] for f in cluster["failovers"]],
    }
    return {"summary": summary, "local": local, "cluster": cluster}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--failovers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {
        "device": describe(),
        "image_size": args.image_size,
        "clip": CLIP.name,
        "model": "sam2.1_hiera_tiny (random)",
        "cluster": "ray.cluster_utils.Cluster: a head with no CPUs and two 1-CPU nodes, all on this machine",
    }
    report.update(asyncio.run(main_async(args)))
    publish(report, args.out)


if __name__ == "__main__":
    main()
