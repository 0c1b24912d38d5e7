"""Moving shapes with known masks: a synthetic camera whose ground truth is exact.

``synthetic:shapes`` is a live source like any other: textured discs and squares glide over a
textured, still background at a set speed in pixels per frame, bouncing off the edges. Its
``ShapesScene`` also says which pixels belong to each shape on any frame, which is what the
display benchmark and the click tests measure against (no model accuracy involved). Shapes and
background carry texture, as real objects and rooms do, so that optical flow has something to
follow; later shapes pass in front of earlier ones, and the masks say so.

With ``traffic``, shapes come and go instead of bouncing: each one enters from an edge, crosses
the frame in a straight line through its middle (so paths cross and shapes occlude one another),
leaves, and comes back a while later on a new path as a new *instance*, the way people and cars
cross a camera's view. ``instances(n)`` names who is where on frame ``n`` and each shape's label
is its kind (``disc``, ``square``): the ground truth that automatic tracking is measured on.
"""

from __future__ import annotations

import math
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .source import FrameSource, SourceError


@dataclass(frozen=True)
class Shape:
    kind: str  # "disc" or "square"
    radius: int  # half the side for a square
    start: tuple[float, float]  # centre on frame 0
    direction: tuple[float, float]  # unit vector
    texture: np.ndarray  # (2r+1)x(2r+1)x3 uint8


