"""Serving benchmark: capture-to-sent latency, viewer join time, and server CPU per viewer.

Runs run_stream.py on a real clip and connects aiortc viewers; WebRTC needs a real interface, so
run it inside the isolated network namespace:

    ../shared/tools/isolated-net python bench/viewers.py --out bench/results/viewers_cpu_256.json
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

import psutil
from aiortc import RTCPeerConnection
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from tests.webrtc_scenarios import free_port, join, start_server  # noqa: E402

CLIP = ROOT.parent / "shared" / "media" / "bedroom.mp4"


async def viewer(port: int, joined: list[float], stop: asyncio.Event) -> None:
    """Connect, record the time to the first frame, then keep receiving until told to stop."""
    started = time.monotonic()
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = RTCPeerConnection()
        track = await join(ws, peer)
        await track.recv()
        joined.append(time.monotonic() - started)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(track.recv(), 1.0)
        await peer.close()


def encode_cost(frames: int = 60) -> dict:
    """CPU ms per frame of aiortc's own encoders on the clip: what each extra viewer costs, since
    aiortc runs one encoder per viewer (the tracker fills both cores, so server CPU cannot show it)."""
    import fractions

    import cv2
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from av import VideoFrame

    capture = cv2.VideoCapture(str(CLIP))
    images = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(frames)]
    result = {"size": f"{images[0].shape[1]}x{images[0].shape[0]}"}
    for name in ("VP8", "H264"):
        encoder = get_encoder(RTCRtpCodecParameters(mimeType=f"video/{name}", clockRate=90000))
        cpu = time.process_time()
        for i, image in enumerate(images):
            frame = VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
            encoder.encode(frame)
        result[f"{name}_cpu_ms_per_frame"] = 1000 * (time.process_time() - cpu) / frames
    return result


def health(port: int) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())


async def phase(port: int, proc: psutil.Process, viewers: int, seconds: float) -> dict:
    stop, joined = asyncio.Event(), []
    tasks = [asyncio.create_task(viewer(port, joined, stop)) for _ in range(viewers)]
    while len(joined) < viewers:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)  # settle
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    state = await asyncio.to_thread(health, port)
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "viewers": viewers,
        "server_cpu_cores": cpu,
        "join_s": joined,
        "fps": state["fps"],
        "latency_ms": state["latency_ms"],
    }


async def main_async(args: argparse.Namespace) -> dict:
    port = free_port()
    server = start_server(str(CLIP), port, args.image_size)
    try:
        proc = psutil.Process(server.pid)
        await asyncio.sleep(3.0)
        phases = [await phase(port, proc, n, args.seconds) for n in args.viewers]
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--viewers", type=int, nargs="+", default=[0, 1, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {
        "device": describe(),
        "image_size": args.image_size,
        "clip": CLIP.name,
        "model": "sam2.1_hiera_tiny (random)",
    }
    report["encode_per_viewer"] = encode_cost()
    report.update(asyncio.run(main_async(args)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
