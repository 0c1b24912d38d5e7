"""Live SAM 2 segmentation for camera streams."""

import platform

from .errors import (
    CheckpointError,
    DownloadError,
    FrameError,
    ModelError,
    PromptError,
    StreamerError,
    UnknownObjectError,
)

__version__ = "0.1.0"  # the one place: pyproject reads it


def version_text() -> str:
    """What ``sam2-stream --version`` prints."""
    return f"sam2-stream {__version__} (Python {platform.python_version()})"


def __getattr__(name: str) -> object:
    """The tracker is imported on first use, so that ``sam2-stream doctor`` and ``--version`` work
    (and can say what is wrong) even where torch cannot be imported."""
    if name in ("FrameResult", "StreamingTracker"):
        from .model import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "version_text",
    "CheckpointError",
    "DownloadError",
    "FrameError",
    "FrameResult",
    "ModelError",
    "PromptError",
    "StreamerError",
    "StreamingTracker",
    "UnknownObjectError",
]
