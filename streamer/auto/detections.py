"""What a detector returns, and how its boxes compare with tracked masks.

A detector is any callable ``detect(image) -> Detections`` on an RGB ``uint8 [H, W, 3]`` frame;
an open-vocabulary one also takes the words to look for (``detect(image, labels)``). Boxes are
``x0, y0, x1, y1`` in the frame's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import DetectorError


@dataclass(frozen=True)
class Detections:
    """Boxes (float32 ``[N, 4]``, x0 y0 x1 y1 in frame pixels), their labels and scores (0..1)."""

    boxes: np.ndarray
    labels: tuple[str, ...]
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.shape != (len(self.labels), 4) or self.scores.shape != (len(self.labels),):
            raise DetectorError(
                f"a detector must give N boxes [N, 4], N labels and N scores; got boxes {self.boxes.shape}, "
                f"{len(self.labels)} labels, scores {self.scores.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), (), np.zeros(0, np.float32))

    @classmethod
    def of(cls, value: Any) -> Detections:
        """What a user's detector returned: ``Detections``, a ``(boxes, labels, scores)`` tuple or a
        ``{"boxes", "labels", "scores"}`` mapping (NumPy arrays, tensors or lists)."""
        if isinstance(value, Detections):
            return value
        if isinstance(value, dict):
            try:
                value = (value["boxes"], value["labels"], value["scores"])
            except KeyError as exc:
                raise DetectorError(
                    f"a detector's result mapping needs boxes, labels and scores; {exc} is missing"
                ) from None
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise DetectorError(
                f"a detector must return (boxes, labels, scores) or Detections, got {type(value).__name__}"
            )
        boxes, labels, scores = value
        boxes = np.asarray(_array(boxes), np.float32).reshape(-1, 4)
        return cls(boxes, tuple(str(v) for v in labels), np.asarray(_array(scores), np.float32).reshape(-1))

    def keep(self, index: Sequence[int] | np.ndarray) -> Detections:
        index = np.asarray(index, np.int64)
        return Detections(self.boxes[index], tuple(self.labels[i] for i in index), self.scores[index])

    def only(self, labels: Sequence[str], threshold: float = 0.0) -> Detections:
        """Those with one of ``labels`` (empty: any) scoring at least ``threshold``."""
        wanted = set(labels)
        return self.keep(
            [
                i
                for i, (label, score) in enumerate(zip(self.labels, self.scores))
                if (not wanted or label in wanted) and score >= threshold
            ]
        )


class Detector(Protocol):
    """Finds objects on a frame. ``labels``: what it can name (None: any words it is given)."""

    labels: tuple[str, ...] | None
    device: str

    def __call__(self, image: np.ndarray, queries: Sequence[str] = ()) -> Detections: ...


def _array(value: Any) -> Any:
    """A tensor as a NumPy array (without importing torch here)."""
    detach = getattr(value, "detach", None)
    return detach().float().cpu().numpy() if detach is not None else value


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``[N, 4]`` with every box in ``b`` ``[M, 4]``: ``[N, M]``."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def mask_box(mask: np.ndarray, scale: tuple[float, float]) -> np.ndarray | None:
    """The box of a bool mask ``[h, w]`` in frame pixels (``scale``: frame pixels per mask pixel,
    x then y), or None when it is empty."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(xs):
        return None
    sx, sy = scale
    return np.array([xs[0] * sx, ys[0] * sy, (xs[-1] + 1) * sx, (ys[-1] + 1) * sy], np.float32)


__all__ = ["Detections", "Detector", "box_iou", "mask_box"]
