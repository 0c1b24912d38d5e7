"""Drawing masks over frames: a translucent fill and a solid outline per object, colour by id."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def color_for(obj_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour for an object id (golden-ratio hue steps)."""
    hue = (0.12 + obj_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_masks(
    frame: np.ndarray,
    masks: np.ndarray,
    obj_ids: list[int],
    *,
    alpha: float = 0.45,
    outline: int = 2,
    labels: bool = False,
) -> np.ndarray:
    """Return a copy of ``frame`` (HxWx3 RGB) with ``masks`` (bool [N, H, W]) drawn over it."""
    out = frame.copy()
    if len(obj_ids) == 0:
        return out
    kernel = np.ones((2 * outline + 1,) * 2, np.uint8) if outline else None
    for mask, obj_id in zip(masks, obj_ids):
        if not mask.any():
            continue
        color = np.array(color_for(obj_id), np.float32)
        region = out[mask].astype(np.float32)
        out[mask] = (region * (1 - alpha) + color * alpha).astype(np.uint8)
        if kernel is not None:
            m8 = mask.astype(np.uint8)
            edge = cv2.morphologyEx(m8, cv2.MORPH_GRADIENT, kernel).astype(bool)
            out[edge] = color.astype(np.uint8)
        if labels:
            ys, xs = np.nonzero(mask)
            cv2.putText(
                out,
                str(obj_id),
                (int(xs.mean()), int(ys.mean())),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.8,
                (255, 255, 255),
                2,
                cv2.LINE_AA,
            )
    return out
