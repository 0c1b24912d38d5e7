"""Prometheus metrics of one running server (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_MS_BUCKETS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_captured = Gauge("streamer_frames_captured", "Frames decoded by the source", registry=r)
        self.frames_dropped = Gauge("streamer_frames_dropped", "Frames the source replaced unseen", registry=r)
        self.reconnects = Gauge("streamer_source_reconnects", "Source reconnection attempts", registry=r)
        self.frames_processed = Counter("streamer_frames_processed", "Frames tracked", registry=r)
        self.errors = Counter("streamer_errors", "Errors by kind", ["kind"], registry=r)
        self.inference_ms = Histogram(
            "streamer_inference_ms", "Tracker step time per frame", buckets=_MS_BUCKETS, registry=r
        )
        self.latency_ms = Histogram(
            "streamer_latency_ms",
            "Capture to frame handed to the video encoder",
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.viewers = Gauge("streamer_viewers", "Connected WebRTC viewers", registry=r)
        self.prompts = Counter("streamer_prompts", "Prompt messages by result", ["result"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
