"""Results as data: measurements against true masks, events, the websocket subscription,
GET /results and the JSON Lines file. Live tests track ``synthetic:shapes`` with ``OracleTracker``
(a stand-in returning the true masks), so what the results say is checked against ground truth."""

from __future__ import annotations

import asyncio
import json
import time

import cv2
import jsonschema
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from websockets.asyncio.client import connect

from streamer.cli import main as cli_main
from streamer.config import ConfigError, EventsConfig, ResultsFileConfig, load_config
from streamer.metrics import Metrics
from streamer.outputs.events import EventDetector
from streamer.outputs.hub import Outputs, QueuedSink
from streamer.outputs.jsonl import JsonLines, ResultsFile
from streamer.outputs.results import FrameResults, ObjectResult, Tracked, schema
from streamer.sources.shapes import ShapesScene, ShapesSource
from streamer.video.overlay import masks_at
from tests.oracle import OracleTracker

from ..clips import clip_path
from ..oracle_server import click_shape, oracle_server, shapes_of
from ..serve.test_server import get


def check(message: dict, kind: str | None = None) -> None:
    """Validate against the one schema (docs/results.md): a results or event message, or one of
    its parts (``event``: an MQTT event)."""
    jsonschema.validate(message, schema() if kind is None else {"$ref": f"#/$defs/{kind}", "$defs": schema()["$defs"]})


def truth_tracked(width: int, height: int, mask_width: int | None = 480, n: int = 7) -> tuple[Tracked, np.ndarray]:
    """A shapes frame's true masks as the live tracker hands them over (logits at the mask width)."""
    source = ShapesSource(width, height, count=3, seed=3)
    oracle = OracleTracker(source)
    image = source.image(n)
    oracle.step(image)
    for obj_id in range(3):
        oracle._objects[obj_id + 1] = obj_id  # bound to each shape, as clicks would
    result = oracle.step_round([oracle], [source.image(n)], mask_width=mask_width)[0]
    tracked = Tracked.of("cam", result, n, time.time(), (height, width))
    return tracked, source.scene.masks(n)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return x, y, x + w, y + h


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_measurements_match_the_true_masks_in_source_pixels(size) -> None:
    """Boxes, areas and centroids measured on 480-px masks land on the true shapes' in source
    pixels (within one mask pixel); RLE decodes to exactly the mask the viewer draws; polygons
    cover the true shape."""
    width, height = size
    tracked, truth = truth_tracked(width, height)
    cell = width / 480  # source pixels per mask pixel
    for obj, true_mask in zip(tracked.results("none").objects, truth):
        assert obj.visible and obj.score > 0
        assert np.allclose(obj.bbox, box_of(true_mask), atol=cell + 0.5), (obj.bbox, box_of(true_mask))
        assert obj.area == pytest.approx(true_mask.sum(), rel=0.03)
        assert obj.area_fraction == pytest.approx(true_mask.sum() / (width * height), rel=0.03)
        ys, xs = np.nonzero(true_mask)
        assert np.allclose(obj.centroid, (xs.mean() + 0.5, ys.mean() + 0.5), atol=1.5)
    drawn = masks_at(tracked.logits, (height, width))
    for obj, true_mask, shown in zip(tracked.results("rle").objects, truth, drawn):
        rle = obj.mask
        assert rle["size"] == [height, width]
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, shown) and iou(decoded, true_mask) > 0.97
    for obj, true_mask in zip(tracked.results("polygon").objects, truth):
        filled = np.zeros((height, width), np.uint8)
        for polygon in obj.mask:
            cv2.fillPoly(filled, [np.round(np.array(polygon).reshape(-1, 2)).astype(np.int32)], 1)
        assert iou(filled.astype(bool), true_mask) > 0.95
    for masks in ("none", "rle", "polygon"):
        check(json.loads(tracked.message(masks)))


def test_an_object_out_of_sight_has_no_box_and_full_size_logits_work() -> None:
    """Offline (--out) the logits come at the frame's own size; an object whose mask is empty is
    reported, not visible, with no box, centroid or mask."""
    tracked, truth = truth_tracked(320, 180, mask_width=None)
    logits = np.concatenate([tracked.logits, np.full((1, 180, 320), -8.0, np.float32)])
    scores = np.concatenate([tracked.scores, [-8.0]]).astype(np.float32)
    full = Tracked("cam", 0, 0, time.time(), 180, 320, (*tracked.obj_ids, 9), logits, scores)
    objects = full.results("rle").objects
    assert [box_of(m) for m in truth] == [tuple(int(v) for v in o.bbox) for o in objects[:3]]
    gone = objects[3]
    assert (gone.obj_id, gone.visible, gone.bbox, gone.centroid, gone.area, gone.mask) == (
        9,
        False,
        None,
        None,
        0,
        None,
    )
    check(json.loads(full.message("rle")))


