"""Runs one scripted streaming session on our tracker and replays it on the official predictor."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sam2.build_sam import build_sam2_video_predictor

from streamer import StreamingTracker

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@dataclass
class Session:
    """Per-frame logits of both implementations: {frame: {obj_id: [H, W] logits}}."""

    ours: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    official: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    late_ids: list[int] = field(default_factory=list)


def official_predictor(tracker: StreamingTracker, image_size: int):
    """The official SAM2VideoPredictor with the tracker's weights loaded into it."""
    predictor = build_sam2_video_predictor(
        CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"]
    )
    predictor.load_state_dict(tracker.model.state_dict())
    return predictor


def ellipse_mask(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return ((xx - 0.3 * width) / (0.12 * width)) ** 2 + ((yy - 0.6 * height) / (0.2 * height)) ** 2 < 1


def _record(store: dict, frame_index: int, obj_ids, logits) -> None:
    logits = logits.float().cpu().numpy()[:, 0] if isinstance(logits, torch.Tensor) else logits
    store[frame_index] = {int(o): logits[i] for i, o in enumerate(obj_ids)}


def run_session(tracker: StreamingTracker, folder: Path, frames: list[np.ndarray], image_size: int) -> Session:
    """Points and a box on frame 0, a mask object on frame 6, a correction click on frame 12,
    then (at frame 23) a new object on frame 20 and a correction on frame 21, both in history."""
    height, width = frames[0].shape[:2]
    click1 = [[0.45 * width, 0.5 * height]]
    box2 = [0.55 * width, 0.2 * height, 0.9 * width, 0.7 * height]
    mask3 = ellipse_mask(height, width)
    fix1 = [[0.2 * width, 0.25 * height]]
    click4 = [[0.7 * width, 0.8 * height], [0.1 * width, 0.1 * height]]
    fix2 = [[0.6 * width, 0.3 * height]]
    session = Session()

    ours = session.ours
    _keep(ours, tracker.step(frames[0]))
    tracker.add_prompt(1, points=click1, labels=[1])
    _keep(ours, tracker.add_prompt(2, box=box2))
    for i in range(1, 24):
        result = tracker.step(frames[i])
        if i == 6:
            result = tracker.add_prompt(3, mask=mask3)
        if i == 12:
            result = tracker.add_prompt(1, points=fix1, labels=[0])
        _keep(ours, result)
    # prompts on frames the viewer saw a little earlier: results come for the newest frame (23)
    late = {}
    _keep(late, tracker.add_prompt(4, points=click4, labels=[1, 0], frame_index=20))
    _keep(late, tracker.add_prompt(2, points=fix2, labels=[1], frame_index=21))
    ours["late"] = late[23]
    session.late_ids = tracker.obj_ids

    predictor = official_predictor(tracker, image_size)
    off = session.official
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = predictor.init_state(str(folder))
        predictor.add_new_points_or_box(state, 0, 1, points=click1, labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, box=box2)
        for f, ids, masks in predictor.propagate_in_video(state, 0, 5):
            _record(off, f, ids, masks)
        predictor.add_new_mask(state, 6, 3, mask3)
        for f, ids, masks in predictor.propagate_in_video(state, 6, 6):  # frames 6..12
            _record(off, f, ids, masks)
        # the click comes after frame 12 was tracked, as in a live stream: a correction
        _record(off, 12, *predictor.add_new_points_or_box(state, 12, 1, fix1, [0], clear_old_points=False)[1:])
        for f, ids, masks in predictor.propagate_in_video(state, 13, 10):
            _record(off, f, ids, masks)
        predictor.add_new_points_or_box(state, 20, 4, points=click4, labels=[1, 0])
        for _ in predictor.propagate_in_video(state, 20, 3):
            pass
        predictor.add_new_points_or_box(state, 21, 2, points=fix2, labels=[1], clear_old_points=False)
        late = {}
        for f, ids, masks in predictor.propagate_in_video(state, 22, 1):
            _record(late, f, ids, masks)
        off["late"] = late[23]
    return session


def _keep(store: dict, result) -> None:
    store[result.frame_index] = {o: result.logits[i] for i, o in enumerate(result.obj_ids)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
