"""The overlay: drawing only each mask's box gives the pixels a full-frame pass gives."""

from __future__ import annotations

import cv2
import numpy as np

from streamer.video.overlay import color_for, draw_masks, masks_at

from ..conftest import read_frames


def _masks(h: int, w: int) -> np.ndarray:
    """Three overlapping objects, one touching the border, one empty."""
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 0.4 * w) ** 2 + (yy - 0.5 * h) ** 2 < (0.2 * h) ** 2
    edge_box = (xx < 0.3 * w) & (yy > 0.6 * h)
    return np.stack([disc, edge_box, np.zeros_like(disc), disc & (xx > 0.45 * w)])


def _full_frame(frame: np.ndarray, masks: np.ndarray, ids: list[int], alpha: float = 0.45) -> np.ndarray:
    """The straightforward drawing: every operation over the whole frame."""
    out = frame.copy()
    kernel = np.ones((5, 5), np.uint8)
    for mask, obj_id in zip(masks, ids):
        color = color_for(obj_id)
        tinted = cv2.addWeighted(out, 1 - alpha, np.full(out.shape, color, np.uint8), alpha, 0)
        out[mask] = tinted[mask]
        out[cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, kernel).astype(bool)] = color
    return out


def test_box_drawing_matches_full_frame_drawing() -> None:
    frame = read_frames(1)[0]
    masks = _masks(*frame.shape[:2])
    ids = [1, 7, 3, 2]
    drawn = draw_masks(frame, masks, ids)
    np.testing.assert_array_equal(drawn, _full_frame(frame, masks, ids))
    assert (drawn == np.array(color_for(7), np.uint8)).all(axis=2).sum() > 100  # object 7's outline
    labelled = draw_masks(frame, masks, ids, labels=True)
    assert (labelled != drawn).any()  # the ids are written on


def test_no_objects_leaves_the_frame_untouched() -> None:
    frame = read_frames(1)[0]
    empty = np.zeros((0, *frame.shape[:2]), bool)
    np.testing.assert_array_equal(draw_masks(frame, empty, []), frame)


def test_small_logits_become_full_size_masks() -> None:
    """Masks kept small (the display's mask size) are scaled up to the frame before drawing."""
    yy, xx = np.mgrid[:135, :240]
    logits = np.stack([(40.0 - np.hypot(xx - 120, yy - 60)).astype(np.float32)])
    masks = masks_at(logits, (540, 960))
    assert masks.shape == (1, 540, 960) and masks.dtype == bool
    expected = np.hypot(*np.mgrid[:540, :960][::-1] - np.array([481.5, 241.5])[:, None, None]) < 160
    assert (masks[0] ^ expected).mean() < 0.002
    np.testing.assert_array_equal(masks_at(logits, (135, 240)), logits > 0)
