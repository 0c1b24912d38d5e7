"""Streams on a real local multi-node Ray cluster (tests/ray_cluster.py): placement, rebalancing,
a killed node's streams restarted elsewhere with their objects, waiting for room, a silent
worker, and stream control; the tiny model at 128 px with random weights on every worker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable

import av
import numpy as np
import pytest
import torch

pytest.importorskip("ray", reason="the cluster tests need Ray: pip install -e '.[cluster]'")

from pycocotools import mask as coco_mask  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from streamer.app import App  # noqa: E402
from streamer.cluster.front import ClusterError, ClusterPipeline  # noqa: E402
from streamer.cluster.remote_stream import RemoteStream  # noqa: E402
from streamer.config import (  # noqa: E402
    AutoConfig,
    ClusterConfig,
    Config,
    DisplayConfig,
    ModelConfig,
    ServerConfig,
    TrackerConfig,
    WorkerSettings,
)
from streamer.errors import RemoteError  # noqa: E402
from streamer.live.landing import PromptRequest  # noqa: E402
from streamer.serve.server import StreamServer
from streamer.video.styles import KEY_COLOUR

from ..conftest import wait_for_line  # noqa: E402
from ..ray_cluster import LocalCluster  # noqa: E402
from ..rtsp_receivers import FfmpegReceiver, probe  # noqa: E402
from ..serve.test_server import get  # noqa: E402

MODEL = ModelConfig(random_weights=True, image_size=128, device="cpu")
SETTINGS = WorkerSettings(MODEL, TrackerConfig(), DisplayConfig())


def shapes(seed: int) -> str:
    return f"synthetic:shapes?width=160&height=120&fps=8&speed=3&seed={seed}"


@pytest.fixture(scope="module")
def ray_cluster() -> LocalCluster:
    cluster = LocalCluster()
    yield cluster
    cluster.shutdown()


@pytest.fixture
def cluster(ray_cluster: LocalCluster) -> LocalCluster:
    """The module's cluster with no worker node yet; whatever a test added is gone after it."""
    yield ray_cluster
    ray_cluster.clear()


@contextlib.asynccontextmanager
async def front(
    cluster: LocalCluster,
    streams: dict[str, str],
    server_options: dict | None = None,
    settings: WorkerSettings = SETTINGS,
    restream: dict[str, str] | None = None,
    **config: object,
) -> AsyncIterator[StreamServer]:
    """A front server on 127.0.0.1 whose streams run on ``cluster``'s workers (``config``: the
    cluster section's settings, ``address`` included to join through another address;
    ``restream``: RTSP servers the front publishes streams to, by name)."""
    config = {"address": cluster.address, **config}
    pipeline = ClusterPipeline(ClusterConfig(**config), settings)  # type: ignore[arg-type]
    await pipeline.connect()
    for name, spec in streams.items():
        pipeline.add_stream(name, spec, restream=(restream or {}).get(name))
    async with App(Config(server=ServerConfig(port=0, **(server_options or {}))), pipeline) as app:
        assert app.server is not None
        yield app.server


class Viewer:
    """A websocket client that keeps every message it gets (replies found by id)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws, self.messages = ws, []
        self._ids = itertools.count()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            self.messages.append(json.loads(raw))

    async def send(self, message: dict, tag: str = "") -> str:
        msg_id = f"{tag}{next(self._ids)}"
        await self.ws.send(json.dumps({**message, "id": msg_id}))
        return msg_id

    async def request(self, message: dict) -> dict:
        msg_id = await self.send(message)
        await until(lambda: any(m.get("id") == msg_id for m in self.messages), 60, f"a reply to {message['type']}")
        return next(m for m in self.messages if m.get("id") == msg_id)

    def replies(self, tag: str) -> list[dict]:
        return [m for m in self.messages if str(m.get("id", "")).startswith(tag)]

    def results(self, stream: str) -> list[dict]:
        """``stream``'s results messages, in the order they came."""
        return [m for m in self.messages if m["type"] == "results" and m["stream"] == stream]

    def masks(self, stream: str, after: float = 0.0, before: float = float("inf")) -> list[np.ndarray]:
        """The first object's masks in ``stream``'s results of frames captured in (after, before)."""
        masks = [first_mask(m) for m in self.results(stream) if after < m["time"] < before]
        return [mask for mask in masks if mask is not None]

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def viewer(server: StreamServer) -> AsyncIterator[Viewer]:
    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        client = Viewer(ws)
        try:
            yield client
        finally:
            await client.close()


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``check()``; returns how long it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def placements(server: StreamServer) -> dict[str, str | None]:
    """Each stream's worker (None: not running)."""
    return {
        name: stream.worker.id if stream.placement == "running" and stream.worker else None
        for name, stream in server.pipeline.streams.items()
    }


