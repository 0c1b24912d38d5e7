"""The built-in synthetic camera: moving shapes made in code, so that everything runs with no camera and no file."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from .source import FrameSource

logger = logging.getLogger(__name__)


class SyntheticSource(FrameSource):
    """Moving shapes made in code, so that everything runs with no camera and no file."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, **kwargs: Any) -> None:
        super().__init__("synthetic", reconnect=False, **kwargs)
        self.size, self.fps = (width, height), fps
        yy, xx = np.mgrid[:height, :width]
        self._background = np.stack(
            [xx * 160 // max(1, width), yy * 160 // max(1, height), np.full_like(xx, 90)], axis=-1
        ).astype(np.uint8)

    def render(self, t: float) -> np.ndarray:
        """The pattern at time ``t`` seconds: a circle, a square and a bar moving independently."""
        w, h = self.size
        image = self._background.copy()
        cx = int(w * (0.5 + 0.3 * np.sin(t * 1.3)))
        cy = int(h * (0.5 + 0.25 * np.cos(t * 0.9)))
        cv2.circle(image, (cx, cy), max(4, h // 8), (235, 70, 60), -1)
        sx = int(w * (0.5 + 0.35 * np.cos(t * 0.7)))
        side = max(4, h // 6)
        cv2.rectangle(image, (sx - side // 2, h // 4), (sx + side // 2, h // 4 + side), (60, 200, 90), -1)
        by = int(h * (0.75 + 0.1 * np.sin(t * 2.1)))
        cv2.rectangle(image, (w // 10, by), (w // 10 + w // 3, by + max(2, h // 30)), (250, 230, 80), -1)
        return image

    def _produce(self) -> None:
        self._play(self.fps, lambda n: self.render(n / self.fps))
