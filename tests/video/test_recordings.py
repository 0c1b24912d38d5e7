"""Event recordings on the synthetic scene, tracked by the oracle: a click makes an MP4 clip whose
pre-roll shows the scene before the object was tracked (no overlay colour) and whose later frames
show its mask; the sidecar has the trigger and the object's track, true to the scene; the clip is
announced (results file, MQTT) and listed and served over HTTP with the token, never a path
outside the folder. Segments follow each other without a gap; the folder stays within its bounds;
a folder that cannot be written stops the start with a clear message."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from streamer.app import App
from streamer.config import Config, MqttConfig, RecordingsConfig, ResultsFileConfig, ServerConfig
from streamer.errors import StreamerError
from streamer.metrics import Metrics
from streamer.outputs.dataset import ExportJob, export
from streamer.outputs.jsonl import ResultsFile
from streamer.outputs.mqtt import MqttPublisher
from streamer.video.overlay import color_for
from streamer.video.recordings import RecordingStore
from tests.mosquitto import Listener, Mosquitto
from tests.oracle_server import click_shape, oracle_pipeline, oracle_server, shapes_of
from tests.outputs.test_mqtt import until
from tests.outputs.test_results import check

KEYFRAME_S = 4.0  # the encoder's keyframe interval: a clip starts on one


def decoded(path: Path, obj_id: int = 1, tolerance: int = 40) -> list[tuple[float, int]]:
    """Per frame of the MP4: its time (s from the start) and the pixels in the object's colour."""
    colour = np.array(color_for(obj_id), np.int16)
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24").astype(np.int16)
            frames.append(
                (float(frame.pts * stream.time_base), int((np.abs(rgb - colour).max(axis=2) <= tolerance).sum()))
            )
    return frames


def fetch(port: int, path: str, **headers: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers)
    answer = conn.getresponse()
    result = answer.status, dict(answer.getheaders()), answer.read()
    conn.close()
    return result


