"""Video outputs benchmark: what an RTSP restream costs the server per frame, and what arrives;
and what each style costs to draw.

A 1280x720 ``synthetic:shapes`` camera at 30 fps with one object tracked by the oracle (the true
masks after 30 ms: the model's cost is not what is measured here, the video's is; the masks are
drawn on every frame as they would be). Each phase runs for ``--seconds``:

- ``h264_viewer``: one consumer of the stream's H.264 packets (what an H.264 viewer's track reads);
- ``h264_viewer+restream``: the same plus a restream to an RTSP server: no second encode;
- ``restream``: the restream alone (the H.264 encoder runs for it);
- ``vp8_viewer`` and ``vp8_viewer+restream``: a VP8 viewer, where the restream needs its own encode;
- ``recording`` and ``h264_viewer+recording``: recordings (video/recordings.py) of everything in
  5 s segments, and event clips (pre-roll 2 s, post-roll 1 s) of an object added every 4 s and
  removed 1.5 s later: the CPU of keeping, remuxing and writing the packets, and each clip's
  pre-roll as recorded (its first frame's capture time vs the event's minus the pre-roll: the
  clip starts on the keyframe at or before it).

Per phase: the server process's CPU per published frame (the receiver runs in another process),
its encoders' share, and at the RTSP server (a PyAV listener in a subprocess, timing each packet
as it arrives): frames per second delivered and latency from capture to arrival (p50/p90; the
restream's timestamps count capture time, so each packet is dated from the first).

    python bench/outputs_video.py --out bench/results/outputs_video_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe, publish  # noqa: E402
from bench.stats import percentile  # noqa: E402
from streamer.config import RecordingsConfig  # noqa: E402
from streamer.config.values import STYLES  # noqa: E402
from streamer.live.landing import PromptRequest  # noqa: E402
from streamer.sources.shapes import ShapesScene  # noqa: E402
from streamer.video.packets import EncodedFrame  # noqa: E402
from streamer.video.recordings import Recorder  # noqa: E402
from streamer.video.restream import Restream  # noqa: E402
from streamer.video.styles import Look, render  # noqa: E402
from tests.mosquitto import free_port  # noqa: E402
from tests.oracle_server import oracle_pipeline  # noqa: E402

PHASES = (
    "h264_viewer",
    "h264_viewer+restream",
    "restream",
    "vp8_viewer",
    "vp8_viewer+restream",
    "recording",
    "h264_viewer+recording",
)
PRE_ROLL_S = 2.0
# An RTSP server that records when each packet arrives: one JSON line per packet.
LISTENER = """
import json, sys, time
import av
with av.open(sys.argv[1], options={"rtsp_flags": "listen", "listen_timeout": "30"}) as container:
    for packet in container.demux(video=0):
        if packet.pts is not None:
            print(json.dumps([time.time(), int(packet.pts * packet.time_base * 90000)]), flush=True)
