"""The tracker as the rest of the program sees it: a protocol that ``StreamingTracker`` meets and
that a stand-in can meet too, so that the live side never depends on the model's internals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .prompts import FramePrompt
from .tracker import FrameOrigin, FrameResult, TrackedFrame


class Tracker(Protocol):
    """What serving needs of a tracker: ``StreamingTracker``, or a stand-in (the tests' oracle).
    Prompts are typed (``Points | Box | Mask``) and land on a frame by its index."""

    history: int

    @property
    def obj_ids(self) -> list[int]: ...

    @property
    def frame_index(self) -> int | None: ...

    @property
    def tracked_frames(self) -> list[TrackedFrame]: ...

    def step(self, frame: np.ndarray, origin: FrameOrigin | None = None) -> FrameResult: ...

    def prompt(self, obj_id: int, prompt: FramePrompt, frame_index: int | None = None) -> FrameResult: ...

    def remove_object(self, obj_id: int) -> None: ...

    def reset(self) -> None: ...

    def sibling(self) -> Tracker: ...

    def check_sibling(self, other: Any) -> None: ...

    @staticmethod
    def step_round(
        trackers: Sequence[Any],
        frames: Sequence[np.ndarray],
        *,
        mask_width: int | None = None,
        origins: Sequence[FrameOrigin] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[FrameResult]: ...
