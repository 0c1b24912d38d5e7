"""What a cluster worker sends its front, and how small it is made.

A worker answers the front's long poll with one ``WorkerReport``: the encoded video packets its
streams' viewers need (the only per-frame traffic: raw frames never leave the worker), each
stream's status and metric changes a few times a second, the tracked frames the front's outputs
want (and, for every stream, one a second at least: the masks a failover restores objects
from), and the errors to tell viewers. A report travels as one pickled blob, so the front counts
exactly the bytes that crossed.

A tracked frame's logits are the bulk of a report that has one. ``CompactTracked`` keeps them at
the display's mask size as int8 in 1/16 steps, clipped to +-8 (a logit that far out is a
certainty either way) and rounded away from zero at the boundary, so ``> 0`` is exactly the
tracker's mask; deflate then shrinks the flat inside and outside to almost nothing.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..live.status import StreamStatus
from ..metrics import MetricsDelta
from ..outputs.results import ObjectLabel, Tracked

LOGIT_STEP = 16  # int8 units per logit
LOGIT_CLIP = 127 / LOGIT_STEP


@dataclass(frozen=True)
class Packet:
    """One encoded frame of one stream in one codec, as the worker's encoder made it."""

    stream: str
    codec: str
    data: bytes
    pts: int  # 90 kHz, from the worker's encoder (the front rebases it)
    keyframe: bool
    source: int  # the camera frame it shows
    captured: float  # that frame's capture time, seconds since the epoch


@dataclass(frozen=True)
class CompactTracked:
    """A ``Tracked`` frame small enough to send: logits as deflated int8."""

    stream: str
    frame_index: int
    source_frame: int
    time: float
    height: int
    width: int
    obj_ids: tuple[int, ...]
    scores: tuple[float, ...]
    shape: tuple[int, int, int]  # of the logits
    logits: bytes
    labels: tuple[tuple[int, ObjectLabel], ...] = ()
    ended: tuple[tuple[int, str], ...] = ()

    @classmethod
    def of(cls, tracked: Tracked) -> CompactTracked:
        logits = np.asarray(tracked.logits, np.float32)
        scaled = np.clip(logits, -LOGIT_CLIP, LOGIT_CLIP) * LOGIT_STEP
        # Round away from zero: a positive logit stays >= 1, a non-positive one <= 0.
        quantized = np.where(scaled > 0, np.maximum(np.ceil(scaled - 0.5), 1), np.minimum(np.floor(scaled + 0.5), 0))
        data = zlib.compress(quantized.astype(np.int8).tobytes(), 1)
        return cls(
            tracked.stream,
            tracked.frame_index,
            tracked.source_frame,
            tracked.time,
            tracked.height,
            tracked.width,
            tuple(tracked.obj_ids),
            tuple(float(s) for s in np.asarray(tracked.scores).reshape(-1)),
            tuple(logits.shape),
            data,
            tuple((obj_id, tracked.labels[obj_id]) for obj_id in tracked.obj_ids if obj_id in tracked.labels),
            tuple(tracked.ended.items()),
        )

    def logit_array(self) -> np.ndarray:
        raw = np.frombuffer(zlib.decompress(self.logits), np.int8).reshape(self.shape)
        return raw.astype(np.float32) / LOGIT_STEP

    def tracked(self) -> Tracked:
        """The frame as the front's outputs take it."""
        return Tracked(
            self.stream,
            self.frame_index,
            self.source_frame,
            self.time,
            self.height,
            self.width,
            self.obj_ids,
            self.logit_array(),
            np.asarray(self.scores, np.float32),
            dict(self.labels),
            dict(self.ended),
        )

    def masks(self) -> dict[int, np.ndarray]:
        """Each object's mask (bool, at the mask size): what a failover restores it from."""
        logits = self.logit_array()
        return {obj_id: layer > 0 for obj_id, layer in zip(self.obj_ids, logits)}


@dataclass(frozen=True)
class StreamReport:
    """A stream's status and its metrics since the last report."""

    name: str
    status: StreamStatus
    metrics: MetricsDelta


@dataclass(frozen=True)
class WorkerReport:
    packets: list[Packet] = field(default_factory=list)
    tracked: list[CompactTracked] = field(default_factory=list)
    streams: list[StreamReport] = field(default_factory=list)  # every STATUS_INTERVAL_S
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (stream, code, message)
    busy: float = 0.0  # fraction of the last seconds the worker's model was busy
    round_ms: float = 0.0  # its last round's time
    sent_at: float = 0.0  # seconds since the epoch

    def pack(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def unpack(blob: bytes) -> WorkerReport:
        """A report from one of our own workers (inside the cluster: trusted like Ray's own pickles)."""
        report = pickle.loads(blob)
        if not isinstance(report, WorkerReport):
            raise TypeError(f"a worker sent {type(report).__name__}, not a report")
        return report