def test_results_are_measured_once_and_only_for_a_consumer(monkeypatch) -> None:
    """Every consumer of a frame gets the same measurement; with no consumer none is made."""
    import streamer.outputs.results as results

    calls = []
    real = results.measure
    monkeypatch.setattr(results, "measure", lambda *a: calls.append(a[0]) or real(*a))
    tracked, _ = truth_tracked(640, 360)
    assert tracked.results("rle") is tracked.results("rle") and tracked.message() is tracked.message()
    assert len(calls) == 3  # three objects, measured once for both formats

    async def main() -> list[int]:
        metrics = Metrics()
        outputs = Outputs(metrics)
        outputs.register("cam", metrics.stream("cam"))
        outputs.start()
        calls.clear()
        for n in range(5):
            outputs.offer(truth_tracked(640, 360, n=n)[0])
            await asyncio.sleep(0.02)
        idle = len(calls)
        sink = _Recorder(metrics)
        sink.start()
        outputs.add(sink)
        outputs.offer(truth_tracked(640, 360, n=9)[0])
        await asyncio.wait_for(sink.got.wait(), 5)
        await outputs.stop()
        await sink.close()
        return [idle, len(calls)]

    assert asyncio.run(main()) == [0, 3]


class _Recorder(QueuedSink):
    kind = "test"

    def __init__(self, metrics: Metrics, **options) -> None:
        super().__init__(metrics, **options)
        self.sent: list[Tracked | object] = []
        self.got = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_results(self, tracked: Tracked) -> None:
        await self.gate.wait()
        self.sent.append(tracked)
        self.got.set()

    async def send_event(self, event) -> None:
        await self.gate.wait()
        self.sent.append(event)
        self.got.set()


def test_a_slow_consumer_gets_the_newest_results_and_a_bounded_queue_of_events() -> None:
    """While a consumer's sends are stuck, 100 frames and 1000 events arrive: it then gets the
    newest frame of each stream, not a backlog, and the newest events up to its queue's size;
    the events it lost are counted in /metrics."""
    from streamer.outputs.events import Event

    async def main() -> tuple[list, Metrics, Tracked]:
        metrics = Metrics()
        sink = _Recorder(metrics, max_events=50)
        sink.gate.clear()
        sink.start()
        base, _ = truth_tracked(320, 180)
        frames = [
            Tracked("cam", n, n, time.time(), 180, 320, base.obj_ids, base.logits, base.scores) for n in range(100)
        ]
        sink.results(frames[0], "none")
        await asyncio.sleep(0.05)  # the first is taken and stuck in send
        for tracked in frames[1:]:
            sink.results(tracked, "none")
        for n in range(1000):
            sink.event(Event("found", "cam", 1, time.time(), n, None))
        sink.gate.set()
        await asyncio.sleep(0.2)
        await sink.close()
        return sink.sent, metrics, frames[-1]

    sent, metrics, newest = asyncio.run(main())
    frames = [s for s in sent if isinstance(s, Tracked)]
    events = [s for s in sent if not isinstance(s, Tracked)]
    assert [t.frame_index for t in frames] == [0, 99] and frames[-1] is newest
    assert [e.frame_index for e in events] == list(range(950, 1000))
    dropped = metrics.registry.get_sample_value("streamer_results_dropped_total", {"output": "test", "kind": "event"})
    assert dropped == 950


def _results(time_s: float, frame: int, *objects: ObjectResult, size=(100, 100)) -> FrameResults:
    return FrameResults("cam", frame, frame, time_s, size[0], size[1], "none", list(objects))


def _obj(obj_id: int, visible: bool = True, box=(10, 10, 20, 20)) -> ObjectResult:
    if not visible:
        return ObjectResult(obj_id, False, -3.0, None, 0, 0.0, None)
    x0, y0, x1, y1 = box
    return ObjectResult(obj_id, True, 3.0, box, (x1 - x0) * (y1 - y0), 0.01, ((x0 + x1) / 2, (y0 + y1) / 2))


