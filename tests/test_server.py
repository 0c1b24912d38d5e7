"""The live server on 127.0.0.1: pages, health, metrics, security checks and the prompt protocol."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from streamer import StreamerError, StreamingTracker
from streamer.pipeline import Pipeline
from streamer.server import ServerConfig, StreamServer
from streamer.sources import open_source

from .conftest import clip_path
from .rtsp import RtspServer


@pytest.fixture(scope="module")
def tracker() -> StreamingTracker:
    return StreamingTracker.build(random_init=True, image_size=128, device="cpu")


@contextlib.asynccontextmanager
async def running(tracker: StreamingTracker, **options) -> AsyncIterator[StreamServer]:
    tracker.reset()
    pipeline = Pipeline(open_source("synthetic", width=160, height=120), tracker)
    server = StreamServer(pipeline, ServerConfig(port=0, **options))
    await server.start()
    pipeline.start()
    try:
        await pipeline.next_output(-1)
        yield server
    finally:
        await server.stop()
        await pipeline.stop()


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
            assert status == 200 and health["source_alive"] is True and health["fps"] > 0
            status, _, body = await get(server, "/metrics")
            text = body.decode()
            assert status == 200 and "streamer_frames_processed_total" in text
            assert "streamer_inference_ms_bucket" in text and "streamer_viewers 0.0" in text

    asyncio.run(main())


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/..%2fREADME.md",
        "/static/../../streamer/server.py",
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
    pipeline = Pipeline(open_source("synthetic"), tracker)
    with pytest.raises(StreamerError, match="without --token"):
        StreamServer(pipeline, ServerConfig(host="0.0.0.0"))
    StreamServer(pipeline, ServerConfig(host="0.0.0.0", token="x"))
    asyncio.run(pipeline.source.close())


def test_prompt_protocol(tracker) -> None:
    """Points, boxes, removal and reset are acked with the object list; mistakes get coded errors."""

    async def main() -> None:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["objects"] == []
            add = {"type": "add_points", "id": "a", "obj_id": 1, "points": [[0.5, 0.5]], "labels": [1]}
            assert await reply(ws, add) == {"type": "ack", "id": "a", "objects": [1]}
            box = {"type": "add_box", "id": 2, "obj_id": 2, "box": [0.1, 0.1, 0.5, 0.6], "frame_ts": 0}
            assert (await reply(ws, box))["objects"] == [1, 2]
            stale = {**add, "id": "s", "frame_index": 0}
            await server.pipeline.next_output(tracker.history + 1)  # frame 0 has left the history
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
            assert server.viewers.peers == set()
            state = json.loads(await ws.recv())
            assert state["type"] == "state" and state["frame_index"] > 0

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
    """A burst beyond the per-connection rate gets rate_limited errors, each answered."""

    async def main() -> None:
        async with running(tracker, rate=5, burst=5) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            for i in range(30):
                await ws.send(json.dumps({"type": "teleport", "id": i}))
            codes = []
            while len(codes) < 30:
                answer = json.loads(await ws.recv())
                if answer["type"] == "error":
                    codes.append(answer["code"])
            assert codes.count("rate_limited") >= 20 and "unknown_type" in codes

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
            first = server.pipeline.latest.seq
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
            assert server.pipeline.latest.seq > first
            status, _, body = await get(server, "/healthz")
            assert status == 200 and json.loads(body)["source_alive"]

    asyncio.run(main())


def test_camera_outage_shows_reconnecting_then_recovers(tracker) -> None:
    """An RTSP camera that dies mid-stream shows as reconnecting in /healthz and state pushes,
    and the stream resumes by itself when the camera is back."""
    camera = RtspServer(clip_path("02_cups.mp4"))
    camera.start()

    async def health(server: StreamServer) -> dict:
        return json.loads((await get(server, "/healthz"))[2])

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
        pipeline = Pipeline(open_source(camera.url), tracker)
        server = StreamServer(pipeline, ServerConfig(port=0))
        await server.start()
        pipeline.start()
        try:
            await pipeline.next_output(-1)
            assert (await health(server))["source_alive"]
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                camera.kill()
                down = await wait_for(server, "reconnecting")
                assert not down["source_alive"]
                while (state := json.loads(await ws.recv()))["type"] != "state" or not state["reconnecting"]:
                    pass
                before = pipeline.latest.seq
                camera.start()
                await wait_for(server, "source_alive")
                await pipeline.next_output(before)
        finally:
            await server.stop()
            await pipeline.stop()

    try:
        asyncio.run(main())
    finally:
        camera.kill()


def test_inference_failure_is_reported_and_stream_goes_on(tracker, monkeypatch) -> None:
    """A GPU out-of-memory in one frame (before the tracker took it) reaches viewers as an error
    with advice; that frame is still shown, without masks, and the next frames are tracked again."""
    import torch

    original, failed = tracker.step, []

    def flaky_step(frame):
        if not failed:
            failed.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(frame)

    async def main() -> None:
        async with running(tracker) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            await reply(ws, {"type": "add_points", "id": 1, "obj_id": 1, "points": [[0.5, 0.5]], "labels": [1]})
            shown: list = []
            publish = server.pipeline._publish

            async def recording(output):
                shown.append(output)
                await publish(output)

            monkeypatch.setattr(server.pipeline, "_publish", recording)
            monkeypatch.setattr(tracker, "step", flaky_step)
            while (message := json.loads(await ws.recv()))["type"] != "error":
                pass
            assert message["code"] == "out_of_memory" and "smaller --image-size" in message["message"]
            deadline = asyncio.get_running_loop().time() + 20
            while not (shown and shown[-1].obj_ids == [1] and any(o.frame_index is None for o in shown)):
                assert asyncio.get_running_loop().time() < deadline, "the failed frame was never shown"
                await asyncio.sleep(0.05)
            failed = next(i for i, o in enumerate(shown) if o.frame_index is None)
            assert shown[failed].obj_ids == [] and shown[failed].image.shape == (120, 160, 3)
            assert shown[-1].obj_ids == [1] and len(shown) > failed + 1
            status, _, body = await get(server, "/metrics")
            assert 'streamer_errors_total{kind="out_of_memory"} 1.0' in body.decode()

    asyncio.run(main())


def test_peer_connections_are_capped(tracker) -> None:
    """Offers beyond max_peers get too_many_viewers before any WebRTC work is done."""

    async def main() -> None:
        async with running(tracker, max_peers=0) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            answer = await reply(ws, {"type": "offer", "id": 1, "sdp": "v=0"})
            assert answer["code"] == "too_many_viewers" and server.viewers.peers == set()

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
