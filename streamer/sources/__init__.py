"""Where frames come from: cameras, files, network streams, the viewer's camera, synthetic scenes.

``open_source(spec)`` (``spec.py``) reads a spec once and starts the right ``FrameSource``; every
source hands out the newest frame and survives its camera going away (``source.py``).
"""

from .browser import BrowserSource
from .shapes import ShapesScene, ShapesSource
from .source import Frame, FrameSource, SourceError, SourceStats, SourceTimeoutError, mask_credentials
from .spec import open_source
from .stream import AVSource, StreamOptions
from .synthetic import SyntheticSource
from .webcam import WebcamSource

__all__ = [
    "AVSource",
    "BrowserSource",
    "Frame",
    "FrameSource",
    "ShapesScene",
    "ShapesSource",
    "SourceError",
    "SourceStats",
    "SourceTimeoutError",
    "StreamOptions",
    "SyntheticSource",
    "WebcamSource",
    "mask_credentials",
    "open_source",
]