def test_events_added_lost_found_removed_and_zones() -> None:
    """An object is added, walks into the lower half (a zone), vanishes for 0.5 s (not lost), then
    for 1.2 s (lost after 1 s, and so out of the zone), comes back inside it (found, entered), and
    is removed (left, removed). Every event validates against the schema."""
    zones = {"cam": {"lower": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}}
    detector = EventDetector("cam", EventsConfig(lost_after=1.0, zones=zones))
    top, bottom = (10, 10, 30, 30), (10, 60, 30, 80)
    steps = [
        (0.0, [_obj(1, box=top)]),
        (0.1, [_obj(1, box=bottom)]),
        (0.2, [_obj(1, False)]),
        (0.7, [_obj(1, False)]),
        (0.8, [_obj(1, box=bottom)]),
        (0.9, [_obj(1, False)]),
        (1.5, [_obj(1, False)]),
        (1.9, [_obj(1, False)]),
        (2.1, [_obj(1, False)]),
        (2.2, [_obj(1, box=bottom)]),
        (2.3, []),
    ]
    seen = []
    for frame, (t, objects) in enumerate(steps):
        for event in detector.update(_results(100 + t, frame, *objects)):
            check(event.to_dict(), "event")
            check(json.loads(event.envelope()), "event_message")
            seen.append((round(event.time - 100, 1), event.type, event.zone))
    assert seen == [
        (0.0, "added", None),
        (0.1, "entered", "lower"),
        (1.9, "left", "lower"),
        (1.9, "lost", None),
        (2.2, "found", None),
        (2.2, "entered", "lower"),
        (2.3, "left", "lower"),
        (2.3, "removed", None),
    ]


def test_zone_anchor_bottom_center() -> None:
    """A tall object whose centroid is above the zone but whose feet are in it is inside with
    ``anchor: bottom_center``, outside with the default centroid."""
    zones = {"cam": {"floor": [[0, 0.7], [1, 0.7], [1, 1], [0, 1]]}}
    tall = _obj(4, box=(40, 20, 50, 90))
    assert EventDetector("cam", EventsConfig(zones=zones)).update(_results(0, 0, tall))[1:] == []
    feet = EventDetector("cam", EventsConfig(zones=zones, anchor="bottom_center")).update(_results(0, 0, tall))
    assert [(e.type, e.zone) for e in feet] == [("added", None), ("entered", "floor")]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "events:\n  zones:\n    cam:\n      door: [[0, 0], [1.5, 0], [1, 1]]\n",
            r"events: zones\.cam\.door\[1\] must be \[x, y\]",
        ),
        ("events:\n  zones:\n    cam:\n      door: [[0, 0], [1, 1]]\n", r"events: zones\.cam\.door must be a polygon"),
        (
            "events:\n  zones:\n    cam:\n      door: [[0, 0], [0.5, 0.5], [1, 1]]\n",
            r"events: zones\.cam\.door encloses no area",
        ),
        ("events:\n  zones:\n    cam: [[0, 0], [1, 0], [1, 1]]\n", r"events: zones\.cam must map zone names"),
        ("events:\n  lost_after: -1\n", r"events: lost_after must be more than 0"),
        ("events:\n  anchor: feet\n", r"events: anchor must be one of centroid, bottom_center"),
        ("events:\n  zone: {}\n", r"events: unknown key 'zone'"),
        ("results:\n  masks: png\n", r"results: masks must be one of none, rle, polygon"),
        ("mqtt:\n  url: http://broker\n", r"mqtt: MQTT URL 'http://broker' must start with mqtt://"),
        ("mqtt:\n  rate: 0\n", r"mqtt: rate must be 0.1 to 60"),
    ],
)
def test_a_malformed_setting_names_the_file_and_field(tmp_path, yaml_text, message) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=r"site\.yaml: " + message):
        load_config(path)


def test_zones_load_from_yaml(tmp_path) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(
        "events:\n  lost_after: 2.5\n  zones:\n    door:\n      porch: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n"
    )
    events = load_config(path).events
    assert events.lost_after == 2.5
    (porch,) = events.zones_for("door")
    assert porch.name == "porch" and porch.contains(0.5, 0.75) and not porch.contains(0.5, 0.25)
    assert events.zones_for("yard") == []


async def _messages(ws, seconds: float, kinds: tuple[str, ...] = ("results", "event", "ack", "error")) -> list[dict]:
    found, deadline = [], asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            break
        if message["type"] in kinds:
            found.append(message)
    return found


