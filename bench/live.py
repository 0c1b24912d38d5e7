"""Live video while tracking, measured where the user is: frames per second at the viewer, and
what showing every camera frame costs the tracker.

For each real clip (960x540 and 1280x720) run_stream.py tracks one object (``--model``, default
SAM 2.1 tiny, at ``--image-size``, default 256; random weights) and the phases are:

- ``off``: nobody watches (nothing is drawn or encoded): the tracker's own rate;
- ``aiortc``: one aiortc viewer that reassembles every frame but does not decode it (a decoding
  client would take the same cores from the server and skew the figure);
- ``chromium``: one headless Chromium page, frames counted with requestVideoFrameCallback.

``--auto LABELS`` runs the server with automatic tracking on (``--auto-detector``, default rtdetr,
random weights like the model: a detector's cost does not depend on its weights), to measure what
the detector thread takes from the tracker and the video (bench/results/live_cpu_256_auto.json,
and live_cpu_256_auto_off.json: the same run without, just before it).

Per phase: frames per second delivered to the viewer, frames tracked per second (from /metrics),
server CPU, and in Chromium capture -> screen (p50/p90: the page dates each frame it presents by
its RTP timestamp, with its video clock), then click -> object shown for six clicks (a new
object each; from the click until the spot's colour changes in the page's video), click -> the
server's ack at the page (the prompt done: the rest is the video's way to the screen, and with
random weights a mask that may not cover the spot at first), with where the server's part went
(``click_wait_ms_mean``: queued behind the round in flight, up to its pause for changes;
``click_run_ms_mean``: the prompt itself), beside one tracker period. ``--hog 0.5`` adds another
process busy half a core at normal priority: a slower day (``--hog 1.5``: two, busy 0.75 each).
WebRTC needs a real interface, so run it inside the isolated network namespace:

    ../shared/tools/isolated-net python bench/live.py --out bench/results/live_cpu_256.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import psutil
from aiortc import RTCPeerConnection, rtcrtpreceiver
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe, publish  # noqa: E402
from bench.stats import p50_p90  # noqa: E402
from tests.webrtc_scenarios import CHROMIUM_ARGS, free_port, join, start_server  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ("bedroom.mp4", "02_cups.mp4")


class CountingDecoder:
    """Stands in for aiortc's VP8 decoder in the bench's own viewer: every frame aiortc
    reassembles is counted and handed on as a 2x2 picture (with its RTP timestamp as pts), so
    the viewer costs almost no CPU."""

    def decode(self, encoded_frame: Any) -> list[av.VideoFrame]:
        frame = av.VideoFrame(2, 2, "yuv420p")
        frame.pts = encoded_frame.timestamp
        return [frame]


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "streamer_frames_processed_total",
                "streamer_frames_displayed_total",
                "streamer_prompt_wait_seconds_sum",
                "streamer_prompt_wait_seconds_count",
                "streamer_prompt_run_seconds_sum",
            )
        ):
            values[line.split("{")[0]] = float(line.split()[-1])
    return values


async def measure(port: int, proc: psutil.Process, seconds: float, viewer_frames) -> dict:  # type: ignore[no-untyped-def]
    """Frames delivered (``viewer_frames()`` counts them), tracked and published over ``seconds``."""
    await asyncio.sleep(3.0)  # settle
    before, frames0 = await asyncio.to_thread(metrics, port), viewer_frames()
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    after, frames1 = await asyncio.to_thread(metrics, port), viewer_frames()
    return {
        "viewer_fps": None if frames0 is None else (frames1 - frames0) / elapsed,
        "tracked_fps": (after["streamer_frames_processed_total"] - before["streamer_frames_processed_total"]) / elapsed,
        "published_fps": (after["streamer_frames_displayed_total"] - before["streamer_frames_displayed_total"])
        / elapsed,
        "server_cpu_cores": (sum(proc.cpu_times()[:2]) - cpu0) / elapsed,
    }


async def aiortc_phase(port: int, proc: psutil.Process, seconds: float) -> dict:
    rtcrtpreceiver.get_decoder = lambda codec: CountingDecoder()  # type: ignore[assignment]
    count = [0]
    stop = asyncio.Event()
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = RTCPeerConnection()
        track = await join(ws, peer)

        async def receive() -> None:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(track.recv(), 1.0)
                    count[0] += 1

        receiver = asyncio.create_task(receive())
        try:
            return await measure(port, proc, seconds, lambda: count[0])
        finally:
            stop.set()
            await receiver
            await peer.close()


# In the page: watch a small spot of the video frame by frame, from a click until the spot's
# colour moves more than ``threshold`` towards the object's overlay colour (its mask drawn there,
# not the scene moving): when it did.
_WATCH_JS = """([cx, cy, r, threshold, id]) => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas'); c.width = c.height = 2 * r + 1;
  const g = c.getContext('2d', {willReadFrequently: true});
  const colour = () => {
    g.drawImage(v, cx * v.videoWidth - r, cy * v.videoHeight - r, c.width, c.height, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data; const m = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { m[0] += d[i]; m[1] += d[i + 1]; m[2] += d[i + 2]; }
    return m.map((x) => x / (d.length / 4));
  };
  const tint = colorFor(id).match(/\\d+/g).map(Number);
  const away = (m) => Math.hypot(m[0] - tint[0], m[1] - tint[1], m[2] - tint[2]);
  const base = away(colour());
  const watch = window.clickWatch = {start: performance.now(), shown: null, acked: null};
  const onAck = (e) => {
    const m = JSON.parse(e.data);
    if (m.type !== 'ack' || !m.objects || !m.objects.includes(id)) return;
    watch.acked = performance.now();
    window.viewer.ws.removeEventListener('message', onAck);
  };
  window.viewer.ws.addEventListener('message', onAck);
  const look = () => {
    if (base - away(colour()) > threshold) watch.shown = performance.now();
    else if (performance.now() - watch.start < 15000) v.requestVideoFrameCallback(look);
  };
  v.requestVideoFrameCallback(look);
}"""
CLICK_SPOTS = ((0.5, 0.5), (0.3, 0.6), (0.7, 0.4), (0.4, 0.3), (0.6, 0.7), (0.25, 0.4))


async def click_to_shown(page: Any, spot: tuple[float, float]) -> tuple[float | None, float | None]:
    """Milliseconds from a click on ``spot`` (a new object) until its mask shows there, and until
    the page had the server's ack (the prompt done); the object is removed again afterwards.
    None if it never showed (was never acked) within 15 s."""
    await page.click("#new-object")
    obj_id = await page.evaluate("window.viewer.selected")
    box = await page.locator("#drag").bounding_box()
    size = await page.evaluate("(v => [v.videoWidth, v.videoHeight])(document.getElementById('video'))")
    scale = min(box["width"] / size[0], box["height"] / size[1])
    x = box["x"] + (box["width"] - size[0] * scale) / 2 + spot[0] * size[0] * scale
    y = box["y"] + (box["height"] - size[1] * scale) / 2 + spot[1] * size[1] * scale
    await page.evaluate(_WATCH_JS, [spot[0], spot[1], 6, 40, obj_id])
    await page.mouse.click(x, y)
    with contextlib.suppress(Exception):
        await page.wait_for_function("window.clickWatch.shown !== null", timeout=15000)
    since = "(w => [w.shown, w.acked].map((t) => (t === null ? null : t - w.start)))(window.clickWatch)"
    shown, acked = await page.evaluate(since)
    with contextlib.suppress(Exception):
        await page.click(f"#objects li[data-obj-id='{obj_id}'] button.remove", timeout=5000)
    await asyncio.sleep(2.0)
    return shown, acked


async def chromium_phase(port: int, proc: psutil.Process, seconds: float) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chrome = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await chrome.new_page(viewport={"width": 1280, "height": 720})
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_function("window.viewer.presented > 10", timeout=30000)
        presented = [0]
        screen: dict[float, float] = {}  # presented at (page ms) -> capture -> screen ms

        async def poll() -> None:
            while True:
                presented[0] = await page.evaluate("window.viewer.presented")
                screen.update(await page.evaluate("window.viewer.screen"))  # the page's last 2 s
                await asyncio.sleep(0.25)

        poller = asyncio.create_task(poll())
        try:
            result = await measure(port, proc, seconds, lambda: presented[0])
            result["page_video_fps"] = await page.evaluate("window.viewer.videoFps")
            result["capture_to_screen_ms"] = {**p50_p90(screen.values()), "frames": len(screen)}
            before = await asyncio.to_thread(metrics, port)
            clicks = [await click_to_shown(page, spot) for spot in CLICK_SPOTS]
            after = await asyncio.to_thread(metrics, port)
            result["click_to_shown_ms"] = [shown for shown, _ in clicks]
            result["click_to_ack_ms"] = [acked for _, acked in clicks]
            count = after["streamer_prompt_wait_seconds_count"] - before.get("streamer_prompt_wait_seconds_count", 0)
            if count:  # where a click's time goes on the server: waiting for the round in flight, then its own
                for key in ("wait", "run"):
                    name = f"streamer_prompt_{key}_seconds_sum"
                    spent = after[name] - before.get(name, 0)
                    result[f"click_{key}_ms_mean"] = 1000 * spent / count
            result["tracker_period_ms"] = 1000 / result["tracked_fps"] if result["tracked_fps"] else None
            return result
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await chrome.close()


HOG = """import time
busy, idle = {busy}, {idle}
while True:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
    time.sleep(idle)