def test_a_click_makes_a_clip_with_its_pre_roll(tmp_path) -> None:
    folder = tmp_path / "rec"
    results = tmp_path / "results.jsonl"
    broker = Mosquitto(tmp_path).start()
    listener = Listener(broker.port)
    metrics = Metrics()
    sinks = (ResultsFile(ResultsFileConfig(str(results)), metrics), MqttPublisher(MqttConfig(url=broker.url), metrics))
    config = RecordingsConfig(dir=str(folder), events=["added"], pre_roll_s=1.5, post_roll_s=1.0)
    found: dict = {}

    async def main() -> None:
        async with oracle_server(recordings=config, sinks=sinks, token="s3cret") as server:
            assert server.recordings is not None
            await asyncio.sleep(2.5)  # a buffer to take the pre-roll from
            await click_shape(server, 1, shape=0)
            await until(lambda: server.recordings.listing(), 30, "a recording")  # type: ignore[union-attr]
            (summary,) = server.recordings.listing()
            found["summary"] = summary
            found["scene"] = shapes_of(server).scene
            port = server.port
            # Listed and served with the token only; nothing else in or outside the folder is.
            assert (await asyncio.to_thread(fetch, port, "/recordings"))[0] == 401
            status, _, body = await asyncio.to_thread(fetch, port, "/recordings?token=s3cret")
            assert status == 200 and json.loads(body)["recordings"] == [summary]
            status, headers, body = await asyncio.to_thread(fetch, port, f"/recordings/{summary['file']}?token=s3cret")
            assert status == 200 and headers["Content-Type"] == "video/mp4"
            assert body == (folder / summary["file"]).read_bytes()
            status, headers, part = await asyncio.to_thread(
                fetch, port, f"/recordings/{summary['file']}?token=s3cret", Range="bytes=100-199"
            )
            assert status == 206 and part == body[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(body)}"
            assert (
                await asyncio.to_thread(
                    fetch, port, f"/recordings/{summary['file']}?token=s3cret", Range="bytes=9999999-"
                )
            )[0] == 416
            (tmp_path / "secret.txt").write_text("not a recording")
            (folder / "notes.txt").write_text("not a recording either")
            for path in (
                "../secret.txt",
                "%2e%2e%2fsecret.txt",
                "notes.txt",
                "..%2Fsecret.txt",
                f"{summary['name']}.mp4.part",
            ):
                assert (await asyncio.to_thread(fetch, port, f"/recordings/{path}?token=s3cret"))[0] == 404, path

    try:
        asyncio.run(main())
        deadline = time.monotonic() + 10
        while not any(json.loads(m.payload)["type"] == "clip" for m in listener.on("sam2/cam/events")):
            assert time.monotonic() < deadline, "no clip event on MQTT"
            time.sleep(0.1)
        clip_message = next(
            json.loads(m.payload) for m in listener.on("sam2/cam/events") if json.loads(m.payload)["type"] == "clip"
        )
    finally:
        listener.close()
        broker.kill()
    summary, scene = found["summary"], found["scene"]
    check(clip_message, "event")
    assert clip_message["has_clip"] is True and clip_message["clip"] == summary and clip_message["obj_id"] == 1
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    announced = [m["event"] for m in lines if m["type"] == "event" and m["event"]["type"] == "clip"]
    assert [a["clip"]["file"] for a in announced] == [summary["file"]]

    # The clip: H.264 at the stream's size, from the keyframe at or before event - pre-roll.
    video = folder / summary["file"]
    sidecar = json.loads((folder / f"{summary['name']}.json").read_text())
    trigger = sidecar["trigger"]
    assert (trigger["type"], trigger["obj_id"]) == ("added", 1)
    assert summary["name"].startswith("cam-") and summary["labels"] == [] and summary["objects"] == [1]
    assert 1.5 - 0.05 <= summary["pre_roll_s"] <= 1.5 + KEYFRAME_S + 0.1, summary
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.width, stream.codec_context.height) == (
            "h264",
            640,
            360,
        )
    frames = decoded(video)
    assert len(frames) == summary["frames"] and 25 <= len(frames) / summary["duration_s"] <= 31
    # Before the event the object was not tracked: no overlay colour; some frames after it, its mask.
    event_at = summary["pre_roll_s"]
    before = [n for t, n in frames if t < event_at - 0.1]
    after = [n for t, n in frames if t > event_at + 0.5]
    assert before and max(before) < 50, before
    assert after and min(after) > 300, after
    # It ends post_roll_s after the last event about its object.
    last_event = max(e["time"] for e in sidecar["events"])
    assert last_event + 1.0 - 0.1 <= summary["end"] <= last_event + 1.0 + 0.2, (summary, sidecar["events"])
    # The object's track: a box per tracked frame, each on the true shape.
    boxes = sidecar["tracks"]["1"]["boxes"]
    assert len(boxes) >= 10 and all(0 <= b[0] <= summary["duration_s"] + 0.05 for b in boxes)
    assert sidecar["track_columns"] == ["t", "frame_index", "source_frame", "x0", "y0", "x1", "y1"]
    for _, _, source_frame, *box in boxes[::5]:
        truth = scene.masks(source_frame)[0]
        ys, xs = np.nonzero(truth)
        assert np.allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=4), (source_frame, box)

    # The recording as a dataset: each tracked frame its MP4 frame, each mask the true shape.
    done = export(ExportJob(folder / f"{summary['name']}.json", None, tmp_path / "dataset"))
    coco = COCO(str(done.path))
    in_video = [r for r in sidecar["results"] if r["source_frame"] in sidecar["frame_sources"]]
    assert done.images == len({r["source_frame"] for r in in_video}) and done.annotations >= 10 and done.tracks == 1
    for image in coco.loadImgs(coco.getImgIds()):
        assert cv2.imread(str(tmp_path / "dataset" / image["file_name"])).shape == (360, 640, 3)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            assert annotation["track_id"] == 1
            mask, truth = coco.annToMask(annotation).astype(bool), scene.masks(image["frame_index"])[0]
            assert (mask & truth).sum() / (mask | truth).sum() > 0.9, image


