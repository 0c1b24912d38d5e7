"""Our EdgeTAM against Meta's official EdgeTAM code (``edgetam-dimos``, in a venv of its own),
same weights, same frames, same prompts: points, a box, an object added mid-stream by mask, a
correction, and prompts on earlier frames.

Seeded random weights (``random_init`` raises the object-presence head's bias, so that objects
are present and masks are not empty: with plain random weights every mask is empty and the check
would compare nothing), saved and loaded into the official model. Run with ``-m official`` (CI
runs it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer import StreamingTracker

from ..official import RegistryUnreachableError, official_venv, run_official
from ..parity import ellipse_mask, iou

pytestmark = [pytest.mark.official, pytest.mark.timeout(1500)]

IMAGE_SIZE = 512
UNTIL = 23
# Ours differ from the official logits by at most ~4e-7 (float summation order: batched objects,
# the fused RepViT trunk); dropping one memory frame or pointer moves them by far more.
LOGIT_TOLERANCE = 1e-5


@dataclass
class Event:
    obj: int
    frame: int
    at: int  # the stream's newest frame when the prompt is given
    prompt: dict


@dataclass
class Runs:
    ours: dict[str, np.ndarray] = field(default_factory=dict)
    official: dict[str, np.ndarray] = field(default_factory=dict)
    official_keys: list[str] = field(default_factory=list)
    our_keys: list[str] = field(default_factory=list)
    objects_at: dict[int, list[int]] = field(default_factory=dict)


def _events(height: int, width: int, mask_path: Path) -> list[Event]:
    return [
        Event(1, 0, 0, {"points": [[0.45 * width, 0.5 * height]], "labels": [1]}),
        Event(2, 0, 0, {"box": [0.55 * width, 0.2 * height, 0.9 * width, 0.7 * height]}),
        Event(3, 6, 6, {"mask": str(mask_path)}),
        Event(1, 12, 12, {"points": [[0.2 * width, 0.25 * height]], "labels": [0]}),
        Event(4, 20, 23, {"points": [[0.7 * width, 0.8 * height], [0.1 * width, 0.1 * height]], "labels": [1, 0]}),
        Event(2, 21, 23, {"points": [[0.6 * width, 0.3 * height]], "labels": [1]}),
    ]


def _keep(store: dict, prefix: str, result) -> None:
    for i, obj in enumerate(result.obj_ids):
        store[f"{prefix}_o{obj}"] = result.logits[i]


@pytest.fixture(scope="module")
def runs(jpeg_clip, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder, frames = jpeg_clip
    work = tmp_path_factory.mktemp("edgetam_parity")
    height, width = frames[0].shape[:2]
    np.save(work / "mask.npy", ellipse_mask(height, width))
    events = _events(height, width, work / "mask.npy")

    tracker = StreamingTracker.build(model="edgetam", random_init=True, seed=0, image_size=IMAGE_SIZE, device="cpu")
    state = tracker.model.state_dict()
    torch.save(state, work / "weights.pt")
    found = Runs(our_keys=list(state))

    def give(e: Event):
        fields = {k: (np.load(v) if k == "mask" else v) for k, v in e.prompt.items()}
        return tracker.add_prompt(e.obj, frame_index=None if e.frame == e.at else e.frame, **fields)

    for t in range(UNTIL + 1):
        result = tracker.step(frames[t])
        for e in (e for e in events if e.at == t == e.frame):
            result = give(e)
        _keep(found.ours, f"f{t}", result)
        found.objects_at[t] = list(result.obj_ids)
        for e in (e for e in events if e.at == t != e.frame):  # prompts on frames the viewer saw earlier
            result = give(e)
    _keep(found.ours, "final", result)

    try:
        python = official_venv(work / "venv")
    except RegistryUnreachableError as exc:
        pytest.skip(str(exc))
    job = {
        "weights": str(work / "weights.pt"),
        "keys": str(work / "keys.json"),
        "frames": str(folder),
        "image_size": IMAGE_SIZE,
        "until": UNTIL,
        "objects": {
            str(obj): [{"frame": e.frame, "at": e.at, **e.prompt} for e in events if e.obj == obj]
            for obj in sorted({e.obj for e in events})
        },
    }
    found.official = run_official(python, job, work)
    found.official_keys = json.loads((work / "keys.json").read_text())
    return found


def _compare(runs: Runs, key: str) -> None:
    ref, got = runs.official[key], runs.ours[key]
    assert got.shape == ref.shape, key
    assert 0.01 < (ref > 0).mean() < 0.99, f"{key}: degenerate reference mask, the check would be empty"
    assert iou(got > 0, ref > 0) >= 0.99, key
    np.testing.assert_allclose(got, ref, rtol=0, atol=LOGIT_TOLERANCE, err_msg=key)


def test_state_dict_has_the_official_keys(runs: Runs) -> None:
    """Our network's parameters are named exactly as the official one's (a strict load of
    edgetam.pt needs nothing else), and both ran on the same stream of objects."""
    assert sorted(runs.our_keys) == sorted(runs.official_keys)
    assert runs.objects_at[5] == [1, 2] and runs.objects_at[UNTIL] == [1, 2, 3]


@pytest.mark.parametrize("frame", range(6))
def test_points_and_box_on_first_frame(runs: Runs, frame: int) -> None:
    for obj in (1, 2):
        _compare(runs, f"f{frame}_o{obj}")


@pytest.mark.parametrize("frame", range(6, 12))
def test_mask_object_added_mid_stream(runs: Runs, frame: int) -> None:
    for obj in (1, 2, 3):
        _compare(runs, f"f{frame}_o{obj}")


@pytest.mark.parametrize("frame", range(12, UNTIL + 1))
def test_correction_click(runs: Runs, frame: int) -> None:
    for obj in (1, 2, 3):
        _compare(runs, f"f{frame}_o{obj}")


def test_prompts_on_earlier_frames_repropagate(runs: Runs) -> None:
    """A new object on frame 20 and a correction on frame 21, given at frame 23, match the
    official predictor prompting those frames and propagating again to frame 23."""
    for obj in (1, 2, 3, 4):
        _compare(runs, f"final_o{obj}")
