"""Masks between tracked frames, against ground truth: how well the displayed masks cover the
objects on every displayed frame, with ``mask_motion`` hold and flow, and what flow costs.

The stream is ``synthetic:shapes`` (three textured shapes, 1280x720 at 30 fps, their true masks
known) served live by the product's own pipeline; the tracker is ``OracleTracker``, a stand-in
that returns the true masks of the frames it takes after a delay of ``ratio`` frame times: a
tracker:display rate of 1:ratio. Every published frame's masks (what the encoder would draw) are
compared with that frame's truth, for speeds of 2, 5 and 10 px/frame and ratios 2, 5 and 10.

A second part replays the same scene frame by frame (no timing) to time the display itself per
720p frame, and to compare moving each object by its fitted motion (the product) with warping
the masks along the dense flow (what the issue first proposed), which leaves trailing edges
behind.

    python bench/display.py --out bench/results/display_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe, publish  # noqa: E402
from streamer.config import DisplayConfig  # noqa: E402
from streamer.live import motion  # noqa: E402
from streamer.live.display import Display, Masks  # noqa: E402
from streamer.live.landing import PromptRequest  # noqa: E402
from streamer.live.pipeline import Pipeline  # noqa: E402
from streamer.model.preprocess import scaled_size  # noqa: E402
from streamer.sources import Frame  # noqa: E402
from streamer.sources.shapes import ShapesScene, ShapesSource  # noqa: E402
from tests.oracle import OracleTracker  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 30.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


async def live_cell(mode: str, speed: float, ratio: int, seconds: float) -> dict:
    """Serve the shapes live with a tracker ``ratio`` times slower than the camera; IoU of every
    published frame's masks."""
    source = ShapesSource(WIDTH, HEIGHT, fps=FPS, speed=speed, count=3, seed=0).start()
    oracle = OracleTracker(source, delay=ratio / FPS)
    pipeline = Pipeline(display=DisplayConfig(mask_motion=mode))
    stream = pipeline.add_stream("shapes", source, oracle)
    pipeline.start()
    shown = []
    try:
        with stream.watching():  # as an encoder does for its viewers
            first = await stream.next_output(-1)
            for obj_id, (x, y) in enumerate(source.scene.centres(first.index)):
                click = PromptRequest(obj_id, points=((x / WIDTH, y / HEIGHT),), labels=(1,), shown=first.index)
                await stream.prompt(click)
            seq = stream.latest.seq  # type: ignore[union-attr]
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                output = await stream.next_output(seq)
                seq = output.seq
                shown.append(output)
    finally:
        await pipeline.stop()
    scores, ages, skipped = [], [], 0
    for previous, output in zip(shown, shown[1:]):
        skipped += output.index - previous.index - 1
    for output in shown:
        truth = source.scene.masks(output.index)
        scores += [iou(mask, truth[obj_id]) for obj_id, mask in zip(output.obj_ids, output.masks)]
        ages.append(output.mask_age_ms)
    return {
        "mean_iou": statistics.mean(scores),
        "frames_shown": len(shown),
        "camera_frames_not_shown": skipped,
        "mask_age_ms_median": statistics.median(a for a in ages if a is not None),
    }


def replay_cost(mode: str, objects: int, frames: int = 90, every: int = 5) -> dict:
    """CPU ms per 720p frame of ``Display.show`` and of drawing its result, frame by frame."""
    scene = ShapesScene(WIDTH, HEIGHT, 5, count=objects, seed=3)
    display = Display(DisplayConfig(mask_motion=mode))
    size = scaled_size(HEIGHT, WIDTH, display.config.mask_width)
    show = draw = 0.0
    for n in range(frames):
        image, _ = scene.render(n)
        if n % every == 0:
            display.set_masks(_truth(scene, n, size))
        started = time.process_time()
        output = display.show(Frame(image, n, n / FPS, n / FPS))
        show += time.process_time() - started
        started = time.process_time()
        output.image  # noqa: B018 - drawing is the cost measured
        draw += time.process_time() - started
    return {"show_cpu_ms": 1000 * show / frames, "draw_cpu_ms": 1000 * draw / frames}


def _truth(scene: ShapesScene, n: int, size: tuple[int, int]) -> Masks:
    layers = [cv2.resize(m.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA) - 0.5 for m in scene.masks(n)]
    return Masks(n, n / FPS, list(range(len(layers))), 16 * np.stack(layers))