def counts(server: StreamServer) -> list[int]:
    """Streams per worker, fewest first."""
    running = list(placements(server).values())
    return sorted(running.count(worker) for worker in server.pipeline.workers)


async def health(server: StreamServer) -> dict:
    return json.loads((await get(server, "/healthz"))[2])


async def first_prompt(stream: RemoteStream, request: PromptRequest) -> list[int]:
    """A stream's first prompt, sent as soon as its worker has tracked a frame to prompt on."""
    for _ in range(50):
        with contextlib.suppress(RemoteError):  # no frame tracked yet
            return await stream.prompt(request)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{stream.name}'s worker never took a prompt")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def first_mask(results: dict) -> np.ndarray | None:
    """The first object's mask in a results message (None: no object, or no mask)."""
    rle = results["objects"][0]["mask"] if results["objects"] else None
    return coco_mask.decode({**rle, "counts": rle["counts"].encode()}).astype(bool) if rle else None


def restarted(results: list[dict]) -> int | None:
    """Where a stream's frame indices start again (its new worker counts from 0), if they do."""
    indices = [m["frame_index"] for m in results]
    return next((i for i in range(1, len(indices)) if indices[i] < indices[i - 1]), None)


def click(stream: str, obj_id: int) -> dict:
    return {"type": "add_points", "stream": stream, "obj_id": obj_id, "points": [[0.5, 0.5]], "labels": [1]}


async def keep_prompting(client: Viewer, streams: list[str], ids: dict[str, int]) -> None:
    """Prompts every quarter second, as a viewer clicking through a failover would."""
    while True:
        for name in streams:
            await client.send(click(name, ids[name]), tag="meanwhile-")
        await asyncio.sleep(0.25)


