"""Detectors by name: the built-in ones, or any callable named by its import path.

``rtdetr`` (COCO's 80 classes, ``coco.py``), ``owlv2`` (any words, ``owl.py``) and ``faces``
(MTCNN, ``faces.py``) are built in. ``package.module:function`` names your own: a callable that
takes an RGB ``uint8 [H, W, 3]`` frame (and, if it takes a second argument, the labels asked for)
and returns ``(boxes, labels, scores)`` (boxes ``[N, 4]`` x0 y0 x1 y1 in frame pixels; arrays,
tensors or lists) or ``Detections``. An attribute ``labels`` on it says what it can name. It
plugs into the same matching as the built-in ones.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import DetectorError
from .detections import Detections, Detector


class CallableDetector:
    """A user's function as a ``Detector``."""

    def __init__(self, fn: Callable[..., Any], name: str, device: str = "cpu") -> None:
        self.fn, self.name, self.device = fn, name, device
        labels = getattr(fn, "labels", None)
        self.labels: tuple[str, ...] | None = None if labels is None else tuple(labels)
        self._takes_queries = _positional(fn) >= 2

    def __call__(self, image: np.ndarray, queries: Sequence[str] = ()) -> Detections:
        result = self.fn(image, list(queries)) if self._takes_queries else self.fn(image)
        try:
            return Detections.of(result)
        except (TypeError, ValueError) as exc:
            raise DetectorError(
                f"detector {self.name} returned something else than boxes, labels, scores: {exc}"
            ) from None


def default_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_detector(name: str, device: str | None = None, *, random_weights: bool = False) -> Detector:
    """The detector ``name`` (``rtdetr``, ``owlv2``, ``faces`` or ``package.module:function``) on
    ``device``. ``random_weights``: the built-in networks with seeded random weights (tests)."""
    device = default_device(device)
    if name == "rtdetr":
        from .coco import CocoDetector

        return CocoDetector.load(device, random_weights=random_weights)
    if name == "owlv2":
        from .owl import TextDetector

        return TextDetector.load(device, random_weights=random_weights)
    if name == "faces":
        from .faces import FaceDetector

        return FaceDetector.load(device, random_weights=random_weights)
    return CallableDetector(import_callable(name), name, device)


def import_callable(path: str) -> Callable[..., Any]:
    """What ``package.module:name`` names (``name`` may be dotted: ``module:Class.method``)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise DetectorError(f"a detector's import path is package.module:function, got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DetectorError(f"cannot import detector module {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise DetectorError(f"detector module {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise DetectorError(f"detector {path!r} is not callable")
    return target


def _positional(fn: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(1 for p in parameters if p.kind in kinds)


__all__ = ["CallableDetector", "default_device", "import_callable", "load_detector"]
