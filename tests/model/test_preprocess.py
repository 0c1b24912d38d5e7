"""Frame preprocessing against the official SAM 2 loader."""

from __future__ import annotations

import numpy as np
import torch
from sam2.utils.misc import load_video_frames_from_jpg_images

from streamer.model.preprocess import IMG_STD, FramePreprocessor


def test_pil_path_is_bit_exact(jpeg_clip) -> None:
    """The default CPU path gives exactly the official loader's tensors."""
    folder, frames = jpeg_clip
    official, height, width = load_video_frames_from_jpg_images(
        str(folder), 256, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    assert (height, width) == frames[0].shape[:2]
    pre = FramePreprocessor(256, torch.device("cpu"), "pil")
    for i in (0, 7, 23):
        assert torch.equal(pre(frames[i])[0], official[i])


def test_torch_path_is_within_one_grey_level(jpeg_clip) -> None:
    """The on-device resize differs from PIL by at most one 8-bit level per pixel."""
    folder, frames = jpeg_clip
    pil = FramePreprocessor(256, torch.device("cpu"), "pil")(frames[3])
    dev = FramePreprocessor(256, torch.device("cpu"), "torch")(frames[3])
    step = (1 / 255) / torch.tensor(IMG_STD)[:, None, None]
    assert torch.all((dev - pil).abs() <= step * 1.001)
    assert (dev != pil).float().mean() < 0.3


def test_non_contiguous_frames() -> None:
    """Views (a crop, a BGR->RGB flip) preprocess like their contiguous copies."""
    frame = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    view = frame[10:80, ::-1, ::-1]
    for resize in ("pil", "torch"):
        pre = FramePreprocessor(64, torch.device("cpu"), resize)
        assert torch.equal(pre(view), pre(np.ascontiguousarray(view)))
