"""Drawing masks over frames: a translucent fill and a solid outline per object, colour by id.

``draw_masks`` works on host arrays (OpenCV); ``draw_masks_torch`` draws the same pixels on the
masks' device, so a GPU pipeline copies back one finished frame instead of N full-size masks.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import torch
import torch.nn.functional as F


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
    kernel = np.ones((2 * outline + 1,) * 2, np.uint8) if outline else None
    centres = []
    for mask, obj_id in zip(masks, obj_ids):
        if not mask.any():
            continue
        color = np.array(color_for(obj_id), np.float32)
        region = out[mask].astype(np.float32)
        out[mask] = (region * (1 - alpha) + color * alpha).astype(np.uint8)
        if kernel is not None:
            edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, kernel).astype(bool)
            out[edge] = color.astype(np.uint8)
        ys, xs = np.nonzero(mask)
        centres.append((obj_id, int(xs.mean()), int(ys.mean())))
    if labels:
        _put_labels(out, centres)
    return out


@torch.inference_mode()
def draw_masks_torch(
    frame: torch.Tensor,
    masks: torch.Tensor,
    obj_ids: list[int],
    *,
    alpha: float = 0.45,
    outline: int = 2,
    labels: bool = False,
) -> np.ndarray:
    """``draw_masks`` on ``masks``' device: ``frame`` HxWx3 uint8 and ``masks`` bool [N, H, W]
    tensors in, the finished host array out (the one device-to-host copy)."""
    out = frame.to(masks.device)
    h, w = out.shape[:2]
    stats = []
    for mask, obj_id in zip(masks, obj_ids):
        color = torch.tensor(color_for(obj_id), dtype=torch.float32, device=out.device)
        blended = (out.float() * (1 - alpha) + color * alpha).to(torch.uint8)
        out = torch.where(mask[..., None], blended, out)
        if outline:
            m = mask[None, None].float()
            k = 2 * outline + 1
            dilated = F.max_pool2d(m, k, stride=1, padding=outline)
            eroded = -F.max_pool2d(-m, k, stride=1, padding=outline)
            out = torch.where((dilated != eroded)[0, 0, ..., None], color.to(torch.uint8), out)
        if labels:
            weights = mask.double()
            xs = torch.arange(w, device=out.device, dtype=torch.float64)
            ys = torch.arange(h, device=out.device, dtype=torch.float64)
            stats.append(torch.stack([weights.sum(), (weights.sum(0) * xs).sum(), (weights.sum(1) * ys).sum()]))
    image = out.cpu().numpy()
    if labels and stats:
        counts = torch.stack(stats).cpu().numpy()
        centres = [(i, int(sx / n), int(sy / n)) for i, (n, sx, sy) in zip(obj_ids, counts) if n > 0]
        _put_labels(image, centres)
    return image


def _put_labels(image: np.ndarray, centres: list[tuple[int, int, int]]) -> None:
    for obj_id, x, y in centres:
        cv2.putText(image, str(obj_id), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
