"""``sam2-stream export``: a results file and its video as a dataset, checked by readers nobody here
wrote. The results are the synthetic scene's true masks, written as the server writes results
(``Tracked.message``), over the test clip made from that same scene: pycocotools loads the COCO
file and decodes every mask to the truth, supervision loads both the COCO and the YOLO-seg
dataset, track ids and labels survive, and bad inputs say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from pycocotools.coco import COCO

from streamer.__main__ import main
from streamer.outputs.dataset import ExportError, ExportJob, export
from streamer.outputs.results import ObjectLabel, Tracked
from streamer.sources.shapes import ShapesScene
from tests.clips import CLIPS, clip_path

CLIP = "scene_540p.mp4"
FRAMES = range(0, 40, 3)  # the tracked frames (a live tracker skips some too)


def truth() -> ShapesScene:
    spec = CLIPS[CLIP]
    return ShapesScene(spec.width, spec.height, speed=spec.speed, count=3, seed=spec.seed)


def write_results(path: Path, masks: str = "rle") -> dict[int, np.ndarray]:
    """Results lines of the clip's true masks (objects 1-3; object 3 unlabelled, as a click), with
    an event between them; returns the true masks by frame."""
    scene = truth()
    labels = {1: ObjectLabel(label=scene.labels[0], origin="auto"), 2: ObjectLabel(label=scene.labels[1])}
    found, lines = {}, []
    for n in FRAMES:
        true = scene.masks(n)
        logits = np.where(true, 8.0, -8.0).astype(np.float32)
        scores = np.full(3, 5.0, np.float32)
        tracked = Tracked(
            "cam", n, n, 1_795_000_000 + n / 30, scene.height, scene.width, (1, 2, 3), logits, scores, labels
        )
        lines.append(tracked.message(masks))
        found[n] = true
    lines.insert(2, json.dumps({"type": "event", "event": {"type": "added", "stream": "cam", "obj_id": 3}}))
    path.write_text("\n".join(lines) + "\n")
    return found


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_coco_export_loads_in_pycocotools_and_supervision_with_the_tracked_masks(tmp_path) -> None:
    results = tmp_path / "tracks.jsonl"
    true = write_results(results)
    folder = tmp_path / "coco"
    done = export(ExportJob(results, clip_path(CLIP), folder, "coco"))
    assert (done.images, done.annotations, done.tracks) == (len(FRAMES), 3 * len(FRAMES), 3)

    coco = COCO(str(done.path))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == ["disc", "object", "square"]
    dataset = json.loads(done.path.read_text())
    assert [t["id"] for t in dataset["tracks"]] == [1, 2, 3] and dataset["videos"][0]["name"] == "cam"
    capture = cv2.VideoCapture(str(clip_path(CLIP)))
    clip = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(max(FRAMES) + 1)]
    for image in coco.loadImgs(coco.getImgIds()):
        n = image["frame_index"]
        pixels = cv2.cvtColor(cv2.imread(str(folder / image["file_name"])), cv2.COLOR_BGR2RGB)
        error = np.mean((pixels.astype(float) - clip[n]) ** 2)
        assert 10 * np.log10(255**2 / error) > 30  # the clip's own frame n, as a JPEG
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            obj = ann["track_id"]
            assert np.array_equal(coco.annToMask(ann).astype(bool), true[n][obj - 1])  # exactly what was tracked
            assert names[ann["category_id"]] == {1: "disc", 2: "square", 3: "object"}[obj]

    loaded = sv.DetectionDataset.from_coco(str(folder), str(done.path), force_masks=True)
    assert len(loaded) == len(FRAMES) and sorted(loaded.classes) == ["disc", "object", "square"]
    by_file = {Path(image["file_name"]).name: image["frame_index"] for image in dataset["images"]}
    for image_path, _, detections in loaded:
        n = by_file[Path(image_path).name]
        assert detections.mask is not None and len(detections) == 3
        for mask in detections.mask:
            assert max(iou(mask, t) for t in true[n]) == 1.0


def test_yolo_seg_export_loads_in_supervision_with_track_ids(tmp_path) -> None:
    results = tmp_path / "tracks.jsonl"
    true = write_results(results, masks="polygon")
    folder = tmp_path / "yolo"
    done = export(ExportJob(results, clip_path(CLIP), folder, "yolo-seg", every=2))
    kept = list(FRAMES)[::2]
    assert (done.images, done.tracks) == (len(kept), 3)
    loaded = sv.DetectionDataset.from_yolo(
        str(folder / "images"), str(folder / "labels"), str(folder / "data.yaml"), force_masks=True
    )
    assert len(loaded) == len(kept) and loaded.classes == ["disc", "object", "square"]
    line_tracks = json.loads((folder / "tracks.json").read_text())
    for image_path, _, detections in loaded:
        stem = Path(image_path).stem
        n = int(stem.split("_")[-1])
        ids = line_tracks[stem]
        assert detections.mask is not None and len(detections) == len(ids) >= 3
        for obj in (1, 2, 3):  # an object's parts (one behind another may be split) make its mask
            parts = [mask for mask, i in zip(detections.mask, ids) if i == obj]
            assert iou(np.logical_or.reduce(parts), true[n][obj - 1]) > 0.9, (n, obj)
            names = {loaded.classes[c] for c, i in zip(detections.class_id, ids) if i == obj}
            assert names == {{1: "disc", 2: "square", 3: "object"}[obj]}


def test_bad_inputs_say_what_to_do(tmp_path, caplog) -> None:
    results = tmp_path / "tracks.jsonl"
    write_results(results, masks="none")
    with pytest.raises(ExportError, match="without masks: track with --results-masks rle"):
        export(ExportJob(results, clip_path(CLIP), tmp_path / "out"))
    write_results(results)
    with pytest.raises(ExportError, match="is 1280x720, but the results' frames are 960x540"):
        export(ExportJob(results, clip_path("scene_720p.mp4"), tmp_path / "out"))
    with pytest.raises(ExportError, match="format must be one of coco, yolo-seg"):
        ExportJob(results, clip_path(CLIP), tmp_path / "out", "voc")
    (tmp_path / "notes.txt").write_text("hello\n")
    code = main(
        ["export", str(tmp_path / "notes.txt"), "--video", str(clip_path(CLIP)), "--frames", str(tmp_path / "o")]
    )
    assert code == 2 and "is not a JSON line: is it a results file?" in caplog.text
    code = main(["export", str(results), "--video", str(clip_path(CLIP)), "--frames", str(tmp_path / "cli")])
    assert code == 0 and (tmp_path / "cli" / "annotations.json").is_file()
