"""Event recordings: MP4 clips of a stream's masked video around its events, and, as an option,
the whole stream in segments. Listed and served over HTTP (``/recordings``, serve/server.py), and
announced to every output as a ``clip`` event with ``has_clip`` (MQTT, the results file, websocket
subscribers), the way Frigate's events say it.

Each recorded stream keeps a rolling buffer of its own H.264 packets (those its H.264 viewers and
its restream share: no second encode beside them), reaching at least ``pre_roll_s`` back to a
keyframe, and of its tracked objects' boxes. An event that ``recordings.events`` names, about an
object ``recordings.labels`` admits, opens a clip at the last keyframe at or before the event
minus the pre-roll; every later event about the clip's objects, and every other event that would
open one, keeps it going until ``post_roll_s`` after it (a clip longer than ``max_clip_s`` is
cut, and the next one goes on from there). Packets are remuxed, never re-encoded, into MP4 dated
by their capture times. Beside each clip a JSON sidecar: its events, each object's track (label,
and the box on every tracked frame, in seconds from the clip's start), every tracked frame's
results with masks (``recordings.masks``) and the camera frame each video frame shows, so that
``sam2-stream export`` makes a dataset of it; and its times and size.

Files are written as ``NAME.part`` and renamed once complete, so only finished recordings are
listed or served. The folder is bounded: after each recording (and at start) the oldest go until
the rest fit in ``max_bytes`` and none is older than ``max_days``. All file work runs on one
thread of its own, and packets are read as a viewer reads them (newest wins), so a slow disk costs
recorded frames, never the viewers or the tracker; a disk that fails is logged and counted, and the
next clip tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from ..concurrency.thread import WorkerThread
from ..concurrency.waits import CLOSE_TIMEOUT_S, stop_tasks, within
from ..config import RecordingsConfig
from ..errors import StreamerError
from ..metrics import Metrics
from ..outputs.events import Event
from ..outputs.results import FrameResults, Tracked
from .codecs import TIME_BASE, VIDEO_CLOCK
from .packets import EncodedFrame, PacketFeed
from .remux import Remux

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(mp4|json)")  # a recording's files, and nothing else
LAG_S = 10.0  # events come after their frames (the tracker's delay): packets are kept this much longer
MAX_BUFFERED = 30 * 90  # packets kept per stream at most, whatever their times
TRACK_COLUMNS = ["t", "frame_index", "source_frame", "x0", "y0", "x1", "y1"]  # a track's boxes; t: s from the start
WATCH_S = 1.0  # how often the recorder looks for streams added or removed
SIDECAR_ONLY = ("events", "track_columns", "tracks", "frame_sources", "results")  # not in the listing


class RecordingsError(StreamerError):
    """The recordings folder cannot be used."""

    code = "recordings"


class RecordingStore:
    """The recordings folder: names, listing, and its bounds."""

    def __init__(self, config: RecordingsConfig) -> None:
        assert config.dir is not None, "recordings are off"
        self.folder, self.config = Path(config.dir).expanduser(), config
        self._summaries: dict[str, tuple[float, dict[str, Any]]] = {}  # sidecar name -> (mtime, summary)

    def open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RecordingsError(f"cannot write recordings to {self.folder}: {exc}") from None
        for stale in self.folder.glob("*.part"):  # what a crash left half-written
            stale.unlink(missing_ok=True)
        self.prune()

    def file(self, name: str) -> Path | None:
        """The finished recording file ``name`` (an MP4 or its sidecar), or None: no such file, or
        not a recording's name (no paths, nothing else in the folder)."""
        if not NAME.fullmatch(name):
            return None
        path = self.folder / name
        return path if path.is_file() and path.parent == self.folder else None

    def new_name(self, stream: str, start: float, tag: str) -> str:
        """``STREAM-YYYYmmdd-HHMMSS-TAG`` (UTC), made unique in the folder; without an extension."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(start))
        base = f"{_safe(stream)}-{stamp}-{_safe(tag)[:60]}"
        name, n = base, 2
        while any((self.folder / f"{name}{ext}").exists() for ext in (".mp4", ".mp4.part", ".json")):
            name, n = f"{base}-{n}", n + 1
        return name

    def listing(self, stream: str | None = None) -> list[dict[str, Any]]:
        """Every finished recording's summary (its sidecar without the tracks), newest first."""
        found = []
        for sidecar in self.folder.glob("*.json"):
            summary = self._summary(sidecar)
            if summary is not None and (stream is None or summary.get("stream") == stream):
                found.append(summary)
        return sorted(found, key=lambda s: s.get("start", 0), reverse=True)

    def commit(self, name: str, sidecar: dict[str, Any]) -> None:
        """The clip ``name`` is complete: its sidecar written, then its MP4 renamed into place (and
        its summary kept for the listing, which need not read the sidecar back)."""
        (self.folder / f"{name}.json.part").write_text(json.dumps(sidecar, separators=(",", ":")))
        (self.folder / f"{name}.mp4.part").rename(self.folder / f"{name}.mp4")
        done = self.folder / f"{name}.json"
        (self.folder / f"{name}.json.part").rename(done)
        self._summaries[done.name] = (done.stat().st_mtime, _summary_of(sidecar))

    def prune(self) -> list[str]:
        """Delete the oldest recordings until the rest fit ``max_bytes`` and ``max_days``."""
        recordings = []
        for video in self.folder.glob("*.mp4"):
            files = [f for f in (video, video.with_suffix(".json")) if f.is_file()]
            try:
                stats = [f.stat() for f in files]
            except OSError:  # deleted meanwhile
                continue
            recordings.append((min(s.st_mtime for s in stats), sum(s.st_size for s in stats), files))
        recordings.sort(key=lambda r: r[0])
        total = sum(size for _, size, _ in recordings)
        oldest_kept = None if self.config.max_days is None else time.time() - self.config.max_days * 86400
        deleted = []
        for mtime, size, files in recordings:
            if total <= self.config.max_bytes and (oldest_kept is None or mtime >= oldest_kept):
                break
            for f in files:
                f.unlink(missing_ok=True)
                self._summaries.pop(f.name, None)
            total -= size
            deleted.append(files[0].stem)
        if deleted:
            logger.info(
                "recordings: deleted the oldest %d (%s) to stay within the folder's bounds",
                len(deleted),
                ", ".join(deleted),
            )
        return deleted

    def _summary(self, sidecar: Path) -> dict[str, Any] | None:
        try:
            mtime = sidecar.stat().st_mtime
            cached = self._summaries.get(sidecar.name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        summary = _summary_of(data)
        self._summaries[sidecar.name] = (mtime, summary)
        return summary


class _ClipFile:
    """One MP4 being written (only touched on the recorder's thread)."""

    def __init__(self, path: Path, keyframe: EncodedFrame) -> None:
        self.path = path
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            self.remux = Remux(self.container, keyframe)
            self.remux.stream.time_base = TIME_BASE
        except BaseException:
            self.container.close()
            raise
        self.width, self.height = self.remux.stream.codec_context.width, self.remux.stream.codec_context.height
        self.start = keyframe.captured
        self._last = -1

    def write(self, frame: EncodedFrame) -> None:
        pts = max(round((frame.captured - self.start) * VIDEO_CLOCK), self._last + 1)
        self._last = pts
        self.remux.mux(frame, pts)

    def close(self) -> int:
        self.container.close()
        return self.path.stat().st_size


@dataclass
class _Clip:
    """A recording being made (the loop's side of it)."""

    name: str
    kind: str  # event or segment
    file: _ClipFile
    start: float  # capture time of its first frame
    end_at: float  # an event clip ends once a frame is captured after this (a segment: never by time)
    trigger: Event | None = None
    continues: str | None = None  # the clip this one goes on from (cut at max_clip_s, or a new size)
    events: list[Event] = field(default_factory=list)
    objects: set[int] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    tracks: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)  # every tracked frame's, as the results file has them
    sources: list[int] = field(default_factory=list)  # the camera frame each of its frames shows
    frames: int = 0
    last: float = 0.0  # capture time of its last frame

    def note(self, results: FrameResults) -> None:
        if results.time < self.start:
            return
        self.results.append(results.to_dict())
        t = round(results.time - self.start, 3)
        for obj in results.objects:
            if (self.kind == "segment" or obj.obj_id in self.objects) and obj.bbox is not None:
                track = self.tracks.setdefault(obj.obj_id, {"label": None, "boxes": []})
                track["label"] = obj.label or track["label"]
                track["boxes"].append([t, results.frame_index, results.source_frame, *obj.bbox])


