"""Serving benchmark: N cameras on one model, each with one object, for N = 1, 2, 4, 8, 16.

Every stream is the real clip decoded live at its own frame rate (30 fps) through the product's
own pipeline (sources, batched rounds, overlay) and its shared VP8 encoder, so latency is measured
from capture to the frame encoded for the viewers. Per N: tracked fps per stream (and the video's
published fps, which runs at the camera's rate whatever the tracker does), capture-to-sent
p50/p90, frames dropped before the tracker, round time and batch size, peak host and GPU memory.
The official SAM2VideoPredictor runs on the same frames in the same process as the reference.

    python bench/serve.py --image-size 256 --out bench/results/serve_cpu_256.json
    python bench/serve.py --device cuda --image-size 1024 --compile --vos-optimized --out ...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe, publish  # noqa: E402
from bench.stats import p50_p90  # noqa: E402
from bench.tracker import CLIP, clip_frames, official, read_jpegs, summary, time_official, write_jpegs  # noqa: E402
from streamer import StreamingTracker  # noqa: E402
from streamer.live.landing import PromptRequest  # noqa: E402
from streamer.live.pipeline import Pipeline  # noqa: E402
from streamer.model.tracker import step_streams  # noqa: E402
from streamer.sources import open_source  # noqa: E402


async def phase(lead: StreamingTracker, n: int, args: argparse.Namespace) -> dict:
    """Serve ``n`` streams for ``args.seconds`` after a warm-up; measure them."""
    lead.reset()
    pipeline = Pipeline(max_batch=args.max_batch)
    streams = [pipeline.add_stream(f"cam{i}", open_source(str(CLIP)), lead if i == 0 else None) for i in range(n)]
    rounds: list[tuple[int, float]] = []
    process = pipeline.engine._round

    def timed(batch):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        outcomes = process(batch)
        rounds.append((len(batch), time.perf_counter() - started))
        return outcomes

    pipeline.engine._round = timed  # type: ignore[method-assign]
    encoders = [stream.video("vp8") for stream in streams]
    for encoder in encoders:
        encoder.subscribe()
    pipeline.start()
    me = psutil.Process()
    try:
        for stream in streams:
            await stream.next_output(-1)
        box = PromptRequest(1, box=(0.3, 0.25, 0.7, 0.8))
        await asyncio.gather(*(stream.prompt(box) for stream in streams))
        await asyncio.sleep(args.warmup)
        seq0 = [s.latest.seq for s in streams]  # type: ignore[union-attr]
        tracked0 = [s.frame_index for s in streams]
        decoded0 = [s.source.stats.decoded for s in streams]
        taken0 = [s._taken for s in streams]
        for stream in streams:
            stream.state.recent_latency_ms.clear()
        rounds.clear()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        peak_rss, started = me.memory_info().rss, time.monotonic()
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(0.2)
            peak_rss = max(peak_rss, me.memory_info().rss)
        elapsed = time.monotonic() - started
        fps = [(s.frame_index - t) / elapsed for s, t in zip(streams, tracked0)]  # type: ignore[operator]
        video = [(s.latest.seq - q) / elapsed for s, q in zip(streams, seq0)]  # type: ignore[union-attr]
        dropped = [(s.source.stats.decoded - d) - (s._taken - t) for s, d, t in zip(streams, decoded0, taken0)]
        latency = [x for s in streams for x in s.state.recent_latency_ms]
        result = {
            "streams": n,
            "fps_per_stream": {"mean": statistics.mean(fps), "min": min(fps), "max": max(fps)},
            "video_fps_per_stream": statistics.mean(video),
            "source_fps": statistics.mean(s.source.stats.fps for s in streams),
            "latency_capture_to_sent_ms": p50_p90(latency),
            "dropped_per_stream_per_s": statistics.mean(dropped) / elapsed,
            "rounds": len(rounds),
            "round_ms": {
                "median": 1000 * statistics.median(r[1] for r in rounds) if rounds else None,
                "full_batch_median": _full_batch_ms(rounds, n),
            },
            "batch_mean": statistics.mean(r[0] for r in rounds) if rounds else None,
            "encode_cpu_ms_per_frame": 1000
            * sum(e.encode_cpu_s for e in encoders)
            / max(1, sum(e.frames_encoded for e in encoders)),
            "peak_rss_mb": peak_rss / 2**20,
        }
        if args.device.startswith("cuda"):
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        logging.info("%d streams: %s", n, result)
        return result
    finally:
        for encoder in encoders:
            await encoder.close()
        await pipeline.stop()


def _full_batch_ms(rounds: list[tuple[int, float]], n: int) -> float | None:
    """Median time of the rounds that stepped every stream: the cost of one round of N."""
    full = [t for size, t in rounds if size == n]
    return 1000 * statistics.median(full) if full else None


def pure_rounds(lead: StreamingTracker, args: argparse.Namespace) -> dict[int, float]:
    """Median time of one round of N streams, one object each, on pre-decoded frames: the
    batching's own cost, without the decoders and encoders that share the machine when serving."""
    frames = clip_frames(args.rounds + 4)
    result = {}
    for n in args.round_streams:
        lead.reset()
        trackers = [lead] + [lead.sibling() for _ in range(n - 1)]
        step_streams(trackers, [frames[0]] * n)
        h, w = frames[0].shape[:2]
        for tracker in trackers:
            tracker.add_prompt(1, box=[0.3 * w, 0.25 * h, 0.7 * w, 0.8 * h])
        times = []
        for i in range(len(frames) - 1):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            step_streams(trackers, [frames[1 + (i + k) % (len(frames) - 1)] for k in range(n)])
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        result[n] = 1000 * statistics.median(times[3:])
        logging.info("pure round of %d streams: %.1f ms", n, result[n])
    lead.reset()
    return result


