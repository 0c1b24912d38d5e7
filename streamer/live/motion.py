"""Optical flow between consecutive frames: how masks and clicks move between the frames the
tracker saw and the frames a viewer sees.

Everything works on small grayscale copies of the frames (the display's flow size, a few hundred
pixels wide), where OpenCV's DIS flow costs well under a millisecond. A flow here is always
*forward*: for each pixel of a frame, where it went on the next one.

Masks are not remapped pixel by pixel along the dense flow. Where an object moves off the
background, the background it uncovers has the background's flow (none), which points back to
where the object was: a dense warp leaves the mask's trailing edge behind, and its IoU falls
fast with speed (0.86 at 5 px/frame and 1:5, against 0.95 for what follows; bench/display.py).
Instead each object's own motion is fitted to the flow of its pixels (rotation, uniform scale
and translation, robust to the pixels at its edges), and its mask is moved by that: the whole
object moves together, as objects do over the fraction of a second between tracked frames.
"""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUND_LOGIT = -32.0  # what a mask reads where its frame had no pixel
MAX_POINTS = 400  # flow samples per object fit
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def small_gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (HxWx3 RGB) as uint8 grayscale of ``size`` (h, w)."""
    h, w = size
    small = image if image.shape[:2] == size else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def forward_flow(previous: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """For each pixel of ``previous``, its displacement to ``gray`` (float32 HxWx2, x then y).

    DIS's "ultrafast" preset, but down to the finest scale: the preset stops at a quarter of the
    input, where an object a few dozen pixels wide blurs into its background and its motion
    comes out a quarter too slow; at full scale it is within a few percent (bench/display.py).
    """
    # Not thread-safe, cheap to make. (OpenCV has it; its type stubs do not.)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
    dis.setFinestScale(0)
    return dis.calc(previous, gray, None)


def object_motion(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """How the object covering ``mask`` (bool, on the flow's first frame) moved along ``flow``
    (any size: coarser than the mask is usual): a 2x3 similarity transform in the mask's pixels,
    fitted to the flow of the object's inner pixels (RANSAC, so the pixels at its edges, where
    flow mixes object and background, do not drag it). Identity if the object is gone."""
    inner = cv2.erode(mask.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    ys, xs = np.nonzero(inner)
    if len(xs) < 3:
        ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return IDENTITY
    if len(xs) > MAX_POINTS:
        pick = np.linspace(0, len(xs) - 1, MAX_POINTS).astype(np.int64)
        ys, xs = ys[pick], xs[pick]
    (h, w), (fh, fw) = mask.shape, flow.shape[:2]
    sx, sy = fw / w, fh / h
    fx = np.clip(((xs + 0.5) * sx).astype(np.int64), 0, fw - 1)
    fy = np.clip(((ys + 0.5) * sy).astype(np.int64), 0, fh - 1)
    src = np.stack([xs, ys], axis=1).astype(np.float32)
    dst = src + flow[fy, fx] / np.array([sx, sy], np.float32)
    if len(xs) >= 3:
        fitted, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if fitted is not None:
            return fitted
    dx, dy = np.median(dst - src, axis=0)  # too few points for a fit: its median shift
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def then(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2x3 transform that applies ``first``, then ``second``."""
    return second[:, :2] @ first + np.array([[0.0, 0.0, second[0, 2]], [0.0, 0.0, second[1, 2]]])


def invert(transform: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(transform)


def move(points: list[tuple[float, float]], transform: np.ndarray) -> list[tuple[float, float]]:
    return [
        (
            float(transform[0, 0] * x + transform[0, 1] * y + transform[0, 2]),
            float(transform[1, 0] * x + transform[1, 1] * y + transform[1, 2]),
        )
        for x, y in points
    ]


def warp(logits: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """One object's mask logits moved by ``transform`` (2x3, from their frame to this one)."""
    h, w = logits.shape
    return cv2.warpAffine(
        logits, transform, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND_LOGIT
    )


def carry_forward(point: tuple[float, float], flow: np.ndarray) -> tuple[float, float]:
    """A point of a frame, moved onto the next frame along that frame's forward ``flow``."""
    dx, dy = _sample(flow, point)
    return point[0] + dx, point[1] + dy


def carry_back(point: tuple[float, float], flow: np.ndarray, iterations: int = 6) -> tuple[float, float]:
    """A point of the next frame, moved back onto the frame whose forward ``flow`` this is: the
    ``q`` with ``q + flow(q) = point``, found by fixed-point iteration."""
    q = point
    for _ in range(iterations):
        dx, dy = _sample(flow, q)
        q = (point[0] - dx, point[1] - dy)
    return q


def _sample(flow: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    """Bilinear flow at ``point`` (flow-size pixels), clamped to the frame."""
    h, w = flow.shape[:2]
    x = min(max(point[0], 0.0), w - 1.0)
    y = min(max(point[1], 0.0), h - 1.0)
    x0, y0 = int(x), int(y)
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = flow[y0, x0] * (1 - fx) + flow[y0, x1] * fx
    bottom = flow[y1, x0] * (1 - fx) + flow[y1, x1] * fx
    value = top * (1 - fy) + bottom * fy
    return float(value[0]), float(value[1])
