"""Several streams on one model: ``sibling()`` trackers stepped together by ``step_streams``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamer import StreamingTracker
from streamer.model.tracker import step_streams

from ..conftest import read_frames

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def clips() -> list[list[np.ndarray]]:
    """Three different streams: two real clips (different sizes) and a third offset in time."""
    return [read_frames(12, "scene_540p.mp4"), read_frames(12, "scene_720p.mp4", step=2), read_frames(12, step=3)]


def _tracker() -> StreamingTracker:
    return StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu", seed=3)


def _prompt(tracker: StreamingTracker, step: int, frame: np.ndarray, stream: int) -> None:
    """The session each stream gets: stream 0 two objects at once, stream 1 one added later,
    stream 2 none until a click on an earlier frame near the end."""
    h, w = frame.shape[:2]
    if stream == 0 and step == 0:
        tracker.add_prompt(1, points=[[0.4 * w, 0.5 * h]], labels=[1])
        tracker.add_prompt(2, box=[0.1 * w, 0.1 * h, 0.5 * w, 0.4 * h])
    if stream == 1 and step == 4:
        tracker.add_prompt(5, points=[[0.6 * w, 0.4 * h], [0.2 * w, 0.2 * h]], labels=[1, 0])
    if stream == 2 and step == 9:
        tracker.add_prompt(9, points=[[0.5 * w, 0.5 * h]], labels=[1], frame_index=tracker.frame_index - 2)


def test_streams_stepped_together_match_streams_stepped_alone(clips) -> None:
    """Batching streams (image encoder, memory attention, decoder) changes no mask: every stream's
    results equal those of its own tracker stepped alone on the same weights."""
    alone = [_tracker() for _ in clips]
    lead = _tracker()
    together = [lead, lead.sibling(), lead.sibling()]
    assert all(t.model is lead.model for t in together)
    for step in range(12):
        frames = [clip[step] for clip in clips]
        batched = step_streams(together, frames)
        for s, (tracker, frame) in enumerate(zip(alone, frames)):
            single = tracker.step(frame)
            assert batched[s].obj_ids == single.obj_ids and batched[s].frame_index == single.frame_index
            assert batched[s].masks.shape == single.masks.shape
            np.testing.assert_allclose(batched[s].logits, single.logits, atol=2e-4)
            if single.obj_ids:
                inter = (batched[s].masks & single.masks).sum()
                union = (batched[s].masks | single.masks).sum()
                assert union == 0 or inter / union >= 0.99
            _prompt(tracker, step, frame, s)
            _prompt(together[s], step, frame, s)
    assert [t.obj_ids for t in together] == [[1, 2], [5], [9]]


def test_memory_attention_one_object_at_a_time_matches_the_batch(clips) -> None:
    """On a CPU the memory attention runs one object at a time (``attention_batch=1``, faster there);
    a GPU runs the whole group at once. Both give the same masks, for every stream and object."""
    lead, each = (
        _tracker(),
        StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu", seed=3, attention_batch=None),
    )
    assert lead.attention_batch == 1 and each.attention_batch is None
    pairs = [(lead, each), (lead.sibling(), each.sibling()), (lead.sibling(), each.sibling())]
    for step in range(12):
        frames = [clip[step] for clip in clips]
        one = step_streams([p[0] for p in pairs], frames)
        whole = step_streams([p[1] for p in pairs], frames)
        for s, frame in enumerate(frames):
            assert one[s].obj_ids == whole[s].obj_ids
            np.testing.assert_allclose(one[s].logits, whole[s].logits, atol=2e-4)
            for tracker in pairs[s]:
                _prompt(tracker, step, frame, s)
    assert [p[1].obj_ids for p in pairs] == [[1, 2], [5], [9]]


def test_idle_streams_cost_no_image_encoding(clips) -> None:
    """A stream nobody has prompted never runs the image encoder; a click on one of its recent
    frames encodes that frame then, and gives the same masks as a stream that was encoding."""
    idle = _tracker()
    busy = _tracker()
    calls: list[int] = []
    forward = idle.model.forward_image
    idle.model.forward_image = lambda batch: (calls.append(batch.shape[0]), forward(batch))[1]  # type: ignore[method-assign]
    frames = clips[0]
    busy.step(frames[0])
    busy.add_prompt(7, box=[10, 10, 200, 200])  # makes ``busy`` encode every frame
    idle.step(frames[0])
    for frame in frames[1:6]:
        idle.step(frame)
        busy.step(frame)
    assert calls == []
    click = {"points": [[300, 200]], "labels": [1], "frame_index": 3}
    lazy = idle.add_prompt(1, **click)
    eager = busy.add_prompt(1, **click)
    assert sum(calls) == 3  # frame 3, then frames 4 and 5 for the re-propagation
    np.testing.assert_allclose(lazy.logits[0], eager.logits[eager.obj_ids.index(1)], atol=1e-5)
    nxt_lazy, nxt_eager = idle.step(frames[6]), busy.step(frames[6])
    np.testing.assert_allclose(nxt_lazy.logits[0], nxt_eager.logits[nxt_eager.obj_ids.index(1)], atol=1e-5)


def test_step_streams_rejects_mismatched_calls(clips) -> None:
    lead = _tracker()
    frame = clips[0][0]
    with pytest.raises(ValueError, match="one frame per tracker"):
        step_streams([lead, lead.sibling()], [frame])
    with pytest.raises(ValueError, match="list each tracker once"):
        step_streams([lead, lead], [frame, frame])
    with pytest.raises(ValueError, match="sibling"):
        step_streams([lead, _tracker()], [frame, frame])
    with pytest.raises(ValueError, match="sibling"):
        step_streams([lead, StreamingTracker(lead.model, resize="torch")], [frame, frame])
    assert step_streams([], []) == []
    assert lead.frame_index is None  # nothing was half-done


def test_trackers_made_apart_on_one_model_step_together(clips) -> None:
    """A tracker constructed on the same model (not through ``sibling()``) shares its memory
    reader, so a round led by an object-less tracker still reads the other's memories."""
    lead = _tracker()
    other = StreamingTracker(lead.model)
    step_streams([other], [clips[1][0]])
    other.add_prompt(2, box=[20, 20, 200, 150])
    results = step_streams([lead, other], [clips[0][1], clips[1][1]])
    assert results[0].obj_ids == [] and results[1].obj_ids == [2]


