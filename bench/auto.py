"""Automatic tracking, measured: detector time per frame on this machine, and, on the synthetic
traffic scene with the stand-in detector (true boxes, 10% misses, 0.05 false boxes a frame, 3%
jitter) and a perfect tracker, what the policy does at detection intervals 1, 5 and 15: crossings
found, how late (frames), id switches, false tracks and missed deaths.

    python -m bench.auto                 # bench/results/auto_cpu.json
    python -m bench.auto --skip-detectors
    python -m bench.auto --device cuda --out bench/results/auto_<gpu>.json   (bench/gpu_suite.sh)

Detector figures use seeded random weights (the same networks and input sizes as the real
checkpoints; speed does not depend on the weights), except MTCNN, whose real weights are read from
the facenet-pytorch wheel when it is in the cache (STREAMER_CACHE_DIR).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench.machine import describe, publish
from streamer.auto.detectors import load_detector
from streamer.config import AutoConfig
from tests.auto_scene import simulate

OUT = Path(__file__).parent / "results"


def detector_ms(name: str, device: str, frames: int = 5) -> dict:
    """Median ms per 1280x720 frame on ``device`` (after one warm-up call)."""
    try:
        detector = load_detector(name, device)
        weights = "real"
    except Exception:  # weights not downloadable here: the same network, seeded random weights
        detector = load_detector(name, device, random_weights=True)
        weights = "random"
    image = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    queries = ["person", "car"] if name == "owlv2" else []
    detector(image, queries)
    times = []
    for _ in range(frames):
        started = time.perf_counter()
        detector(image, queries)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - started))
    return {"median_ms": round(statistics.median(times), 1), "weights": weights, "frame": "1280x720"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-detectors", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=1800, help="scene frames per interval (30 fps)")
    parser.add_argument("--out", type=Path, default=OUT / "auto_cpu.json")
    args = parser.parse_args()
    report: dict = {
        "machine": describe(args.device),
        "scene": "synthetic:shapes traffic, 640x360, 4 shapes, 4 px/frame",
    }
    report["policy"] = [
        simulate(AutoConfig(enabled=True, every_frames=k), interval=k, frames=args.frames).to_dict() for k in (1, 5, 15)
    ]
    if not args.skip_detectors:
        report["detectors"] = {name: detector_ms(name, args.device) for name in ("rtdetr", "owlv2", "faces")}
    publish(report, args.out)


if __name__ == "__main__":
    main()
