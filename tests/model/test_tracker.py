"""Streaming tracker behaviour: independence, batching, bounded state, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer import FrameError, PromptError, StreamingTracker, UnknownObjectError

from ..conftest import read_frames

IMAGE_SIZE = 128  # behaviour, not numbers: the cheapest size the model runs at


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return read_frames(40, "scene_720p.mp4", step=2)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu").model.state_dict()


@pytest.fixture
def tracker(weights) -> StreamingTracker:
    tracker = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu", history=4)
    tracker.model.load_state_dict(weights)
    return tracker


def _click(frame: np.ndarray, fx: float, fy: float) -> list[list[float]]:
    return [[fx * frame.shape[1], fy * frame.shape[0]]]


def test_empty_tracker_returns_empty_arrays(tracker: StreamingTracker, frames) -> None:
    """With no objects, step returns empty [0, H, W] arrays at the frame's size."""
    result = tracker.step(frames[0])
    assert result.frame_index == 0 and result.obj_ids == []
    assert result.masks.shape == (0, *frames[0].shape[:2]) and result.masks.dtype == bool
    assert result.logits.shape == (0, *frames[0].shape[:2]) and result.logits.dtype == np.float32
    assert result.scores.shape == (0,)


def test_result_shapes_and_order(tracker: StreamingTracker, frames) -> None:
    """Masks come at frame resolution, one per object, in the order objects were added."""
    tracker.step(frames[0])
    tracker.add_prompt(7, points=_click(frames[0], 0.5, 0.5), labels=[1])
    tracker.add_prompt(3, box=[10, 20, 300, 200])
    result = tracker.step(frames[1])
    h, w = frames[1].shape[:2]
    assert result.obj_ids == [7, 3] == tracker.obj_ids
    assert result.masks.shape == (2, h, w) and result.logits.shape == (2, h, w)
    assert result.scores.shape == (2,) and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.masks, result.logits > 0)