def test_segments_follow_each_other(tmp_path) -> None:
    """Continuous recording: each segment starts on the keyframe the last one stopped before."""
    config = RecordingsConfig(dir=str(tmp_path), segment_s=1.0, events=[])

    async def main() -> None:
        async with oracle_server(recordings=config) as server:
            store = server.recordings
            assert store is not None
            await until(lambda: len(store.listing()) >= 2, 30, "two segments")
            segments = sorted(store.listing(), key=lambda s: s["start"])
            assert all(s["kind"] == "segment" and "trigger" not in s for s in segments)
            first, second = segments[:2]
            assert 0 <= second["start"] - first["end"] <= 0.1, segments  # the next frame, no gap
            assert first["duration_s"] >= 1.0
            found["open"] = len(store.listing())

    found: dict = {}
    asyncio.run(main())
    # The segment open at shutdown was finished, not left half-written.
    assert len(list(tmp_path.glob("*.mp4"))) == found["open"] + 1 and not list(tmp_path.glob("*.part"))


def test_a_long_clip_goes_on_in_the_next_file(tmp_path) -> None:
    """A clip past max_clip_s is cut at a keyframe, and the next file goes on from that very frame."""
    config = RecordingsConfig(dir=str(tmp_path), events=["added"], max_clip_s=1.0, post_roll_s=6.0)

    async def main() -> None:
        async with oracle_server(recordings=config) as server:
            store = server.recordings
            assert store is not None
            await click_shape(server, 1, shape=1)
            await until(lambda: len(store.listing()) >= 2, 30, "a clip and its continuation")
            first, second = sorted(store.listing(), key=lambda s: s["start"])[:2]
            assert second["continues"] == first["name"] and "continues" not in first
            assert 0 <= second["start"] - first["end"] <= 0.1, (first, second)
            assert first["objects"] == second["objects"] == [1] and first["trigger"] == second["trigger"]
            assert first["duration_s"] >= 1.0

    asyncio.run(main())


def test_the_folder_keeps_within_its_bounds(tmp_path) -> None:
    store = RecordingStore(RecordingsConfig(dir=str(tmp_path), max_bytes=2_500_000, max_days=1))
    now = time.time()
    for n, age_days in enumerate([3.0, 0.5, 0.4, 0.3, 0.2]):
        for ext, size in ((".mp4", 1_000_000), (".json", 100)):
            path = tmp_path / f"cam-{n}{ext}"
            path.write_bytes(b"x" * size)
            os.utime(path, (now - age_days * 86400,) * 2)
    (tmp_path / "cam-9.mp4.part").write_bytes(b"half")  # what a crash left
    store.open()
    # The 3-day-old one goes for its age; then the oldest until the rest fit in 2.5 MB.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam-3.json", "cam-3.mp4", "cam-4.json", "cam-4.mp4"]


def test_a_folder_that_cannot_be_written_stops_the_start(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = Config(server=ServerConfig(port=0), recordings=RecordingsConfig(dir=str(blocker / "rec")))

    async def main() -> None:
        app = App(config, oracle_pipeline())
        with pytest.raises(StreamerError, match="cannot write recordings to"):
            await app.start()

    asyncio.run(main())


def test_recordings_config_is_checked() -> None:
    with pytest.raises(ValueError, match="not events"):
        RecordingsConfig(dir="x", events=["arrived"])
    with pytest.raises(ValueError, match="pre_roll_s"):
        RecordingsConfig(dir="x", pre_roll_s=-1)
    with pytest.raises(ValueError, match="segment_s"):
        RecordingsConfig(dir="x", segment_s=0)
