"""Live video while tracking, measured where the user is: frames per second at the viewer, and
what showing every camera frame costs the tracker.

For each real clip (960x540 and 1280x720) run_stream.py tracks one object (SAM 2.1 tiny, random
weights, 256 px on this CPU) and the phases are:

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
its RTP timestamp, with its video clock). WebRTC needs a real interface, so run it inside the
isolated network namespace:

    ../shared/tools/isolated-net python bench/live.py --out bench/results/live_cpu_256.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
        if line.startswith(("streamer_frames_processed_total", "streamer_frames_displayed_total")):
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
            return result
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await chrome.close()


async def clip_run(clip: Path, args: argparse.Namespace) -> dict:
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {
        "device": describe(),
        "model": f"{args.model} (random weights), one object",
        "image_size": args.image_size,
        "mask_motion": args.mask_motion,
        "auto": None
        if not args.auto
        else f"{args.auto_detector} every {args.auto_every} tracked frames (random weights)",
        "runs": [asyncio.run(clip_run(MEDIA / name, args)) for name in args.clips],
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
