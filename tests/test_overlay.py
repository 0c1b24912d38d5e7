"""The overlay: the device (torch) drawing is pixel-for-pixel the host (OpenCV) one."""

from __future__ import annotations

import numpy as np
import torch

from streamer.overlay import color_for, draw_masks, draw_masks_torch

from .conftest import read_frames


def _masks(h: int, w: int) -> np.ndarray:
    """Three overlapping objects, one touching the border, one empty."""
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 0.4 * w) ** 2 + (yy - 0.5 * h) ** 2 < (0.2 * h) ** 2
    edge_box = (xx < 0.3 * w) & (yy > 0.6 * h)
    return np.stack([disc, edge_box, np.zeros_like(disc), disc & (xx > 0.45 * w)])


def test_device_overlay_matches_host_overlay() -> None:
    frame = read_frames(1)[0]
    masks = _masks(*frame.shape[:2])
    ids = [1, 7, 3, 2]
    for labels in (False, True):
        host = draw_masks(frame, masks, ids, labels=labels)
        device = draw_masks_torch(torch.from_numpy(frame), torch.from_numpy(masks), ids, labels=labels)
        np.testing.assert_array_equal(device, host)
    assert not np.array_equal(host, frame)
    assert (host == np.array(color_for(7), np.uint8)).all(axis=2).sum() > 100  # object 7's outline


def test_no_objects_leaves_the_frame_untouched() -> None:
    frame = read_frames(1)[0]
    empty = np.zeros((0, *frame.shape[:2]), bool)
    np.testing.assert_array_equal(draw_masks(frame, empty, []), frame)
    np.testing.assert_array_equal(draw_masks_torch(torch.from_numpy(frame), torch.from_numpy(empty), []), frame)