class _StreamRecorder:
    """One stream's buffer and clips, fed by its H.264 packets and its results and events."""

    def __init__(self, owner: Recorder, stream: str, feed: PacketFeed) -> None:
        self.owner, self.stream, self.feed = owner, stream, feed
        self.config = owner.config
        self.packets: deque[EncodedFrame] = deque(maxlen=MAX_BUFFERED)
        self.results: deque[FrameResults] = deque(maxlen=MAX_BUFFERED)
        self.clip: _Clip | None = None
        self.segment: _Clip | None = None
        self.pending: list[Event] = []  # triggers waiting for the next frame to open a clip
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"recordings {self.stream}")

    async def close(self) -> None:
        """Stop reading, then finish what is open (bounded: a hung disk loses the clip)."""
        if self.task is not None:
            await stop_tasks(self.task, what=f"recordings of {self.stream}")
            self.task = None
        for clip in (self.clip, self.segment):
            if clip is not None:
                try:
                    await within(self._finish(clip), CLOSE_TIMEOUT_S)
                except asyncio.TimeoutError:
                    logger.warning(
                        "%s: the recording %s did not finish within %g s", self.stream, clip.name, CLOSE_TIMEOUT_S
                    )
        self.clip = self.segment = None

    # -- from the outputs (on the event loop) ---------------------------------------------------

    def note_results(self, results: FrameResults) -> None:
        self.results.append(results)
        for clip in (self.clip, self.segment):
            if clip is not None:
                clip.note(results)

    def note_event(self, event: Event) -> None:
        triggers = self._triggers(event)
        if self.segment is not None:
            self.segment.events.append(event)
        clip = self.clip
        if clip is not None and (triggers or event.obj_id in clip.objects):
            clip.events.append(event)
            clip.end_at = max(clip.end_at, event.time + self.config.post_roll_s)
            if triggers:
                clip.objects.add(event.obj_id)
                if event.label:
                    clip.labels.add(event.label)
        elif triggers:
            self.pending.append(event)

    def _triggers(self, event: Event) -> bool:
        labels = self.config.labels
        return event.type in self.config.events and (not labels or event.label in labels)

    # -- the packets (its own task) -------------------------------------------------------------

    async def _run(self) -> None:
        self.feed.subscribe()  # the encoder runs while the recorder does
        try:
            frame = await self.feed.next_frame(None)
            while True:
                try:
                    await self._take(frame)
                except (av.FFmpegError, OSError) as exc:
                    self._failed(exc)
                except Exception as exc:  # a bug: log it, keep the stream's other outputs going
                    logger.exception("%s: recording failed", self.stream)
                    self._failed(exc)
                frame = await self.feed.next_frame(frame.seq)
        finally:
            await self.feed.unsubscribe()

    async def _take(self, frame: EncodedFrame) -> None:
        self.packets.append(frame)
        self._trim()
        if self.config.segment_s is not None:
            await self._segment(frame)
        clip = self.clip
        if clip is not None:
            long = frame.captured - clip.start >= self.config.max_clip_s
            if frame.keyframe and (long or clip.file.remux.new_picture(frame)):
                await self._finish(clip)  # too long, or a new picture size: it goes on in another file
                await self._open_event_clip([frame], [], carry=clip)
            else:
                await self._write(clip, frame)
                if frame.captured >= clip.end_at:
                    await self._finish(clip)
        if self.clip is None and self.pending:
            await self._open_pending()

    async def _open_pending(self) -> None:
        """A clip for the waiting triggers, from the last keyframe kept at or before the first
        one's time minus the pre-roll (or the oldest kept: the buffer was shorter)."""
        want = self.pending[0].time - self.config.pre_roll_s
        keyframes = [i for i, f in enumerate(self.packets) if f.keyframe]
        at_or_before = [i for i in keyframes if self.packets[i].captured <= want]
        start = at_or_before[-1] if at_or_before else (keyframes[0] if keyframes else None)
        if start is None:
            return  # no keyframe kept yet: the clip starts at the next one
        events, self.pending = self.pending, []
        await self._open_event_clip(list(self.packets)[start:], events)

    async def _open_event_clip(
        self, frames: list[EncodedFrame], events: list[Event], carry: _Clip | None = None
    ) -> None:
        """A clip of ``frames`` (from a keyframe) for ``events``, or going on from ``carry``."""
        labels = {e.label for e in events if e.label and self._triggers(e)} | (carry.labels if carry else set())
        clip = await self._open("event", frames[0], "_".join(sorted(labels)) or "object")
        clip.trigger = carry.trigger if carry is not None else events[0]
        clip.continues = None if carry is None else carry.name
        clip.events = list(events)
        clip.objects = {e.obj_id for e in events if self._triggers(e)} | (carry.objects if carry else set())
        clip.labels = labels
        clip.end_at = carry.end_at if carry is not None else max(e.time for e in events) + self.config.post_roll_s
        for results in self.results:  # the tracks from the clip's first frame, the pre-roll's included
            clip.note(results)
        self.clip = clip
        for frame in frames:
            await self._write(clip, frame)

    async def _segment(self, frame: EncodedFrame) -> None:
        segment = self.segment
        assert self.config.segment_s is not None
        due = segment is not None and frame.captured - segment.start >= self.config.segment_s
        if segment is not None and frame.keyframe and (due or segment.file.remux.new_picture(frame)):
            await self._finish(segment)
            segment = None
        if segment is None and frame.keyframe:
            segment = self.segment = await self._open("segment", frame, "segment")
            for results in self.results:
                segment.note(results)
        if segment is not None:
            await self._write(segment, frame)

    async def _open(self, kind: str, keyframe: EncodedFrame, tag: str) -> _Clip:
        store = self.owner.store
        name = store.new_name(self.stream, keyframe.captured, tag)
        path = store.folder / f"{name}.mp4.part"
        file = await self.owner.thread.run(_ClipFile, path, keyframe)
        return _Clip(name, kind, file, keyframe.captured, keyframe.captured)

    async def _write(self, clip: _Clip, frame: EncodedFrame) -> None:
        if frame.captured < clip.start:
            return
        await self.owner.thread.run(clip.file.write, frame)
        clip.sources.append(frame.source)
        clip.frames += 1
        clip.last = frame.captured

    async def _finish(self, clip: _Clip) -> None:
        if clip is self.clip:
            self.clip = None
        if clip is self.segment:
            self.segment = None
        size = await self.owner.thread.run(clip.file.close)
        summary: dict[str, Any] = {
            "name": clip.name,
            "file": f"{clip.name}.mp4",
            "stream": self.stream,
            "kind": clip.kind,
            "start": round(clip.start, 3),
            "end": round(clip.last, 3),
            "duration_s": round(clip.last - clip.start, 3),
            "frames": clip.frames,
            "width": clip.file.width,
            "height": clip.file.height,
            "bytes": size,
            "labels": sorted(clip.labels),
            "objects": sorted(clip.objects),
        }
        if clip.trigger is not None:
            summary["trigger"] = clip.trigger.to_dict()
        if clip.trigger is not None and clip.continues is None:
            summary["pre_roll_s"] = round(clip.trigger.time - clip.start, 3)
        if clip.continues is not None:
            summary["continues"] = clip.continues
        sidecar = {
            **summary,
            "events": [e.to_dict() for e in clip.events],
            "track_columns": TRACK_COLUMNS,
            "tracks": {str(k): v for k, v in sorted(clip.tracks.items())},
            "frame_sources": clip.sources,
            "results": clip.results,
        }
        store = self.owner.store
        await self.owner.thread.run(store.commit, clip.name, sidecar)
        await self.owner.thread.run(store.prune)
        logger.info(
            "%s: recorded %s (%.1f s, %d frames)", self.stream, summary["file"], summary["duration_s"], clip.frames
        )
        if clip.trigger is not None:
            t = clip.trigger
            done = Event("clip", self.stream, t.obj_id, clip.last, t.frame_index, t.bbox, label=t.label, clip=summary)
            self.owner.announce(done)

    def _trim(self) -> None:
        """Keep packets back to the last keyframe at least ``pre_roll_s + LAG_S`` old."""
        horizon = self.packets[-1].captured - self.config.pre_roll_s - LAG_S
        while len(self.packets) > 1:
            later_key = next((f for f in list(self.packets)[1:] if f.keyframe), None)
            if later_key is None or later_key.captured > horizon:
                break
            while self.packets[0] is not later_key:
                self.packets.popleft()
        while self.results and self.results[0].time < self.packets[0].captured:
            self.results.popleft()

    def _failed(self, exc: BaseException) -> None:
        logger.warning("%s: a recording failed and is lost (%s); the next one tries again", self.stream, exc)
        self.owner.metrics.stream(self.stream).error("recordings")
        for clip in (self.clip, self.segment):
            if clip is not None:
                with contextlib.suppress(Exception):
                    clip.file.container.close()
                clip.file.path.unlink(missing_ok=True)
        self.clip = self.segment = None
        self.pending = []


