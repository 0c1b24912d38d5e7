"""The live server on 127.0.0.1: pages, health, metrics, security checks and the prompt protocol."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from streamer import StreamerError, StreamingTracker
from streamer.app import App
from streamer.config import Config, ServerConfig
from streamer.live.landing import PromptRequest
from streamer.live.pipeline import Pipeline
from streamer.live.stream import Stream
from streamer.metrics import ClusterMetrics, Metrics
from streamer.serve.server import StreamServer
from streamer.sources import BrowserSource, open_source

from ..clips import clip_path
from ..rtsp import RtspServer


@pytest.fixture(scope="module")
def tracker() -> StreamingTracker:
    return StreamingTracker.build(random_init=True, image_size=128, device="cpu")


@contextlib.asynccontextmanager
async def running(
    tracker: StreamingTracker, streams: dict[str, str] | None = None, max_batch: int = 16, **options
) -> AsyncIterator[StreamServer]:
    """A server on 127.0.0.1 (any port) with ``streams`` (name -> spec; default one synthetic
    stream named "main"), once every stream with a live source has shown a frame."""
    tracker.reset()
    pipeline = Pipeline(max_batch=max_batch)
    for i, (name, spec) in enumerate((streams or {"main": "synthetic"}).items()):
        options_for = {"width": 160, "height": 120} if spec == "synthetic" else {}
        pipeline.add_stream(name, open_source(spec, **options_for), tracker if i == 0 else None)
    async with App(Config(server=ServerConfig(port=0, **options)), pipeline) as app:
        for stream in pipeline.streams.values():
            if not isinstance(stream.source, BrowserSource):
                await stream.next_output(-1)
        assert app.server is not None
        yield app.server


def main_stream(server: StreamServer) -> Stream:
    return server.pipeline.stream(None)


async def tracked_past(stream: Stream, index: int, timeout: float = 20.0) -> None:
    """Wait until the tracker has taken a frame with an index above ``index`` (video frames come
    faster than that, whatever the tracker does)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while stream.frame_index is None or stream.frame_index <= index:
        assert asyncio.get_running_loop().time() < deadline, f"the tracker never got past frame {index}"
        await asyncio.sleep(0.02)


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return result


async def get(server: StreamServer, path: str, **headers: str) -> tuple[int, dict, bytes]:
    return await asyncio.to_thread(_get, server.port, path, headers)


async def reply(ws, message) -> dict:
    """Send one message and return the first reply that is not a periodic state push."""
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    while True:
        answer = json.loads(await ws.recv())
        if answer["type"] not in ("state", "hello"):
            return answer


def test_page_health_and_metrics(tracker) -> None:
    """The page and its files are served; /healthz says the source is alive; /metrics is Prometheus text."""

    async def main() -> None:
        async with running(tracker) as server:
            status, headers, body = await get(server, "/")
            assert status == 200 and headers["Content-Type"] == "text/html" and b"app.js" in body
            assert (await get(server, "/app.js"))[0] == 200
            await asyncio.sleep(0.6)
            status, headers, body = await get(server, "/healthz")
            health = json.loads(body)
            main = health["streams"]["main"]
            assert status == 200 and health["ok"] and main["source_alive"] is True and main["video_fps"] > 0
            assert health["model"]["family"] == "SAM 2.1" and health["model"]["image_size"] == tracker.model.image_size
            status, _, body = await get(server, "/metrics")
            text = body.decode()
            assert status == 200 and 'streamer_frames_processed_total{stream="main"}' in text
            assert "streamer_inference_seconds_bucket" in text and 'streamer_viewers{stream="main"} 0.0' in text

    asyncio.run(main())