def reference(lead: StreamingTracker, args: argparse.Namespace) -> dict:
    """The official predictor, one object, on the clip's frames (it takes a whole video)."""
    frames = clip_frames(args.reference_frames)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(frames, folder)
        frames = read_jpegs(folder, len(frames))
        predictor = official(lead, args)
        with torch.autocast("cuda", torch.bfloat16, enabled=args.device.startswith("cuda")):
            stats = summary(time_official(predictor, folder, frames, 1, args.device), warmup=3)
    stats["fps"] = 1000 / stats["median_ms"]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="N for the serving runs")
    parser.add_argument("--round-streams", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="N for pure rounds")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per N")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--vos-optimized", action="store_true", help="compile the official predictor too")
    parser.add_argument("--reference-frames", type=int, default=30, help="official predictor frames (0: skip)")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds per N on pre-decoded frames (0: skip)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lead = StreamingTracker.build(
        random_init=True, image_size=args.image_size, device=args.device, compile=args.compile
    )
    capture = cv2.VideoCapture(str(CLIP))
    report: dict = {
        "device": describe(args.device),
        "image_size": args.image_size,
        "precision": lead.precision,
        "compile": args.compile,
        "model": "sam2.1_hiera_tiny (random weights), one object per stream",
        "clip": f"{CLIP.name} at {capture.get(cv2.CAP_PROP_FPS):g} fps, looped, one decoder per stream",
    }
    capture.release()
    if args.rounds:
        pure = pure_rounds(lead, args)
        report["pure_round_ms"] = pure
        if 1 in pure:
            report["pure_round_vs_one_stream"] = {n: t / pure[1] for n, t in pure.items()}
    report["phases"] = [asyncio.run(phase(lead, n, args)) for n in args.streams]
    one = next((p for p in report["phases"] if p["streams"] == 1), None)
    four = next((p for p in report["phases"] if p["streams"] == 4), None)
    if one and four and one["round_ms"]["full_batch_median"] and four["round_ms"]["full_batch_median"]:
        report["round_4_streams_vs_1"] = four["round_ms"]["full_batch_median"] / one["round_ms"]["full_batch_median"]
    if args.reference_frames:
        report["official_one_stream"] = reference(lead, args)
        if one:
            report["ours_vs_official_fps_one_stream"] = (
                one["fps_per_stream"]["mean"] / report["official_one_stream"]["fps"]
            )
    publish(report, args.out)


if __name__ == "__main__":
    main()
