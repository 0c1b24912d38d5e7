"""The viewer's own camera, sent up over WebRTC: frames are pushed in, not read."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .source import FrameSource

logger = logging.getLogger(__name__)


class BrowserSource(FrameSource):
    """A viewer's own camera, sent up over WebRTC: frames are pushed in, no reader thread.

    Until a viewer connects its camera, consumers simply wait (the open timeout is effectively off).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("open_timeout", float("inf"))
        super().__init__("browser camera", reconnect=False, **kwargs)

    def start(self) -> BrowserSource:
        return self

    def push(self, image: np.ndarray, pts: float | None) -> None:
        if not self._stop.is_set():
            self._publish(image, pts)

    def disconnected(self) -> None:
        self.stats.connected = False
