"""User prompts: typed (``Points``, ``Box``, ``Mask``: the ``FramePrompt`` a tracker takes), checked,
and converted to model inputs.

Conversion follows ``SAM2VideoPredictor.add_new_points_or_box`` / ``add_new_mask`` operation for
operation, so the same click gives the same tensor; validation turns the mistakes people make
(a click outside the frame, a label of 2, a mask of the wrong size) into messages that say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptError


@dataclass(frozen=True)
class Points:
    """Clicks in pixels of a frame: label 1 adds what is under the point, 0 excludes it."""

    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Box:
    """A box in pixels of a frame, ``(x0, y0, x1, y1)``, and optionally clicks inside it."""

    box: tuple[float, float, float, float]
    clicks: Points | None = None


@dataclass(frozen=True)
class Mask:
    """An object's mask at the frame's size (bool ``[H, W]``)."""

    mask: np.ndarray


FramePrompt = Points | Box | Mask  # what a tracker takes for one object on one frame


def prompt_fields(prompt: FramePrompt) -> dict[str, Any]:
    """``prompt`` as ``StreamingTracker.add_prompt``'s keyword arguments."""
    if isinstance(prompt, Mask):
        return {"mask": prompt.mask}
    if isinstance(prompt, Box):
        clicks = prompt.clicks
        extra = {} if clicks is None else {"points": [list(p) for p in clicks.points], "labels": list(clicks.labels)}
        return {"box": list(prompt.box), **extra}
    return {"points": [list(p) for p in prompt.points], "labels": list(prompt.labels)}


@dataclass(frozen=True)
class Prompt:
    """One prompt in model input space: points (box corners first, labels 2/3) or a mask."""

    coords: torch.Tensor | None  # [1, P, 2] float32, in model pixels (0..image_size)
    labels: torch.Tensor | None  # [1, P] int32
    mask: torch.Tensor | None  # [1, 1, S, S] float32 of 0/1
    has_box: bool


def make_prompt(
    points: object,
    labels: object,
    box: object,
    mask: object,
    *,
    height: int,
    width: int,
    image_size: int,
    device: torch.device,
) -> Prompt:
    """Check a prompt against a ``height`` x ``width`` frame and convert it like the official predictor."""
    if points is None and box is None and mask is None:
        raise PromptError("empty prompt: give points (with labels), a box, or a mask")
    if mask is not None:
        if points is not None or box is not None:
            raise PromptError("a mask prompt replaces points and boxes on its frame: send it alone")
        return Prompt(None, None, _mask(mask, height, width, image_size, device), has_box=False)
    if (points is None) != (labels is None):
        raise PromptError("points and labels go together: one label (1 or 0) per point")

    coords = torch.zeros(0, 2, dtype=torch.float32)
    point_labels = torch.zeros(0, dtype=torch.int32)
    if points is not None:
        coords = _points(points, height, width)
        point_labels = _labels(labels, len(coords))
    coords, point_labels = coords[None], point_labels[None]
    if box is not None:
        corners = _box(box, height, width).reshape(1, 2, 2)
        coords = torch.cat([corners, coords], dim=1)
        point_labels = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), point_labels], dim=1)
    coords = coords / torch.tensor([width, height]) * image_size
    return Prompt(coords.to(device), point_labels.to(device), None, has_box=box is not None)


def _as_float_array(value: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be numbers, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise PromptError(f"{what} must be finite numbers, got {value!r}")
    return array


def _points(points: object, height: int, width: int) -> torch.Tensor:
    array = _as_float_array(points, "points")
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise PromptError(f"points must be a non-empty list of [x, y] pairs, got shape {array.shape}")
    for x, y in array:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(
                f"point ({x:g}, {y:g}) is outside the {width}x{height} frame "
                "(points are in pixels of the frame the user saw)"
            )
    return torch.tensor(array, dtype=torch.float32)


def _labels(labels: object, count: int) -> torch.Tensor:
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != count:
        raise PromptError(f"labels must be a list of {count} values, one per point, got {labels!r}")
    for label in array.tolist():
        if label not in (0, 1):
            raise PromptError(f"labels must be 1 (positive) or 0 (negative), got {label!r}")
    return torch.tensor(array.astype(np.int64), dtype=torch.int32)


def _box(box: object, height: int, width: int) -> torch.Tensor:
    array = _as_float_array(box, "box").reshape(-1)
    if array.shape != (4,):
        raise PromptError(f"box must be [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = array
    if not (x0 < x1 and y0 < y1):
        raise PromptError(f"box [x0, y0, x1, y1] needs x0 < x1 and y0 < y1, got {box!r}")
    if not (x0 >= 0 and x1 <= width and y0 >= 0 and y1 <= height):
        raise PromptError(f"box {array.tolist()} reaches outside the {width}x{height} frame")
    return torch.tensor(array, dtype=torch.float32)


def _mask(mask: object, height: int, width: int, image_size: int, device: torch.device) -> torch.Tensor:
    array = np.asarray(mask)
    if array.shape != (height, width):
        raise PromptError(f"mask must have the frame's shape ({height}, {width}), got {array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise PromptError("mask must be boolean (or 0/1 numbers)")
        array = array.astype(bool)
    tensor = torch.from_numpy(array)[None, None].float().to(device)
    if (height, width) != (image_size, image_size):
        tensor = F.interpolate(
            tensor, size=(image_size, image_size), align_corners=False, mode="bilinear", antialias=True
        )
        tensor = (tensor >= 0.5).float()
    return tensor