def replay_iou(speed: float, every: int, dense: bool, frames: int = 90) -> float:
    """Mean IoU when masks of frame ``n - every`` arrive at frame ``n``: moved by each object's
    fitted motion (the product's ``Display``) or warped along the chained dense flow."""
    scene = ShapesScene(WIDTH, HEIGHT, speed, count=3, seed=0)
    display = Display()
    size = scaled_size(HEIGHT, WIDTH, display.config.mask_width)
    flow_size = scaled_size(HEIGHT, WIDTH, display.config.flow_width)
    grid = np.dstack(np.meshgrid(np.arange(size[1], dtype=np.float32), np.arange(size[0], dtype=np.float32)))
    grays, scores, masks, mapping = {}, [], None, None
    for n in range(frames):
        image, truth = scene.render(n)
        grays[n] = motion.small_gray(image, flow_size)
        if n >= every and n % every == 0:
            masks, mapping = _truth(scene, n - every, size), None
            display.set_masks(masks)
            for k in range(n - every + 1, n):
                mapping = _chain(mapping, _backward(grays, k, size), grid)
        if dense and masks is not None and n > masks.frame:
            mapping = _chain(mapping, _backward(grays, n, size), grid)
        output = display.show(Frame(image, n, n / FPS, n / FPS))
        if masks is None:
            continue
        if dense:
            logits = (
                masks.logits
                if mapping is None
                else np.stack([cv2.remap(x, mapping, None, cv2.INTER_LINEAR, borderValue=-32) for x in masks.logits])
            )
            shown = [cv2.resize(x, (WIDTH, HEIGHT)) > 0 for x in logits]
        else:
            shown = list(output.masks)
        scores += [iou(mask, t) for mask, t in zip(shown, truth)]
    return statistics.mean(scores)


def _backward(grays: dict[int, np.ndarray], k: int, size: tuple[int, int]) -> np.ndarray:
    """Where frame ``k``'s pixels were on frame ``k - 1``, at the masks' size."""
    flow = motion.forward_flow(grays[k], grays[k - 1])
    return cv2.resize(flow, size[::-1]) * (size[1] / flow.shape[1])


def _chain(mapping: np.ndarray | None, backward: np.ndarray, grid: np.ndarray) -> np.ndarray:
    step = grid + backward
    return step if mapping is None else cv2.remap(mapping, step, None, cv2.INTER_LINEAR, borderValue=-1e4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per cell")
    parser.add_argument("--speeds", type=float, nargs="+", default=[2, 5, 10])
    parser.add_argument("--ratios", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cells = []
    for speed in args.speeds:
        for ratio in args.ratios:
            cell: dict = {"speed_px_per_frame": speed, "tracker_to_display": f"1:{ratio}"}
            for mode in ("hold", "flow"):
                cell[mode] = asyncio.run(live_cell(mode, speed, ratio, args.seconds))
            cell["flow_beats_hold"] = cell["flow"]["mean_iou"] > cell["hold"]["mean_iou"]
            cells.append(cell)
            sys.stderr.write(
                f"{speed} px/frame 1:{ratio}: hold {cell['hold']['mean_iou']:.3f} flow {cell['flow']['mean_iou']:.3f}\n"
            )
    target = next((c for c in cells if c["speed_px_per_frame"] == 5 and c["tracker_to_display"] == "1:5"), None)
    report = {
        "device": describe(),
        "scene": f"synthetic:shapes {WIDTH}x{HEIGHT} at {FPS:g} fps, 3 textured shapes (occlusions included)",
        "tracker": "OracleTracker: true masks of the frames it takes, after ratio/fps seconds",
        "cells": cells,
        "target_flow_iou_5px_1to5": None if target is None else target["flow"]["mean_iou"],
        "flow_above_hold_everywhere": all(c["flow_beats_hold"] for c in cells),
        "cost_per_720p_frame": {
            f"{mode}_{objects}_objects": replay_cost(mode, objects) for mode in ("hold", "flow") for objects in (1, 3)
        },
        "object_motion_vs_dense_warp_iou": {
            f"{speed:g}px_1to{every}": {
                "object_motion": replay_iou(speed, every, dense=False),
                "dense_warp": replay_iou(speed, every, dense=True),
            }
            for speed, every in ((5, 5), (10, 10))
        },
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