def test_streams_spread_rebalance_and_fail_over_with_their_objects(cluster) -> None:
    """One node, four streams, room for three: one waits and /healthz says so. A second node joins:
    the waiting stream starts there and one more moves over (2 + 2). Objects are prompted on all
    four over the websocket. The first node is killed: within 10 s one of its streams runs on the
    other worker with its object under the same id, re-prompted from its last mask (the first mask
    after the move is the last one before it); the other waits for room, and prompts to either
    get `unavailable` meanwhile. A third node joins and the waiting stream resumes there, its
    object restored too."""

    async def main() -> None:
        first = cluster.add_node()
        names = [f"s{i}" for i in range(1, 5)]
        ids = {name: i for i, name in enumerate(names, start=1)}
        streams = {name: shapes(i) for name, i in ids.items()}
        async with front(cluster, streams, max_streams_per_worker=3) as server, viewer(server) as client:
            pipeline = server.pipeline
            await until(lambda: counts(server) == [3], 90, "3 streams on the first worker")
            report = await health(server)
            assert [w["device"] for w in report["cluster"]["workers"]] == ["cpu (float32)"], report["cluster"]
            (waiting,) = [n for n, s in report["streams"].items() if s["placement"] == "waiting"]
            assert not report["ok"] and "no worker has room" in report["streams"][waiting]["last_error"]
            refused = await client.request(click(waiting, 9))
            assert refused["code"] == "unavailable" and "no worker has room" in refused["message"]

            second = cluster.add_node()
            await until(lambda: counts(server) == [2, 2], 90, "2 + 2 streams after the second node joined")
            assert {s.worker.node for s in pipeline.streams.values()} == {first.node_id, second.node_id}
            assert "streamer_rebalanced_total 1.0" in (await get(server, "/metrics"))[2].decode()
            for name in names:
                ack = await client.request(click(name, ids[name]))
                assert ack["type"] == "ack" and ack["objects"] == [ids[name]], ack
            assert (await client.request({"type": "subscribe", "masks": "rle", "events": False}))["subscribed"]
            await until(lambda: all(len(client.masks(name)) >= 3 for name in names), 30, "masks of every stream")

            on_first = sorted(n for n, s in pipeline.streams.items() if s.worker.node == first.node_id)
            killed = time.time()
            await asyncio.to_thread(cluster.kill_node, first)
            prompter = asyncio.create_task(keep_prompting(client, on_first, ids))
            await until(lambda: [placements(server)[n] is not None for n in on_first].count(True) == 1, 10, "a move")
            (moved,) = [n for n in on_first if placements(server)[n] is not None]
            (stranded,) = set(on_first) - {moved}
            # The new worker counts its frames from 0: its first result is the restored object (not
            # the first captured after `killed`: the lost worker reports frames while it is killed).
            await until(lambda: restarted(client.results(moved)) is not None, 10, "masks of the moved stream")
            assert time.time() - killed < 10 and pipeline.streams[moved].obj_ids == [ids[moved]]
            report = await health(server)
            assert report["streams"][moved]["objects"] == [ids[moved]] and not report["ok"]
            assert report["streams"][stranded]["placement"] == "waiting"
            assert "no worker has room" in report["streams"][stranded]["last_error"]
            # Re-prompted from its last mask: the new worker's first mask is the last the front had
            # (the last this subscriber got from the lost worker), as the model takes a mask prompt,
            # at a quarter of its input size (32x32 here: measured IoU 0.87-0.90).
            seen = client.results(moved)
            first = restarted(seen)
            last, restored = first_mask(seen[first - 1]), first_mask(seen[first])
            assert last is not None and restored is not None and iou(last, restored) > 0.75

            third = cluster.add_node()
            await until(lambda: placements(server)[stranded] is not None, 60, "the waiting stream resumed")
            await until(lambda: pipeline.streams[stranded].obj_ids == [ids[stranded]], 15, "its object restored")
            assert pipeline.streams[stranded].worker.node == third.node_id
            prompter.cancel()
            await asyncio.gather(prompter, return_exceptions=True)
            codes = {m.get("code", m["type"]) for m in client.replies("meanwhile-")}
            assert "unavailable" in codes and codes <= {"ack", "unavailable"}, codes
            assert {name: s.obj_ids for name, s in pipeline.streams.items()} == {n: [i] for n, i in ids.items()}
            # Both outages, as clients saw them, from the lost worker's last report to the new
            # worker's first report of the stream (the stranded one's may come a moment after its
            # object is restored): each longer than the noticing alone (one worker lost, observed
            # once), the stranded one by far.
            series: dict[str, float] = {}

            async def read_metrics() -> str:
                text = (await get(server, "/metrics"))[2].decode()
                lines = [line.split() for line in text.splitlines() if line[:1] != "#"]
                series.update({line[0]: float(line[1]) for line in lines})
                return text

            deadline = time.monotonic() + 15
            while series.get("streamer_failover_seconds_count") != 2 and time.monotonic() < deadline:
                metrics = await read_metrics()
                await asyncio.sleep(0.2)
            assert "streamer_failovers_total 2.0" in metrics and 'streamer_worker_streams{worker="' in metrics
            assert all(f'streamer_frames_processed_total{{stream="{name}"}}' in metrics for name in names)
            assert series["streamer_failover_seconds_count"] == 2
            assert series["streamer_failover_detection_seconds_count"] == 1
            assert series["streamer_failover_seconds_sum"] > 2 * series["streamer_failover_detection_seconds_sum"]

    asyncio.run(main())


def test_the_front_restreams_a_stream_through_its_failover(cluster, tmp_path) -> None:
    """The front publishes a cluster stream's video to an RTSP server from the packets its worker
    relays; the worker's node is killed and the stream restarts on another: the same RTSP session
    goes on (the packets continue its timestamps), and frames of both workers arrive."""
    receiver = FfmpegReceiver(tmp_path)
    receiver.start()

    async def main() -> None:
        first = cluster.add_node()
        async with front(cluster, {"cam": shapes(1)}, restream={"cam": receiver.url}) as server:
            stream = server.pipeline.streams["cam"]
            restream = stream.restream
            assert restream is not None
            await until(lambda: restream.status.frames_sent >= 16, 90, "frames restreamed from the first worker")
            # A style set at the front reaches the worker, and the next one after the failover.
            assert (await stream.set_style("cutout"))["style"] == "cutout"
            before = restream.status.frames_sent
            cluster.add_node()
            await asyncio.to_thread(cluster.kill_node, first)
            await until(lambda: placements(server)["cam"] is not None and stream.worker.node != first.node_id,
                        30, "the stream on the other worker")  # fmt: skip
            await until(lambda: restream.status.frames_sent >= before + 16, 30, "frames from the second worker")
            assert restream.status.connections == 1 and restream.status.last_error is None, restream.status
            health_report = await health(server)
            assert health_report["streams"]["cam"]["restream"]["connected"]

    asyncio.run(main())
    time.sleep(0.5)
    receiver.kill()
    found = probe(receiver.file)
    assert (found["codec"], found["width"], found["height"]) == ("h264", 160, 120), found
    assert found["frames"] >= 32, found
    keyed = key_coloured(receiver.file)
    assert max(keyed[:8]) < 0.2 and min(keyed[-8:]) > 0.5, keyed  # before the style: the scene; after: cutout