def _promtool_check(text: str) -> None:
    """Prometheus's own linter (Debian's ``prometheus`` package) on an exposition."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: apt-get install prometheus (it lints /metrics)")
    run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


def test_metrics_pass_promtool(tracker) -> None:
    """A live server's /metrics, with an object tracked and results measured, and a cluster
    front's own series, pass ``promtool check metrics`` (base units, no abbreviations)."""

    async def main() -> str:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            add = {"type": "add_box", "id": 1, "obj_id": 1, "box": [0.2, 0.2, 0.7, 0.7]}
            assert (await reply(ws, add))["type"] == "ack"
            assert (await reply(ws, {"type": "subscribe", "id": 2}))["type"] == "ack"
            await asyncio.sleep(1.5)
            return (await get(server, "/metrics"))[2].decode()

    text = asyncio.run(main())
    assert 'streamer_inference_seconds_count{stream="main"}' in text and "streamer_results_seconds" in text
    _promtool_check(text)
    metrics = Metrics()
    cluster = ClusterMetrics(metrics.registry)
    cluster.worker_round_s.labels("w1").set(0.2)
    cluster.failover_s.observe(2.0)
    _promtool_check(metrics.render().decode())


@pytest.mark.parametrize(
    "path",
    [
        "/../server.py",  # web/ sits inside the package (streamer/serve/web/), beside the server's code
        "/%2e%2e/%2e%2e/configs/sam2.1_hiera_tiny.yaml",
        "/../../../pyproject.toml",
        "/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/..%2f..%2f..%2fREADME.md",
        "/static/../../../streamer/serve/server.py",
        "//etc/passwd",
    ],
)
def test_no_path_traversal(tracker, path: str) -> None:
    """Only files under web/ are served: anything that climbs out is a 404."""

    async def main() -> None:
        async with running(tracker) as server:
            status, _, body = await get(server, path)
            assert status == 404 and b"root:" not in body and b"[project]" not in body

    asyncio.run(main())


def test_token_required_everywhere(tracker) -> None:
    """With a token, the page, files, health, metrics and websocket refuse requests without it."""

    async def main() -> None:
        async with running(tracker, token="s3cret") as server:
            for path in ("/", "/app.js", "/healthz", "/metrics"):
                assert (await get(server, path))[0] == 401, path
                assert (await get(server, path + "?token=wrong"))[0] == 401, path
            status, headers, _ = await get(server, "/?token=s3cret")
            assert status == 200 and "streamer_token=s3cret" in headers["Set-Cookie"]
            assert (await get(server, "/app.js", Cookie="streamer_token=s3cret"))[0] == 200
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{server.port}/ws"):
                    pass
            assert refused.value.response.status_code == 401
            async with connect(f"ws://127.0.0.1:{server.port}/ws?token=s3cret") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"

    asyncio.run(main())


def test_websocket_origin_checked(tracker) -> None:
    """A websocket from another site's page is refused; the server's own origin is accepted."""

    async def main() -> None:
        async with running(tracker) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, origin="http://evil.example"):
                    pass
            assert refused.value.response.status_code == 403
            async with connect(url, origin=f"http://127.0.0.1:{server.port}") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"

    asyncio.run(main())


def test_public_host_needs_token(tracker) -> None:
    """Listening beyond loopback without --token (or --insecure) is refused with advice."""
    pipeline = Pipeline()
    with pytest.raises(StreamerError, match="without --token"):
        StreamServer(pipeline, ServerConfig(host="0.0.0.0"))
    StreamServer(pipeline, ServerConfig(host="0.0.0.0", token="x"))


