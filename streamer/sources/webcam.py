"""A local camera (V4L2 on Linux) through OpenCV."""

from __future__ import annotations

import logging
from typing import Any

import cv2

from .source import FrameSource, SourceError

logger = logging.getLogger(__name__)


class WebcamSource(FrameSource):
    """A local camera through OpenCV, reopened with backoff if it vanishes."""

    def __init__(self, index: int, **kwargs: Any) -> None:
        super().__init__(f"webcam:{index}", reconnect=kwargs.pop("reconnect", True), **kwargs)
        self.index = index
        capture = self._open()
        if not capture.isOpened():
            raise SourceError(
                f"cannot open webcam:{index}: no such camera or it is busy "
                "(check /dev/video*, or use --source synthetic)"
            )
        self._capture: cv2.VideoCapture | None = capture

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self.index)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _produce(self) -> bool:
        capture, self._capture = self._capture or self._open(), None
        try:
            if not capture.isOpened():
                raise SourceError("camera not available")
            while not self._stop.is_set():
                ok, bgr = capture.read()
                if not ok:
                    return False
                self._publish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None)
            return True
        finally:
            capture.release()
