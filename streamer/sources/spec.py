"""A source spec (what --source and YAML say) to a started source: the one place the grammar is read."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from .browser import BrowserSource
from .shapes import ShapesSource, parse_shapes_spec
from .source import NETWORK_SCHEMES, FrameSource, mask_credentials
from .stream import AVSource, StreamOptions
from .synthetic import SyntheticSource
from .webcam import WebcamSource

logger = logging.getLogger(__name__)


def open_source(spec: str, **options: Any) -> FrameSource:
    """Open and start a source from its spec; the options go to its class.

    ``"0"`` or ``"webcam:0"``: a local camera. ``"browser"``: the viewer's camera over WebRTC.
    ``rtsp://``, ``rtsps://``, ``http(s)://`` and other FFmpeg URLs: a network stream. A file path:
    played at its own frame rate, looping unless ``loop=False``. ``"synthetic"``: moving shapes;
    ``"synthetic:shapes?speed=5"``: textured shapes at a set speed, with ground-truth masks.
    """
    if spec == "synthetic":
        return SyntheticSource(**options).start()
    if spec == "synthetic:shapes" or spec.startswith("synthetic:shapes?"):
        return ShapesSource(**{**parse_shapes_spec(spec), **options}).start()
    if spec == "browser":
        return BrowserSource(**options).start()
    if spec.isdigit() or spec.startswith("webcam:"):
        index = spec.removeprefix("webcam:")
        if not index.isdigit():
            raise ValueError(f"webcam spec must be webcam:N with N a number, got {spec!r}")
        return WebcamSource(int(index), **options).start()
    if spec.startswith(NETWORK_SCHEMES) or Path(spec).suffix or Path(spec).exists():
        # StreamOptions' fields may come flat (from a YAML config): transport="udp", ...
        names = {f.name for f in dataclasses.fields(StreamOptions)}
        flat = {key: options.pop(key) for key in list(options) if key in names}
        if flat:
            options["options"] = dataclasses.replace(options.get("options") or StreamOptions(), **flat)
        return AVSource(spec, **options).start()
    raise ValueError(
        f"unknown source {mask_credentials(spec)!r}: use a camera number ('0' or 'webcam:0'), "
        "an rtsp://, rtsps:// or http(s):// URL, a video file path, 'synthetic', 'synthetic:shapes', or 'browser'"
    )
