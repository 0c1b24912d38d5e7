"""Automatic tracking on a live stream: the stand-in detector on the synthetic traffic scene,
tracked by the oracle, through the real pipeline, outputs, events and metrics."""

from __future__ import annotations

import asyncio
import time

from streamer.auto.detections import Detections
from streamer.config import AutoConfig, EventsConfig
from streamer.live.auto import Detectors
from streamer.live.landing import PromptRequest
from streamer.live.pipeline import Pipeline
from streamer.metrics import Metrics
from streamer.outputs.events import Event
from streamer.outputs.hub import QueuedSink
from streamer.outputs.results import Tracked
from streamer.sources.shapes import ShapesSource
from tests.auto_scene import NAME, StandInDetector
from tests.oracle import OracleTracker


class _Recorder(QueuedSink):
    kind = "test"

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(metrics, max_events=10_000)
        self.frames: list[Tracked] = []
        self.got: list[Event] = []

    async def send_results(self, tracked: Tracked) -> None:
        self.frames.append(tracked)

    async def send_event(self, event: Event) -> None:
        self.got.append(event)


def _pipeline(auto: AutoConfig, detector: object, *, traffic: bool = True, events: EventsConfig | None = None):
    source = ShapesSource(320, 180, fps=30, speed=6, count=3, seed=2, traffic=traffic).start()
    detectors = Detectors(preloaded={NAME: detector if detector is not None else StandInDetector(source)})
    pipeline = Pipeline(auto=auto, detectors=detectors, events=events)
    pipeline.add_stream("cam", source, OracleTracker(source, delay=0.01))
    return pipeline, source


async def _run(pipeline: Pipeline, seconds: float, until=None) -> _Recorder:
    recorder = _Recorder(pipeline.metrics)
    pipeline.hub.add(recorder)
    recorder.start()
    pipeline.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            await asyncio.sleep(0.05)
    finally:
        await pipeline.stop()
        await recorder.close(flush=True)
    return recorder