def key_coloured(path) -> list[float]:
    """Per frame, the share of pixels in cutout's key colour."""
    key = np.array(KEY_COLOUR, np.int16)
    with av.open(str(path)) as container:
        return [
            float((np.abs(f.to_ndarray(format="rgb24").astype(np.int16) - key).max(axis=2) <= 40).mean())
            for f in container.decode(video=0)
        ]


def test_a_silent_worker_is_given_up_and_stream_control_reaches_the_workers(cluster) -> None:
    """A worker that stops answering (its process frozen: a hung machine, a cut network) is lost
    after the heartbeat timeout and its stream moves with its object; viewers can add a stream,
    which a worker opens, get the worker's reason for a source it cannot open, and remove one."""

    async def main() -> None:
        cluster.add_node()
        cluster.add_node()
        served = front(cluster, {"cam": shapes(1)}, {"stream_control": True}, heartbeat_timeout_s=2.0)
        async with served as server, viewer(server) as client:
            pipeline = server.pipeline
            await until(lambda: len(pipeline.workers) == 2 and placements(server)["cam"], 90, "two workers")
            ack = await client.request({"type": "add_stream", "stream": "extra", "source": shapes(2)})
            assert ack["type"] == "ack" and ack["streams"] == ["cam", "extra"], ack
            assert placements(server)["extra"] is not None
            bad = await client.request({"type": "add_stream", "stream": "bad", "source": "/no/such/clip.mp4"})
            assert bad["code"] == "bad_source" and "no such file" in bad["message"] and "bad" not in pipeline.streams
            box = {"type": "add_box", "stream": "cam", "obj_id": 3, "box": [0.2, 0.2, 0.7, 0.7]}
            assert (await client.request(box))["objects"] == [3]
            await until(lambda: bool(pipeline.streams["cam"].last_tracked), 10, "masks of cam")

            frozen = pipeline.streams["cam"].worker
            os.kill(frozen.pid, signal.SIGSTOP)  # alive, but silent
            try:
                took = await until(lambda: placements(server)["cam"] not in (None, frozen.id), 10, "cam moved")
                assert took > 1.5  # it waited out the heartbeat timeout first
                await until(lambda: pipeline.streams["cam"].obj_ids == [3], 10, "cam's object restored")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(frozen.pid, signal.SIGCONT)
            gone = await client.request({"type": "remove_stream", "stream": "extra"})
            assert gone["streams"] == ["cam"] and all("extra" not in w.streams for w in pipeline.workers.values())

    asyncio.run(main())


def test_an_unreachable_cluster_is_given_up_with_a_clear_message(tmp_path) -> None:
    """A server told to use a cluster nobody runs says so and exits after connect_timeout_s,
    instead of waiting forever as Ray would."""
    import subprocess
    import sys

    config = tmp_path / "cluster.yaml"
    config.write_text("cluster:\n  connect_timeout_s: 2\nmodel:\n  random_weights: true\n")
    command = [sys.executable, "-m", "streamer", "--config", str(config), "--cluster", "127.0.0.1:9"]
    command += ["--source", "synthetic"]
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and time.monotonic() - started < 30
    assert "no Ray cluster answered at 127.0.0.1:9 within 2 s" in run.stderr, run.stderr[-2000:]
    assert "SIGTERM handler" not in run.stderr


