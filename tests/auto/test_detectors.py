"""The detectors: a user's own by import path, the built-in networks' wiring (seeded random
weights), the offline error, and MTCNN with its real weights on a real clip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.auto.detections import Detections
from streamer.auto.detectors import CallableDetector, import_callable, load_detector
from streamer.errors import DetectorError
from tests.clips import natural_clip

FRAME = np.zeros((180, 320, 3), np.uint8)


def boxes_and_words(image: np.ndarray, queries: list[str]):
    """A user's detector: one box, labelled with the first word asked for."""
    return [[10, 20, 110, 120]], [queries[0] if queries else "thing"], [0.9]


def broken(image: np.ndarray):
    return "not detections"


def test_a_users_detector_named_by_import_path_plugs_in() -> None:
    detector = load_detector("tests.auto.test_detectors:boxes_and_words", "cpu")
    found = detector(FRAME, ["person"])
    assert found.labels == ("person",) and found.boxes.tolist() == [[10, 20, 110, 120]]
    assert np.allclose(found.scores, [0.9])
    with pytest.raises(DetectorError, match="must return"):
        CallableDetector(broken, "broken")(FRAME)
    with pytest.raises(DetectorError, match="cannot import detector module"):
        import_callable("no_such_module_here:detect")
    with pytest.raises(DetectorError, match="has no"):
        import_callable("tests.auto.test_detectors:missing")


def test_detections_come_from_tuples_mappings_and_tensors() -> None:
    import torch

    found = Detections.of({"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": ["a"], "scores": torch.tensor([0.5])})
    assert found.labels == ("a",) and found.boxes.dtype == np.float32
    with pytest.raises(DetectorError, match="N boxes"):
        Detections.of(([[0, 0, 1, 1]], ["a", "b"], [0.1, 0.2]))


def test_the_coco_detector_with_random_weights_is_wired_right() -> None:
    """RT-DETR v2's network with seeded random weights: 80 COCO labels, boxes on the frame."""
    detector = load_detector("rtdetr", "cpu", random_weights=True)
    assert 19.5e6 < sum(p.numel() for p in detector.model.parameters()) < 21e6  # r18vd's 20 M, not r50's 43 M
    assert detector.labels is not None and len(detector.labels) == 80 and detector.labels[0] == "person"
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    found = detector(frame)
    assert len(found) > 0 and set(found.labels) <= set(detector.labels)
    assert (found.boxes[:, [0, 2]] <= 320 + 1e-3).all() and (found.boxes[:, [1, 3]] <= 240 + 1e-3).all()


def test_the_text_detector_with_random_weights_is_wired_right() -> None:
    """OWLv2's network: boxes labelled with the words asked for, none without words."""
    detector = load_detector("owlv2", "cpu", random_weights=True)
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert len(detector(frame, [])) == 0
    found = detector(frame, ["cat", "red car"])
    assert set(found.labels) <= {"cat", "red car"}
    assert (found.boxes >= 0).all() and (found.boxes[:, [0, 2]] <= 320).all() and (found.boxes[:, [1, 3]] <= 240).all()


def test_offline_the_detector_says_what_to_download_and_where(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = (
        "from streamer.auto.detectors import load_detector\n"
        "from streamer.errors import DetectorError\n"
        "try:\n    load_detector('rtdetr', 'cpu')\nexcept DetectorError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    assert "PekingU/rtdetr_v2_r18vd" in out and str(tmp_path) in out and "hf download" in out


@pytest.fixture(scope="module")
def face_weights(tmp_path_factory) -> Path:
    """The facenet-pytorch wheel, from the package registry, in a fresh cache folder."""
    cache = tmp_path_factory.mktemp("cache")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "facenet-pytorch==2.6.0", "--no-deps", "-q", "-d", str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        pytest.skip(f"the package registry is unreachable: {done.stderr.strip()[-200:]}")
    return cache


def test_mtcnn_with_its_real_weights_finds_faces_in_a_real_clip(face_weights: Path, monkeypatch) -> None:
    """The face detector, written here, with the weights from the facenet-pytorch wheel (checked
    by SHA-256), on the SAM 2 notebook's bedroom clip: the children's faces, frame after frame."""
    import av

    clip = natural_clip("bedroom.mp4")
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(face_weights))
    detector = load_detector("faces", "cpu")
    found = []
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 25 == 0:
                found.append(detector(frame.to_ndarray(format="rgb24")))
            if i >= 175:
                break
    confident = [f.only(["face"], 0.9) for f in found]
    assert sum(1 for f in confident if len(f)) >= 5  # faces turn away on some frames
    sizes = [b[2] - b[0] for f in confident for b in f.boxes]
    assert all(30 <= s <= 150 for s in sizes)  # a child's face at 960x540, not the whole frame
    assert all(f.labels == ("face",) * len(f) for f in found)


def test_faces_start_objects_end_to_end_on_a_real_clip(face_weights: Path, monkeypatch) -> None:
    """The live pipeline on the bedroom clip with ``--auto face --auto-detector faces``: the real
    face detector's finds become automatic objects labelled ``face`` (SAM 2.1 with random weights
    tracks them: their masks mean nothing, their birth is what is checked)."""
    import asyncio

    from streamer.config import AutoConfig
    from streamer.live.pipeline import Pipeline
    from streamer.model.tracker import StreamingTracker
    from streamer.sources import open_source

    clip = natural_clip("bedroom.mp4")
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(face_weights))
    auto = AutoConfig(enabled=True, detector="faces", labels=["face"], every_frames=1, probation=1)

    async def main() -> list:
        tracker = StreamingTracker.build(random_init=True, image_size=128, device="cpu")
        pipeline = Pipeline(auto=auto)
        stream = pipeline.add_stream("room", open_source(str(clip), loop=True), tracker)
        pipeline.start()
        seen: dict = {}
        try:
            for _ in range(600):
                seen.update(stream.labels)
                if seen:
                    break
                await asyncio.sleep(0.1)
        finally:
            await pipeline.stop()
        return list(seen.values())

    labels = asyncio.run(main())
    assert labels and all((label.label, label.origin) == ("face", "auto") for label in labels)
    assert all(label.label_score is not None and label.label_score >= 0.5 for label in labels)
