"""Where a viewer's prompt lands: from the frame they saw to a frame the tracker has.

The video runs at the camera's rate and the tracker at its own, so the frame a viewer clicks on
is usually one the tracker never processed. The rules (docs/protocol.md):

1. ``frame_index`` names a tracked frame: that one, or ``stale_frame``.
2. The frame seen (known exactly from its RTP timestamp, else the one captured nearest
   ``frame_ts``), if the tracker has it: there, as sent.
3. Else the nearest frame the tracker has, the click carried there along the optical flow. A
   frame newer than every tracked one is carried back to the newest tracked frame when that was
   captured at most ``CARRY_BACK_S`` before it: the prompt then costs the mask decoder only, not
   a frame through the image encoder, so the object shows within the round in flight (the
   display carries its mask on to the frames that follow, as every mask).
4. Else, if it is newer than every frame the tracker has (nothing tracked yet, or the newest
   tracked frame is older or forgotten): it becomes the tracker's next frame, as sent.

The tracked frames are the tracker's own (``tracked_frames``, each with the camera frame it came
from): nothing here keeps a second record of them. Runs on the tracker thread, like everything
that touches a tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import NoFrameError, StaleFrameError
from ..model.prompts import Box, FramePrompt, Points
from ..model.tracker import FrameOrigin, TrackedFrame
from .display import Display

CARRY_BACK_S = 1.0  # a click on a newer frame goes back this far at most (along the flow)


@dataclass(frozen=True)
class PromptRequest:
    """A viewer's click or box on a stream, whatever carried it (the websocket, a cluster front).

    Coordinates are 0..1 of the frame shown. The frame it is about: ``frame_index`` (a tracked
    frame), else ``shown`` (the camera frame on screen, known exactly), else ``frame_ts`` (capture
    time of the frame seen, wall-clock ms); none: the newest tracked frame.
    """

    obj_id: int
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None
    box: tuple[float, float, float, float] | None = None
    frame_index: int | None = None
    frame_ts: float | None = None
    shown: int | None = None


@dataclass(frozen=True)
class Landed:
    """A tracked frame a prompt can go on: the tracker's index, the camera frame, its size."""

    index: int
    source: int
    captured_at: float
    height: int
    width: int

    @classmethod
    def of(cls, frame: TrackedFrame) -> Landed:
        origin = frame.origin
        assert origin is not None  # a live stream steps every frame with its origin
        return cls(frame.index, origin.source, origin.captured_at, frame.height, frame.width)


def landed_frames(frames: Sequence[TrackedFrame]) -> list[Landed]:
    """The tracked frames a live stream handed over (those stepped with an origin)."""
    return [Landed.of(f) for f in frames if f.origin is not None]


def land(
    request: PromptRequest,
    frames: Sequence[TrackedFrame],
    display: Display,
    step: Callable[[FrameOrigin, np.ndarray], Landed],
) -> tuple[Landed, FramePrompt]:
    """The tracked frame ``request`` goes on, and its prompt in that frame's pixels (``Points``
    or a ``Box``). ``frames``: the tracker's; ``step(origin, image)`` hands a newer
    camera frame to the tracker and returns it tracked."""
    target, seen = _target(request, landed_frames(frames), display, step)
    if request.box is None:
        assert request.points is not None
        points = [(x * target.width, y * target.height) for x, y in request.points]
    else:
        x0, y0, x1, y1 = request.box
        points = [(x0 * target.width, y0 * target.height), (x1 * target.width, y1 * target.height)]
    if seen is not None and seen != target.source:
        carried = display.carry(points, seen, target.source, box=request.box is not None)
        points = carried or points  # the frame seen is forgotten: the click as it was
    if request.box is None:
        return target, Points(tuple(points), tuple(request.labels or ()))
    (xa, ya), (xb, yb) = points
    return target, Box((min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)))


def _target(
    request: PromptRequest,
    frames: list[Landed],
    display: Display,
    step: Callable[[FrameOrigin, np.ndarray], Landed],
) -> tuple[Landed, int | None]:
    """The tracked frame a prompt goes on, and the frame the viewer saw if it must be carried."""
    if request.frame_index is not None:
        frame = next((f for f in reversed(frames) if f.index == request.frame_index), None)
        if frame is not None:
            return frame, None
        if not frames:
            raise NoFrameError("no frame has been processed yet; wait for the video")
        raise StaleFrameError(
            f"frame {request.frame_index} is no longer available (have {frames[0].index}..{frames[-1].index})"
        )
    seen = request.shown
    if seen is None and request.frame_ts is not None:
        seen = display.nearest(request.frame_ts)
    if seen is None and not frames:
        seen = display.newest()  # nothing tracked yet: the frame on screen now
    if seen is not None:
        exact = next((f for f in frames if f.source == seen), None)
        if exact is not None:
            return exact, None
        image = display.image(seen)
        captured_at = display.captured_at(seen)
        if image is not None and captured_at is not None and (not frames or seen > frames[-1].source):
            newest = frames[-1] if frames else None
            if (
                newest is not None
                and display.remembers(newest.source)
                and captured_at - newest.captured_at <= CARRY_BACK_S
            ):
                return newest, seen
            return step(FrameOrigin(seen, captured_at), image), None
    if not frames:
        raise NoFrameError("no frame has been processed yet; wait for the video")
    if seen is None:
        return frames[-1], None
    return min(reversed(frames), key=lambda f: abs(f.source - seen)), seen