def test_objects_are_independent(weights, frames) -> None:
    """Adding a second object mid-stream, then removing it, never changes the first one's masks."""

    def run(with_second: bool) -> list[np.ndarray]:
        tracker = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu")
        tracker.model.load_state_dict(weights)
        tracker.step(frames[0])
        tracker.add_prompt(1, points=_click(frames[0], 0.4, 0.6), labels=[1])
        first = []
        for i in range(1, 14):
            result = tracker.step(frames[i])
            if with_second and i == 3:
                result = tracker.add_prompt(2, points=_click(frames[i], 0.8, 0.3), labels=[1])
            if with_second and i == 10:
                tracker.remove_object(2)
            first.append(result.logits[result.obj_ids.index(1)])
        return first

    alone, together = run(False), run(True)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_prompt_in_a_rounds_pause_is_as_if_made_before_the_round(weights, frames) -> None:
    """``meanwhile`` runs once the new frame's image features exist and before it is tracked: a
    prompt made there, on the newest tracked frame, gives every later frame the masks of the
    same prompt made before the round (and the round's frame tracks its object already)."""
    from streamer.model.tracker import step_streams

    def run(in_the_pause: bool) -> list[np.ndarray]:
        tracker = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu")
        tracker.model.load_state_dict(weights)
        tracker.step(frames[0])
        tracker.add_prompt(1, points=_click(frames[0], 0.4, 0.6), labels=[1])
        tracker.step(frames[1])
        second = lambda: tracker.add_prompt(2, points=_click(frames[1], 0.8, 0.3), labels=[1])  # noqa: E731
        if not in_the_pause:
            second()
        seen: list[int] = []
        (result,) = step_streams(
            [tracker], [frames[2]], meanwhile=(lambda: seen.append(second().frame_index)) if in_the_pause else None
        )
        assert seen == ([1] if in_the_pause else [])  # on frame 1, the newest tracked then
        logits = [result.logits]
        for i in range(3, 7):
            logits.append(tracker.step(frames[i]).logits)
        assert result.obj_ids == [1, 2]
        return logits

    for a, b in zip(run(False), run(True)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_objects_share_one_memory_attention_pass(tracker: StreamingTracker, frames, monkeypatch) -> None:
    """Three objects prompted on the same frame are tracked in one batched memory-attention call
    (``attention_batch=None``, a GPU's default); on a CPU (the default there, 1) one call each."""
    assert tracker.attention_batch == 1
    monkeypatch.setattr(tracker, "attention_batch", None)
    calls: list[int] = []
    original = tracker.model.memory_attention.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["memory"].shape[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(tracker.model.memory_attention, "forward", counting)
    tracker.step(frames[0])
    for obj_id, (fx, fy) in enumerate([(0.2, 0.2), (0.5, 0.5), (0.8, 0.7)]):
        tracker.add_prompt(obj_id, points=_click(frames[0], fx, fy), labels=[1])
    calls.clear()
    for i in range(1, 4):
        tracker.step(frames[i])
    assert calls == [3, 3, 3]
    monkeypatch.setattr(tracker, "attention_batch", 1)
    calls.clear()
    tracker.step(frames[4])
    assert calls == [1, 1, 1]


def test_state_stays_bounded(tracker: StreamingTracker, frames) -> None:
    """Held tensors stop growing once the memory window is full: frame 30 holds what frame 39 holds."""
    tracker.step(frames[0])
    tracker.add_prompt(1, points=_click(frames[0], 0.5, 0.5), labels=[1])
    tracker.add_prompt(2, box=[50, 50, 400, 300])
    sizes = {}
    for i in range(1, 40):
        tracker.step(frames[i])
        sizes[i] = tracker.memory_bytes()
    assert sizes[30] == sizes[39]
    assert sizes[39] > sizes[1]
    obj = tracker._objects[1]
    assert len(obj.non_cond) <= tracker.history + tracker._reader.max_pointers
    assert sum(out.maskmem is not None for out in obj.non_cond.values()) <= tracker.history + 7


def test_conditioning_frames_are_capped(weights, frames) -> None:
    """With corrections kept as conditioning frames, the oldest but the first are evicted."""
    tracker = StreamingTracker.build(
        random_init=True, image_size=IMAGE_SIZE, device="cpu", max_cond_frames=3, corrections_as_cond=True
    )
    tracker.model.load_state_dict(weights)
    tracker.step(frames[0])
    tracker.add_prompt(1, points=_click(frames[0], 0.5, 0.5), labels=[1])
    for i in range(1, 6):
        tracker.step(frames[i])
        tracker.add_prompt(1, points=_click(frames[i], 0.3, 0.3), labels=[0])
    assert sorted(tracker._objects[1].cond) == [0, 4, 5]
    assert tracker.step(frames[6]).obj_ids == [1]


def test_prompt_on_history_frame_and_beyond(tracker: StreamingTracker, frames) -> None:
    """A prompt may name any of the last `history` frames; older or future ones get a clear error."""
    for i in range(6):
        tracker.step(frames[i])
    assert tracker.frame_indices == [2, 3, 4, 5]
    result = tracker.add_prompt(1, points=_click(frames[2], 0.5, 0.5), labels=[1], frame_index=2)
    assert result.frame_index == 5 and result.obj_ids == [1]
    assert sorted(tracker._objects[1].non_cond) == [3, 4, 5]
    with pytest.raises(PromptError, match=r"frame 1 is not available.*last 4 frames \(2\.\.5\)"):
        tracker.add_prompt(2, points=_click(frames[1], 0.5, 0.5), labels=[1], frame_index=1)
    with pytest.raises(PromptError, match="frame 9 is not available"):
        tracker.add_prompt(2, points=_click(frames[1], 0.5, 0.5), labels=[1], frame_index=9)
    assert tracker.obj_ids == [1]


def test_clicks_accumulate_and_box_restarts(tracker: StreamingTracker, frames) -> None:
    """Clicks on one frame add up like the official predictor's; a box starts the frame afresh."""
    tracker.step(frames[0])
    tracker.add_prompt(1, points=_click(frames[0], 0.5, 0.5), labels=[1])
    tracker.add_prompt(1, points=_click(frames[0], 0.1, 0.1), labels=[0])
    assert tracker._objects[1].points[0]["point_labels"].tolist() == [[1, 0]]
    tracker.add_prompt(1, box=[10, 10, 100, 100], points=_click(frames[0], 0.05, 0.05), labels=[1])
    assert tracker._objects[1].points[0]["point_labels"].tolist() == [[2, 3, 1]]


def test_reset_forgets_objects_and_frames(tracker: StreamingTracker, frames) -> None:
    """reset() drops objects and remembered frames; frame indices keep counting."""
    tracker.step(frames[0])
    tracker.add_prompt(1, points=_click(frames[0], 0.5, 0.5), labels=[1])
    tracker.reset()
    assert tracker.obj_ids == [] and tracker.frame_index is None
    with pytest.raises(PromptError, match="no frame yet"):
        tracker.add_prompt(1, points=[[1, 1]], labels=[1])
    assert tracker.step(frames[1]).frame_index == 1


def test_frame_size_may_change(tracker: StreamingTracker, frames) -> None:
    """A camera that switches resolution keeps its objects; masks follow the new size."""
    tracker.step(frames[0])
    tracker.add_prompt(1, points=_click(frames[0], 0.5, 0.5), labels=[1])
    small = np.ascontiguousarray(frames[1][::2, ::2])
    result = tracker.step(small)
    assert result.masks.shape == (1, *small.shape[:2])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((10, 10), np.uint8), "shape HxWx3"),
        (np.zeros((10, 10, 4), np.uint8), "shape HxWx3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_frames_are_rejected(tracker: StreamingTracker, frame, message: str) -> None:
    """Frames of the wrong shape, dtype or type get a FrameError (a ValueError) saying what is expected."""
    with pytest.raises(FrameError, match=message):
        tracker.step(frame)
    assert issubclass(FrameError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "empty prompt"),
        ({"points": [[10, 10]]}, "points and labels go together"),
        ({"points": [[10, 10]], "labels": [2]}, r"1 \(positive\) or 0 \(negative\)"),
        ({"points": [[10, 10]], "labels": [1, 1]}, "one per point"),
        ({"points": [[5000, 10]], "labels": [1]}, "outside the 1280x720 frame"),
        ({"points": [[-1, 10]], "labels": [1]}, "outside"),
        ({"points": [[float("nan"), 10]], "labels": [1]}, "finite"),
        ({"points": [10, 10], "labels": [1]}, r"\[x, y\] pairs"),
        ({"box": [100, 100, 50, 200]}, "x0 < x1"),
        ({"box": [0, 0, 2000, 100]}, "outside"),
        ({"box": [1, 2, 3]}, r"\[x0, y0, x1, y1\]"),
        ({"mask": np.ones((5, 5), bool)}, r"frame's shape \(720, 1280\)"),
        ({"mask": np.ones((720, 1280), bool), "points": [[1, 1]], "labels": [1]}, "send it alone"),
    ],
)
def test_bad_prompts_are_rejected(tracker: StreamingTracker, frames, kwargs, message: str) -> None:
    """Malformed prompts raise PromptError (a ValueError) naming the mistake; nothing is added."""
    tracker.step(frames[0])
    with pytest.raises(PromptError, match=message):
        tracker.add_prompt(1, **kwargs)
    assert tracker.obj_ids == []


def test_unknown_object_and_bad_id(tracker: StreamingTracker, frames) -> None:
    """Removing an unknown id raises UnknownObjectError (a KeyError) listing the tracked ids."""
    tracker.step(frames[0])
    tracker.add_prompt(4, points=[[10, 10]], labels=[1])
    with pytest.raises(UnknownObjectError, match=r"unknown object id 5; tracked objects are \[4\]"):
        tracker.remove_object(5)
    with pytest.raises(PromptError, match="obj_id must be an integer"):
        tracker.add_prompt("car", points=[[10, 10]], labels=[1])  # type: ignore[arg-type]
