"""Where a viewer's prompt lands: from the frame they saw to a frame the tracker has.

The video runs at the camera's rate and the tracker at its own, so the frame a viewer clicks on
is usually one the tracker never processed. The rules (docs/protocol.md):

1. ``frame_index`` names a tracked frame: that one, or ``stale_frame``.
2. The frame seen (known exactly from its RTP timestamp, else the one captured nearest
   ``frame_ts``), if the tracker has it: there, as sent.
3. Else, if it is newer than every frame the tracker has: it becomes the tracker's next frame.
4. Else the nearest frame the tracker has, the click carried there along the optical flow.

Runs on the tracker thread, like everything that touches a tracker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .display import Display
from .protocol import AddBox, AddPoints, ProtocolError


@dataclass(frozen=True)
class TrackedFrame:
    """A frame the tracker has: its index there, the camera's index, capture time and size."""

    index: int
    source: int
    captured_at: float
    height: int
    width: int


class TrackedFrames:
    """The frames one stream's tracker still remembers (its ``history``), by camera frame."""

    def __init__(self, history: int) -> None:
        self._frames: deque[TrackedFrame] = deque(maxlen=history)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._frames)

    @property
    def newest(self) -> TrackedFrame | None:
        return self._frames[-1] if self._frames else None

    def add(self, index: int, source: int, captured_at: float, image: np.ndarray) -> TrackedFrame:
        frame = TrackedFrame(index, source, captured_at, *image.shape[:2])
        self._frames.append(frame)
        return frame

    def find(self, index: int) -> TrackedFrame | None:
        return next((f for f in reversed(self._frames) if f.index == index), None)

    def clear(self) -> None:
        self._frames.clear()


def land(
    message: AddPoints | AddBox,
    shown: int | None,
    tracked: TrackedFrames,
    display: Display,
    step: Callable[[int, np.ndarray], TrackedFrame],
) -> tuple[TrackedFrame, dict[str, Any]]:
    """The tracked frame ``message`` goes on, and its prompt in that frame's pixels (``points`` and
    ``labels``, or ``box``). ``shown``: the camera frame on the viewer's screen, when known
    exactly. ``step(source, image)`` hands a newer frame to the tracker and returns it tracked."""
    target, seen = _target(message, shown, tracked, display, step)
    if isinstance(message, AddPoints):
        points = [(x * target.width, y * target.height) for x, y in message.points]
    else:
        x0, y0, x1, y1 = message.box
        points = [(x0 * target.width, y0 * target.height), (x1 * target.width, y1 * target.height)]
    if seen is not None and seen != target.source:
        carried = display.carry(points, seen, target.source, box=isinstance(message, AddBox))
        points = carried or points  # the frame seen is forgotten: the click as it was
    if isinstance(message, AddPoints):
        return target, {"points": [list(p) for p in points], "labels": message.labels}
    (xa, ya), (xb, yb) = points
    return target, {"box": [min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]}


def _target(
    message: AddPoints | AddBox,
    shown: int | None,
    tracked: TrackedFrames,
    display: Display,
    step: Callable[[int, np.ndarray], TrackedFrame],
) -> tuple[TrackedFrame, int | None]:
    """The tracked frame a prompt goes on, and the frame the viewer saw if it must be carried."""
    frames = list(tracked)
    if message.frame_index is not None:
        frame = tracked.find(message.frame_index)
        if frame is not None:
            return frame, None
        if not frames:
            raise ProtocolError("no_frame", "no frame has been processed yet; wait for the video")
        raise ProtocolError(
            "stale_frame",
            f"frame {message.frame_index} is no longer available (have {frames[0].index}..{frames[-1].index})",
        )
    seen = shown
    if seen is None and message.frame_ts is not None:
        seen = display.nearest(message.frame_ts)
    if seen is None and not frames:
        seen = display.newest()  # nothing tracked yet: the frame on screen now
    if seen is not None:
        exact = next((f for f in frames if f.source == seen), None)
        if exact is not None:
            return exact, None
        image = display.image(seen)
        if image is not None and (not frames or seen > frames[-1].source):
            return step(seen, image), None
    if not frames:
        raise ProtocolError("no_frame", "no frame has been processed yet; wait for the video")
    if seen is None:
        return frames[-1], None
    return min(reversed(frames), key=lambda f: abs(f.source - seen)), seen
