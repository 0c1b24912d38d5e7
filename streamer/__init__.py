"""Live SAM 2 segmentation for camera streams."""

from .errors import (
    CheckpointError,
    DownloadError,
    FrameError,
    PromptError,
    StreamerError,
    UnknownObjectError,
)
from .tracker import FrameResult, StreamingTracker

__all__ = [
    "CheckpointError",
    "DownloadError",
    "FrameError",
    "FrameResult",
    "PromptError",
    "StreamerError",
    "StreamingTracker",
    "UnknownObjectError",
]
