"""Tracking results as data: each tracked frame's objects, measured once and shared by every consumer.

A ``Tracked`` is what the tracker left of one frame: the masks' logits (at the display's mask
size in the live server, at the frame's own size offline), the presence scores and where the
frame came from. Nothing is measured when it is made: the first consumer that asks for
``results(masks)`` or ``message(masks)`` pays for the measurement, and every later one gets the
same object or the same JSON text. So the websocket subscribers, the JSON Lines file and MQTT
share one computation per tracked frame, and with no consumer nothing is computed.

Boxes, areas and centroids are measured on the logits as given and scaled to the source frame's
pixels (at the default 480-px mask width that is 2.7 source pixels per mask pixel at 720p); a
COCO RLE mask is at the source frame's size, upscaled exactly as the viewer draws it; polygons
are the mask's outer contours, simplified, in source pixels. The JSON is described by
``results.schema.json`` beside this module (docs/results.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from ..assets import RESULTS_SCHEMA
from ..config import check_mask_format

if TYPE_CHECKING:  # the tracker brings torch, which the doctor must run without
    from ..model.tracker import FrameResult

SCHEMA_PATH = RESULTS_SCHEMA
POLYGON_TOLERANCE = 0.7  # mask pixels a simplified contour may stray from the mask's edge


def wall_clock(monotonic_stamp: float) -> float:
    """A ``time.monotonic()`` stamp (what sources give frames) as seconds since the epoch."""
    return time.time() - (time.monotonic() - monotonic_stamp)


@dataclass(frozen=True)
class ObjectLabel:
    """What an object is and how it came to be tracked (``origin``: click, box, auto or text);
    ``label_score`` is the detector's confidence in ``label`` (None: no detector named it)."""

    label: str | None = None
    label_score: float | None = None
    origin: str = "click"


NO_LABEL = ObjectLabel()


@dataclass(frozen=True)
class ObjectResult:
    """One tracked object on one frame. ``bbox`` and ``centroid`` are None when its mask is empty."""

    obj_id: int
    visible: bool  # the object-presence score is above 0
    score: float  # the object-presence logit (sigmoid(score): the model's confidence it is there)
    bbox: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in source-frame pixels
    area: int  # mask pixels, at the source frame's size
    area_fraction: float  # of the whole frame
    centroid: tuple[float, float] | None  # x, y in source-frame pixels
    mask: dict[str, Any] | list[list[float]] | None = None  # COCO RLE or polygons, when asked for
    label: str | None = None
    label_score: float | None = None
    origin: str = "click"

    def to_dict(self, with_mask: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "obj_id": self.obj_id,
            "label": self.label,
            "label_score": self.label_score,
            "origin": self.origin,
            "visible": self.visible,
            "score": self.score,
            "bbox": None if self.bbox is None else list(self.bbox),
            "area": self.area,
            "area_fraction": self.area_fraction,
            "centroid": None if self.centroid is None else list(self.centroid),
        }
        if with_mask:
            data["mask"] = self.mask
        return data


@dataclass(frozen=True)
class FrameResults:
    """Every object of one tracked frame of one stream: the unit every output carries."""

    stream: str
    frame_index: int  # the tracker's index of the frame (what prompts' frame_index names)
    source_frame: int  # the camera's own frame number
    time: float  # capture time, seconds since the epoch
    width: int  # of the source frame
    height: int
    masks: str  # none | rle | polygon: what each object's ``mask`` holds
    objects: list[ObjectResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "results",
            "stream": self.stream,
            "frame_index": self.frame_index,
            "source_frame": self.source_frame,
            "time": round(self.time, 3),
            "width": self.width,
            "height": self.height,
            "masks": self.masks,
            "objects": [o.to_dict(self.masks != "none") for o in self.objects],
        }


