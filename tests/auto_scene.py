"""Automatic tracking against ground truth (tests and benchmarks only, never for users).

``StandInDetector`` stands in for a real detector on a ``synthetic:shapes`` traffic scene: it
returns the true boxes of the shapes on the frame it is handed, labelled with their kinds, with
injected misses, false positives and jitter. ``simulate`` drives the real ``AutoPolicy`` through
a scene with a perfect tracker (each object's mask is the true mask of the shape's crossing it was
started on, as ``OracleTracker`` does) and scores what it did: births found, how late, id
switches, false tracks and missed deaths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from streamer.auto.detections import Detections
from streamer.auto.policy import AutoPolicy, Observed
from streamer.config import AutoConfig
from streamer.sources.shapes import ShapesScene, ShapesSource

NAME = "tests.auto_scene:StandInDetector"  # the name a test's AutoConfig gives the stand-in (never imported)
MIN_PIXELS = 400  # a shape showing fewer pixels than this is not detectable


def true_boxes(scene: ShapesScene, n: int) -> list[tuple[int, str, np.ndarray]]:
    """(instance, label, box) of every shape showing at least MIN_PIXELS on frame ``n``."""
    masks, instances = scene.masks(n), scene.instances(n)
    found = []
    for shape, (mask, instance) in enumerate(zip(masks, instances)):
        if instance is None or mask.sum() < MIN_PIXELS:
            continue
        x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
        found.append((instance, scene.labels[shape], np.array([x, y, x + w, y + h], np.float32)))
    return found


class StandInDetector:
    """True boxes of a shapes scene's frames, with ``miss`` (probability a shape is not found),
    ``false_rate`` (false boxes per frame, on average) and ``jitter`` (box edges moved by this
    fraction of the box's size)."""

    labels: tuple[str, ...] | None = ("disc", "square")
    device = "cpu"

    def __init__(
        self, source: ShapesSource, *, miss: float = 0.0, false_rate: float = 0.0, jitter: float = 0.0, seed: int = 0
    ) -> None:
        self.source, self.miss, self.false_rate, self.jitter = source, miss, false_rate, jitter
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self, image: np.ndarray, queries: Sequence[str] = ()) -> Detections:
        import threading

        self.threads.add(threading.current_thread().name)
        self.calls += 1
        n = self.source.frame_number(image)
        if n is None:
            raise ValueError("the stand-in detector was handed a frame its scene no longer remembers")
        return self.detect(n, queries)

    def detect(self, n: int, queries: Sequence[str] = ()) -> Detections:
        scene, rng = self.source.scene, self.rng
        boxes, labels, scores = [], [], []
        for _, label, box in true_boxes(scene, n):
            if rng.random() < self.miss:
                continue
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
            boxes.append(box + rng.normal(0, self.jitter, 4).astype(np.float32) * size)
            labels.append(label)
            scores.append(float(rng.uniform(0.75, 0.95)))
        for _ in range(rng.poisson(self.false_rate)):
            w, h = rng.uniform(0.05, 0.2) * scene.width, rng.uniform(0.05, 0.2) * scene.height
            x, y = rng.uniform(0, scene.width - w), rng.uniform(0, scene.height - h)
            boxes.append(np.array([x, y, x + w, y + h], np.float32))
            labels.append(str(rng.choice(["disc", "square"])))
            scores.append(float(rng.uniform(0.55, 0.8)))
        found = Detections(np.array(boxes, np.float32).reshape(-1, 4), tuple(labels), np.array(scores, np.float32))
        return found.only(list(queries)) if queries else found


