"""How a stream is doing, in one snapshot: what the websocket's ``state``, ``/healthz`` and a cluster
worker's reports carry, whether the stream runs here or on a worker elsewhere."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


def event_rate(times: deque[float], now: float, window: float = 5.0) -> float:
    """Events per second from ``times`` (monotonic stamps): over the last ``window`` seconds, or
    the last two events if they are further apart; it decays when events stop coming."""
    recent = [t for t in times if t >= now - window]
    if len(recent) < 2:
        recent = list(times)[-2:]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    gap = now - recent[-1]
    if gap > 2 * span / (len(recent) - 1):
        span += gap
    return (len(recent) - 1) / max(span, 1e-6)


@dataclass
class StreamState:
    """A stream's running figures, kept where its frames are handled."""

    inference_ms: float = 0.0
    latency_ms: float = 0.0
    mask_age_ms: float | None = None  # of the newest published frame (None: no masks on it)
    last_error: str | None = None
    video_times: deque[float] = field(default_factory=lambda: deque(maxlen=60))  # frames published
    mask_times: deque[float] = field(default_factory=lambda: deque(maxlen=30))  # masks from the tracker
    recent_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=300))

    @property
    def video_fps(self) -> float:
        return event_rate(self.video_times, time.monotonic())

    @property
    def mask_fps(self) -> float:
        return event_rate(self.mask_times, time.monotonic())

    def record_latency(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.recent_latency_ms.append(latency_ms)

    def latency_percentiles(self) -> dict[str, float | None]:
        """Median and p90 of the last 300 capture-to-sent latencies."""
        values = sorted(self.recent_latency_ms)
        if not values:
            return {"p50": None, "p90": None}
        return {"p50": values[len(values) // 2], "p90": values[int(0.9 * (len(values) - 1))]}


# Where a stream runs: here (local), on a cluster worker (running), between workers after its
# worker was lost or while it is rebalanced (moving), or nowhere for want of room (waiting).
PLACEMENTS = ("local", "running", "moving", "waiting")


@dataclass(frozen=True)
class StreamStatus:
    """One stream's figures at one moment (``state`` and ``/healthz``, docs/protocol.md)."""

    source: str  # the source's name, credentials masked
    source_alive: bool
    reconnecting: bool
    source_fps: float
    video_fps: float
    mask_fps: float
    mask_age_ms: float | None
    latency_ms: float  # the last frame's capture to encoded (on a cluster: to the front)
    latency_p50: float | None
    latency_p90: float | None
    inference_ms: float
    frame_index: int | None
    objects: list[int]
    last_error: str | None
    placement: str = "local"
    worker: str | None = None  # the cluster worker it runs on
    labels: dict[int, dict] = field(default_factory=dict)  # obj_id -> {label, origin, pending}
    auto: bool = False  # automatic tracking is on
    styles: dict = field(default_factory=dict)  # how its objects look: style, and objects' chosen ones
    restream: dict | None = None  # its RTSP restream: url, connected, frames_sent, connections, last_error