@dataclass(eq=False)
class Tracked:
    """One tracked frame as the tracker left it; results are measured on first request, once."""

    stream: str
    frame_index: int
    source_frame: int
    time: float  # capture time, seconds since the epoch
    height: int  # of the source frame
    width: int
    obj_ids: tuple[int, ...]
    logits: np.ndarray  # float32 [N, h, w], any size with the frame's aspect; > 0 is the object
    scores: np.ndarray  # float32 [N] presence logits
    labels: Mapping[int, ObjectLabel] = field(default_factory=dict)  # by obj_id (absent: a click, no label)
    ended: Mapping[int, str] = field(default_factory=dict)  # objects gone since the last frame: why
    # Each Tracked measures itself; ``dataclasses.replace`` makes a copy with a fresh cache.
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def of(
        cls,
        stream: str,
        result: FrameResult,
        source_frame: int,
        at: float,
        size: tuple[int, int],
        logits: np.ndarray | None = None,
        labels: Mapping[int, ObjectLabel] | None = None,
        hidden: Collection[int] = (),
    ) -> Tracked:
        """A tracker's ``FrameResult`` of a frame of ``size`` (height, width) captured ``at``
        (epoch seconds), with its logits (or ``logits``: the same, at another size), its objects'
        ``labels``, less the ``hidden`` ones (automatic objects still on probation)."""
        logits = result.logits if logits is None else logits
        keep = [i for i, obj_id in enumerate(result.obj_ids) if obj_id not in hidden]
        if len(keep) < len(result.obj_ids):
            logits, scores = logits[keep], result.scores[keep]
        else:
            scores = result.scores
        obj_ids = tuple(result.obj_ids[i] for i in keep)
        return cls(stream, result.frame_index, source_frame, at, *size, obj_ids, logits, scores, dict(labels or {}))

    def without(self, obj_ids: set[int], at: float, reason: str | None = None) -> Tracked:
        """The same frame with ``obj_ids`` gone (they were removed at ``at``, epoch seconds, for
        ``reason``: viewer, reset, undetected, absent, merged)."""
        keep = [i for i, obj_id in enumerate(self.obj_ids) if obj_id not in obj_ids]
        kept = tuple(self.obj_ids[i] for i in keep)
        ended = {obj_id: reason for obj_id in obj_ids if reason is not None and obj_id in self.obj_ids}
        return dataclasses.replace(
            self, time=at, obj_ids=kept, logits=self.logits[keep], scores=self.scores[keep], ended=ended
        )

    def replacing(self, older: Tracked | None) -> Tracked:
        """This frame, where it replaces ``older`` before anyone measured that one (outputs keep
        the newest): with the removal reasons ``older`` carried for objects this one lacks too, so
        that a ``removed`` event still says why."""
        if older is None or not older.ended:
            return self
        carried = {i: why for i, why in older.ended.items() if i not in self.obj_ids and i not in self.ended}
        return dataclasses.replace(self, ended={**carried, **self.ended}) if carried else self

    def label(self, obj_id: int) -> ObjectLabel:
        return self.labels.get(obj_id, NO_LABEL)

    def results(self, masks: str = "none") -> FrameResults:
        """The frame's ``FrameResults`` with masks in ``masks`` format (computed once per format)."""
        check_mask_format(masks)
        with self._lock:
            found = self._cache.get(masks)
            if found is None:
                found = self._cache[masks] = self._measure(masks)
            return found

    def message(self, masks: str = "none") -> str:
        """``results(masks)`` as the JSON text every output sends (made once per format)."""
        key = f"json:{masks}"
        text = self._cache.get(key)
        if text is None:
            text = json.dumps(self.results(masks).to_dict(), separators=(",", ":"), allow_nan=False)
            self._cache[key] = text
        return text

    def _measure(self, masks: str) -> FrameResults:
        if masks == "none":
            objects = [
                measure(obj_id, layer, float(score), (self.height, self.width), self.label(obj_id))
                for obj_id, layer, score in zip(self.obj_ids, self.logits, self.scores)
            ]
        else:
            base = self._cache.get("none") or self._measure("none")
            self._cache["none"] = base
            encode = rle if masks == "rle" else polygons
            size = (self.height, self.width)
            objects = [
                dataclasses.replace(o, mask=encode(layer, size) if o.bbox is not None else None)
                for o, layer in zip(base.objects, self.logits)
            ]
        return FrameResults(
            self.stream, self.frame_index, self.source_frame, self.time, self.width, self.height, masks, objects
        )


