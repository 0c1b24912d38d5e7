"""From detections to objects: which detections start objects, which objects they keep alive or
re-prompt, and which objects end, and why.

An ``AutoPolicy`` follows one stream. After each detector run it gets the detections and the
tracker's own view of the very frame the detector looked at (``Observed``: each object's mask,
presence and origin) and returns a ``Plan`` for the stream to apply:

- **Matching** is per label (an object with no label yet, one a person clicked, matches any and
  takes the detection's label), greedy by box IoU between a detection and the box of an object's
  mask, at least ``match_iou``. Detections down to half the start threshold keep objects alive,
  as ByteTrack's low-score pass does: a person half hidden scores less but is still there.
- **Births**: a detection scoring at least ``threshold`` that matched nothing, and that the
  tracked masks together do not already ``cover``, becomes a new object (a box prompt on that
  frame); several overlapping detections start one object.
- **Probation**: a new object is tracked at once but announced (in results, events, MQTT) only
  once ``probation`` detections (its first included) have matched it; missed twice before that,
  it ends silently (``probation``). So one false detection is never an event.
- **Re-seeding**: a matched automatic object whose mask box has drifted from its detection (IoU
  below ``reseed_iou``) is re-prompted with the detection's box, at most every ``reseed_every``
  runs (SAM 3 re-seeds its memory from detections in the same way).
- **Deaths**: an automatic object undetected for ``end_after`` runs ends (``undetected``), as
  does one out of sight (presence score at most 0) for ``absent_s`` seconds (``absent``).
- **Merges**: two objects whose masks overlap by ``merge_iou`` or more are one thing: the newer
  ends (``merged``, into the other), unless it is a person's and the other is not.
- Objects a person added (a click, a box, a text prompt) are never ended by the detector unless
  ``end_clicked`` says so; they are matched (and take labels) like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import AutoConfig
from .detections import Detections, box_iou, mask_box

PERSON_ORIGINS = ("click", "box", "text")  # objects a person asked for
PROBATION_MISSES = 2  # misses in a row that end an object still on probation
KEEP_ALIVE_FACTOR = 0.5  # detections down to this fraction of the start threshold keep objects alive
BIRTH_NMS_IOU = 0.5  # detections of one label overlapping this much start one object


@dataclass(frozen=True)
class Observed:
    """The tracker's objects on the frame the detector looked at."""

    obj_ids: Sequence[int]
    masks: np.ndarray  # bool [N, h, w], any size with the frame's aspect
    present: np.ndarray  # bool [N]: the presence score is above 0
    size: tuple[int, int]  # the frame's (height, width)
    time: float  # capture time, seconds (any clock, the same every run)
    origins: Sequence[str] = ()  # each object's origin, when known (else: a click)


@dataclass(frozen=True)
class Birth:
    obj_id: int
    box: tuple[float, float, float, float]  # frame pixels
    label: str
    score: float
    origin: str
    announced: bool  # already past probation (a text prompt, or probation 1)


@dataclass(frozen=True)
class Reseed:
    obj_id: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class End:
    obj_id: int
    reason: str  # undetected, absent, merged, probation
    into: int | None = None  # merged: the object it was merged into


@dataclass
class Plan:
    """What one detector run asks of the stream."""

    births: list[Birth] = field(default_factory=list)
    reseeds: list[Reseed] = field(default_factory=list)
    ends: list[End] = field(default_factory=list)
    announced: list[int] = field(default_factory=list)  # objects past probation with this run
    labelled: dict[int, tuple[str, float]] = field(default_factory=dict)  # new or better labels, and scores


@dataclass
class _Followed:
    origin: str
    label: str | None
    score: float | None
    born: int  # the run it was first seen in
    hits: int = 0
    misses: int = 0
    reseeded: int = -(10**9)
    announced: bool = True
    absent_since: float | None = None
    protected: bool = False  # a person prompted it since: theirs now

    @property
    def persons(self) -> bool:
        return self.protected or self.origin in PERSON_ORIGINS