@dataclass
class Score:
    """What automatic tracking did on a scene, against its ground truth."""

    interval: int
    frames: int
    instances: int  # shape crossings that were detectable
    births_found: int  # of them, those an announced object followed
    late_births_mean: float  # frames from first detectable to announced (found ones)
    late_births_max: int
    id_switches: int  # extra announced objects on one crossing
    false_tracks: int  # announced objects following nothing
    missed_deaths: int  # objects still alive `grace` frames after their crossing left
    runs: int
    reseeds: int
    ends: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def simulate(
    config: AutoConfig,
    *,
    interval: int,
    frames: int = 900,
    fps: float = 30.0,
    miss: float = 0.1,
    false_rate: float = 0.05,
    jitter: float = 0.03,
    seed: int = 0,
    count: int = 4,
    speed: float = 4.0,
    mask_width: int = 160,
    grace_s: float | None = None,
) -> Score:
    """Run the policy every ``interval`` frames of a traffic scene, with a perfect tracker."""
    source = ShapesSource(640, 360, fps=fps, speed=speed, count=count, seed=seed, traffic=True)
    scene = source.scene
    detector = StandInDetector(source, miss=miss, false_rate=false_rate, jitter=jitter, seed=seed)
    top = [0]

    def next_id() -> int:
        top[0] += 1
        return top[0]

    policy = AutoPolicy(config, next_id)
    followed: dict[int, tuple[int, int | None]] = {}  # obj_id -> (shape, instance) or (-1, None): nothing
    bindings: dict[int, tuple[int, int | None]] = {}  # the same, for every object ever started
    announced: dict[int, int] = {}  # obj_id -> frame announced
    alive_after: dict[int, int] = {}  # obj_id -> frames it lived on after its crossing left
    first_seen: dict[int, int] = {}  # instance -> first detectable frame
    last_seen: dict[int, int] = {}
    runs = reseeds = 0
    ends: dict[str, int] = {}
    h = int(round(mask_width * scene.height / scene.width))
    for n in range(frames):
        truth = scene.masks(n)
        present = scene.instances(n)
        for instance, _, _ in true_boxes(scene, n):
            first_seen.setdefault(instance, n)
            last_seen[instance] = n
        obj_ids = list(followed)
        layers = []
        for obj_id in obj_ids:
            shape, instance = followed[obj_id]
            on = shape >= 0 and present[shape] == instance and instance is not None
            layer = truth[shape] if on else np.zeros(truth.shape[1:], bool)
            layers.append(cv2.resize(layer.view(np.uint8), (mask_width, h), interpolation=cv2.INTER_NEAREST) > 0)
            if not on and obj_id in announced:
                alive_after[obj_id] = alive_after.get(obj_id, 0) + 1
        if n % interval:
            continue
        masks = np.stack(layers) if layers else np.zeros((0, h, mask_width), bool)
        observed = Observed(obj_ids, masks, masks.any(axis=(1, 2)), (scene.height, scene.width), n / fps)
        plan = policy.update(detector.detect(n), observed)
        runs += 1
        reseeds += len(plan.reseeds)
        for end in plan.ends:
            ends[end.reason] = ends.get(end.reason, 0) + 1
            followed.pop(end.obj_id, None)
        for obj_id in plan.announced:
            announced[obj_id] = n
        for birth in plan.births:
            followed[birth.obj_id] = bindings[birth.obj_id] = _bound(truth, present, birth.box)
            if birth.announced:
                announced[birth.obj_id] = n
    grace = int(round((grace_s if grace_s is not None else config.absent_s + 1.0) * fps)) + interval
    by_instance: dict[int, list[int]] = {}
    false_tracks = 0
    for obj_id in announced:
        _, instance = bindings[obj_id]
        if instance is None:
            false_tracks += 1
        else:
            by_instance.setdefault(instance, []).append(obj_id)
    counted = {i for i, first in first_seen.items() if last_seen[i] - first >= 2 * interval}
    found = {i for i in counted if i in by_instance}
    lateness = [announced[min(by_instance[i])] - first_seen[i] for i in found]
    return Score(
        interval=interval,
        frames=frames,
        instances=len(counted),
        births_found=len(found),
        late_births_mean=round(float(np.mean(lateness)), 1) if lateness else 0.0,
        late_births_max=max(lateness, default=0),
        id_switches=sum(len(objs) - 1 for objs in by_instance.values()),
        false_tracks=false_tracks,
        missed_deaths=sum(1 for frames_after in alive_after.values() if frames_after > grace),
        runs=runs,
        reseeds=reseeds,
        ends=ends,
    )


def _bound(truth: np.ndarray, present: list[int | None], box: tuple[float, ...]) -> tuple[int, int | None]:
    """What a perfect tracker prompted with ``box`` follows: the shape most inside it (as
    ``OracleTracker``), or nothing."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = truth[:, max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)].sum(axis=(1, 2))
    if not len(inside) or inside.max() == 0:
        return (-1, None)
    shape = int(inside.argmax())
    return (shape, present[shape])
