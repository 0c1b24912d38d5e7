"""``sam2-stream export``: a results file and its video, or a recording, as a COCO or YOLO-seg dataset
(``outputs/dataset.py``). Imports neither torch nor the server: it runs where they are not."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .outputs.dataset import FORMATS, ExportError, ExportJob, export

logger = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sam2-stream export",
        description="Write a results file's tracked frames and masks as a dataset: the frames as images, "
        "the masks with their track ids and labels (COCO with video fields, or YOLO-seg).",
    )
    parser.add_argument(
        "results",
        type=Path,
        help="a results file (--results, with --results-masks rle or polygon), or a recording's .json (--record)",
    )
    parser.add_argument(
        "--video", type=Path, help="the video these results were tracked on (a recording: its own MP4, by default)"
    )
    parser.add_argument("--frames", type=Path, required=True, metavar="DIR", help="the dataset's folder (made)")
    parser.add_argument("--format", choices=FORMATS, default="coco")
    parser.add_argument("--stream", help="the stream to export (default: the file's only one)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="every Nth tracked frame (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        job = ExportJob(args.results, args.video, args.frames, args.format, args.stream, args.every)
        done = export(job)
    except ExportError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("exported %d frames, %d masks of %d tracks: %s", done.images, done.annotations, done.tracks, done.path)
    return 0