def test_prompt_protocol(tracker) -> None:
    """Points, boxes, removal and reset are acked with the object list; mistakes get coded errors."""

    async def main() -> None:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["streams"][0]["objects"] == []
            add = {"type": "add_points", "id": "a", "obj_id": 1, "points": [[0.5, 0.5]], "labels": [1]}
            assert await reply(ws, add) == {"type": "ack", "id": "a", "stream": "main", "objects": [1]}
            box = {"type": "add_box", "id": 2, "obj_id": 2, "box": [0.1, 0.1, 0.5, 0.6], "frame_ts": 0}
            assert (await reply(ws, box))["objects"] == [1, 2]
            stale = {**add, "id": "s", "frame_index": 0}
            await tracked_past(main_stream(server), tracker.history)  # frame 0 has left the history
            err = await reply(ws, stale)
            assert err["code"] == "stale_frame" and err["id"] == "s"
            err = await reply(ws, {"type": "add_points", "id": 5, "obj_id": 1, "points": [[1.5, 0]], "labels": [1]})
            assert err["code"] == "out_of_range" and "between 0 and 1" in err["message"]
            err = await reply(ws, {"type": "remove_object", "id": 6, "obj_id": 9})
            assert err["code"] == "unknown_object" and "[1, 2]" in err["message"]
            assert (await reply(ws, {"type": "remove_object", "id": 7, "obj_id": 1}))["objects"] == [2]
            assert (await reply(ws, {"type": "reset", "id": 8}))["objects"] == []
            assert (await reply(ws, "{not json"))["code"] == "bad_json"
            assert (await reply(ws, {"type": "teleport"}))["code"] == "unknown_type"
            bad_offer = await reply(ws, {"type": "offer", "id": 9, "sdp": "v=0 junk"})
            assert bad_offer.get("code") == "offer", bad_offer
            assert server.viewers.peers == {}
            state = json.loads(await ws.recv())
            assert state["type"] == "state" and state["streams"][0]["frame_index"] > 0

    asyncio.run(main())


def test_oversized_message_closes_only_that_connection(tracker) -> None:
    """A message over 64 KiB closes that websocket (1009); the server and others keep going."""

    async def main() -> None:
        async with running(tracker) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with connect(url) as other, connect(url) as ws:
                await ws.recv()
                await ws.send("x" * (70 * 1024))
                with pytest.raises(ConnectionClosedError) as closed:
                    while True:
                        await ws.recv()
                assert closed.value.rcvd.code == 1009
                await other.recv()
                assert (await reply(other, {"type": "reset", "id": 1}))["type"] == "ack"

    asyncio.run(main())


def test_flood_is_rate_limited(tracker) -> None:
    """A burst beyond the per-connection rate gets rate_limited errors, each answered and each
    carrying the id of the message it refused (a client matches replies by id)."""

    async def main() -> None:
        async with running(tracker, rate=5, burst=5) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            for i in range(30):
                await ws.send(json.dumps({"type": "teleport", "id": i}))
            codes, ids = [], []
            while len(codes) < 30:
                answer = json.loads(await ws.recv())
                if answer["type"] == "error":
                    codes.append(answer["code"])
                    ids.append(answer["id"])
            assert codes.count("rate_limited") >= 20 and "unknown_type" in codes
            assert ids == list(range(30)), ids

    asyncio.run(main())


def _random_message(rng: random.Random) -> str:
    """Valid, nearly valid and junk messages: wrong types, ranges, fields, encodings."""
    values = [None, True, -1, 0, 1, 0.5, 2.5, 1e308, "x", "", [], [[0.5, 0.5]], [0.1, 0.2, 0.3, 0.4], {"a": 1}]
    kind = rng.choice(["add_points", "add_box", "remove_object", "reset", "offer", "nope", None, 7])
    message = {"type": kind, "id": rng.choice([None, 1, "q", [], 2**70])}
    for key in rng.sample(["obj_id", "points", "labels", "box", "frame_index", "frame_ts", "sdp"], rng.randint(0, 5)):
        message[key] = rng.choice(values)
    if kind == "add_points" and rng.random() < 0.3:
        message.update(obj_id=rng.randint(0, 3), points=[[rng.random(), rng.random()]], labels=[rng.randint(0, 1)])
    text = json.dumps(message)
    roll = rng.random()
    if roll < 0.1:
        return text[: rng.randint(0, len(text))]
    if roll < 0.15:
        return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 40)))
    return text