"""


@contextlib.contextmanager
def cpu_hog(share: float):  # type: ignore[no-untyped-def]
    """A slower day: other processes busy ``share`` cores in all (one per started core, in 100 ms
    periods) at normal priority."""
    if share <= 0:
        yield
        return
    count = math.ceil(share)
    each = share / count
    code = HOG.format(busy=0.1 * each, idle=0.1 * (1 - each))
    hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


async def clip_run(clip: Path, args: argparse.Namespace) -> dict:
    with cpu_hog(args.hog):
        return await _clip_run(clip, args)


async def _clip_run(clip: Path, args: argparse.Namespace) -> dict:
    port = free_port()
    extra = ["--mask-motion", args.mask_motion]
    if args.auto:
        extra += ["--auto", args.auto, "--auto-detector", args.auto_detector, "--auto-every", str(args.auto_every)]
    server = start_server(str(clip), port, args.image_size, extra=extra, model=args.model)
    try:
        proc = psutil.Process(server.pid)
        await asyncio.sleep(2.0)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "add_box", "obj_id": 1, "box": [0.3, 0.25, 0.7, 0.8]}))
            while json.loads(await ws.recv())["type"] != "ack":
                pass
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
        source_fps = next(iter(health["streams"].values()))["source_fps"]
        phases = {"off": await measure(port, proc, args.seconds, lambda: None)}
        if "aiortc" in args.phases:
            phases["aiortc"] = await aiortc_phase(port, proc, args.seconds)
        if "chromium" in args.phases:
            phases["chromium"] = await chromium_phase(port, proc, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=10)
    off = phases["off"]["tracked_fps"]
    return {
        "clip": clip.name,
        "source_fps": source_fps,
        "phases": phases,
        "viewer_fps_vs_source": {k: phases[k]["viewer_fps"] / source_fps for k in phases if k != "off"},
        "tracked_fps_vs_display_off": {k: phases[k]["tracked_fps"] / off for k in phases if k != "off"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", help="a registered model, or auto")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--mask-motion", choices=["flow", "hold"], default="flow")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS))
    parser.add_argument("--phases", nargs="+", default=["aiortc", "chromium"], choices=["aiortc", "chromium"])
    parser.add_argument("--auto", metavar="LABELS", help="automatic tracking on, for these labels (all: any)")
    parser.add_argument("--auto-detector", default="rtdetr")
    parser.add_argument("--auto-every", type=int, default=5)
    parser.add_argument(
        "--hog",
        type=float,
        default=0.0,
        help="a slower day: other processes busy this many cores (1.5: two, each busy 0.75)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {
        "device": describe(),
        "model": f"{args.model} (random weights), one object",
        "image_size": args.image_size,
        "mask_motion": args.mask_motion,
        "competing_process_cores": args.hog,
        "auto": None
        if not args.auto
        else f"{args.auto_detector} every {args.auto_every} tracked frames (random weights)",
        "runs": [asyncio.run(clip_run(MEDIA / name, args)) for name in args.clips],
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
