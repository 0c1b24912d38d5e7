"""Tracker benchmark: our StreamingTracker against the family's official video predictor, same run.

Per-frame time (median, p90) with 1 and 3 objects and the marginal cost of each extra object,
on the same frames of a real clip with the same (seeded random) weights, for each model and
input size asked for; then process memory over a long run of each, in separate processes so
that one cannot hide the other's growth. The official predictor runs in a subprocess with the
Python of a venv that has its ``sam2`` (this venv for SAM 2.1; one made with ``edgetam-dimos``
for EdgeTAM, as tests/official.py does).

    python bench/tracker.py --image-size 256 --out bench/results/tracker_cpu_256.json
    python bench/tracker.py --model edgetam --also sam2.1_hiera_tiny --image-size 512 1024 \
        --out bench/results/tracker_cpu_edgetam.json
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import resource
import statistics
import subprocess
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
from streamer.model.families import model_spec  # noqa: E402
from tests.official import EDGETAM_DIST, official_venv  # noqa: E402

CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "bedroom.mp4"
OFFICIAL_SCRIPT = Path(__file__).with_name("official_predictor.py")
EDGETAM_CONFIG = "configs/edgetam.yaml"  # inside edgetam-dimos
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


def build(args: argparse.Namespace, model: str, image_size: int) -> StreamingTracker:
    return StreamingTracker.build(
        model=model,
        random_init=True,
        seed=0,
        image_size=image_size,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
    )


class Official:
    """The official predictor of each family, each in the right venv, made once per run."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.pythons: dict[str, Path] = {"sam2.1": Path(sys.executable)}

    def python(self, family: str) -> Path:
        if family not in self.pythons:
            logging.info("making a venv with %s for the official EdgeTAM predictor", self.args.official_dist)
            self.pythons[family] = official_venv(self.work / f"venv-{family}", self.args.official_dist)
        return self.pythons[family]

    def run(self, tracker: StreamingTracker, image_size: int, **job: object) -> dict:
        assert tracker.spec is not None
        family = tracker.spec.family.key
        weights = self.work / "weights.pt"
        torch.save(tracker.model.state_dict(), weights)
        job = {
            "family": family,
            "config": EDGETAM_CONFIG if family == "edgetam" else tracker.spec.config,
            "weights": str(weights),
            "image_size": image_size,
            "device": self.args.device,
            "bfloat16": self.args.precision == "bfloat16",
            "vos_optimized": self.args.vos_optimized,
            "objects": [1, 3],
            "long_frames": None,
            **job,
        }
        job_path, out_path = self.work / "job.json", self.work / "out.json"
        job_path.write_text(json.dumps(job))
        command = [self.python(family), OFFICIAL_SCRIPT, job_path, out_path]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the official {family} predictor failed:\n{done.stderr[-3000:]}")
        return json.loads(out_path.read_text())


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


def summary(times: list[float], warmup: int) -> dict[str, float]:
    kept = sorted(times[warmup:])
    return {
        "median_ms": 1000 * statistics.median(kept),
        "p90_ms": 1000 * percentile(kept, 0.9),
        "frames": len(kept),
    }


def speed(args: argparse.Namespace, official: Official, model: str, image_size: int) -> dict:
    frames = clip_frames(args.frames)
    results: dict = {"ours": {}, "official": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(frames, folder)
        frames = read_jpegs(folder, len(frames))
        tracker = build(args, model, image_size)
        with torch.autocast("cuda", torch.bfloat16, enabled=args.precision == "bfloat16"):
            for n_obj in (0, 1, 2, 3):
                results["ours"][n_obj] = summary(time_ours(tracker, frames, n_obj, args.device), args.warmup)
                logging.info("%s %d px, ours, %d objects: %s", model, image_size, n_obj, results["ours"][n_obj])
        clicks = [click[0] for click in _clicks(frames[0], 3)]
        for n_obj, times in official.run(tracker, image_size, frames=str(folder), clicks=clicks)["times"].items():
            found = results["official"][int(n_obj)] = summary(times, args.warmup)
            logging.info("%s %d px, official, %s objects: %s", model, image_size, n_obj, found)
    ours, off = results["ours"], results["official"]
    results["marginal_object_ms"] = {
        "ours_first": ours[1]["median_ms"] - ours[0]["median_ms"],
        "ours_next": (ours[3]["median_ms"] - ours[1]["median_ms"]) / 2,
        "official_next": (off[3]["median_ms"] - off[1]["median_ms"]) / 2,
    }
    results["ratio_ours_to_official"] = {n: ours[n]["median_ms"] / off[n]["median_ms"] for n in (1, 3)}
    results["ours_fps"] = {n: 1000 / ours[n]["median_ms"] for n in (1, 3)}
    return results


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _long_ours(args: argparse.Namespace, out: mp.Queue) -> None:
    tracker = build(args, args.model, args.long_image_size)
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


def long_official(args: argparse.Namespace, official: Official) -> dict:
    tracker = build(args, args.model, args.long_image_size)
    frames = clip_frames(args.official_long_frames + 1)
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(frames, Path(tmp))
        clicks = [click[0] for click in _clicks(frames[0], 3)]
        del frames
        found = official.run(tracker, args.long_image_size, frames=tmp, clicks=clicks, objects=[], long_frames=tmp)
    return {"frames": args.official_long_frames, "rss_mb": found["memory"]}


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
    parser.add_argument("--model", default="sam2.1_hiera_tiny", help="a registered model (the memory runs use it)")
    parser.add_argument("--also", nargs="*", default=[], help="more models timed in the same run")
    parser.add_argument("--image-size", type=int, nargs="+", default=[256], help="input sizes timed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--vos-optimized", action="store_true", help="official SAM 2.1 predictor with torch.compile")
    parser.add_argument(
        "--official-dist", default=EDGETAM_DIST, help="what pip installs for the official EdgeTAM (offline: a wheel)"
    )
    parser.add_argument("--frames", type=int, default=30, help="frames per timing run (0: skip timing)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--long-frames", type=int, default=2000, help="our memory run (0: skip)")
    parser.add_argument("--long-image-size", type=int, default=None, help="image size of the memory runs")
    parser.add_argument("--official-long-frames", type=int, default=600, help="official memory run (0: skip)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.long_image_size = args.long_image_size or args.image_size[0]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore")

    report = {
        "device": describe(args.device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "weights": "seeded random",
        "precision": args.precision,
        "compile": args.compile,
        "vos_optimized": args.vos_optimized,
        "clip": CLIP.name,
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        official = Official(args, Path(work))
        if args.frames:
            for model in [args.model, *args.also]:
                for image_size in args.image_size:
                    run = {"model": model_spec(model).title, "name": model, "image_size": image_size}
                    run["speed"] = speed(args, official, model, image_size)
                    report["runs"].append(run)
                    args.out.write_text(json.dumps(report, indent=2))
        report["memory"] = {"model": args.model, "image_size": args.long_image_size, "objects": 3}
        if args.long_frames:
            report["memory"]["ours"] = in_process(_long_ours, args)
            args.out.write_text(json.dumps(report, indent=2))
        if args.official_long_frames:
            report["memory"]["official"] = long_official(args, official)
    args.out.write_text(json.dumps(report, indent=2))
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
