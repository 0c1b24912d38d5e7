"""A stand-in tracker that knows the answer, for tests and benchmarks (never for users).

``OracleTracker`` has the tracker's interface (``step``, ``add_prompt``, ``remove_object``,
``reset``, a round entry point) but no model: fed frames of a ``synthetic:shapes`` source, it
returns the *true* masks of the frames it is handed, after a configurable ``delay`` that stands
for inference time. A click or box selects the shape under it on the frame it names, exactly as
a perfect segmenter would; in a traffic scene it follows that one crossing of the shape (its
instance), and its mask is empty once the shape has left. So what the display and the click
handling do with a slow tracker is measured against ground truth, with no model accuracy in the way.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streamer.errors import PromptError, UnknownObjectError
from streamer.model.preprocess import scaled_size
from streamer.model.prompts import FramePrompt, prompt_fields
from streamer.model.tracker import FrameOrigin, FrameResult, TrackedFrame
from streamer.sources import ShapesSource

INSIDE, OUTSIDE = 8.0, -8.0  # logits of a certain mask


@dataclass(frozen=True)
class Prompted:
    """A prompt the oracle was given, as it got it (tests check where clicks landed)."""

    obj_id: int
    frame_index: int  # the tracker's frame it was applied on
    shape: int | None  # the shape it selected (None: the background)
    points: list[list[float]] | None
    box: list[float] | None


class OracleTracker:
    """True masks of a ``ShapesSource``'s frames, ``delay`` seconds per round or prompt."""

    random_weights = False

    def __init__(self, source: ShapesSource, delay: float = 0.0, history: int = 8) -> None:
        self.source, self.delay, self.history = source, delay, history
        self.prompts: list[Prompted] = []
        self._frames: deque[tuple[TrackedFrame, int]] = deque(maxlen=history)  # with its scene frame
        self._objects: dict[int, int | None] = {}  # obj_id -> shape (None: the background)
        self._instances: dict[int, int | None] = {}  # obj_id -> the shape's instance it follows
        self._next_index = 0

    @property
    def obj_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def frame_index(self) -> int | None:
        return self._frames[-1][0].index if self._frames else None

    @property
    def frame_indices(self) -> list[int]:
        return [frame.index for frame, _ in self._frames]

    @property
    def tracked_frames(self) -> list[TrackedFrame]:
        return [frame for frame, _ in list(self._frames)]

    def sibling(self) -> OracleTracker:
        raise NotImplementedError("an oracle belongs to one shapes source: give each stream its own")

    def check_sibling(self, other: Any) -> None:
        """Oracles share no model: any oracle may join another's rounds."""
        if not isinstance(other, OracleTracker):
            raise ValueError("an oracle's rounds take oracles only")

    @staticmethod
    def step_round(
        trackers: Sequence[OracleTracker],
        frames: Sequence[np.ndarray],
        *,
        mask_width: int | None = None,
        origins: Sequence[FrameOrigin] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[FrameResult]:
        """One round: the slowest oracle's delay, then each one's true masks. ``meanwhile``
        runs halfway through the delay, where the real tracker's image encoder would have run."""
        delay = max((t.delay for t in trackers), default=0.0)
        time.sleep(delay / 2)
        if meanwhile is not None:
            meanwhile()
        time.sleep(delay / 2)
        where = origins or [None] * len(frames)
        return [t._ingest(frame, mask_width, origin) for t, frame, origin in zip(trackers, frames, where)]

    def step(self, frame: np.ndarray, origin: FrameOrigin | None = None) -> FrameResult:
        return self.step_round([self], [frame], origins=None if origin is None else [origin])[0]

    def prompt(self, obj_id: int, prompt: FramePrompt, frame_index: int | None = None) -> FrameResult:
        return self.add_prompt(obj_id, frame_index=frame_index, **prompt_fields(prompt))

    def add_prompt(
        self,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask: Any = None,
        frame_index: int | None = None,
    ) -> FrameResult:
        """Bind ``obj_id`` to the shape under the first positive click (or most inside the box,
        or most covered by the mask) on the frame named; the result is for the newest frame, like
        the real tracker's."""
        if not self._frames:
            raise PromptError("no frame yet: call step(frame) before adding prompts")
        wanted = self.frame_index if frame_index is None else frame_index
        scene_frame = next((scene for frame, scene in self._frames if frame.index == wanted), None)
        if scene_frame is None:
            raise PromptError(f"frame {frame_index} is not available (have {self.frame_indices})")
        truth = self.source.scene.masks(scene_frame)
        shape: int | None = None
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            inside = truth[:, max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)].sum(axis=(1, 2))
            shape = int(inside.argmax()) if inside.max() > 0 else None
        elif mask is not None:  # the shape the mask covers most
            overlap = (truth & np.asarray(mask, bool)[None]).sum(axis=(1, 2))
            shape = int(overlap.argmax()) if overlap.max() > 0 else None
        elif points is not None:
            positive = [p for p, label in zip(points, labels) if label == 1]
            if positive:
                x, y = (int(round(v)) for v in positive[0])
                hit = [
                    i
                    for i in range(len(truth))
                    if 0 <= y < truth.shape[1] and 0 <= x < truth.shape[2] and truth[i, y, x]
                ]
                shape = hit[0] if hit else None
        time.sleep(self.delay)
        self._objects[obj_id] = shape
        self._instances[obj_id] = None if shape is None else self.source.scene.instances(scene_frame)[shape]
        index = self.frame_index if frame_index is None else frame_index
        as_list = None if box is None else [float(v) for v in box]
        self.prompts.append(
            Prompted(obj_id, index, shape, None if points is None else [list(p) for p in points], as_list)
        )
        return self._result(self._frames[-1][1], None)

    def remove_object(self, obj_id: int) -> None:
        if obj_id not in self._objects:
            raise UnknownObjectError(f"unknown object id {obj_id!r}; tracked objects are {self.obj_ids}")
        del self._objects[obj_id]
        self._instances.pop(obj_id, None)

    def reset(self) -> None:
        self._objects.clear()
        self._instances.clear()
        self._frames.clear()

    def _ingest(self, frame: np.ndarray, mask_width: int | None, origin: FrameOrigin | None = None) -> FrameResult:
        scene_frame = self.source.frame_number(frame)
        if scene_frame is None:
            raise ValueError("the oracle was handed a frame its shapes source no longer remembers")
        self._frames.append((TrackedFrame(self._next_index, *frame.shape[:2], origin), scene_frame))
        self._next_index += 1
        return self._result(scene_frame, mask_width)

    def _result(self, scene_frame: int, mask_width: int | None) -> FrameResult:
        scene = self.source.scene
        h, w = scaled_size(scene.height, scene.width, mask_width)
        truth = scene.masks(scene_frame) if self._objects else None
        present = scene.instances(scene_frame)
        layers = []
        for obj_id, shape in self._objects.items():
            followed = shape is not None and truth is not None
            if followed and scene.traffic:  # one crossing of the shape: nothing once it has left
                followed = present[shape] == self._instances.get(obj_id)
            if not followed:
                layers.append(np.full((h, w), OUTSIDE, np.float32))
                continue
            # Area-averaged coverage as logits: scaled back up, the edge lands where it should.
            cover = cv2.resize(truth[shape].astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
            layers.append((cover - 0.5) * (INSIDE - OUTSIDE))
        logits = np.stack(layers) if layers else np.zeros((0, h, w), np.float32)
        scores = np.array([INSIDE if (layer > 0).any() else OUTSIDE for layer in logits], np.float32)
        return FrameResult(self._frames[-1][0].index, self.obj_ids, logits > 0, logits, scores)