def test_objects_walk_in_and_out_with_no_click_and_carry_their_labels_everywhere() -> None:
    zones = {"cam": {"left": {"points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]], "labels": ["disc"]}}}
    auto = AutoConfig(enabled=True, detector=NAME, every_frames=2, absent_s=0.5, end_after=3)

    async def main():
        pipeline, source = _pipeline(auto, None, events=EventsConfig(zones=zones))
        detector = pipeline.detectors._loaded[NAME]
        recorder = await _run(pipeline, 14.0)
        return recorder, detector, pipeline.metrics.render().decode(), pipeline.streams["cam"].auto

    recorder, detector, metrics, auto_tracking = asyncio.run(main())
    added = [e for e in recorder.got if e.type == "added"]
    removed = [e for e in recorder.got if e.type == "removed"]
    assert len(added) >= 3 and {e.label for e in added} <= {"disc", "square"}
    assert {e.reason for e in removed} <= {"undetected", "absent"} and len(removed) >= 2
    objects = [o for t in recorder.frames for o in t.results().objects]
    assert objects and all(o.origin == "auto" and o.label in ("disc", "square") for o in objects)
    assert all(o.label_score is not None and 0.5 <= o.label_score <= 1 for o in objects)
    zone_events = [e for e in recorder.got if e.zone == "left"]
    assert zone_events and all(e.label == "disc" for e in zone_events)  # the zone follows discs only
    assert {name.rsplit("_", 1)[0] for name in detector.threads} == {"detector"}  # never the tracker's thread
    assert auto_tracking.runs >= 10
    assert (
        'streamer_objects{label="disc",stream="cam"}' in metrics
        or 'streamer_objects{label="square",stream="cam"}' in metrics
    )


def test_a_text_prompt_adds_what_it_names_on_the_next_tracked_frame() -> None:
    auto = AutoConfig(enabled=False, text_detector=NAME)

    async def main():
        pipeline, _ = _pipeline(auto, None, traffic=False)
        stream = pipeline.streams["cam"]
        recorder = _Recorder(pipeline.metrics)
        pipeline.hub.add(recorder)
        recorder.start()
        pipeline.start()
        try:
            await stream.next_output(-1)
            await asyncio.sleep(0.5)
            assert stream.obj_ids == []  # auto is off: nothing starts by itself
            await stream.text(["square"])
            for _ in range(100):
                if stream.obj_ids:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            return dict(stream.labels), list(stream.obj_ids), [o for t in recorder.frames for o in t.results().objects]
        finally:
            await pipeline.stop()
            await recorder.close()

    labels, obj_ids, objects = asyncio.run(main())
    assert obj_ids and all(labels[i].label == "square" and labels[i].origin == "text" for i in obj_ids)
    assert objects and {o.origin for o in objects} == {"text"}


def test_a_clicked_object_takes_its_label_and_is_never_ended_by_the_detector() -> None:
    # Threshold 0.99: no detection (they score 0.75-0.95) starts an object, but they match and name.
    auto = AutoConfig(enabled=True, detector=NAME, every_frames=1, end_after=1, absent_s=0.1, threshold=0.99)

    async def main():
        pipeline, source = _pipeline(auto, None, traffic=False)
        stream = pipeline.streams["cam"]
        pipeline.start()
        try:
            shown = await stream.next_output(-1)
            x, y = source.scene.centres(shown.index)[1]
            request = PromptRequest(7, points=((x / 320, y / 180),), labels=(1,), shown=shown.index)
            await stream.prompt(request)
            runs = stream.auto.runs
            while stream.auto.runs < runs + 8:
                await asyncio.sleep(0.05)
            return stream.obj_ids, stream.labels[7]
        finally:
            await pipeline.stop()

    obj_ids, label = asyncio.run(main())
    assert obj_ids == [7]
    assert (label.origin, label.label) == ("click", "square")


def test_a_slow_detector_never_holds_up_the_tracker() -> None:
    """While the detector takes 1.5 s over a frame, the tracker keeps tracking every frame it gets."""
    calls: list[tuple[float, float]] = []

    def slow(image, queries=()):
        started = time.monotonic()
        time.sleep(1.5)
        calls.append((started, time.monotonic()))
        return Detections.empty()

    slow.labels = None  # type: ignore[attr-defined]
    slow.device = "cpu"  # type: ignore[attr-defined]
    auto = AutoConfig(enabled=True, detector=NAME, every_frames=1)

    async def main():
        pipeline, _ = _pipeline(auto, slow, traffic=False)
        stream = pipeline.streams["cam"]
        frames: list[tuple[float, float]] = []
        pipeline.start()
        try:
            deadline = time.monotonic() + 4.5
            while time.monotonic() < deadline:
                frames.append((time.monotonic(), stream.metrics.frames_processed._value.get()))
                await asyncio.sleep(0.1)
        finally:
            await pipeline.stop()
        return frames

    frames = asyncio.run(main())
    assert len(calls) >= 2
    start, end = calls[0]
    during = [count for at, count in frames if start + 0.1 < at < end - 0.1]
    assert during and during[-1] - during[0] >= 10  # tracked frames while the detector was busy


def test_a_detector_that_cannot_load_is_reported_and_the_stream_goes_on() -> None:
    auto = AutoConfig(enabled=True, detector="no_such_package.detector:detect", every_frames=1)
    errors: list[tuple[str, str, str]] = []

    async def main():
        source = ShapesSource(320, 180, fps=30, seed=2).start()
        pipeline = Pipeline(auto=auto, on_error=lambda *e: errors.append(e))
        stream = pipeline.add_stream("cam", source, OracleTracker(source, delay=0.01))
        pipeline.start()
        try:
            await asyncio.sleep(1.5)
            before = stream.metrics.frames_processed._value.get()
            await asyncio.sleep(1.0)
            return stream.metrics.frames_processed._value.get() - before, stream.auto.config.enabled
        finally:
            await pipeline.stop()

    tracked, enabled = asyncio.run(main())
    assert errors and errors[0][:2] == ("cam", "detector") and "no_such_package" in errors[0][2]
    assert len(errors) == 1 and not enabled  # said once; automatic tracking pauses on that stream
    assert tracked > 10


def test_a_detector_slower_than_the_tracker_s_memory_still_starts_objects() -> None:
    """On an empty scene the tracker steps every camera frame (30 a second, 8 remembered), so a
    detector taking 0.6 s answers about a frame the tracker has forgotten: its boxes are carried
    along the optical flow to a frame it has, as a viewer's late box is, and objects start."""

    class Slow(StandInDetector):
        def __call__(self, image, queries=()):
            found = super().__call__(image, queries)
            time.sleep(0.6)
            return found

    auto = AutoConfig(enabled=True, detector=NAME, every_frames=1, probation=1)

    async def main():
        source = ShapesSource(320, 180, fps=30, speed=2, count=3, seed=2).start()
        pipeline = Pipeline(auto=auto, detectors=Detectors(preloaded={NAME: Slow(source)}))
        stream = pipeline.add_stream("cam", source, OracleTracker(source, delay=0.01))
        pipeline.start()
        try:
            for _ in range(100):
                if len(stream.obj_ids) >= 2:
                    break
                await asyncio.sleep(0.1)
            return dict(stream.labels)
        finally:
            await pipeline.stop()

    labels = asyncio.run(main())
    assert len(labels) >= 2 and all(label.origin == "auto" for label in labels.values())
