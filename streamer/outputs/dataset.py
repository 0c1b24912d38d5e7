"""Tracked results as a training dataset: ``sam2-stream export RESULTS.jsonl --video FILE --format
coco|yolo-seg --frames DIR``, or ``sam2-stream export RECORDING.json ...`` (a recording's sidecar).

A results file (``--results``, written with ``results.masks: rle`` or ``polygon``) has every tracked
frame's masks with their track ids and labels; the video those frames came from (the file tracked
with ``--out``, whose results number frames as the file does) has their pixels. A recording
(``--record``) holds both: its sidecar has its tracked frames' results and the camera frame each
of its MP4's frames shows. The export writes each tracked frame as an image and its objects in one
of two formats annotators and trainers read (the camera's overlay is in a recording's pixels:
record with ``--style plain`` for clean images):

- ``coco``: ``annotations.json``, COCO instances as pycocotools loads them, with the video fields
  TAO and BURST add: images carry ``video_id`` and ``frame_index``, annotations ``track_id`` (the
  object's id), and ``videos`` and ``tracks`` list them. Masks stay COCO RLE (or the results'
  polygons), exactly what was tracked.
- ``yolo-seg``: Ultralytics' layout, ``images/``, ``labels/`` (one line per object part:
  class, then its outline's points normalised to 0-1) and ``data.yaml`` with the class names,
  plus ``tracks.json``: the track id of every label line, which YOLO's format has no room for.

Classes are the objects' labels (a clicked object no detector named is an ``object``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pycocotools import mask as coco_mask

from ..errors import StreamerError

FORMATS = ("coco", "yolo-seg")
UNLABELLED = "object"


class ExportError(StreamerError, ValueError):
    """The results or the video cannot be exported as asked (what to do is in the message)."""

    code = "export"


@dataclass(frozen=True)
class ExportJob:
    results: Path  # a results file (JSON Lines) with masks, or a recording's sidecar (.json)
    video: Path | None  # the video its frames came from (None: a recording's own MP4)
    frames: Path  # the dataset's folder (made)
    format: str = "coco"
    stream: str | None = None  # the stream to export (None: the file's only one)
    every: int = 1  # every Nth tracked frame

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.every < 1:
            raise ExportError(f"every must be at least 1, got {self.every}")


@dataclass(frozen=True)
class Exported:
    images: int
    annotations: int  # objects with a mask, over every image
    tracks: int
    path: Path  # the annotations file (annotations.json or data.yaml)


def export(job: ExportJob) -> Exported:
    """Write ``job``'s dataset; an ``ExportError`` says what is wrong with the inputs."""
    frames, video = _inputs(job)
    job.frames.mkdir(parents=True, exist_ok=True)
    images = job.frames / "images"
    images.mkdir(exist_ok=True)
    names = sorted({obj.get("label") or UNLABELLED for frame in frames.values() for obj in _masked(frame)})
    written = []
    found = set()
    for number, image in _video_frames(video, sorted(frames)):
        frame = frames[number]
        if image.shape[:2] != (frame["height"], frame["width"]):
            raise ExportError(
                f"{video} is {image.shape[1]}x{image.shape[0]}, but the results' frames are "
                f"{frame['width']}x{frame['height']}: export from the video these results were tracked on"
            )
        file_name = f"{frame['stream']}_{frame['source_frame']:06d}.jpg"
        cv2.imwrite(str(images / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        written.append((file_name, frame))
        found.add(number)
    if len(written) < len(frames):
        missing = sorted(set(frames) - found)
        raise ExportError(
            f"{video} has no frame {missing[0]} ({len(missing)} of the results' frames are past its end): "
            "export from the video these results were tracked on"
        )
    if job.format == "coco":
        return _write_coco(job.frames, written, names)
    return _write_yolo(job.frames, written, names)


def _inputs(job: ExportJob) -> tuple[dict[int, dict[str, Any]], Path]:
    """The tracked frames to export (every Nth), by their number in the video, and that video."""
    try:
        text = job.results.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot read the results file {job.results}: {exc}") from None
    if job.results.suffix == ".json":
        frames, video = _recording_frames(job, text)
        unmasked = "was recorded without masks: record with recordings.masks: rle"
    elif job.video is None:
        raise ExportError("a results file needs --video: the video its frames were tracked on")
    else:
        frames, video = _tracked_frames(job, text.splitlines()), job.video
        unmasked = "was written without masks: track with --results-masks rle"
    if all(frame["masks"] == "none" for frame in frames.values()):
        raise ExportError(f"{job.results} {unmasked}")
    kept = sorted(frames)[:: job.every]
    return {number: frames[number] for number in kept}, video


def _recording_frames(job: ExportJob, text: str) -> tuple[dict[int, dict[str, Any]], Path]:
    """A recording's tracked frames, numbered as its MP4's frames (the camera frames they show)."""
    try:
        sidecar = json.loads(text)
        sources, results = sidecar["frame_sources"], sidecar["results"]
    except (ValueError, KeyError, TypeError):
        raise ExportError(f"{job.results} is not a recording's sidecar (from --record)") from None
    video = job.video or job.results.with_name(str(sidecar.get("file", job.results.with_suffix(".mp4").name)))
    number_of: dict[int, int] = {}
    for number, source in enumerate(sources):
        number_of.setdefault(source, number)
    frames = {number_of[r["source_frame"]]: r for r in results if r["source_frame"] in number_of}
    if not frames:
        raise ExportError(f"{job.results} has no tracked frames in its video")
    return frames, video


def _tracked_frames(job: ExportJob, lines: list[str]) -> dict[int, dict[str, Any]]:
    """The stream's results by source frame (a frame tracked twice: its last results)."""
    by_stream: dict[str, dict[int, dict[str, Any]]] = {}
    for number, line in enumerate(lines, start=1):
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            raise ExportError(f"{job.results}:{number} is not a JSON line: is it a results file?") from None
        if isinstance(message, dict) and message.get("type") == "results":
            try:
                by_stream.setdefault(message["stream"], {})[int(message["source_frame"])] = message
            except (KeyError, TypeError, ValueError):
                raise ExportError(f"{job.results}:{number} is a results line without stream or source_frame") from None
    if not by_stream:
        raise ExportError(f"{job.results} has no results lines: write it with --results")
    stream = job.stream
    if stream is None:
        if len(by_stream) > 1:
            raise ExportError(f"{job.results} holds several streams ({', '.join(by_stream)}): pick one with --stream")
        stream = next(iter(by_stream))
    if stream not in by_stream:
        raise ExportError(f"{job.results} has no stream {stream!r}; it has {', '.join(by_stream)}")
    return by_stream[stream]


def _masked(frame: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for obj in frame["objects"] if obj.get("mask")]


def _video_frames(video: Path, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """The frames numbered ``wanted`` (ascending) of ``video``, counted as ``--out`` reads them."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ExportError(f"cannot read the video {video}")
    try:
        number, pending = 0, iter(wanted)
        target = next(pending, None)
        while target is not None:
            ok, bgr = capture.read()
            if not ok:
                return
            if number == target:
                yield number, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                target = next(pending, None)
            number += 1
    finally:
        capture.release()


def _mask_of(obj: dict[str, Any], height: int, width: int) -> np.ndarray:
    """An object's mask, from either format the results may hold."""
    mask = obj["mask"]
    if isinstance(mask, dict):
        return coco_mask.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)
    rles = coco_mask.frPyObjects(mask, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def _write_coco(folder: Path, written: list[tuple[str, dict[str, Any]]], names: list[str]) -> Exported:
    categories = {name: i for i, name in enumerate(names, start=1)}
    stream = written[0][1]["stream"] if written else ""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    tracks: dict[int, int] = {}
    for image_id, (file_name, frame) in enumerate(written, start=1):
        height, width = frame["height"], frame["width"]
        images.append(
            {
                "id": image_id,
                "file_name": f"images/{file_name}",
                "width": width,
                "height": height,
                "video_id": 1,
                "frame_index": frame["source_frame"],
                "time": frame["time"],
            }
        )
        for obj in _masked(frame):
            name = obj.get("label") or UNLABELLED
            x0, y0, x1, y1 = obj["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[name],
                    "segmentation": obj["mask"],
                    "area": obj["area"],
                    "bbox": [x0, y0, round(x1 - x0, 1), round(y1 - y0, 1)],
                    "iscrowd": 0,
                    "track_id": obj["obj_id"],
                    "score": obj["score"],
                }
            )
            tracks[obj["obj_id"]] = categories[name]  # a track's class: its latest label
    width, height = (written[0][1]["width"], written[0][1]["height"]) if written else (0, 0)
    dataset = {
        "info": {"description": f"stream {stream}, exported by sam2-stream"},
        "videos": [{"id": 1, "name": stream, "width": width, "height": height}],
        "images": images,
        "annotations": annotations,
        "tracks": [{"id": i, "category_id": c, "video_id": 1} for i, c in sorted(tracks.items())],
        "categories": [{"id": i, "name": name} for name, i in categories.items()],
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(dataset))
    return Exported(len(images), len(annotations), len(tracks), path)


def _write_yolo(folder: Path, written: list[tuple[str, dict[str, Any]]], names: list[str]) -> Exported:
    classes = {name: i for i, name in enumerate(names)}
    labels = folder / "labels"
    labels.mkdir(exist_ok=True)
    line_tracks: dict[str, list[int]] = {}
    count, seen = 0, set()
    for file_name, frame in written:
        height, width = frame["height"], frame["width"]
        stem = Path(file_name).stem
        lines, ids = [], []
        for obj in _masked(frame):
            for outline in _outlines(_mask_of(obj, height, width)):
                points = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in outline)
                lines.append(f"{classes[obj.get('label') or UNLABELLED]} {points}")
                ids.append(obj["obj_id"])
            count += 1
            seen.add(obj["obj_id"])
        (labels / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        line_tracks[stem] = ids
    (folder / "tracks.json").write_text(json.dumps(line_tracks))
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images", "names": names}))
    return Exported(len(written), count, len(seen), path)


def _outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Each part's outer contour in pixel coordinates (YOLO takes one polygon per line; holes, which
    it cannot say, are filled)."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [contour.reshape(-1, 2) for contour in contours if len(contour) >= 3]