def measure(
    obj_id: int, logits: np.ndarray, score: float, size: tuple[int, int], label: ObjectLabel = NO_LABEL
) -> ObjectResult:
    """Box, area and centroid of one object's ``logits`` (``[h, w]``), in pixels of a frame of
    ``size`` (height, width)."""
    found = _measure_mask(obj_id, logits, score, size)
    return dataclasses.replace(found, label=label.label, label_score=label.label_score, origin=label.origin)


def _measure_mask(obj_id: int, logits: np.ndarray, score: float, size: tuple[int, int]) -> ObjectResult:
    height, width = size
    sy, sx = height / logits.shape[0], width / logits.shape[1]
    mask = (logits > 0).view(np.uint8)
    x, y, w, h = cv2.boundingRect(mask)
    visible = bool(score > 0)
    if w == 0:
        return ObjectResult(obj_id, visible, round(score, 3), None, 0, 0.0, None)
    moments = cv2.moments(mask[y : y + h, x : x + w], binaryImage=True)
    count = moments["m00"]
    area = int(round(count * sx * sy))
    return ObjectResult(
        obj_id,
        visible,
        round(score, 3),
        (round(x * sx, 1), round(y * sy, 1), round((x + w) * sx, 1), round((y + h) * sy, 1)),
        area,
        round(area / (height * width), 6),
        (round((moments["m10"] / count + x + 0.5) * sx, 1), round((moments["m01"] / count + y + 0.5) * sy, 1)),
    )


def rle(logits: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
    """COCO RLE (``{"size": [h, w], "counts": str}``, pycocotools' compressed form) of the mask
    at ``size``, upscaled as the viewer draws it (bilinear logits, > 0)."""
    height, width = size
    if logits.shape == size:
        columns = np.asfortranarray(logits > 0)
    else:  # resize the transposed logits: thresholded, they are the column-major mask COCO wants
        columns = (cv2.resize(np.ascontiguousarray(logits.T), (height, width), interpolation=cv2.INTER_LINEAR) > 0).T
    encoded = coco_mask.encode(columns.view(np.uint8))
    return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}


def polygons(logits: np.ndarray, size: tuple[int, int]) -> list[list[float]]:
    """The mask's outer contours as COCO polygons (``[x0, y0, x1, y1, ...]`` in source pixels,
    holes not subtracted), simplified to within ``POLYGON_TOLERANCE`` mask pixels."""
    sy, sx = size[0] / logits.shape[0], size[1] / logits.shape[1]
    contours, _ = cv2.findContours((logits > 0).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shapes = []
    for contour in contours:
        points = cv2.approxPolyDP(contour, POLYGON_TOLERANCE, True).reshape(-1, 2).astype(np.float64)
        if len(points) < 3:  # a sliver: too thin to outline
            continue
        # findContours traces the centres of the edge pixels: put them at their centres in the source.
        points = (points + 0.5) * (sx, sy)
        shapes.append([round(float(v), 1) for v in points.reshape(-1)])
    return shapes


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON schema of every results and event message (docs/results.md)."""
    return json.loads(SCHEMA_PATH.read_text())


__all__ = [
    "NO_LABEL",
    "FrameResults",
    "ObjectLabel",
    "ObjectResult",
    "Tracked",
    "check_mask_format",
    "measure",
    "polygons",
    "rle",
    "schema",
    "wall_clock",
]