def test_siblings_keep_their_own_state(clips) -> None:
    """Objects, resets and frame indices are per stream; only the model is shared."""
    lead = _tracker()
    other = lead.sibling()
    step_streams([lead, other], [clips[0][0], clips[1][0]])
    lead.add_prompt(1, box=[10, 10, 100, 100])
    step_streams([lead], [clips[0][1]])
    assert lead.obj_ids == [1] and other.obj_ids == []
    assert lead.frame_index == 1 and other.frame_index == 0
    other.reset()
    assert lead.obj_ids == [1]
    with torch.inference_mode():
        assert lead.memory_bytes() > other.memory_bytes() == 0


def test_bfloat16_masks_match_float32(clips) -> None:
    """The GPU's default precision (bfloat16 autocast, here on CPU) keeps masks faithful to fp32:
    IoU >= 0.97 for every object on every frame, with the memory window full."""
    exact = _tracker()
    fast = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu", seed=3, precision="bfloat16")
    frames = clips[1]
    ious = []
    for i, frame in enumerate(frames):
        a, b = exact.step(frame), fast.step(frame)
        if i == 0:
            h, w = frame.shape[:2]
            for tracker in (exact, fast):
                tracker.add_prompt(1, points=[[0.5 * w, 0.5 * h]], labels=[1])
                tracker.add_prompt(2, box=[0.1 * w, 0.1 * h, 0.45 * w, 0.6 * h])
            continue
        assert a.obj_ids == b.obj_ids == [1, 2]
        for k in range(2):
            ious.append((a.masks[k] & b.masks[k]).sum() / max((a.masks[k] | b.masks[k]).sum(), 1))
    assert len(ious) == 2 * (len(frames) - 1) and min(ious) >= 0.97, ious
    assert not np.array_equal(a.logits, b.logits)  # bfloat16 really ran


def test_mask_width_scales_the_model_output(clips) -> None:
    """``mask_width`` gives the masks straight at a small width (what the display works at), the
    frame's aspect kept: the full-size masks scaled down, near enough, and never scaled up."""
    tracker = _tracker()
    frame = clips[0][0]  # 960x540
    step_streams([tracker], [frame])
    tracker.add_prompt(1, box=[100, 100, 500, 400])
    small, full = (
        step_streams([tracker], [clips[0][1]], mask_width=240)[0],
        tracker.add_prompt(2, box=[600, 50, 900, 300]),
    )
    assert small.logits.shape == (1, 135, 240) and small.masks.dtype == bool
    assert full.logits.shape == (2, 540, 960)
    shrunk = cv2.resize(full.logits[0], (240, 135), interpolation=cv2.INTER_AREA) > 0
    assert (shrunk ^ small.masks[0]).mean() < 0.02
    (wide,) = step_streams([tracker], [clips[0][2]], mask_width=4096)
    assert wide.logits.shape == (2, 540, 960)


@pytest.mark.slow
def test_compiled_tracker_matches_eager_on_cpu(clips) -> None:
    """compile=True (torch.compile of the components vos_optimized compiles, inductor's C++ backend
    here) gives eager's logits; ~4 minutes of compiling on 2 cores, hence slow."""
    eager = _tracker()
    compiled = StreamingTracker.build(random_init=True, image_size=IMAGE_SIZE, device="cpu", seed=3, compile=True)
    for i, frame in enumerate(clips[1][:6]):
        a, b = eager.step(frame), compiled.step(frame)
        if i == 0:
            for tracker in (eager, compiled):
                tracker.add_prompt(1, box=[50, 50, 300, 250])
        else:
            np.testing.assert_allclose(b.logits, a.logits, atol=1e-4)
    assert a.obj_ids == [1]
