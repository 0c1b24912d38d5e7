"""What happened to the tracked objects, frame after frame: added, removed, lost, found, and zones
entered and left.

An ``EventDetector`` follows one stream's ``FrameResults`` in order. Objects appear and disappear
from the results only by prompts (a click adds one, ``remove_object`` or ``reset`` takes it
away), so ``added`` and ``removed`` are differences between consecutive results. ``lost`` fires
once an object has not been visible for ``lost_after`` seconds of capture time, ``found`` when it
is visible again. Zones are polygons (0-1 of the frame's width and height) per stream; an object
is in a zone while its anchor point (its centroid, or the middle of its box's bottom edge:
where a person or a car touches the ground) lies inside. A brief disappearance does not take it
out of a zone: it leaves when it is seen outside, is lost or is removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .results import FrameResults, ObjectResult

EVENT_TYPES = ("added", "removed", "lost", "found", "entered", "left")
ANCHORS = ("centroid", "bottom_center")
MAX_ZONE_POINTS = 256


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: np.ndarray  # float32 [K, 2], 0-1 of the frame

    def contains(self, x: float, y: float) -> bool:
        return cv2.pointPolygonTest(self.polygon, (x, y), False) >= 0


@dataclass
class EventsConfig:
    """Event settings (``events:`` in YAML). ``zones`` maps a stream's name to its zones, each a
    name and a polygon: ``{door: {porch: [[0, 0.6], [1, 0.6], [1, 1], [0, 1]]}}``."""

    lost_after: float = 1.0  # seconds not visible before an object is reported lost
    anchor: str = "centroid"  # the point of an object a zone holds: centroid or bottom_center
    zones: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.lost_after, (int, float)) or not 0 < self.lost_after <= 3600:
            raise ValueError(f"lost_after must be more than 0 and at most 3600 seconds, got {self.lost_after!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        self._zones = parse_zones(self.zones)

    def zones_for(self, stream: str) -> list[Zone]:
        return self._zones.get(stream, [])


def parse_zones(raw: Any) -> dict[str, list[Zone]]:
    """Check ``events.zones``; a ValueError names the field (``zones.door.porch[2]``) and the fix."""
    if not isinstance(raw, dict):
        raise ValueError("zones must map stream names to {zone name: polygon}")
    parsed: dict[str, list[Zone]] = {}
    for stream, zones in raw.items():
        where = f"zones.{stream}"
        if not isinstance(zones, dict) or not zones:
            raise ValueError(f"{where} must map zone names to polygons ([[x, y], ...] in 0..1)")
        parsed[str(stream)] = [_zone(str(name), points, f"{where}.{name}") for name, points in zones.items()]
    return parsed


def _zone(name: str, points: Any, where: str) -> Zone:
    if not isinstance(points, list) or not 3 <= len(points) <= MAX_ZONE_POINTS:
        raise ValueError(f"{where} must be a polygon: a list of 3 to {MAX_ZONE_POINTS} [x, y] points")
    for i, point in enumerate(points):
        ok = isinstance(point, list) and len(point) == 2
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in point)
        if not ok:
            raise ValueError(f"{where}[{i}] must be [x, y] with x and y in 0..1 (of the frame), got {point!r}")
    polygon = np.array(points, np.float32)
    if abs(cv2.contourArea(polygon)) == 0:
        raise ValueError(f"{where} encloses no area: its points lie on one line")
    return Zone(name, polygon)


@dataclass(frozen=True)
class Event:
    type: str  # one of EVENT_TYPES
    stream: str
    obj_id: int
    time: float  # capture time of the frame it was seen on, seconds since the epoch
    frame_index: int
    bbox: tuple[float, float, float, float] | None  # the object's box then (its last one, if not visible)
    zone: str | None = None  # for entered and left

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "stream": self.stream,
            "obj_id": self.obj_id,
            "time": round(self.time, 3),
            "frame_index": self.frame_index,
            "bbox": None if self.bbox is None else list(self.bbox),
        }
        if self.zone is not None:
            data["zone"] = self.zone
        return data

    def message(self) -> str:
        """The event as JSON: an MQTT events message."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def envelope(self) -> str:
        """The event inside a ``{"type": "event", "event": ...}`` message (websocket, JSON Lines)."""
        return f'{{"type":"event","event":{self.message()}}}'


@dataclass
class _Followed:
    seen_at: float  # capture time it was last visible (or added)
    bbox: tuple[float, float, float, float] | None
    lost: bool = False
    zones: set[str] = field(default_factory=set)


class EventDetector:
    """One stream's objects over time; ``update`` returns what changed with each new result."""

    def __init__(self, stream: str, config: EventsConfig | None = None) -> None:
        self.stream, self.config = stream, config or EventsConfig()
        self.zones = self.config.zones_for(stream)
        self._objects: dict[int, _Followed] = {}

    def update(self, results: FrameResults) -> list[Event]:
        now, events = results.time, []

        def emit(kind: str, obj_id: int, bbox: Any, zone: str | None = None) -> None:
            events.append(Event(kind, self.stream, obj_id, now, results.frame_index, bbox, zone))

        current = {o.obj_id: o for o in results.objects}
        for obj_id in [i for i in self._objects if i not in current]:
            followed = self._objects.pop(obj_id)
            for zone in sorted(followed.zones):
                emit("left", obj_id, followed.bbox, zone)
            emit("removed", obj_id, followed.bbox)
        for obj_id, obj in current.items():
            followed = self._objects.get(obj_id)
            if followed is None:
                followed = self._objects[obj_id] = _Followed(now, obj.bbox)
                emit("added", obj_id, obj.bbox)
            if obj.visible and obj.bbox is not None:
                followed.seen_at, followed.bbox = now, obj.bbox
                if followed.lost:
                    followed.lost = False
                    emit("found", obj_id, obj.bbox)
                inside = {z.name for z in self.zones if z.contains(*self._anchor(obj, results))}
                for zone in sorted(inside - followed.zones):
                    emit("entered", obj_id, obj.bbox, zone)
                for zone in sorted(followed.zones - inside):
                    emit("left", obj_id, obj.bbox, zone)
                followed.zones = inside
            elif not followed.lost and now - followed.seen_at >= self.config.lost_after:
                followed.lost = True
                for zone in sorted(followed.zones):
                    emit("left", obj_id, followed.bbox, zone)
                followed.zones = set()
                emit("lost", obj_id, followed.bbox)
        return events

    def _anchor(self, obj: ObjectResult, results: FrameResults) -> tuple[float, float]:
        """The object's anchor point, 0-1 of the frame."""
        assert obj.bbox is not None and obj.centroid is not None
        if self.config.anchor == "bottom_center":
            x, y = (obj.bbox[0] + obj.bbox[2]) / 2, obj.bbox[3]
        else:
            x, y = obj.centroid
        return x / results.width, y / results.height


__all__ = ["ANCHORS", "EVENT_TYPES", "Event", "EventDetector", "EventsConfig", "Zone", "parse_zones"]
