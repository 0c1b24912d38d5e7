"""Capture benchmark: RTSP latency and jitter, 720p decode cost, and time to resume after an outage.

Runs a real GStreamer RTSP server on 127.0.0.1 (tests/rtsp_server.py) serving a 720p clip:

    python bench/sources.py --out bench/results/sources_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe, publish  # noqa: E402
from bench.stats import percentile  # noqa: E402
from streamer.sources import open_source  # noqa: E402
from tests.rtsp import RtspServer  # noqa: E402

CLIP = ROOT.parent / "shared" / "media" / "02_cups.mp4"


async def rtsp_latency(server: RtspServer, frames: int) -> dict:
    """Decode-to-consumer delay, and how far frames arrive behind a steady 29.97 fps schedule."""
    slot_ms, arrivals = [], []
    async with open_source(server.url) as source:
        async for frame in source:
            slot_ms.append(1000 * (time.monotonic() - frame.captured_at))
            arrivals.append(frame.captured_at)
            if len(arrivals) == frames:
                break
        dropped = source.stats.dropped
    interval = 1 / 29.97
    lateness = [t - i * interval for i, t in enumerate(arrivals)]
    base = min(lateness)
    behind_ms = [1000 * (x - base) for x in lateness]
    return {
        "frames": frames,
        "decode_to_consumer_ms": {"median": statistics.median(slot_ms), "p90": percentile(slot_ms, 0.9)},
        "behind_schedule_ms": {"median": statistics.median(behind_ms), "p90": percentile(behind_ms, 0.9)},
        "dropped": dropped,
    }


def decode_cost(clip: Path) -> dict:
    """CPU seconds per 720p frame: H.264 decode alone, and decode plus RGB conversion (as sources do)."""
    result = {}
    for label, convert in (("decode_only", False), ("decode_and_rgb", True)):
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            count, cpu, wall = 0, time.process_time(), time.perf_counter()
            for frame in container.decode(stream):
                if convert:
                    frame.to_ndarray(format="rgb24")
                count += 1
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        result[label] = {"cpu_ms_per_frame": 1000 * cpu / count, "wall_ms_per_frame": 1000 * wall / count}
    result["frames"] = count
    result["size"] = f"{stream.width}x{stream.height}"
    return result


async def resume_time(server: RtspServer, outage: float, repeats: int) -> dict:
    """Seconds from the server coming back to the consumer's next frame, after a kill."""
    source = open_source(server.url)
    latest: list[float] = []

    async def consume() -> None:
        async for frame in source:
            latest.append(frame.captured_at)

    task = asyncio.create_task(consume())
    times = []
    try:
        await asyncio.sleep(1.0)
        for _ in range(repeats):
            server.kill()
            await asyncio.sleep(outage)
            server.start()
            back = time.monotonic()
            while not (latest and latest[-1] > back):
                await asyncio.sleep(0.01)
            times.append(latest[-1] - back)
            await asyncio.sleep(1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close()
    return {
        "outage_s": outage,
        "resume_s": times,
        "median_s": statistics.median(times),
        "reconnects": source.stats.reconnects,
    }


async def main_async(args: argparse.Namespace) -> dict:
    server = RtspServer(CLIP)
    server.start()
    try:
        latency = await rtsp_latency(server, args.frames)
        resume = await resume_time(server, args.outage, args.repeats)
    finally:
        server.kill()
    return {"rtsp": latency, "resume": resume}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240, help="frames for the latency run (stream is 10 s)")
    parser.add_argument("--outage", type=float, default=2.0, help="seconds the server stays down")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = {"device": describe(), "clip": CLIP.name, "decode": decode_cost(CLIP)}
    report.update(asyncio.run(main_async(args)))
    publish(report, args.out)


if __name__ == "__main__":
    main()