def test_fuzzed_messages_all_answered_while_streaming(tracker) -> None:
    """2000 random and malformed messages: every one gets an ack or error, and frames keep flowing."""

    async def main() -> None:
        rng = random.Random(1234)
        async with running(tracker, rate=1e6, burst=10**6) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            first = main_stream(server).latest.seq
            answered = 0
            for _ in range(2000):
                await ws.send(_random_message(rng))
                while True:
                    answer = json.loads(await ws.recv())
                    if answer["type"] in ("ack", "error"):
                        answered += 1
                        break
            assert answered == 2000
            await asyncio.sleep(0.5)
            assert main_stream(server).latest.seq > first
            status, _, body = await get(server, "/healthz")
            assert status == 200 and json.loads(body)["streams"]["main"]["source_alive"]

    asyncio.run(main())


def test_camera_outage_shows_reconnecting_then_recovers(tracker) -> None:
    """An RTSP camera that dies mid-stream shows as reconnecting in /healthz and state pushes,
    and the stream resumes by itself when the camera is back."""
    camera = RtspServer(clip_path("scene_720p.mp4"))
    camera.start()

    async def health(server: StreamServer) -> dict:
        return json.loads((await get(server, "/healthz"))[2])["streams"]["cam"]

    async def wait_for(server: StreamServer, key: str, timeout: float = 8.0) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            state = await health(server)
            if state[key]:
                return state
            await asyncio.sleep(0.1)
        raise AssertionError(f"{key} never became true: {state}")

    async def main() -> None:
        tracker.reset()
        pipeline = Pipeline()
        stream = pipeline.add_stream("cam", open_source(camera.url), tracker)
        async with App(Config(server=ServerConfig(port=0)), pipeline) as app:
            server = app.server
            assert server is not None
            await stream.next_output(-1)
            assert (await health(server))["source_alive"]
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                camera.kill()
                down = await wait_for(server, "reconnecting")
                assert not down["source_alive"]
                while (state := json.loads(await ws.recv()))["type"] != "state" or not state["streams"][0][
                    "reconnecting"
                ]:
                    pass
                before = stream.latest.seq
                camera.start()
                await wait_for(server, "source_alive")
                await stream.next_output(before)

    try:
        asyncio.run(main())
    finally:
        camera.kill()


def test_inference_failure_is_reported_and_stream_goes_on(tracker, monkeypatch) -> None:
    """A GPU out-of-memory in one round reaches viewers as an error with advice; the video goes on,
    without masks until a round succeeds again, and then with them."""
    import streamer.model.tracker

    original, failed = streamer.model.tracker.step_streams, []

    def flaky_step(trackers, frames, **options):
        if not failed:
            failed.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(trackers, frames, **options)

    async def main() -> None:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            await reply(ws, {"type": "add_points", "id": 1, "obj_id": 1, "points": [[0.5, 0.5]], "labels": [1]})
            shown: list = []
            publish = main_stream(server).publish

            async def recording(output):
                shown.append(output)
                await publish(output)

            monkeypatch.setattr(main_stream(server), "publish", recording)
            monkeypatch.setattr(streamer.model.tracker, "step_streams", flaky_step)
            while (message := json.loads(await ws.recv()))["type"] != "error":
                pass
            assert message["code"] == "out_of_memory" and "smaller --image-size" in message["message"]
            deadline = asyncio.get_running_loop().time() + 20
            while not (any(not o.obj_ids for o in shown) and shown[-1].obj_ids == [1]):
                assert asyncio.get_running_loop().time() < deadline, "the video never went on with masks"
                await asyncio.sleep(0.05)
            bare = next(i for i, o in enumerate(shown) if not o.obj_ids)
            assert shown[bare].image.shape == (120, 160, 3) and shown[bare].mask_age_ms is None
            assert main_stream(server).obj_ids == [1]  # the object was never lost
            status, _, body = await get(server, "/metrics")
            assert 'streamer_errors_total{kind="out_of_memory",stream="main"} 1.0' in body.decode()

    asyncio.run(main())