def test_websocket_subscription_follows_the_moving_objects() -> None:
    """A subscriber gets results whose boxes are those of the true, moving shapes on the very
    frames they name, at most max_rate a second, with RLE masks; and events for objects added
    and removed by prompts. Every message validates against the schema."""

    async def main() -> None:
        async with oracle_server(speed=6) as server:
            scene = shapes_of(server).scene
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.recv()  # hello
                await ws.send(json.dumps({"type": "subscribe", "id": 1, "masks": "rle", "max_rate": 4}))
                await click_shape(server, 1, shape=2)
                shape = server.pipeline.stream("cam").tracker.prompts[-1].shape
                assert shape == 2
                got = await _messages(ws, 2.5)
                assert got[0] == {
                    "type": "ack",
                    "id": 1,
                    "subscribed": True,
                    "streams": None,
                    "masks": "rle",
                    "max_rate": 4.0,
                    "events": True,
                }
                results = [m for m in got if m["type"] == "results" and m["objects"]]
                events = [m["event"] for m in got if m["type"] == "event"]
                assert [(e["type"], e["obj_id"]) for e in events] == [("added", 1)]
                assert 6 <= len(results) <= 12  # 4 a second for 2.5 s, the first at once
                centres = set()
                for message in results:
                    check(message)
                    (obj,) = message["objects"]
                    truth = scene.masks(message["source_frame"])[shape]
                    assert np.allclose(obj["bbox"], box_of(truth), atol=2.5)
                    centres.add(tuple(obj["centroid"]))
                assert len(centres) >= 5  # it moved, and the results followed
                await ws.send(json.dumps({"type": "remove_object", "id": 2, "obj_id": 1}))
                after = await _messages(ws, 1.0)
                removed = [m["event"] for m in after if m["type"] == "event"]
                assert [(e["type"], e["obj_id"]) for e in removed] == [("removed", 1)]
                # Results sent before the removal took effect may still show it; none after.
                later = after[next(i for i, m in enumerate(after) if m["type"] == "event") :]
                assert [m["objects"] for m in later if m["type"] == "results"][:2] == [[], []]
                assert all(not m["objects"] for m in later if m["type"] == "results")

    asyncio.run(main())


def test_subscription_errors_and_unsubscribe() -> None:
    """Unknown streams and bad fields are errors that change nothing; unsubscribe stops the
    messages; a subscription to one stream gets only that stream's."""

    async def main() -> None:
        async with oracle_server(("cam", "yard")) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()
            for request, code in [
                ({"streams": ["garage"]}, "unknown_stream"),
                ({"masks": "png"}, "bad_field"),
                ({"max_rate": 1000}, "out_of_range"),
                ({"streams": []}, "bad_field"),
                ({"events": "yes"}, "bad_field"),
            ]:
                await ws.send(json.dumps({"type": "subscribe", "id": code, **request}))
                replies = await _messages(ws, 0.4)
                assert [(m["type"], m.get("code")) for m in replies] == [("error", code)], replies
            await ws.send(json.dumps({"type": "subscribe", "id": "yard", "streams": ["yard"]}))
            got = await _messages(ws, 1.0)
            assert got[0]["type"] == "ack" and {m["stream"] for m in got[1:]} == {"yard"}
            await ws.send(json.dumps({"type": "unsubscribe", "id": "off"}))
            got = await _messages(ws, 0.6)
            assert [(m["type"], m.get("subscribed")) for m in got] == [("ack", False)]

    asyncio.run(main())


def test_get_results_is_the_newest_snapshot_and_token_checked() -> None:
    async def main() -> None:
        async with oracle_server(token="s3cret") as server:
            await click_shape(server, 7, shape=0)
            status, _, _ = await get(server, "/results?stream=cam")
            assert status == 401
            status, headers, body = await get(server, "/results?stream=cam&masks=polygon&token=s3cret")
            assert status == 200 and headers["Content-Type"] == "application/json"
            snapshot = json.loads(body)
            check(snapshot)
            assert snapshot["masks"] == "polygon" and [o["obj_id"] for o in snapshot["objects"]] == [7]
            assert snapshot["frame_index"] >= server.pipeline.stream("cam").frame_index - 2
            status, _, body = await get(server, "/results?stream=garage&token=s3cret")
            assert status == 404 and json.loads(body)["code"] == "unknown_stream"
            status, _, body = await get(server, "/results?masks=jpeg&token=s3cret")
            assert status == 400 and json.loads(body)["code"] == "bad_field"

    asyncio.run(main())


def test_results_file_rotates_by_size(tmp_path) -> None:
    """Lines go to PATH until it would pass max_bytes; then PATH.1, PATH.2 ... (keep of them)
    hold the older lines, and nothing is lost but what falls off the last one."""
    path = tmp_path / "out" / "results.jsonl"
    lines = JsonLines(path, max_bytes=1024, keep=2)
    for n in range(100):
        lines.write(json.dumps({"n": n, "pad": "x" * 40}))
    lines.close()
    files = [path.with_name("results.jsonl.2"), path.with_name("results.jsonl.1"), path]
    assert not path.with_name("results.jsonl.3").exists()
    numbers = [json.loads(line)["n"] for f in files for line in f.read_text().splitlines()]
    assert all(f.stat().st_size <= 1024 for f in files)
    assert numbers == list(range(numbers[0], 100)) and numbers[0] > 0


