"""How a stream's objects look in its video: a style per object, or one for the background.

Object styles: ``overlay`` (a translucent fill and an outline in the object's colour, with its id
and label: the default), ``outline``, ``label`` (its box, id and label only), ``blur`` (privacy: the
object, grown by a margin, blurred) and ``plain`` (drawn as the camera saw it). Background styles
are the stream's and keep every object as the camera saw it: ``blur_background``,
``replace_background`` (an image) and ``cutout`` (the objects alone, on a flat key colour).

Blurring is drawn last, from the camera's own pixels: nothing drawn for another object shows
through it. Each blurred mask is grown before it is blurred, by ``margin`` (a share of the frame's
width) and by ``growth`` more for every frame since the mask was computed: what the masks carried
along the flow between tracked frames may be off by grows with how far they were carried
(measured on the synthetic scene: up to 40 px at 480 px wide after 5 to 7 frames). What was
blurred is returned beside the image (``covered``), which the privacy test checks against the
scene's truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..config.values import BACKGROUND_STYLES, OBJECT_STYLES
from .overlay import color_for, draw_masks

KEY_COLOUR = (0, 255, 0)  # cutout's background: a chroma key
BLUR_WIDTH = 1 / 30  # the box blur's side, a share of the frame's width


@dataclass(frozen=True)
class Look:
    """A stream's style now: its own (``style``) and each object's where it differs."""

    style: str = "overlay"
    by_object: Mapping[int, str] = field(default_factory=dict)
    background: np.ndarray | None = None  # replace_background's image (RGB, any size)
    margin: float = 0.02  # a blurred mask grows by this share of the frame's width...
    growth: float = 0.015  # ...and by this share more per frame (at 30 fps) the mask has been carried

    @classmethod
    def of(
        cls,
        style: str,
        by_label: Mapping[str, str],
        labels: Mapping[int, str | None],
        chosen: Mapping[int, str],
        background: np.ndarray | None = None,
        margin: float = 0.02,
        growth: float = 0.015,
    ) -> Look:
        """A stream's look: ``style``, each object's ``chosen`` style (from the page) or else the
        style its label takes (``by_label``, e.g. ``{"person": "blur"}``)."""
        by_object = {
            obj_id: by_label[label] for obj_id, label in labels.items() if label is not None and label in by_label
        }
        by_object.update(chosen)
        return cls(style, by_object, background, margin, growth)

    def blur_margin(self, width: int, age_ms: float | None) -> int:
        """How far a blurred mask grows, in pixels of a frame ``width`` wide, when it was computed
        ``age_ms`` before the frame (carried along the flow since): at most a quarter of the width."""
        frames = max(0.0, age_ms or 0.0) * 30 / 1000
        return max(2, min(round(width * (self.margin + self.growth * frames)), width // 4))

    def style_of(self, obj_id: int) -> str:
        found = self.by_object.get(obj_id)
        if found is not None:
            return found
        return "plain" if self.style in BACKGROUND_STYLES else self.style

    @property
    def plain(self) -> bool:
        """The default: only overlays, drawn as they always were."""
        return self.style == "overlay" and not self.by_object


def render(
    frame: np.ndarray,
    masks: np.ndarray,
    obj_ids: list[int],
    look: Look,
    *,
    labels: bool = True,
    names: Mapping[int, str] | None = None,
    age_ms: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``frame`` (HxWx3 RGB) with ``masks`` (bool [N, H, W]) drawn in ``look``, the masks computed
    ``age_ms`` before it; and the pixels blurred for privacy (bool HxW, None when nothing is)."""
    if look.plain:
        if not obj_ids:
            return frame, None
        return draw_masks(frame, masks, obj_ids, labels=labels, names=names), None
    styles = [look.style_of(obj_id) for obj_id in obj_ids]
    out = _background(frame, masks, look)
    overlay = [i for i, style in enumerate(styles) if style == "overlay"]
    if overlay:
        out = draw_masks(
            out, masks[overlay], [obj_ids[i] for i in overlay], labels=labels, names=names, copy=out is frame
        )
    for i, style in enumerate(styles):
        if style in ("outline", "label"):
            out = out.copy() if out is frame else out
            (_outline if style == "outline" else _label)(out, masks[i], obj_ids[i], (names or {}).get(obj_ids[i]))
    blurred = [i for i, style in enumerate(styles) if style == "blur"]
    if not blurred:
        return out, None
    out = out.copy() if out is frame else out
    covered = np.zeros(frame.shape[:2], bool)
    grow = look.blur_margin(frame.shape[1], age_ms)
    for i in blurred:
        _blur_into(out, frame, masks[i], grow, covered)
    return out, covered


def blur_size(width: int) -> int:
    """The box blur's side for a frame ``width`` pixels wide (odd)."""
    return max(9, int(width * BLUR_WIDTH)) | 1


def _background(frame: np.ndarray, masks: np.ndarray, look: Look) -> np.ndarray:
    if look.style not in BACKGROUND_STYLES:
        return frame
    height, width = frame.shape[:2]
    if look.style == "blur_background":
        out = cv2.blur(frame, (blur_size(width),) * 2)
    elif look.style == "cutout" or look.background is None:
        out = np.zeros_like(frame)  # then one channel: ten times faster than assigning a colour
        for channel, value in enumerate(KEY_COLOUR):
            if value:
                out[:, :, channel] = value
    elif look.background.shape[:2] != (height, width):
        out = cv2.resize(look.background, (width, height), interpolation=cv2.INTER_AREA)
    else:
        out = look.background.copy()
    if len(masks):
        cv2.copyTo(frame, np.logical_or.reduce(masks).view(np.uint8), out)
    return out


def _blur_into(out: np.ndarray, frame: np.ndarray, mask: np.ndarray, grow: int, covered: np.ndarray) -> None:
    """Blur ``mask`` grown by ``grow`` pixels in ``out``, from ``frame``'s; mark it in ``covered``."""
    height, width = frame.shape[:2]
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0:
        return
    side = blur_size(width)
    pad = grow + side // 2 + 1  # the blur inside the grown mask reads only pixels inside the window
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(width, x + w + pad), min(height, y + h + pad)
    # Every pixel within ``grow`` of the mask (a distance transform: a large dilation is slow).
    outside = (~mask[y0:y1, x0:x1]).view(np.uint8)
    region = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= grow
    blurred = cv2.blur(frame[y0:y1, x0:x1], (side, side))
    window = out[y0:y1, x0:x1]
    cv2.copyTo(blurred, region.view(np.uint8), window)  # in place: ``window`` is a view of ``out``
    covered[y0:y1, x0:x1] |= region


def _outline(out: np.ndarray, mask: np.ndarray, obj_id: int, name: str | None) -> None:
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color_for(obj_id), 2, cv2.LINE_AA)


def _label(out: np.ndarray, mask: np.ndarray, obj_id: int, name: str | None) -> None:
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0:
        return
    colour = color_for(obj_id)
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, 2)
    text = f"{obj_id} {name}" if name else str(obj_id)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
    top = max(0, y - th - base - 4)
    cv2.rectangle(out, (x, top), (x + tw + 6, top + th + base + 4), colour, -1)
    cv2.putText(out, text, (x + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2, cv2.LINE_AA)


def load_background(path: str) -> np.ndarray:
    """replace_background's image (RGB); a ValueError says why it cannot be read."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"display.background: cannot read the image {path!r} (a JPEG or PNG file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


__all__ = ["BACKGROUND_STYLES", "OBJECT_STYLES", "Look", "blur_size", "load_background", "render"]
