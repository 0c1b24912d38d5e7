"""The GPU path: CUDA preprocessing through pinned buffers, bfloat16, small masks scaled on the
device, and torch.compile. These run where CUDA exists and are skipped elsewhere."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamer import StreamingTracker
from streamer.model.preprocess import HostStager
from streamer.model.tracker import step_streams

from .clips import natural_clip
from .conftest import read_frames

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

IMAGE_SIZE = 256


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _session(tracker: StreamingTracker, frames: list[np.ndarray]) -> list[np.ndarray]:
    masks = []
    for i, frame in enumerate(frames):
        result = tracker.step(frame)
        if i == 0:
            h, w = frame.shape[:2]
            tracker.add_prompt(1, points=[[0.5 * w, 0.5 * h]], labels=[1])
            result = tracker.add_prompt(2, box=[0.1 * w, 0.1 * h, 0.45 * w, 0.6 * h])
        masks.append(result.masks)
    return masks


def test_pinned_uploads_are_exact_and_reuse_buffers() -> None:
    stager = HostStager(torch.device("cuda"))
    frames = read_frames(6, step=3, path=natural_clip("bedroom.mp4"))
    uploaded = [stager(frame) for frame in frames]
    torch.cuda.synchronize()
    for frame, tensor in zip(frames, uploaded):
        assert tensor.is_cuda
        np.testing.assert_array_equal(tensor.cpu().numpy(), frame)
    assert len(stager._pool[frames[0].shape]) <= len(frames)
    stager(frames[0])
    torch.cuda.synchronize()
    assert len(stager._pool[frames[0].shape]) <= len(frames)


def test_cuda_float32_matches_cpu() -> None:
    """Same weights, same frames: the CUDA tracker in fp32 gives the CPU tracker's masks."""
    frames = read_frames(12, step=2, path=natural_clip("02_cups.mp4"))
    cpu = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu")
    gpu = StreamingTracker.build(
        random_init=True, image_size=IMAGE_SIZE, device="cuda", precision="float32", resize="pil"
    )
    for a, b in zip(_session(cpu, frames), _session(gpu, frames)):
        assert all(_iou(x, y) >= 0.99 for x, y in zip(a, b))


def test_cuda_bfloat16_masks_match_float32() -> None:
    frames = read_frames(12, step=2, path=natural_clip("02_cups.mp4"))
    exact = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cuda", precision="float32")
    fast = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cuda")
    assert fast.precision == "bfloat16"
    for a, b in zip(_session(exact, frames), _session(fast, frames)):
        assert all(_iou(x, y) >= 0.97 for x, y in zip(a, b))


def test_small_masks_on_the_gpu_match_full_size() -> None:
    """The display asks for masks at a small width: on CUDA they are scaled on the device and come
    back small, matching the full-size masks scaled down."""
    tracker = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cuda")
    frames = read_frames(3, path=natural_clip("bedroom.mp4"))
    _session(tracker, frames[:2])
    (small,) = step_streams([tracker], [frames[2]], mask_width=240)
    full = tracker.add_prompt(3, box=[10, 10, 200, 200])
    assert small.logits.shape == (2, 135, 240) and isinstance(small.logits, np.ndarray)
    for k in range(2):
        shrunk = cv2.resize(full.logits[k], (240, 135), interpolation=cv2.INTER_AREA) > 0
        assert (shrunk ^ small.masks[k]).mean() < 0.02


@pytest.mark.slow
def test_compiled_tracker_matches_eager() -> None:
    """torch.compile (as vos_optimized, without CUDA graphs) keeps masks faithful, across
    changing batch sizes (one, then two streams)."""
    frames = read_frames(10, step=2, path=natural_clip("02_cups.mp4"))
    eager = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cuda")
    compiled = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cuda", compile=True)
    for a, b in zip(_session(eager, frames), _session(compiled, frames)):
        assert all(_iou(x, y) >= 0.97 for x, y in zip(a, b))
    other = compiled.sibling()
    results = step_streams([compiled, other], [frames[0], frames[1]])
    assert results[0].obj_ids == [1, 2] and results[1].obj_ids == []