def test_a_lost_head_is_said_and_the_front_ends_in_order_before_ray_would(tmp_path) -> None:
    """The head is the one machine a Ray cluster cannot lose (Ray ends every driver that lost it
    for a minute, abruptly). Killed under a running server: its stream goes on on its worker while
    /healthz says the head is silent and is not ok, and viewers are told; after head_timeout_s
    the server says the cluster is gone and what to do, shuts down in order, and exits with code
    2, long before Ray would have ended it."""
    import subprocess
    import sys
    import urllib.request

    own = LocalCluster()  # a cluster of its own: this one loses its head
    process = None
    try:
        own.add_node()
        config = tmp_path / "front.yaml"
        config.write_text(
            f"cluster:\n  address: '{own.address}'\n  heartbeat_timeout_s: 2\n  head_timeout_s: 8\n"
            "model:\n  random_weights: true\n  image_size: 128\n  device: cpu\n"
        )
        log = tmp_path / "front.log"
        command = [sys.executable, "-m", "streamer", "--config", str(config), "--port", "0"]
        command += ["--source", f"cam={shapes(7)}"]
        with log.open("wb") as out:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

        wait_for_line(log, "open http://", process)
        port = re.search(r"open http://127\.0\.0\.1:(\d+)/", log.read_text()).group(1)

        def read(path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                return reply.read().decode()

        def processed() -> float:
            found = re.search(r'^streamer_frames_processed_total\{stream="cam"\} (\S+)$', read("/metrics"), re.M)
            return float(found.group(1)) if found else 0.0

        deadline = time.monotonic() + 120
        while json.loads(read("/healthz"))["streams"]["cam"]["placement"] != "running" or processed() < 3:
            assert time.monotonic() < deadline, read("/healthz")
            time.sleep(0.5)

        async def watch() -> list[dict]:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                client = Viewer(ws)
                await until(lambda: any(m["type"] == "hello" for m in client.messages), 10, "hello")
                own.cluster.head_node.kill_all_processes(check_alive=False, allow_graceful=False)
                await until(lambda: any(m.get("code") == "cluster" for m in client.messages), 10, "viewers told")
                await client.close()
                return client.messages

        killed = time.monotonic()
        messages = asyncio.run(watch())
        (told,) = [m for m in messages if m.get("code") == "cluster"]
        assert told["stream"] == "cam" and "does not answer" in told["message"], told
        report = json.loads(read("/healthz"))
        assert not report["ok"] and report["cluster"]["head"]["answering"] is False, report["cluster"]
        assert report["streams"]["cam"]["placement"] == "running"
        before = processed()
        time.sleep(1.5)
        assert processed() > before  # tracking goes on on the worker meanwhile

        code = process.wait(60)
        took = time.monotonic() - killed
        text = log.read_text()
        assert code == 2, text[-3000:]
        assert f"the Ray head at {own.address} has not answered for" in text and "Start the head again" in text
        assert "shutting down" in text and "Traceback" not in text, text[-3000:]
        assert took < 8 + 30, took  # Ray would end it at head_timeout_s + 30 s
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        own.shutdown()


def test_the_doctor_says_what_a_cluster_has_room_for(cluster) -> None:
    """``sam2-stream doctor --cluster ADDRESS`` joins the cluster and counts the workers it would
    start: none on the bare head (no CPUs there), one when a one-CPU node has joined."""
    import subprocess
    import sys

    def finding() -> dict:
        command = [sys.executable, "-m", "streamer", "doctor", "--json", "--cluster", cluster.address]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        return next(f for f in json.loads(run.stdout) if f["check"] == "cluster")

    bare = finding()
    assert bare["status"] == "warn" and "1 node(s), none with 1 CPU(s) for a worker" in bare["detail"], bare
    cluster.add_node()
    joined = finding()
    assert joined["status"] == "ok" and "2 node(s), room for 1 CPU worker(s)" in joined["detail"], joined


def test_a_front_outside_the_cluster_joins_through_ray_client(cluster) -> None:
    """``--cluster ray://HEAD:PORT``: a front that is no node of the cluster places its stream on
    a worker and prompts it through the head's Ray Client server, as one on a node does."""

    async def main() -> None:
        cluster.add_node()
        # Room for three attempts: a Ray Client join whose server is lost is ended and tried again.
        async with front(cluster, {"cam": shapes(4)}, address=cluster.client_address, connect_timeout_s=60) as server:
            stream = server.pipeline.streams["cam"]
            await until(lambda: stream.placement == "running", 90, "the stream placed")
            await until(lambda: stream.status().video_fps > 4, 20, "its video at the worker")
            assert await first_prompt(stream, PromptRequest(6, box=(0.2, 0.2, 0.7, 0.7))) == [6]
            await until(lambda: stream.last_tracked is not None and stream.last_tracked.obj_ids == (6,), 20, "masks")

    try:
        asyncio.run(main())
    except Exception as exc:
        raise AssertionError(f"{exc}\nthe head's Ray Client server said:\n{cluster.client_server_logs()}") from exc


class HungRayClientServer:
    """A stand-in for a head's Ray Client server that answers pings and takes a client's first
    join but never answers it, as one whose per-client server was lost does; it refuses every
    later join with a message of its own."""

    REFUSAL = "refused by the stand-in"

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

        self.joins = 0
        self._released = threading.Event()
        stand_in = self

        class Driver(ray_client_pb2_grpc.RayletDriverServicer):
            def ClusterInfo(self, request, context):  # noqa: N802 (gRPC's name)
                return ray_client_pb2.ClusterInfoResponse(json="{}")

        class Data(ray_client_pb2_grpc.RayletDataStreamerServicer):
            def Datapath(self, requests, context):  # noqa: N802
                init = next(requests)
                stand_in.joins += 1
                if stand_in.joins == 1:
                    stand_in._released.wait(120)
                    return
                refusal = ray_client_pb2.InitResponse(ok=False, msg=stand_in.REFUSAL)
                yield ray_client_pb2.DataResponse(req_id=init.req_id, init=refusal)
                for _ in requests:  # open until the client leaves: it reads the refusal first
                    pass

        self._server = grpc.server(futures.ThreadPoolExecutor(8))
        ray_client_pb2_grpc.add_RayletDriverServicer_to_server(Driver(), self._server)
        ray_client_pb2_grpc.add_RayletDataStreamerServicer_to_server(Data(), self._server)
        self.address = f"ray://127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def close(self) -> None:
        self._released.set()
        self._server.stop(0)


def test_a_ray_client_join_that_hangs_is_ended_tried_again_and_the_next_join_works(cluster, monkeypatch) -> None:
    """A Ray Client server that never answers a join: the join is ended after its attempt and
    tried again (the second is refused, and that refusal is what the front says), no join is
    left running, and the same process then joins the real cluster (before, the hung join kept
    Ray's state and every later join failed)."""
    import ray

    from streamer.cluster import join

    monkeypatch.setattr(join, "CLIENT_ATTEMPT_S", 3.0)
    stand_in = HungRayClientServer()
    try:
        pipeline = ClusterPipeline(ClusterConfig(address=stand_in.address, connect_timeout_s=20), SETTINGS)
        with pytest.raises(ClusterError, match=HungRayClientServer.REFUSAL):
            asyncio.run(pipeline.connect())
    finally:
        stand_in.close()
    assert stand_in.joins == 2
    assert not [thread for thread in threading.enumerate() if thread.name == "ray join"]
    assert not ray.is_initialized()
    join.join_ray(ray, cluster.address, 30)
    try:
        assert ray.nodes()  # the head
    finally:
        ray.shutdown()


def test_a_worker_that_cannot_start_says_why_in_healthz(cluster) -> None:
    """A model that cannot be built on the workers (here: a checkpoint that is not there) leaves
    the stream waiting, and /healthz says which worker did not start and why."""

    async def main() -> None:
        node = cluster.add_node()
        model = ModelConfig(checkpoint="/no/such/sam2.pt", image_size=128, device="cpu")
        settings = WorkerSettings(model, TrackerConfig(), DisplayConfig())
        async with front(cluster, {"cam": shapes(5)}, settings=settings) as server:
            pipeline = server.pipeline
            await until(lambda: bool(pipeline.describe()["cluster"]["failed_starts"]), 60, "a failed start")
            await until(lambda: "did not start" in (pipeline.streams["cam"].note or ""), 10, "the stream says why")
            report = await health(server)
            (reason,) = report["cluster"]["failed_starts"].values()
            assert "CheckpointError" in reason and "/no/such/sam2.pt" in reason, reason
            assert report["streams"]["cam"]["placement"] == "waiting" and not report["ok"]
            assert "/no/such/sam2.pt" in report["streams"]["cam"]["last_error"]
            # Its node gone, there is nothing left to retry on: the entry goes.
            await asyncio.to_thread(cluster.kill_node, node)
            await until(lambda: not pipeline.describe()["cluster"]["failed_starts"], 60, "the failed start forgotten")

    asyncio.run(main())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_node_gets_a_worker_on_its_gpu_that_tracks_there(cluster) -> None:
    """On a node with a GPU (``workers: auto``), the front starts a worker that reserves the GPU
    and runs its model there in bfloat16, says which GPU in /healthz, and tracks a stream on it;
    the node's CPU gets no worker of its own."""

    async def main() -> None:
        cluster.add_node(cpus=1, gpus=1)
        settings = WorkerSettings(
            ModelConfig("sam2.1_hiera_tiny", random_weights=True, image_size=256), TrackerConfig(), DisplayConfig()
        )
        async with front(cluster, {"cam": shapes(6)}, settings=settings) as server:
            stream = server.pipeline.streams["cam"]
            await until(lambda: stream.placement == "running", 180, "the stream placed")
            (worker,) = (await health(server))["cluster"]["workers"]
            name = torch.cuda.get_device_name(0)
            assert worker["device"] == f"cuda:0 ({name}, bfloat16)" and worker["streams"] == ["cam"], worker
            assert await first_prompt(stream, PromptRequest(2, box=(0.2, 0.2, 0.7, 0.7))) == [2]
            await until(lambda: stream.last_tracked is not None and stream.last_tracked.obj_ids == (2,), 20, "masks")
            metrics = (await get(server, "/metrics"))[2].decode()
            assert 'streamer_frames_processed_total{stream="cam"}' in metrics

    asyncio.run(main())


def test_a_worker_runs_its_streams_detector_and_labels_reach_the_front(cluster) -> None:
    """Automatic tracking on a cluster: the worker loads the stream's detector (a user's, by import
    path), its objects arrive at the front's results with label and origin, an ``auto`` message
    from a viewer at the front reaches the worker, and after a failover the restored objects keep
    their labels and origin on the new worker (and automatic tracking stays off)."""
    detector = "tests.auto.test_detectors:boxes_and_words"  # one box, labelled "thing"
    auto = AutoConfig(enabled=True, detector=detector, every_frames=1, probation=1)
    settings = WorkerSettings(MODEL, TrackerConfig(), DisplayConfig(), auto=auto)

    async def main() -> None:
        first = cluster.add_node()
        async with front(cluster, {"cam": shapes(1)}, settings=settings) as server, viewer(server) as client:
            await until(lambda: placements(server)["cam"] is not None, 90, "a worker")
            await client.request({"type": "subscribe", "streams": ["cam"]})

            def labelled() -> list[dict]:
                return [o for m in client.messages if m["type"] == "results" for o in m["objects"]]

            await until(lambda: any(o["origin"] == "auto" for o in labelled()), 90, "an automatic object")
            found = next(o for o in labelled() if o["origin"] == "auto")
            assert (found["label"], found["label_score"]) == ("thing", 0.9)
            added = [m["event"] for m in client.messages if m["type"] == "event" and m["event"]["type"] == "added"]
            assert added and added[0]["label"] == "thing"
            off = await client.request({"type": "auto", "stream": "cam", "enabled": False})
            assert off["type"] == "ack" and off["auto"]["enabled"] is False, off
            assert server.pipeline.streams["cam"].auto is not None and not server.pipeline.streams["cam"].auto.enabled

            stream = server.pipeline.streams["cam"]
            await until(lambda: stream.last_tracked is not None and bool(stream.last_tracked.obj_ids), 30, "masks")
            kept, lost = set(stream.last_tracked.obj_ids), placements(server)["cam"]
            cluster.add_node()
            await asyncio.to_thread(cluster.kill_node, first)
            await until(lambda: placements(server)["cam"] not in (None, lost), 60, "the stream moved")

            def restored() -> list[dict]:
                """The objects in the new worker's results (it counts its frames from 0)."""
                seen = client.results("cam")
                start = restarted(seen)
                return [] if start is None else [o for m in seen[start:] for o in m["objects"]]

            await until(lambda: any(o["obj_id"] in kept for o in restored()), 60, "the objects restored")
            again = [o for o in restored() if o["obj_id"] in kept]
            assert all((o["label"], o["origin"]) == ("thing", "auto") for o in again), again
            status = stream.status()
            assert status.auto is False  # the viewer's change went with the stream

    asyncio.run(main())
