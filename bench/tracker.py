"""Tracker benchmark: our StreamingTracker against the official SAM2VideoPredictor, same run.

Per-frame time (median, p90) with 1 and 3 objects and the marginal cost of each extra object,
on the same frames of a real clip with the same (seeded random) weights; then process memory
over a long run of each, in separate processes so that one cannot hide the other's growth.

    python bench/tracker.py --image-size 256 --out bench/results/tracker_cpu_256.json
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch
from PIL import Image

from streamer import StreamingTracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from bench.stats import percentile  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "bedroom.mp4"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
CLICKS = [(0.45, 0.5), (0.75, 0.35), (0.2, 0.7)]


def clip_frames(count: int) -> list[np.ndarray]:
    """``count`` RGB frames of the clip, looping it, as JPEG round trips (what the official reads)."""
    capture = cv2.VideoCapture(str(CLIP))
    if not capture.isOpened():
        raise SystemExit(f"cannot read {CLIP}: the benchmarks use the real clips of ../shared/media")
    frames: list[np.ndarray] = []
    while len(frames) < count:
        ok, bgr = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        frames.append(cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return frames


def write_jpegs(frames: list[np.ndarray], folder: Path) -> None:
    for i, frame in enumerate(frames):
        cv2.imwrite(
            str(folder / f"{i:05d}.jpg"),
            cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 100],
        )


def read_jpegs(folder: Path, count: int) -> list[np.ndarray]:
    return [np.array(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(count)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(args: argparse.Namespace) -> StreamingTracker:
    return StreamingTracker.build(
        random_init=True,
        seed=0,
        image_size=args.image_size,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
    )


def official(tracker: StreamingTracker, args: argparse.Namespace):
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        CONFIG,
        None,
        device=args.device,
        hydra_overrides_extra=[f"++model.image_size={args.image_size}"],
        vos_optimized=args.vos_optimized,
    )
    predictor.load_state_dict(tracker.model.state_dict())
    return predictor


def _clicks(frame: np.ndarray, n: int) -> list[list[list[float]]]:
    h, w = frame.shape[:2]
    return [[[fx * w, fy * h]] for fx, fy in CLICKS[:n]]


def time_ours(tracker: StreamingTracker, frames: list[np.ndarray], n_obj: int, device: str) -> list[float]:
    tracker.reset()
    tracker.step(frames[0])
    for obj_id, click in enumerate(_clicks(frames[0], n_obj), start=1):
        tracker.add_prompt(obj_id, points=click, labels=[1])
    times = []
    for frame in frames[1:]:
        _sync(device)
        start = time.perf_counter()
        tracker.step(frame)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def time_official(predictor, folder: Path, frames: list[np.ndarray], n_obj: int, device: str) -> list[float]:
    state = predictor.init_state(str(folder), offload_video_to_cpu=True)
    for obj_id, click in enumerate(_clicks(frames[0], n_obj), start=1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=click, labels=[1])
    times = []
    _sync(device)
    start = time.perf_counter()
    for frame_index, _, masks in predictor.propagate_in_video(state):
        masks.cpu()  # the output a caller needs, as ours returns numpy
        _sync(device)
        now = time.perf_counter()
        if frame_index > 0:
            times.append(now - start)
        start = now
    return times


def summary(times: list[float], warmup: int) -> dict[str, float]:
    kept = sorted(times[warmup:])
    return {
        "median_ms": 1000 * statistics.median(kept),
        "p90_ms": 1000 * percentile(kept, 0.9),
        "frames": len(kept),
    }


def speed(args: argparse.Namespace) -> dict:
    frames = clip_frames(args.frames)
    results: dict = {"ours": {}, "official": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(frames, folder)
        frames = read_jpegs(folder, len(frames))
        tracker = build(args)
        predictor = official(tracker, args)
        with torch.autocast("cuda", torch.bfloat16, enabled=args.precision == "bfloat16"):
            for n_obj in (0, 1, 2, 3):
                results["ours"][n_obj] = summary(time_ours(tracker, frames, n_obj, args.device), args.warmup)
                logging.info("ours, %d objects: %s", n_obj, results["ours"][n_obj])
            for n_obj in (1, 3):
                times = time_official(predictor, folder, frames, n_obj, args.device)
                results["official"][n_obj] = summary(times, args.warmup)
                logging.info("official, %d objects: %s", n_obj, results["official"][n_obj])
    ours, off = results["ours"], results["official"]
    results["marginal_object_ms"] = {
        "ours_first": ours[1]["median_ms"] - ours[0]["median_ms"],
        "ours_next": (ours[3]["median_ms"] - ours[1]["median_ms"]) / 2,
        "official_next": (off[3]["median_ms"] - off[1]["median_ms"]) / 2,
    }
    results["ratio_ours_to_official"] = {n: ours[n]["median_ms"] / off[n]["median_ms"] for n in (1, 3)}
    return results


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _long_ours(args: argparse.Namespace, out: mp.Queue) -> None:
    tracker = build(args)
    frames = clip_frames(201)
    tracker.step(frames[0])
    for obj_id, click in enumerate(_clicks(frames[0], 3), start=1):
        tracker.add_prompt(obj_id, points=click, labels=[1])
    marks = {}
    for i in range(1, args.long_frames + 1):
        tracker.step(frames[i % len(frames)])
        if i in (200, args.long_frames // 2, args.long_frames):
            marks[i] = {"rss_mb": _rss_mb(), "tracker_state_mb": tracker.memory_bytes() / 2**20}
            logging.info("ours after %d frames: %s", i, marks[i])
    out.put(
        {
            "frames": args.long_frames,
            "at": marks,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _long_official(args: argparse.Namespace, out: mp.Queue) -> None:
    tracker = build(args)
    predictor = official(tracker, args)
    frames = clip_frames(args.official_long_frames + 1)
    marks = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_jpegs(frames, Path(tmp))
        del frames
        base = _rss_mb()
        state = predictor.init_state(tmp, offload_video_to_cpu=True)
        marks["after_loading"] = {"rss_mb": _rss_mb(), "before_loading_rss_mb": base}
        for obj_id, click in enumerate(_clicks(np.zeros((540, 960, 3)), 3), start=1):
            predictor.add_new_points_or_box(state, 0, obj_id, points=click, labels=[1])
        for frame_index, _, _ in predictor.propagate_in_video(state):
            if frame_index in (200, args.official_long_frames):
                marks[frame_index] = {"rss_mb": _rss_mb()}
                logging.info("official after %d frames: %s", frame_index, marks[frame_index])
    out.put(
        {
            "frames": args.official_long_frames,
            "at": marks,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def in_process(target, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--vos-optimized", action="store_true", help="official predictor with torch.compile")
    parser.add_argument("--frames", type=int, default=30, help="frames per timing run (0: skip timing)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--long-frames", type=int, default=2000, help="our memory run (0: skip)")
    parser.add_argument("--long-image-size", type=int, default=None, help="image size of the memory runs")
    parser.add_argument("--official-long-frames", type=int, default=600, help="official memory run (0: skip)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore")

    report = {
        "device": describe(args.device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": "sam2.1_hiera_tiny (seeded random weights)",
        "image_size": args.image_size,
        "precision": args.precision,
        "compile": args.compile,
        "vos_optimized": args.vos_optimized,
        "clip": CLIP.name,
    }
    if args.frames:
        report["speed"] = speed(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.long_image_size:
        args.image_size = args.long_image_size
    report["memory"] = {"image_size": args.image_size, "objects": 3}
    if args.long_frames:
        report["memory"]["ours"] = in_process(_long_ours, args)
        args.out.write_text(json.dumps(report, indent=2))
    if args.official_long_frames:
        report["memory"]["official"] = in_process(_long_official, args)
    args.out.write_text(json.dumps(report, indent=2))
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