def test_peer_connections_are_capped(tracker) -> None:
    """Offers beyond max_peers get too_many_viewers before any WebRTC work is done."""

    async def main() -> None:
        async with running(tracker, max_peers=0) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            answer = await reply(ws, {"type": "offer", "id": 1, "sdp": "v=0"})
            assert answer["code"] == "too_many_viewers" and server.viewers.peers == {}

    asyncio.run(main())


def test_stop_does_not_wait_on_an_idle_http_client(tracker) -> None:
    """A browser that keeps an answered HTTP connection open (Chromium does after a 404) must not
    hold shutdown for websockets' default 10 s close timeout."""

    async def main() -> float:
        async with running(tracker) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /missing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 404")
            started = asyncio.get_running_loop().time()
        elapsed = asyncio.get_running_loop().time() - started
        writer.close()
        return elapsed

    assert asyncio.run(main()) < 5.0


def test_streams_are_separate_and_named_everywhere(tracker) -> None:
    """Two cameras on one model: prompts go to the named stream only, and the hello, state, acks,
    /healthz and /metrics all carry stream names; an unknown stream is a coded error."""

    async def main() -> None:
        streams = {"front": "synthetic", "clip": str(clip_path("scene_720p.mp4"))}
        async with running(tracker, streams) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            hello = json.loads(await ws.recv())
            assert [s["name"] for s in hello["streams"]] == ["front", "clip"]
            add = {"type": "add_points", "id": 1, "obj_id": 4, "points": [[0.5, 0.5]], "labels": [1]}
            assert await reply(ws, {**add, "stream": "clip"}) == {
                "type": "ack",
                "id": 1,
                "stream": "clip",
                "objects": [4],
            }
            assert (await reply(ws, {**add, "id": 2, "obj_id": 1}))["stream"] == "front"  # no name: the first
            assert server.pipeline.streams["clip"].obj_ids == [4] and server.pipeline.streams["front"].obj_ids == [1]
            err = await reply(ws, {**add, "id": 3, "stream": "garage"})
            assert err["code"] == "unknown_stream" and "front" in err["message"]
            assert (await reply(ws, {"type": "reset", "id": 4, "stream": "clip"}))["objects"] == []
            assert server.pipeline.streams["front"].obj_ids == [1]
            health = json.loads((await get(server, "/healthz"))[2])
            assert set(health["streams"]) == {"front", "clip"} and health["streams"]["clip"]["source"].endswith(".mp4")
            text = (await get(server, "/metrics"))[2].decode()
            for name in ("front", "clip"):
                assert f'streamer_frames_processed_total{{stream="{name}"}}' in text
            assert 'streamer_prompts_total{result="rejected",stream="clip"}' not in text

    asyncio.run(main())


def test_streams_are_batched_and_a_stalled_camera_holds_nobody_back(tracker) -> None:
    """Streams with objects are stepped together in one round; a camera that sends nothing (a
    browser camera nobody opened) never delays the others."""

    async def main() -> None:
        streams = {"a": "synthetic", "b": "synthetic", "idle": "browser"}
        async with running(tracker, streams) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            for name in ("a", "b"):
                box = {"type": "add_box", "id": name, "stream": name, "obj_id": 1, "box": [0.2, 0.2, 0.6, 0.6]}
                assert (await reply(ws, box))["type"] == "ack"
            a, b = server.pipeline.streams["a"], server.pipeline.streams["b"]
            start = a.frame_index, b.frame_index
            await asyncio.sleep(3.0)
            assert a.frame_index - start[0] >= 3 and b.frame_index - start[1] >= 3
            assert server.pipeline.streams["idle"].latest is None
            batches = server.pipeline.metrics.batch_size.collect()[0].samples
            total = next(x.value for x in batches if x.name.endswith("_sum"))
            rounds = next(x.value for x in batches if x.name.endswith("_count"))
            assert total > rounds  # some rounds stepped both streams at once

    asyncio.run(main())


