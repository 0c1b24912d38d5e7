"""The displayed frame: a camera frame with the newest masks carried onto it, drawn on demand.

What every video output takes (the viewers' encoders, and whatever else shows a stream): made by a
stream's display, drawn once, on first use, by whoever needs the pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .overlay import masks_at
from .styles import Look, render


@dataclass(frozen=True)
class Masks:
    """The tracker's masks of one camera frame, at the display's mask size (``mask_width``)."""

    frame: int  # the source's index of the frame they were computed on
    captured_at: float  # that frame's capture time (monotonic)
    obj_ids: list[int]
    logits: np.ndarray  # float32 [N, h, w]; > 0 is the object


@dataclass(frozen=True)
class Output:
    """One frame for the viewers: the camera's pixels and the masks to draw on them."""

    frame: np.ndarray  # HxWx3 uint8 RGB, as the camera gave it
    index: int  # the source's frame index
    captured_at: float  # monotonic, from the source
    obj_ids: list[int] = field(default_factory=list)
    logits: np.ndarray | None = None  # [N, h, w] mask-size logits, already carried onto this frame
    mask_frame: int | None = None  # the frame the masks were computed on
    mask_age_ms: float | None = None  # capture time of this frame minus that of ``mask_frame``
    labels: bool = True
    seq: int = -1  # counts published outputs: what viewers use to tell a new frame
    names: dict[int, str] = field(default_factory=dict)  # what objects are ("person"), drawn beside their ids
    look: Look = field(default_factory=Look)  # the stream's styles as this frame was shown

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """Bool ``[N, H, W]`` masks at the frame's size."""
        if self.logits is None:
            return np.zeros((0, *self.frame.shape[:2]), bool)
        return masks_at(self.logits, self.frame.shape[:2])

    @functools.cached_property
    def rendered(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The frame drawn in its stream's look, and what it blurred for privacy (made on first
        use: only frames someone watches)."""
        return render(
            self.frame,
            self.masks,
            self.obj_ids,
            self.look,
            labels=self.labels,
            names=self.names,
            age_ms=self.mask_age_ms,
        )

    @property
    def image(self) -> np.ndarray:
        """The frame with its masks drawn, as every video output sends it."""
        return self.rendered[0]
