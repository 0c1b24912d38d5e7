"""What a viewer sees of one stream: every camera frame, with the newest masks carried onto it.

The tracker is slower than the camera (far slower on a CPU, or with many objects or streams on a
GPU), so the video does not wait for it. ``Display.show`` runs on every frame the camera
delivers and puts on it the masks of the newest frame the tracker finished: moved along the
optical flow from that frame to this one (``mask_motion: flow``), or left where they were
(``hold``). The flow chain restarts from every new tracked frame, so no drift builds up, and
flow is only computed while a stream has objects. The same recent frames and the flow between
them let a click on a frame the tracker never saw land on the object under the pointer
(``Stream.prompt`` uses ``image``, ``nearest`` and ``carry``). Full-size drawing is left to
whoever needs pixels: ``Output.image``, on the encoder's thread, only while someone watches.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..config import DisplayConfig
from ..model.preprocess import scaled_size
from ..sources import Frame
from ..video.frame import Masks, Output
from ..video.styles import Look
from . import motion

MAX_REMEMBERED = 64  # recent frames kept for flow and clicks, whatever remember_s says
MAX_IMAGES = 16  # of which at most this many keep their pixels (clicks on untracked frames)


@dataclass
class _Recent:
    index: int
    captured_at: float
    wall_ms: float  # capture time on the wall clock (what viewers' frame_ts estimates)
    gray: np.ndarray  # flow size
    image: np.ndarray | None  # kept while the tracker may still be handed this frame
    previous: int | None  # the entry before (flow goes to it)
    flow: np.ndarray | None = None  # forward flow from ``previous`` to this frame, made on demand


@dataclass
class _Chain:
    """Masks being carried frame after frame: each object's transform from their frame to
    ``last``, and the logits moved by it (the next step fits motion to those)."""

    masks: Masks
    last: int
    transforms: list[np.ndarray]
    warped: np.ndarray


class Display:
    """One stream's display state. ``show`` runs on the stream's display thread; ``set_masks``,
    ``drop_object``, ``tracker_took`` and the click helpers on other threads."""

    def __init__(self, config: DisplayConfig | None = None) -> None:
        self.config = config or DisplayConfig()
        self.names: dict[int, str] = {}  # objects' labels, drawn beside their ids (replaced whole, never edited)
        self.look = Look(self.config.style, margin=self.config.privacy_margin)  # the stream's styles (replaced whole)
        self.flows_computed = 0  # tests and benchmarks read it
        self._lock = threading.Lock()
        self._recent: OrderedDict[int, _Recent] = OrderedDict()
        self._size: tuple[int, int] | None = None  # mask size of the current frames
        self._frame_size: tuple[int, int] | None = None
        self._masks: Masks | None = None
        self._tracked_upto = -1  # the newest frame handed to the tracker
        self._chain: _Chain | None = None

    @property
    def masks(self) -> Masks | None:
        return self._masks

    def handed_since(self, source: int | None) -> bool:
        """Whether a frame newer than ``source`` (the tracker's newest; None: it has none) has
        been handed to the tracker: a round holds it, not yet tracked."""
        return self._tracked_upto > (-1 if source is None else source)

    # -- the tracker's side --------------------------------------------------------------------

    def set_masks(self, masks: Masks | None) -> None:
        """The newest tracked masks (None: show frames without masks until the next ones)."""
        self._masks = masks

    def drop_object(self, obj_id: int) -> None:
        """Stop showing ``obj_id`` now, not only from the next tracked frame."""
        masks = self._masks
        if masks is not None and obj_id in masks.obj_ids:
            keep = [i for i, o in enumerate(masks.obj_ids) if o != obj_id]
            self._masks = Masks(masks.frame, masks.captured_at, [masks.obj_ids[i] for i in keep], masks.logits[keep])

    def tracker_forgot(self) -> None:
        """The tracker forgot every frame (a reset): none is on its way to it any more."""
        with self._lock:
            self._tracked_upto = -1

    def tracker_took(self, index: int) -> None:
        """The tracker has frame ``index``: older frames can no longer be handed to it."""
        with self._lock:
            self._tracked_upto = max(self._tracked_upto, index)
            for entry in self._recent.values():
                if entry.index <= index:
                    entry.image = None

    # -- every camera frame --------------------------------------------------------------------

    def show(self, frame: Frame, carry: bool = True) -> Output:
        """Record ``frame`` and return it with the newest masks carried onto it (``carry=False``:
        nobody watches; the masks come as they were computed, and no flow is spent on them)."""
        height, width = frame.image.shape[:2]
        size = scaled_size(height, width, self.config.mask_width)
        gray = motion.small_gray(frame.image, scaled_size(height, width, self.config.flow_width))
        wall_ms = time.time() * 1000 - (time.monotonic() - frame.captured_at) * 1000
        with self._lock:
            if self._size != size or self._frame_size != (height, width):
                self._recent.clear()  # a new resolution: old flows no longer apply
                self._size, self._frame_size, self._chain = size, (height, width), None
            previous = next(reversed(self._recent), None)
            image = frame.image if frame.index > self._tracked_upto else None
            entry = _Recent(frame.index, frame.captured_at, wall_ms, gray, image, previous)
            self._recent[frame.index] = entry
            self._trim(frame.captured_at)
        masks = self._masks
        if masks is None or not masks.obj_ids:
            self._chain = None
            return Output(frame.image, frame.index, frame.captured_at, labels=self.config.labels, look=self.look)
        logits = masks.logits
        if carry and self.config.mask_motion == "flow" and logits.shape[1:] == size:
            logits = self._carried(masks, entry)
        names = {i: self.names[i] for i in masks.obj_ids if i in self.names} if self.config.labels else {}
        return Output(
            frame.image,
            frame.index,
            frame.captured_at,
            list(masks.obj_ids),
            logits,
            masks.frame,
            1000 * (frame.captured_at - masks.captured_at),
            self.config.labels,
            names=names,
            look=self.look,
        )

    def _carried(self, masks: Masks, entry: _Recent) -> np.ndarray:
        """``masks`` moved from their frame onto ``entry``'s, each object by its own motion."""
        chain = self._chain
        if chain is not None and chain.masks is masks and chain.last == entry.previous:
            steps = [entry]
        else:  # new masks: chain afresh from their frame
            path = self._path(masks.frame, entry.index)
            if path is None:  # their frame is no longer remembered (or not shown yet): hold them
                self._chain = None
                return masks.logits
            chain = _Chain(masks, masks.frame, [motion.IDENTITY] * len(masks.obj_ids), masks.logits)
            steps = path
        for step in steps:
            flow = self._flow(step)
            chain.transforms = [
                motion.then(transform, motion.object_motion(warped > 0, flow))
                for transform, warped in zip(chain.transforms, chain.warped)
            ]
            chain.warped = np.stack([motion.warp(x, t) for x, t in zip(masks.logits, chain.transforms)])
            chain.last = step.index
        self._chain = chain
        return chain.warped

    def _path(self, start: int, end: int) -> list[_Recent] | None:
        """The remembered entries after ``start`` up to ``end``, or None if ``start`` is gone."""
        with self._lock:
            if start not in self._recent or start > end:
                return None
            return [e for e in self._recent.values() if start < e.index <= end]

    def _flow(self, entry: _Recent) -> np.ndarray:
        """Forward flow from the entry before ``entry`` to it (zero if that one is gone)."""
        if entry.flow is None:
            with self._lock:
                previous = self._recent.get(entry.previous) if entry.previous is not None else None
            if previous is None:
                return np.zeros((*entry.gray.shape, 2), np.float32)
            entry.flow = motion.forward_flow(previous.gray, entry.gray)
            self.flows_computed += 1
        return entry.flow

    def _trim(self, now: float) -> None:
        recent = self._recent
        while len(recent) > MAX_REMEMBERED or (
            len(recent) > 2 and now - next(iter(recent.values())).captured_at > self.config.remember_s
        ):
            recent.popitem(last=False)
        holding = [e for e in recent.values() if e.image is not None]
        for entry in holding[:-MAX_IMAGES]:
            entry.image = None

    # -- clicks ----------------------------------------------------------------------------------

    def nearest(self, wall_ms: float) -> int | None:
        """The remembered frame captured closest to ``wall_ms`` (a viewer's ``frame_ts``)."""
        with self._lock:
            if not self._recent:
                return None
            return min(self._recent.values(), key=lambda e: abs(e.wall_ms - wall_ms)).index

    def newest(self) -> int | None:
        with self._lock:
            return next(reversed(self._recent), None)

    def remembers(self, index: int) -> bool:
        """Whether frame ``index`` is still remembered (a click can be carried onto it)."""
        with self._lock:
            return index in self._recent

    def image(self, index: int) -> np.ndarray | None:
        """Frame ``index``'s pixels, if it is newer than anything the tracker was handed."""
        with self._lock:
            entry = self._recent.get(index)
            return None if entry is None else entry.image

    def captured_at(self, index: int) -> float | None:
        with self._lock:
            entry = self._recent.get(index)
            return None if entry is None else entry.captured_at

    def carry(
        self, points: list[tuple[float, float]], source: int, target: int, *, box: bool = False
    ) -> list[tuple[float, float]] | None:
        """``points`` (pixels of frame ``source``) moved along the flow onto frame ``target``;
        None if either frame is no longer remembered. Clicks move with the flow under them; a
        ``box`` (two corners, which usually lie on the background) with the motion fitted to
        everything inside it, as an object's mask is."""
        with self._lock:
            indices = list(self._recent)
            frame_size = self._frame_size
            size = self._recent[source].gray.shape if source in self._recent else None
        if target not in indices or size is None or frame_size is None:
            return None
        sx, sy = size[1] / frame_size[1], size[0] / frame_size[0]
        moved = [((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for x, y in points]
        with self._lock:
            steps = [self._recent[i] for i in indices if min(source, target) < i <= max(source, target)]
        backward = target < source
        for entry in reversed(steps) if backward else steps:
            flow = self._flow(entry)
            if box:
                fitted = motion.object_motion(_box_mask(moved, flow.shape[:2]), flow)
                moved = motion.move(moved, motion.invert(fitted) if backward else fitted)
            elif backward:
                moved = [motion.carry_back(p, flow) for p in moved]
            else:
                moved = [motion.carry_forward(p, flow) for p in moved]
        return [((x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5) for x, y in moved]


def _box_mask(corners: list[tuple[float, float]], size: tuple[int, int]) -> np.ndarray:
    (xa, ya), (xb, yb) = corners
    mask = np.zeros(size, bool)
    mask[
        max(0, int(min(ya, yb))) : max(0, int(max(ya, yb)) + 1), max(0, int(min(xa, xb))) : max(0, int(max(xa, xb)) + 1)
    ] = True
    return mask
