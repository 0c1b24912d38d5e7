"""What happened to the tracked objects, frame after frame: added, removed, lost, found, and zones
entered and left.

An ``EventDetector`` follows one stream's ``FrameResults`` in order. Objects appear in and
disappear from the results only when a prompt or the detector adds one, or a removal takes it
away, so ``added`` and ``removed`` are differences between consecutive results. ``lost`` fires
once an object has not been visible for ``lost_after`` seconds of capture time, ``found`` when it
is visible again. ``added`` and every later event carry the object's label (if it has one yet);
``removed`` says why (``viewer``, ``reset``, or the detector's ``undetected``, ``absent``,
``merged``) when the results say. Zones are polygons (0-1 of the frame's width and height) per
stream; an object is in a zone while its anchor point (its centroid, or the middle of its box's bottom edge:
where a person or a car touches the ground) lies inside. A brief disappearance does not take it
out of a zone: it leaves when it is seen outside, is lost or is removed. A zone may follow some
labels only (``a person entered door``): objects with other labels, or none, never enter it.

One more type comes from outside the results: ``clip``, a recording of an event finished
(video/recordings.py, handed to the sinks by ``Outputs.announce``), carrying the recording.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import EventsConfig
from ..config.values import EVENT_TYPES
from .results import FrameResults, ObjectResult


@dataclass(frozen=True)
class Event:
    type: str  # one of EVENT_TYPES
    stream: str
    obj_id: int
    time: float  # capture time of the frame it was seen on, seconds since the epoch
    frame_index: int
    bbox: tuple[float, float, float, float] | None  # the object's box then (its last one, if not visible)
    zone: str | None = None  # for entered and left
    label: str | None = None  # the object's label then (None: it has none)
    reason: str | None = None  # for removed, when known: viewer, reset, undetected, absent, merged
    clip: dict[str, Any] | None = None  # for clip: the recording now on disk (video/recordings.py)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "stream": self.stream,
            "obj_id": self.obj_id,
            "label": self.label,
            "time": round(self.time, 3),
            "frame_index": self.frame_index,
            "bbox": None if self.bbox is None else list(self.bbox),
        }
        if self.zone is not None:
            data["zone"] = self.zone
        if self.reason is not None:
            data["reason"] = self.reason
        if self.clip is not None:  # as Frigate's events say it
            data["has_clip"] = True
            data["clip"] = self.clip
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
    label: str | None = None
    lost: bool = False
    zones: set[str] = field(default_factory=set)


class EventDetector:
    """One stream's objects over time; ``update`` returns what changed with each new result."""

    def __init__(self, stream: str, config: EventsConfig | None = None) -> None:
        self.stream, self.config = stream, config or EventsConfig()
        self.zones = self.config.zones_for(stream)
        self._objects: dict[int, _Followed] = {}

    def update(self, results: FrameResults, ended: Mapping[int, str] | None = None) -> list[Event]:
        """What changed with ``results``; ``ended``: why objects gone since the last ones went."""
        now, events = results.time, []
        why = ended or {}

        def emit(kind: str, obj_id: int, bbox: Any, zone: str | None = None, reason: str | None = None) -> None:
            label = self._objects[obj_id].label
            events.append(Event(kind, self.stream, obj_id, now, results.frame_index, bbox, zone, label, reason))

        current = {o.obj_id: o for o in results.objects}
        for obj_id in [i for i in self._objects if i not in current]:
            gone = self._objects[obj_id]
            for zone in sorted(gone.zones):
                emit("left", obj_id, gone.bbox, zone)
            emit("removed", obj_id, gone.bbox, reason=why.get(obj_id))
            del self._objects[obj_id]
        for obj_id, obj in current.items():
            followed = self._objects.get(obj_id)
            if followed is None:
                followed = self._objects[obj_id] = _Followed(now, obj.bbox, obj.label)
                emit("added", obj_id, obj.bbox)
            followed.label = obj.label or followed.label
            if obj.visible and obj.bbox is not None:
                followed.seen_at, followed.bbox = now, obj.bbox
                if followed.lost:
                    followed.lost = False
                    emit("found", obj_id, obj.bbox)
                anchor = self._anchor(obj, results)
                inside = {z.name for z in self.zones if z.admits(followed.label) and z.contains(*anchor)}
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


__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventDetector",
]