"""


class Recorded:
    """The stream's H.264 feed as the restream reads it, remembering the first frame it took
    (its capture time dates every packet the receiver gets)."""

    def __init__(self, video) -> None:
        self.video = video
        self.first: EncodedFrame | None = None

    def subscribe(self) -> object:
        return self.video.subscribe()

    async def unsubscribe(self) -> None:
        await self.video.unsubscribe()

    async def next_frame(self, after: int | None) -> EncodedFrame:
        frame = await self.video.next_frame(after)
        if self.first is None:
            self.first = frame
        return frame


async def consume(video, stop: asyncio.Event) -> None:
    """A viewer's read of the packets (no network: its cost is aiortc's, the same in every phase)."""
    video.subscribe()
    try:
        seq = None
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                seq = (await asyncio.wait_for(video.next_frame(seq), 1.0)).seq
    finally:
        await video.unsubscribe()


async def phase(pipeline, name: str, seconds: float) -> dict:
    stream = pipeline.stream("cam")
    stop = asyncio.Event()
    tasks = []
    if "viewer" in name:
        codec = name.split("_")[0]
        tasks.append(asyncio.create_task(consume(stream.video(codec), stop)))
    listener = restream = feed = None
    if "restream" in name:
        port = free_port()
        url = f"rtsp://127.0.0.1:{port}/live"
        listener = subprocess.Popen([sys.executable, "-c", LISTENER, url], stdout=subprocess.PIPE, text=True)
        await asyncio.sleep(1.0)  # listening
        feed = Recorded(stream.video("h264"))
        restream = Restream("cam", url, feed, stream.metrics)
        restream.start()
    recorder = folder = None
    if "recording" in name:
        folder = tempfile.TemporaryDirectory()
        config = RecordingsConfig(folder.name, events=["added"], pre_roll_s=PRE_ROLL_S, post_roll_s=1.0, segment_s=5.0)
        recorder = Recorder(config, lambda: {"cam": stream.video("h264")}, pipeline.hub.announce, pipeline.metrics)
        recorder.start()
        pipeline.hub.add(recorder)
        tasks.append(asyncio.create_task(add_and_remove(stream, stop)))
    await asyncio.sleep(2.0)  # encoders and connections up
    process = psutil.Process()
    encoders = list(stream.encoders.values())
    cpu0, enc0 = sum(process.cpu_times()[:2]), sum(e.encode_cpu_s for e in encoders)
    encoded0 = {codec: e.frames_encoded for codec, e in stream.encoders.items()}
    shown0, wall0, window = stream.latest.seq, time.monotonic(), time.time()
    await asyncio.sleep(seconds)
    published = stream.latest.seq - shown0
    cpu = sum(process.cpu_times()[:2]) - cpu0
    encode = sum(e.encode_cpu_s for e in stream.encoders.values()) - enc0
    result = {
        "published_fps": published / (time.monotonic() - wall0),
        "server_cpu_ms_per_frame": 1000 * cpu / published,
        "encode_cpu_ms_per_frame": 1000 * encode / published,
        "encoders_running": sorted(c for c, e in stream.encoders.items() if e.frames_encoded > encoded0.get(c, 0)),
    }
    stop.set()
    await asyncio.gather(*tasks)
    if restream is not None and listener is not None and feed is not None:
        await restream.close()
        listener.terminate()
        lines = listener.communicate(timeout=10)[0].splitlines()
        arrivals = [json.loads(line) for line in lines]
        result["restream"] = received(arrivals, feed.first, (window, window + seconds))
        result["restream"]["connections"] = restream.status.connections
    if recorder is not None and folder is not None:
        pipeline.hub.discard(recorder)
        await recorder.close()
        result["recording"] = recorded(Path(folder.name))
        folder.cleanup()
    for encoder in list(stream.encoders.values()):
        await encoder.stop()
    return result


async def add_and_remove(stream, stop: asyncio.Event) -> None:
    """An object added every 4 s on the second shape and removed 1.5 s later: an event clip each."""
    scene, obj_id = stream.source.scene, 10
    while not stop.is_set():
        await asyncio.sleep(2.5)
        shown = stream.latest
        x, y = scene.centres(shown.index)[1]
        await stream.prompt(
            PromptRequest(obj_id, points=((x / scene.width, y / scene.height),), labels=(1,), shown=shown.index)
        )
        await asyncio.sleep(1.5)
        await stream.remove_object(obj_id)
        obj_id += 1


def recorded(folder: Path) -> dict:
    """What the recorder wrote: segments, and each event clip's pre-roll against the one asked."""
    sidecars = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    # The bench's own objects (ids from 10): the one tracked before the recorder started is
    # reported added at once, before the buffer reaches back to any keyframe.
    clips = [s for s in sidecars if s["kind"] == "event" and "pre_roll_s" in s and s["trigger"]["obj_id"] >= 10]
    segments = [s for s in sidecars if s["kind"] == "segment"]
    errors = sorted(s["pre_roll_s"] - PRE_ROLL_S for s in clips)
    return {
        "segments": len(segments),
        "segment_frames": sum(s["frames"] for s in segments),
        "event_clips": len(clips),
        "pre_roll_asked_s": PRE_ROLL_S,
        "pre_roll_error_s": {"min": errors[0], "median": percentile(errors, 0.5), "max": errors[-1]}
        if errors
        else None,
        "bytes_per_second": sum(s["bytes"] for s in segments) / max(sum(s["duration_s"] for s in segments), 1e-6),
    }


def received(arrivals: list[list[float]], first: EncodedFrame | None, window: tuple[float, float]) -> dict:
    """Frames per second at the receiver and capture -> arrival latency, over the timed window
    (the first packets wait in FFmpeg's stream probe, so the warm-up is left out)."""
    if not arrivals or first is None:
        return {"frames": 0}
    origin = arrivals[0][1]  # the first packet is the first frame the restream took
    timed = [(at, pts) for at, pts in arrivals if window[0] <= at <= window[1]]
    latencies = sorted(1000 * (at - first.captured - (pts - origin) / 90_000) for at, pts in timed)
    return {
        "frames": len(timed),
        "fps": len(timed) / (window[1] - window[0]),
        "latency_ms": {"p50": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9)},
    }


def style_costs(repeats: int = 40) -> dict:
    """CPU per 1280x720 frame to draw one and three objects in each style (masks at the frame's
    size, as the encoders get them; the median of ``repeats``; the frame's own decode not included)."""
    scene = ShapesScene(1280, 720, speed=4.0, count=3, seed=2)
    frame, masks = scene.render(10)
    background = np.full((360, 640, 3), 90, np.uint8)
    costs: dict = {}
    for style in STYLES:
        look = Look(style, background=background)
        for count in (1, 3):
            times = []
            for _ in range(repeats):
                started = time.thread_time()
                render(frame, masks[:count], list(range(1, count + 1)), look, age_ms=100.0)
                times.append(time.thread_time() - started)
            costs.setdefault(style, {})[f"{count}_objects_ms"] = 1000 * statistics.median(times)
    return costs


async def run(args: argparse.Namespace) -> dict:
    pipeline = oracle_pipeline(width=1280, height=720)
    pipeline.start()
    try:
        stream = pipeline.stream("cam")
        while stream.latest is None:
            await asyncio.sleep(0.05)
        scene = stream.source.scene
        x, y = scene.centres(stream.latest.index)[0]
        click = PromptRequest(1, points=((x / scene.width, y / scene.height),), labels=(1,), shown=stream.latest.index)
        await stream.prompt(click)
        phases = {}
        for name in args.phases:
            phases[name] = await phase(pipeline, name, args.seconds)
            print(name, json.dumps(phases[name]), flush=True)
    finally:
        await pipeline.stop()
    return {
        "device": describe(),
        "camera": "synthetic:shapes 1280x720 at 30 fps, one object (oracle masks), drawn on every frame",
        "seconds_per_phase": args.seconds,
        "phases": phases,
        "style_cpu_per_720p_frame": style_costs(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--phases", nargs="*", default=list(PHASES), choices=PHASES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    publish(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
