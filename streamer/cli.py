"""Command line: track objects through a video with the streaming tracker.

Until the live server exists this is the product's front door: it reads a video frame by frame
(as a camera would deliver it), applies the prompts given on the command line to the first
frame, and writes the tracked video with the masks drawn in.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2

from .config import Config, load_config
from .errors import StreamerError
from .overlay import draw_masks
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
    parser.add_argument("--source", required=True, help="video file to track through")
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


def track_file(args: argparse.Namespace, tracker: StreamingTracker) -> int:
    """Track through ``args.source``; return the number of frames written."""
    capture = cv2.VideoCapture(args.source)
    if not capture.isOpened():
        raise StreamerError(f"cannot open video {args.source!r}: is the path right and the file a video?")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    count, started = 0, time.perf_counter()
    try:
        while not args.max_frames or count < args.max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            result = tracker.step(rgb)
            if count == 0:
                h, w = rgb.shape[:2]
                for obj_id, (x, y) in enumerate(args.point, start=1):
                    result = tracker.add_prompt(obj_id, points=[[x * w, y * h]], labels=[1])
                for obj_id, box in enumerate(args.box, start=len(args.point) + 1):
                    result = tracker.add_prompt(obj_id, box=[box[0] * w, box[1] * h, box[2] * w, box[3] * h])
                writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            drawn = draw_masks(rgb, result.masks, result.obj_ids, labels=True)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))  # type: ignore[union-attr]
            count += 1
            if count % 30 == 0:
                rate = count / (time.perf_counter() - started)
                logger.info("frame %d, %.1f fps, objects %s", count, rate, result.obj_ids)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return count


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        if not Path(args.source).is_file():
            raise StreamerError(f"video {args.source!r} not found")
        tracker = build_tracker(args, config)
        count = track_file(args, tracker)
    except StreamerError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    logger.info("tracked %d frames into %s", count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