class AutoPolicy:
    """One stream's automatic objects, run after run. ``next_id()`` gives a free object id."""

    def __init__(self, config: AutoConfig, next_id: Callable[[], int]) -> None:
        self.config, self.next_id = config, next_id
        self.run = 0
        self._objects: dict[int, _Followed] = {}

    def label_of(self, obj_id: int) -> str | None:
        followed = self._objects.get(obj_id)
        return None if followed is None else followed.label

    def on_probation(self, obj_id: int) -> bool:
        followed = self._objects.get(obj_id)
        return followed is not None and not followed.announced

    def protect(self, obj_id: int) -> None:
        """A person prompted ``obj_id``: the detector no longer ends it (unless ``end_clicked``)."""
        followed = self._objects.get(obj_id)
        if followed is not None:
            followed.protected = followed.announced = True

    def forget(self, obj_id: int) -> None:
        """``obj_id`` is gone (removed by a person, or a planned birth could not be applied)."""
        self._objects.pop(obj_id, None)

    def update(self, detections: Detections, observed: Observed) -> Plan:
        """One detector run's plan, for the frame ``observed`` shows."""
        config, plan = self.config, Plan()
        self.run += 1
        self._sync(observed)
        # Every label keeps objects alive and names them (a click's object too); ``labels`` says what starts.
        keep_alive = detections.only((), config.threshold * KEEP_ALIVE_FACTOR)
        boxes = self._boxes(observed)
        matched_dets, matched_objs = self._match(keep_alive, observed, boxes, plan)
        ended: set[int] = set()
        for row, obj_id in enumerate(observed.obj_ids):
            followed = self._objects[obj_id]
            if obj_id not in matched_objs:
                followed.misses += 1
            reason = self._end_reason(followed, bool(observed.present[row]), observed.time)
            if reason is not None:
                plan.ends.append(End(obj_id, reason))
                ended.add(obj_id)
        self._merge(observed, ended, plan)
        births = [i for i in range(len(keep_alive)) if i not in matched_dets]
        alive = [i for i, obj_id in enumerate(observed.obj_ids) if obj_id not in ended]
        self._births(keep_alive.keep(births), observed, alive, "auto", plan)
        for end in plan.ends:
            self._objects.pop(end.obj_id, None)
        return plan

    def adopt(self, detections: Detections, observed: Observed) -> Plan:
        """A text prompt's detections: each confident one not already tracked becomes an object,
        announced at once (a person asked for it)."""
        plan = Plan()
        self._sync(observed)
        self._births(detections, observed, list(range(len(observed.obj_ids))), "text", plan)
        return plan

    # -- the steps ------------------------------------------------------------------------------

    def _sync(self, observed: Observed) -> None:
        """Objects the policy did not start are a person's; those no longer tracked are forgotten."""
        current = set(observed.obj_ids)
        for obj_id in [i for i in self._objects if i not in current]:
            del self._objects[obj_id]
        origins = list(observed.origins) or ["click"] * len(observed.obj_ids)
        for obj_id, origin in zip(observed.obj_ids, origins):
            if obj_id not in self._objects:
                self._objects[obj_id] = _Followed(origin, None, None, self.run)

    def _boxes(self, observed: Observed) -> list[np.ndarray | None]:
        height, width = observed.size
        scale = (width / observed.masks.shape[2], height / observed.masks.shape[1]) if len(observed.masks) else (1, 1)
        return [mask_box(mask, scale) for mask in observed.masks]

    def _match(
        self, detections: Detections, observed: Observed, boxes: list[np.ndarray | None], plan: Plan
    ) -> tuple[set[int], set[int]]:
        """Greedy, per label, best IoU first; returns the matched detections and objects."""
        config = self.config
        have = [i for i, box in enumerate(boxes) if box is not None]
        known = [box for box in boxes if box is not None]
        iou = box_iou(detections.boxes, np.stack(known) if known else np.zeros((0, 4), np.float32))
        pairs = []
        for d in range(len(detections)):
            for column, row in enumerate(have):
                label = self._objects[observed.obj_ids[row]].label
                if iou[d, column] >= config.match_iou and (label is None or label == detections.labels[d]):
                    pairs.append((float(iou[d, column]), d, row))
        matched_dets: set[int] = set()
        matched_objs: set[int] = set()
        for overlap, d, row in sorted(pairs, reverse=True):
            obj_id = observed.obj_ids[row]
            if d in matched_dets or obj_id in matched_objs:
                continue
            matched_dets.add(d)
            matched_objs.add(obj_id)
            followed = self._objects[obj_id]
            followed.hits, followed.misses = followed.hits + 1, 0
            label, score = detections.labels[d], float(detections.scores[d])
            if followed.label is None or (followed.label == label and score > (followed.score or 0.0)):
                followed.label, followed.score = label, score
                plan.labelled[obj_id] = (label, round(score, 3))
            if not followed.announced and followed.hits >= config.probation:
                followed.announced = True
                plan.announced.append(obj_id)
            managed = followed.origin in ("auto", "text") and not followed.protected
            if managed and overlap < config.reseed_iou and self.run - followed.reseeded >= config.reseed_every:
                followed.reseeded = self.run
                plan.reseeds.append(Reseed(obj_id, _box(detections.boxes[d])))
        return matched_dets, matched_objs

    def _end_reason(self, followed: _Followed, present: bool, now: float) -> str | None:
        if present:
            followed.absent_since = None
        elif followed.absent_since is None:
            followed.absent_since = now
        if not followed.announced:
            return "probation" if followed.misses >= PROBATION_MISSES else None
        if followed.persons and not self.config.end_clicked:
            return None
        if followed.absent_since is not None and now - followed.absent_since >= self.config.absent_s:
            return "absent"
        if followed.misses >= self.config.end_after:
            return "undetected"
        return None

    def _merge(self, observed: Observed, ended: set[int], plan: Plan) -> None:
        """Two masks that are one thing: the newer object ends, into the older (a person's wins)."""
        alive = [i for i, obj_id in enumerate(observed.obj_ids) if obj_id not in ended]
        masks = observed.masks
        areas = {i: int(masks[i].sum()) for i in alive}
        for a_pos, a in enumerate(alive):
            for b in alive[a_pos + 1 :]:
                ids = observed.obj_ids[a], observed.obj_ids[b]
                if ids[0] in ended or ids[1] in ended or not areas[a] or not areas[b]:
                    continue
                inter = int(np.logical_and(masks[a], masks[b]).sum())
                if inter / (areas[a] + areas[b] - inter) < self.config.merge_iou:
                    continue
                keep, drop = sorted(ids, key=self._seniority)
                if self._objects[drop].persons and not self.config.end_clicked:
                    continue  # two of a person's: theirs to sort out
                plan.ends.append(End(drop, "merged", into=keep))
                ended.add(drop)

    def _seniority(self, obj_id: int) -> tuple[int, int, int, int]:
        followed = self._objects[obj_id]
        return (not followed.persons, not followed.announced, followed.born, obj_id)

    def _births(self, detections: Detections, observed: Observed, alive: list[int], origin: str, plan: Plan) -> None:
        config = self.config
        candidates = [i for i in np.argsort(-detections.scores) if detections.scores[i] >= config.threshold]
        if origin == "auto" and config.labels:
            candidates = [i for i in candidates if detections.labels[i] in config.labels]
        covered = _union(observed.masks, alive)
        ending = {end.obj_id for end in plan.ends}
        managed = sum(1 for i, f in self._objects.items() if f.origin == "auto" and i not in ending)
        started: list[tuple[np.ndarray, str]] = []
        for i in candidates:
            box, label = detections.boxes[i], detections.labels[i]
            if origin == "auto" and managed >= config.max_objects:
                break
            if any(label == other and box_iou(box[None], seen[None])[0, 0] > BIRTH_NMS_IOU for seen, other in started):
                continue
            if covered is not None and _coverage(covered, box, observed.size) >= config.cover:
                continue
            obj_id = self.next_id()
            announced = origin != "auto" or config.probation <= 1
            score = float(detections.scores[i])
            self._objects[obj_id] = _Followed(origin, label, score, self.run, hits=1, announced=announced)
            plan.births.append(Birth(obj_id, _box(box), label, round(score, 3), origin, announced))
            started.append((box, label))
            managed += origin == "auto"


def _union(masks: np.ndarray, rows: list[int]) -> np.ndarray | None:
    if not rows or not len(masks):
        return None
    return np.any(masks[rows], axis=0)


def _coverage(union: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> float:
    """The fraction of ``box`` (frame pixels) that the masks' ``union`` covers."""
    h, w = union.shape
    sy, sx = h / size[0], w / size[1]
    x0, y0 = int(np.floor(box[0] * sx)), int(np.floor(box[1] * sy))
    x1, y1 = int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy))
    window = union[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    return float(window.mean()) if window.size else 0.0


def _box(box: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return (x0, y0, x1, y1)


__all__ = ["PERSON_ORIGINS", "AutoPolicy", "Birth", "End", "Observed", "Plan", "Reseed"]