def test_no_stream_starves_when_batches_are_capped(tracker) -> None:
    """With max_batch=1 and three busy streams, every stream keeps getting rounds (the one served
    longest ago goes first)."""

    async def main() -> None:
        streams = {"x": "synthetic", "y": "synthetic", "z": "synthetic"}
        async with running(tracker, streams, max_batch=1) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            for name in streams:
                point = {"type": "add_points", "id": name, "stream": name, "obj_id": 1, "points": [[0.5, 0.5]]}
                assert (await reply(ws, {**point, "labels": [1]}))["type"] == "ack"
            before = {name: s.frame_index for name, s in server.pipeline.streams.items()}
            await asyncio.sleep(3.0)
            advanced = {name: s.frame_index - before[name] for name, s in server.pipeline.streams.items()}
            assert min(advanced.values()) >= 2, advanced
            assert max(advanced.values()) - min(advanced.values()) <= 2, advanced

    asyncio.run(main())


def test_streams_added_and_removed_at_run_time(tracker) -> None:
    """Stream control is off by default; when on, a viewer adds a camera, prompts it, and removes
    it (its metrics go with it). Bad sources and duplicate names get coded errors."""

    async def main() -> None:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            err = await reply(ws, {"type": "add_stream", "id": 1, "stream": "extra", "source": "synthetic"})
            assert err["code"] == "forbidden" and "--stream-control" in err["message"]
        async with running(tracker, stream_control=True) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            ack = await reply(ws, {"type": "add_stream", "id": 1, "stream": "extra", "source": "synthetic"})
            assert ack == {"type": "ack", "id": 1, "stream": "extra", "streams": ["main", "extra"]}
            await server.pipeline.streams["extra"].next_output(-1)
            box = {"type": "add_box", "id": 2, "stream": "extra", "obj_id": 3, "box": [0.1, 0.1, 0.4, 0.4]}
            assert (await reply(ws, box))["objects"] == [3]
            again = await reply(ws, {"type": "add_stream", "id": 3, "stream": "extra", "source": "synthetic"})
            assert again["code"] == "stream_exists"
            missing = await reply(ws, {"type": "add_stream", "id": 4, "stream": "gone", "source": "/no/such.mp4"})
            assert missing["code"] == "bad_source" and "/no/such.mp4" in missing["message"]
            bad_name = await reply(ws, {"type": "add_stream", "id": 5, "stream": "a b", "source": "synthetic"})
            assert bad_name["code"] == "bad_field"
            assert 'stream="extra"' in (await get(server, "/metrics"))[2].decode()
            ack = await reply(ws, {"type": "remove_stream", "id": 6, "stream": "extra"})
            assert ack["streams"] == ["main"] and "gone" not in server.pipeline.streams
            assert 'stream="extra"' not in (await get(server, "/metrics"))[2].decode()
            assert (await reply(ws, {**box, "id": 7}))["code"] == "unknown_stream"
            assert (await reply(ws, {"type": "remove_stream", "id": 8, "stream": "extra"}))["code"] == "unknown_stream"

    asyncio.run(main())


def test_out_of_memory_with_several_streams_shrinks_the_rounds(tracker, monkeypatch) -> None:
    """A round of two streams that runs out of GPU memory (simulated: any round of more than one)
    halves the batch limit; both streams go on being tracked, one per round."""
    import streamer.model.tracker

    original = streamer.model.tracker.step_streams

    def small_gpu(trackers, frames, **options):
        if len(trackers) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(trackers, frames, **options)

    async def main() -> None:
        async with running(tracker, {"a": "synthetic", "b": "synthetic"}) as server:
            a, b = server.pipeline.streams["a"], server.pipeline.streams["b"]
            await a.prompt(PromptRequest(1, box=(0.2, 0.2, 0.6, 0.6)))
            await b.prompt(PromptRequest(1, box=(0.2, 0.2, 0.6, 0.6)))
            monkeypatch.setattr(streamer.model.tracker, "step_streams", small_gpu)
            deadline = asyncio.get_running_loop().time() + 20
            while server.pipeline.batch_limit > 1:
                assert asyncio.get_running_loop().time() < deadline, "no round of two ever ran"
                await asyncio.sleep(0.05)
            tracked = a.frame_index, b.frame_index
            await asyncio.sleep(2.0)
            assert a.frame_index - tracked[0] >= 2 and b.frame_index - tracked[1] >= 2
            assert a.latest.obj_ids == [1] and b.latest.obj_ids == [1]
            assert "out of memory" in (a.state.last_error or "") and "smaller --image-size" in (
                a.state.last_error or ""
            )

    asyncio.run(main())


