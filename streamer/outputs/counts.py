"""How many objects of each label a stream has, in all and in each zone: what Frigate publishes
as ``<camera>/<label>`` and ``<zone>/<label>`` and Home Assistant shows as occupancy sensors.

Kept from the events (added and removed, entered and left) and from each stream's results (an
object a person clicked takes its label when the detector first names it). Objects with no label
are not counted. ``changes()`` gives each count that moved since it was last asked, zeros
included, so a retained topic never keeps a stale count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .events import Event
from .results import Tracked


@dataclass
class _Counted:
    label: str | None
    zones: set[str] = field(default_factory=set)


class LabelCounts:
    """Per stream: objects by label, in all (zone None) and per zone."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[int, _Counted]] = {}
        self._published: dict[tuple[str, str | None, str], int] = {}

    def event(self, event: Event) -> None:
        objects = self._objects.setdefault(event.stream, {})
        if event.type == "removed":
            objects.pop(event.obj_id, None)
            return
        counted = objects.setdefault(event.obj_id, _Counted(event.label))
        counted.label = event.label or counted.label
        if event.type == "entered" and event.zone is not None:
            counted.zones.add(event.zone)
        elif event.type == "left" and event.zone is not None:
            counted.zones.discard(event.zone)

    def results(self, tracked: Tracked) -> None:
        """Labels the objects took since their events (a click's object, named later)."""
        objects = self._objects.setdefault(tracked.stream, {})
        for obj_id in tracked.obj_ids:
            label = tracked.label(obj_id).label
            if label is not None and obj_id in objects:
                objects[obj_id].label = label

    def counts(self, stream: str) -> Counter[tuple[str | None, str]]:
        """``(zone or None, label) -> count`` for ``stream``."""
        counted: Counter[tuple[str | None, str]] = Counter()
        for obj in self._objects.get(stream, {}).values():
            if obj.label is None:
                continue
            counted[(None, obj.label)] += 1
            for zone in obj.zones:
                counted[(zone, obj.label)] += 1
        return counted

    def changes(self, stream: str) -> dict[tuple[str | None, str], int]:
        """Counts of ``stream`` that differ from what was last returned (0 for those now gone)."""
        now = self.counts(stream)
        changed = {}
        for key in set(now) | {(zone, label) for s, zone, label in self._published if s == stream}:
            value = now.get(key, 0)
            if self._published.get((stream, key[0], key[1])) != value:
                changed[key] = value
                self._published[(stream, key[0], key[1])] = value
        return changed


__all__ = ["LabelCounts"]