class Recorder:
    """Every recorded stream's clips: a sink of the outputs (its results and events) that reads
    each stream's H.264 packets from ``feeds`` (name -> feed, asked again every ``WATCH_S``: streams
    come and go) and hands each finished clip to ``announce`` (``Outputs.announce``)."""

    kind = "recordings"

    def __init__(
        self,
        config: RecordingsConfig,
        feeds: Callable[[], Mapping[str, PacketFeed]],
        announce: Callable[[Event], None],
        metrics: Metrics,
    ) -> None:
        self.config, self.feeds, self.announce, self.metrics = config, feeds, announce, metrics
        self.store = RecordingStore(config)
        self.thread = WorkerThread("recordings")
        self.streams: dict[str, _StreamRecorder] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the folder (a usage error if it cannot be written), then record."""
        self.store.open()
        what = [f"clips around {', '.join(self.config.events)} events"] if self.config.events else []
        if self.config.segment_s is not None:
            what.append(f"everything in {self.config.segment_s:g} s segments")
        logger.info("recording %s to %s", " and ".join(what) or "nothing (no events, no segments)", self.store.folder)
        self._task = asyncio.create_task(self._watch(), name="recordings")

    async def close(self, flush: bool = False) -> None:
        """Stop, finishing every open clip (``flush`` is implied: a clip is never left half-written)."""
        if self._task is not None:
            await stop_tasks(self._task, what="recordings")
            self._task = None
        await asyncio.gather(*(recorder.close() for recorder in self.streams.values()))
        self.streams.clear()
        await self.thread.close()

    # -- a sink of the outputs ------------------------------------------------------------------

    def wants(self, stream: str) -> str | None:
        return self.config.masks if stream in self.streams else None

    def results(self, tracked: Tracked, masks: str) -> None:
        recorder = self.streams.get(tracked.stream)
        if recorder is not None:
            recorder.note_results(tracked.results(masks))

    def event(self, event: Event) -> None:
        recorder = self.streams.get(event.stream)
        if recorder is not None and event.type != "clip":
            recorder.note_event(event)

    async def _watch(self) -> None:
        while True:
            try:
                feeds = {n: f for n, f in self.feeds().items() if self.config.records(n)}
                for name in [n for n in self.streams if n not in feeds]:
                    await self.streams.pop(name).close()
                for name, feed in feeds.items():
                    if name not in self.streams:
                        recorder = self.streams[name] = _StreamRecorder(self, name, feed)
                        recorder.start()
            except Exception:
                logger.exception("recordings: looking for streams failed; trying again")
            await asyncio.sleep(WATCH_S)


def _summary_of(sidecar: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sidecar.items() if k not in SIDECAR_ONLY}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


__all__ = ["NAME", "Recorder", "RecordingStore", "RecordingsError"]