def test_camera_and_display_failures_are_counted_and_the_video_comes_back(tracker, monkeypatch) -> None:
    """An unexpected error in a camera's loop, and one while putting masks on a frame, are logged
    and counted in /metrics; the stream's video goes on (the frame that failed drawing is shown
    bare), and the other stream never notices."""

    async def main() -> None:
        async with running(tracker, {"a": "synthetic", "b": "synthetic"}) as server:
            a, b = server.pipeline.streams["a"], server.pipeline.streams["b"]
            await a.prompt(PromptRequest(1, box=(0.2, 0.2, 0.6, 0.6)))
            anext, show, broken = type(a.source).__anext__, a.display.show, []

            async def flaky_camera(source):
                if source is a.source and "camera" not in broken:
                    broken.append("camera")
                    raise RuntimeError("decoder state corrupted (simulated)")
                return await anext(source)

            def flaky_show(frame, carry):
                if "display" not in broken:
                    broken.append("display")
                    raise RuntimeError("drawing failed (simulated)")
                return show(frame, carry)

            monkeypatch.setattr(type(a.source), "__anext__", flaky_camera)
            monkeypatch.setattr(a.display, "show", flaky_show)
            seqs = a.latest.seq, b.latest.seq
            deadline = asyncio.get_running_loop().time() + 10
            while len(broken) < 2 or a.latest.seq < seqs[0] + 10 or not a.latest.obj_ids:
                assert asyncio.get_running_loop().time() < deadline, (broken, a.latest)
                await asyncio.sleep(0.05)
            assert b.latest.seq > seqs[1] + 10
            text = (await get(server, "/metrics"))[2].decode()
            for kind in ("camera", "display"):
                assert f'streamer_errors_total{{kind="{kind}",stream="a"}} 1.0' in text
            assert 'streamer_errors_total{kind="camera",stream="b"}' not in text

    asyncio.run(main())


def test_state_health_and_metrics_tell_video_and_masks_apart(tracker) -> None:
    """With an object tracked, the video runs at the camera's rate (30 fps) and the masks at the
    tracker's: state pushes, /healthz and /metrics report both rates and the masks' age."""

    async def main() -> None:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            add = {"type": "add_box", "id": 1, "obj_id": 1, "box": [0.2, 0.2, 0.7, 0.7]}
            assert (await reply(ws, add))["objects"] == [1]
            # Two masks make a rate: wait for them (a slow host may take seconds per mask).
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                state = json.loads(await ws.recv())
                if state["type"] == "state" and state["streams"][0]["mask_fps"] > 0:
                    break
                assert asyncio.get_running_loop().time() < deadline, state
            stream = state["streams"][0]
            assert stream["video_fps"] > 15 and 0 < stream["mask_fps"] <= 1.2 * stream["video_fps"], stream
            assert stream["mask_age_ms"] is not None and stream["mask_age_ms"] >= 0
            health = json.loads((await get(server, "/healthz"))[2])["streams"]["main"]
            assert {"video_fps", "mask_fps", "mask_age_ms"} <= health.keys()
            text = (await get(server, "/metrics"))[2].decode()
            for series in ("streamer_video_fps", "streamer_mask_fps", "streamer_mask_age_seconds_count"):
                line = next(x for x in text.splitlines() if x.startswith(series + '{stream="main"}'))
                assert float(line.split()[-1]) > 0, line

    asyncio.run(main())