class ShapesScene:
    """``count`` textured shapes moving at ``speed`` px/frame: frame ``n`` and its true masks.

    Deterministic: the same seed and frame number always give the same pixels, so a frame's truth
    can be recomputed from its number alone.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        speed: float = 5.0,
        count: int = 3,
        seed: int = 0,
        traffic: bool = False,
        gap: int = 30,
    ) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"a shapes scene needs at least 32x32 pixels, got {width}x{height}")
        if not 0 <= speed <= min(width, height) / 4:
            raise ValueError(f"speed must be 0 to {min(width, height) / 4:g} px/frame for a {width}x{height} scene")
        if not 1 <= count <= 8:
            raise ValueError(f"count must be 1 to 8 shapes, got {count}")
        self.width, self.height, self.speed = width, height, float(speed)
        self.traffic, self.seed = traffic, seed
        if traffic and speed <= 0:
            raise ValueError("a traffic scene needs a speed above 0 (shapes cross the frame)")
        rng = np.random.default_rng(seed)
        gray = (40 + 130 * _noise(rng, height, width, blur=0.01 * max(width, height))).astype(np.uint8)
        self.background = np.repeat(gray[..., None], 3, axis=2)
        self.shapes: list[Shape] = []
        for i in range(count):
            radius = int(min(width, height) * rng.uniform(0.12, 0.18))
            angle = rng.uniform(0, 2 * math.pi)
            start = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
            tint = np.array(rng.integers(60, 256, 3), np.float32)
            texture = 0.55 + 0.45 * _noise(rng, 2 * radius + 1, 2 * radius + 1, blur=radius / 6)
            self.shapes.append(
                Shape(
                    "disc" if i % 2 == 0 else "square",
                    radius,
                    start,
                    (math.cos(angle), math.sin(angle)),
                    (texture[..., None] * tint).astype(np.uint8),
                )
            )

        longest = max((s.radius for s in self.shapes), default=0) * 2 + math.hypot(width, height)
        self.period = int(math.ceil(longest / max(speed, 1e-6))) + gap  # frames between two entries of one shape

    @property
    def labels(self) -> list[str]:
        """Each shape's label (its kind)."""
        return [shape.kind for shape in self.shapes]

    def instances(self, n: int) -> list[int | None]:
        """Who each shape is on frame ``n``: an id per crossing (shape * 100000 + crossing), None
        while it is off the frame. Without traffic every shape is always its own one instance."""
        if not self.traffic:
            return list(range(len(self.shapes)))
        found: list[int | None] = []
        for i in range(len(self.shapes)):
            crossing, centre = self._crossing(i, n)
            found.append(None if centre is None else i * 100000 + crossing)
        return found

    def _crossing(self, i: int, n: int) -> tuple[int, tuple[int, int] | None]:
        """Shape ``i``'s crossing number on frame ``n`` and its centre (None: off the frame)."""
        shape = self.shapes[i]
        clock = n + (i * self.period) // len(self.shapes)
        crossing, phase = divmod(clock, self.period)
        rng = np.random.default_rng([self.seed, i, crossing])
        r, w, h = shape.radius, self.width, self.height
        side = int(rng.integers(4))
        along = rng.uniform(0.15, 0.85)
        entry = [(along * w, -r), (along * w, h + r), (-r, along * h), (w + r, along * h)][side]
        target = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
        dx, dy = target[0] - entry[0], target[1] - entry[1]
        norm = math.hypot(dx, dy) or 1.0
        x = entry[0] + dx / norm * self.speed * phase
        y = entry[1] + dy / norm * self.speed * phase
        if not (-r < x < w + r and -r < y < h + r):
            return crossing, None
        return crossing, (int(round(x)), int(round(y)))

    def centres(self, n: int) -> list[tuple[int, int]]:
        """Each shape's centre on frame ``n``: straight lines, reflected at the edges (with traffic,
        shapes off the frame are far outside it)."""
        if self.traffic:
            far = (-(10**6), -(10**6))
            return [self._crossing(i, n)[1] or far for i in range(len(self.shapes))]
        return [
            (
                _bounce(s.start[0] + s.direction[0] * self.speed * n, s.radius, self.width - 1 - s.radius),
                _bounce(s.start[1] + s.direction[1] * self.speed * n, s.radius, self.height - 1 - s.radius),
            )
            for s in self.shapes
        ]

    def render(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``n`` (HxWx3 uint8 RGB) and its true masks (bool ``[count, H, W]``, visible pixels)."""
        image = self.background.copy()
        masks = np.zeros((len(self.shapes), self.height, self.width), bool)
        for i, (shape, (cx, cy)) in enumerate(zip(self.shapes, self.centres(n))):
            r = shape.radius
            # The part of the shape's square inside the frame (all of it, unless it is crossing an edge).
            x0, y0 = max(0, cx - r), max(0, cy - r)
            x1, y1 = min(self.width, cx + r + 1), min(self.height, cy + r + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            cut = (slice(y0 - (cy - r), y1 - (cy - r)), slice(x0 - (cx - r), x1 - (cx - r)))
            stamp = _stamp(shape.kind, r)[cut]
            window = (slice(y0, y1), slice(x0, x1))
            image[window][stamp] = shape.texture[cut][stamp]
            masks[:i, window[0], window[1]] &= ~stamp  # hidden behind this one
            masks[i][window] = stamp
        return image, masks

    def masks(self, n: int) -> np.ndarray:
        return self.render(n)[1]


class ShapesSource(FrameSource):
    """A ``ShapesScene`` played live at ``fps``; ``truth(image)`` names the frame an image is.

    The last ``remember`` images made are kept (by identity) so that a stand-in tracker can ask
    which scene frame it was handed.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        speed: float = 5.0,
        count: int = 3,
        seed: int = 0,
        remember: int = 64,
        traffic: bool = False,
        **kwargs: Any,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        super().__init__("synthetic:shapes", reconnect=False, **kwargs)
        self.scene = ShapesScene(width, height, speed, count, seed, traffic)
        self.fps = fps
        self._made: deque[tuple[np.ndarray, int]] = deque(maxlen=remember)
        self._truth_lock = threading.Lock()

    def frame_number(self, image: np.ndarray) -> int | None:
        """The scene frame ``image`` is (the very array this source made), if still remembered."""
        with self._truth_lock:
            return next((n for made, n in reversed(self._made) if made is image), None)

    def image(self, n: int) -> np.ndarray:
        """Scene frame ``n``, remembered for ``frame_number`` (tests drive frames one by one with it)."""
        image = self.scene.render(n)[0]
        with self._truth_lock:
            self._made.append((image, n))
        return image

    def _produce(self) -> None:
        self._play(self.fps, self.image)


def parse_shapes_spec(spec: str) -> dict[str, Any]:
    """Options in ``synthetic:shapes?speed=5&width=1280&height=720&fps=25&count=3&seed=0&traffic=1``."""
    _, _, query = spec.partition("?")
    options: dict[str, Any] = {}
    casts: dict[str, Any] = {"width": int, "height": int, "count": int, "seed": int, "fps": float, "speed": float}
    casts["traffic"] = lambda v: bool(int(v))
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key not in casts:
            raise SourceError(f"synthetic:shapes has no option {key!r} (known: {', '.join(sorted(casts))})")
        try:
            options[key] = casts[key](values[-1])
        except ValueError:
            raise SourceError(f"synthetic:shapes option {key}={values[-1]!r} must be a number") from None
    return options


def _bounce(x: float, low: int, high: int) -> int:
    span = max(1, high - low)
    u = (x - low) % (2 * span)
    return int(round(low + (u if u <= span else 2 * span - u)))


def _stamp(kind: str, r: int) -> np.ndarray:
    if kind == "square":
        return np.ones((2 * r + 1, 2 * r + 1), bool)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def _noise(rng: np.random.Generator, h: int, w: int, *, blur: float) -> np.ndarray:
    """Blurred noise in 0..1: the kind of texture optical flow can lock onto."""
    noise = cv2.GaussianBlur(rng.random((h, w), np.float32), (0, 0), max(0.5, blur))
    return (noise - noise.min()) / max(1e-6, float(noise.max() - noise.min()))
