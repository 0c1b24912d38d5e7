"""Viewer benchmark: server CPU per frame with 1 and with 10 viewers, the frames each viewer
actually receives per second, joins, capture-to-sent.

Runs run_stream.py on a real clip and connects aiortc viewers that reassemble every frame but do
not decode it (``bench.live.CountingDecoder``: ten decoding clients would take the server's own
cores and skew both figures). WebRTC needs a real interface, so run it inside the isolated
network namespace. With ``--objects 0`` the stream tracks nothing, so the model never runs and
the server's CPU is the serving path itself (decode, overlay, encode, packetise, send): what
each extra viewer adds shows there.

    ../shared/tools/isolated-net python bench/viewers.py --objects 0 --out bench/results/viewers_cpu.json
    ../shared/tools/isolated-net python bench/viewers.py --objects 0 --codec h264 \
        --out bench/results/viewers_h264_cpu.json
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
from aiortc import RTCPeerConnection, rtcrtpreceiver
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.live import CountingDecoder  # noqa: E402
from bench.machine import describe, publish  # noqa: E402
from tests.webrtc_scenarios import free_port, join, start_server  # noqa: E402

CLIP = ROOT.parent / "shared" / "media" / "bedroom.mp4"


async def viewer(
    port: int, joined: list[float], received: list[int], stop: asyncio.Event, codec: str | None = None
) -> None:
    """Connect (offering only ``codec`` if given, e.g. "H264"), record the time to the first
    frame, then count frames until told to stop."""
    started = time.monotonic()
    slot = len(received)
    received.append(0)
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = RTCPeerConnection()
        track = await join(ws, peer, codec=codec)
        await track.recv()
        joined.append(time.monotonic() - started)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(track.recv(), 1.0)
                received[slot] += 1
        await peer.close()


def encode_cost(frames: int = 60) -> dict:
    """CPU ms per frame of aiortc's own encoders on the clip: what each viewer would cost if
    every viewer had its own encoder, as aiortc does by default."""
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


async def phase(
    port: int, proc: psutil.Process, viewers: int, seconds: float, stream: str, codec: str | None = None
) -> dict:
    stop, joined, received = asyncio.Event(), [], []
    tasks = [asyncio.create_task(viewer(port, joined, received, stop, codec)) for _ in range(viewers)]
    while len(joined) < viewers:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)  # settle
    cpu0, t0, counts0 = sum(proc.cpu_times()[:2]), time.monotonic(), list(received)
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    delivered = [(after - before) / elapsed for before, after in zip(counts0, received)]
    cpu = (sum(proc.cpu_times()[:2]) - cpu0) / elapsed
    state = (await asyncio.to_thread(health, port))["streams"][stream]
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "viewers": viewers,
        "server_cpu_cores": cpu,
        "server_cpu_ms_per_frame": 1000 * cpu / state["video_fps"] if state["video_fps"] else None,
        "join_s": joined,
        "video_fps_published": state["video_fps"],
        "delivered_fps_per_viewer": delivered,
        "mask_fps": state["mask_fps"],
        "latency_ms": state["latency_ms"],
    }


async def main_async(args: argparse.Namespace) -> dict:
    rtcrtpreceiver.get_decoder = lambda codec: CountingDecoder()  # type: ignore[assignment]
    port = free_port()
    server = start_server(str(CLIP), port, args.image_size)
    try:
        proc = psutil.Process(server.pid)
        await asyncio.sleep(3.0)
        stream = next(iter(health(port)["streams"]))
        if args.objects:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"type": "add_box", "obj_id": 1, "box": [0.3, 0.25, 0.7, 0.8]}))
                while json.loads(await ws.recv())["type"] != "ack":
                    pass
        codec = "H264" if args.codec == "h264" else None
        phases = [await phase(port, proc, n, args.seconds, stream, codec) for n in args.viewers]
    finally:
        server.terminate()
        server.wait(timeout=10)
    report: dict = {"phases": phases}
    per_frame = {p["viewers"]: p["server_cpu_ms_per_frame"] for p in phases}
    if per_frame.get(1) and per_frame.get(10):
        report["cpu_per_frame_10_viewers_vs_1"] = per_frame[10] / per_frame[1]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--objects", type=int, default=0, choices=[0, 1], help="objects tracked (0: no inference)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--codec", choices=["vp8", "h264"], default="vp8", help="what the viewers offer")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {
        "device": describe(),
        "image_size": args.image_size,
        "clip": CLIP.name,
        "model": "sam2.1_hiera_tiny (random)",
        "objects": args.objects,
        "codec": args.codec,
    }
    report["encode_per_viewer"] = encode_cost()
    report.update(asyncio.run(main_async(args)))
    publish(report, args.out)


if __name__ == "__main__":
    main()