def test_live_results_file_has_every_frame_and_event(tmp_path) -> None:
    """--results while serving: results lines of the tracked frames in order and the events, all
    valid; what was queued is written at shutdown."""
    path = tmp_path / "live.jsonl"

    async def main() -> None:
        metrics_sink = ResultsFile(ResultsFileConfig(path=str(path), masks="polygon"), Metrics())
        async with oracle_server(sinks=(metrics_sink,)) as server:
            await click_shape(server, 3, shape=1)
            await asyncio.sleep(1.0)
            await server.pipeline.stream("cam").remove_object(3)
            await asyncio.sleep(0.3)

    asyncio.run(main())
    messages = [json.loads(line) for line in path.read_text().splitlines()]
    for message in messages:
        check(message)
    frames = [m["frame_index"] for m in messages if m["type"] == "results"]
    assert len(frames) > 10 and frames == sorted(frames)
    events = [(m["event"]["type"], m["event"]["obj_id"]) for m in messages if m["type"] == "event"]
    assert events == [("added", 3), ("removed", 3)]
    assert any(o["mask"] for m in messages if m["type"] == "results" for o in m["objects"])


def test_out_mode_writes_results_for_every_frame(tmp_path) -> None:
    """--out with --results: one results line per frame of the video, in order, timed by the
    video's frame rate, and the object added by --point."""
    path = tmp_path / "clip.jsonl"
    argv = ["--source", str(clip_path()), "--out", str(tmp_path / "clip.mp4"), "--results", str(path),
            "--random-weights", "--image-size", "128", "--device", "cpu", "--point", "0.5,0.5",
            "--max-frames", "4"]  # fmt: skip
    assert cli_main(argv) == 0
    messages = [json.loads(line) for line in path.read_text().splitlines()]
    for message in messages:
        check(message)
    results = [m for m in messages if m["type"] == "results"]
    assert [m["frame_index"] for m in results] == [0, 1, 2, 3]
    assert [m["source_frame"] for m in results] == [0, 1, 2, 3]
    assert all(m["stream"] == "scene_540p" and (m["width"], m["height"]) == (960, 540) for m in results)
    assert np.allclose(np.diff([m["time"] for m in results]), 1 / 30, atol=2e-3)
    assert [o["obj_id"] for o in results[0]["objects"]] == [1]
    assert messages[1] == {"type": "event", "event": {**messages[1]["event"], "type": "added", "obj_id": 1}}


def test_scene_frames_are_the_sources_frame_numbers() -> None:
    """The live tests compare a result's ``source_frame`` with the scene's truth of that number."""
    source = ShapesSource(160, 120, fps=100, seed=1).start()

    async def main() -> list[int]:
        seen = []
        async for frame in source:
            seen.append(source.frame_number(frame.image) == frame.index)
            if len(seen) == 5:
                break
        await source.close()
        return seen

    assert all(asyncio.run(main()))
    assert ShapesScene(160, 120, seed=1).width == 160


def test_a_removal_s_reason_survives_a_newer_frame_that_replaces_it_unmeasured() -> None:
    """Outputs keep each stream's newest frame: when the next tracked frame arrives before the one
    a removal left was measured, the ``removed`` event still says why."""
    from streamer.outputs.hub import drop_objects

    async def main() -> list:
        metrics = Metrics()
        outputs = Outputs(metrics)
        outputs.register("cam", metrics.stream("cam"))
        sink = _Recorder(metrics)
        sink.start()
        outputs.add(sink)
        outputs.start()
        first, _ = truth_tracked(640, 360, n=1)
        outputs.offer(first)
        await asyncio.wait_for(sink.got.wait(), 5)
        await asyncio.sleep(0.1)  # its added events too
        drop_objects(outputs, "cam", {2}, "undetected")  # the detector ended object 2...
        later, _ = truth_tracked(640, 360, n=2)
        outputs.offer(later.without({2}, later.time))  # ...and the next round came before delivery
        await asyncio.sleep(0.3)
        await outputs.stop()
        await sink.close(flush=True)
        return [e for e in sink.sent if getattr(e, "type", None) == "removed"]

    removed = asyncio.run(main())
    assert [(e.obj_id, e.reason) for e in removed] == [(2, "undetected")]
