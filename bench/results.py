"""Cost of results as data: measuring one tracked frame's objects, per object, at 720p and 1080p.

What the live server does for each tracked frame while someone consumes results: boxes, areas
and centroids from the masks at the display's mask width (480 px), then, if asked for, COCO RLE
at the source size or polygons, and the JSON text the outputs send (``Tracked.message``). The
masks are the true masks of ``synthetic:shapes`` frames (three textured shapes of 12-18% of the
frame's height, partly hiding each other), as ``OracleTracker`` hands them over; 10 objects are
the three shapes repeated. The offline case (``--out``: logits at the frame's own size) is timed
too. Goals (issue G): at most 1 ms per object without masks, 3 ms with RLE.

    python bench/results.py --out bench/results/results_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from bench.stats import percentile  # noqa: E402
from streamer.config import MASK_FORMATS, EventsConfig  # noqa: E402
from streamer.outputs.events import EventDetector  # noqa: E402
from streamer.outputs.results import Tracked  # noqa: E402
from streamer.sources.shapes import ShapesSource  # noqa: E402
from tests.oracle import OracleTracker  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
ZONES = {"cam": {"lower": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], "left": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}}


def frames(width: int, height: int, objects: int, mask_width: int | None, count: int) -> list[Tracked]:
    """``count`` consecutive tracked frames with ``objects`` objects, as the tracker hands them over."""
    source = ShapesSource(width, height, count=3, seed=3)
    oracle = OracleTracker(source)
    oracle.step(source.image(0))
    for obj_id in range(objects):
        oracle._objects[obj_id + 1] = obj_id % 3
    made = []
    for n in range(count):
        result = oracle.step_round([oracle], [source.image(n)], mask_width=mask_width)[0]
        made.append(Tracked.of("cam", result, n, time.time() + n / 30, (height, width)))
    return made


def time_format(tracked: list[Tracked], masks: str, repeat: int) -> dict:
    """Per object, ms: measuring and JSON of fresh frames (nothing cached), plus events."""
    per_object = []
    objects = len(tracked[0].obj_ids)
    for _ in range(repeat):
        detector = EventDetector("cam", EventsConfig(zones=ZONES))
        for frame in tracked:
            fresh = dataclasses.replace(frame)  # nothing measured yet
            started = time.perf_counter()
            fresh.message(masks)
            detector.update(fresh.results())
            per_object.append(1000 * (time.perf_counter() - started) / objects)
    per_object.sort()
    return {
        "median_ms_per_object": round(statistics.median(per_object), 3),
        "p90_ms_per_object": round(percentile(per_object, 0.9), 3),
        "samples": len(per_object),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cells = []
    for label, (width, height) in SIZES.items():
        for case, mask_width in (("live", 480), ("offline", None)):
            for objects in (1, 3, 10):
                tracked = frames(width, height, objects, mask_width, 20)
                row = {"size": label, "case": case, "mask_width": mask_width or width, "objects": objects}
                for masks in MASK_FORMATS:
                    row[masks] = time_format(tracked, masks, args.repeat)
                row["json_bytes"] = {m: len(tracked[0].message(m)) for m in MASK_FORMATS}
                cells.append(row)
                summary = ", ".join(f"{m} {row[m]['median_ms_per_object']:.3f}" for m in MASK_FORMATS)
                print(f"{label} {case} {objects} objects: ms/object {summary}", flush=True)
    result = {
        "bench": "results",
        "device": describe(),
        "date": time.strftime("%Y-%m-%d"),
        "what": "ms per object per tracked frame: measuring (box, area, centroid, mask format), JSON, events with "
        "two zones; true masks of synthetic:shapes frames; live = logits at 480 px wide, offline = at the frame's size",
        "goals_ms_per_object": {"none": 1.0, "rle": 3.0},
        "cells": cells,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
