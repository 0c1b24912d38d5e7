"""Command line: track objects through a video or a live source with the streaming tracker.

Until the live server exists this is the product's front door: it applies the prompts given on
the command line to the first frame and writes the tracked video with the masks drawn in. A
video file is tracked frame by frame; a live source (camera, stream, synthetic) always hands the
tracker its newest frame, as the live product will.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np

from .config import Config, load_config
from .errors import StreamerError
from .overlay import draw_masks
from .sources import open_source
from .tracker import StreamingTracker
from .weights import MODELS

logger = logging.getLogger("streamer")


def _floats(text: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers in 0..1, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_stream.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        required=True,
        help="video file, camera ('0', 'webcam:0'), rtsp:// or http(s):// URL, or 'synthetic'",
    )
    parser.add_argument("--config", help="YAML file in configs/ (flags override it)")
    parser.add_argument("--model", choices=sorted(MODELS), help="SAM 2.1 model size")
    parser.add_argument("--checkpoint", help="official .pt file (default: download to the cache)")
    parser.add_argument(
        "--random-weights", action="store_true", help="seeded random weights: smoke tests only"
    )
    parser.add_argument("--image-size", type=int, help="model input size (default: the model's 1024)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        type=lambda t: _floats(t, 2),
        metavar="X,Y",
        help="a click on the first frame, 0..1 of width and height; each one a new object",
    )
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        type=lambda t: _floats(t, 4),
        metavar="X0,Y0,X1,Y1",
        help="a box on the first frame, 0..1 of width and height; each one a new object",
    )
    parser.add_argument("--out", default="tracked.mp4", help="where to write the tracked video")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    return parser.parse_args(argv)


def build_tracker(args: argparse.Namespace, config: Config) -> StreamingTracker:
    model = config.model
    return StreamingTracker.build(
        model=args.model or model.name,
        checkpoint=args.checkpoint or model.checkpoint,
        device=args.device or model.device,
        random_init=args.random_weights or model.random_weights,
        image_size=args.image_size or model.image_size,
        precision=model.precision,
        **vars(config.tracker),
    )


async def _file_frames(path: str) -> AsyncIterator[np.ndarray]:
    """Every frame of a video file, in order (offline tracking wants them all)."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise StreamerError(f"cannot open video {path!r}: is it a video file?")
    try:
        while True:
            ok, bgr = await asyncio.to_thread(capture.read)
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


async def _live_frames(spec: str) -> AsyncIterator[np.ndarray]:
    async with open_source(spec) as source:
        async for frame in source:
            yield frame.image


async def track(args: argparse.Namespace, tracker: StreamingTracker) -> int:
    """Track through ``args.source`` into ``args.out``; return the number of frames written."""
    is_file = Path(args.source).is_file()
    frames = _file_frames(args.source) if is_file else _live_frames(args.source)
    fps = 30.0
    if is_file:
        fps = cv2.VideoCapture(args.source).get(cv2.CAP_PROP_FPS) or fps
    writer = None
    count, started = 0, time.perf_counter()
    try:
        async for rgb in frames:
            result = await asyncio.to_thread(tracker.step, rgb)
            if writer is None:
                h, w = rgb.shape[:2]
                for obj_id, (x, y) in enumerate(args.point, start=1):
                    result = tracker.add_prompt(obj_id, points=[[x * w, y * h]], labels=[1])
                for obj_id, box in enumerate(args.box, start=len(args.point) + 1):
                    result = tracker.add_prompt(obj_id, box=[box[0] * w, box[1] * h, box[2] * w, box[3] * h])
                writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            drawn = draw_masks(rgb, result.masks, result.obj_ids, labels=True)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            count += 1
            if count % 30 == 0:
                rate = count / (time.perf_counter() - started)
                logger.info("frame %d, %.1f fps, objects %s", count, rate, result.obj_ids)
            if args.max_frames and count >= args.max_frames:
                break
    finally:
        await frames.aclose()
        if writer is not None:
            writer.release()
    return count


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        tracker = build_tracker(args, config)
        count = asyncio.run(track(args, tracker))
    except (StreamerError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    logger.info("tracked %d frames into %s", count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
