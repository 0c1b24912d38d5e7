"""Prometheus metrics of one running server (its own registry, so tests can run several).

Per-stream series carry a ``stream`` label; ``StreamMetrics`` holds one stream's children so the
code that updates them never repeats the label, and ``forget`` drops them when a stream goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_MS_BUCKETS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)


@dataclass
class StreamMetrics:
    name: str
    frames_captured: Gauge
    frames_dropped: Gauge
    reconnects: Gauge
    frames_processed: Counter
    frames_displayed: Counter
    video_fps: Gauge
    mask_fps: Gauge
    mask_age_ms: Histogram
    inference_ms: Histogram
    latency_ms: Histogram
    viewers: Gauge
    results_frames: Counter
    results_skipped: Counter
    results_ms: Histogram
    errors_by_kind: Counter
    prompts_by_result: Counter
    events_by_type: Counter
    removed: bool = False  # the stream is gone: late events must not bring its series back

    def error(self, kind: str) -> None:
        if not self.removed:
            self.errors_by_kind.labels(self.name, kind).inc()

    def prompt(self, result: str) -> None:
        if not self.removed:
            self.prompts_by_result.labels(self.name, result).inc()

    def event(self, kind: str) -> None:
        if not self.removed:
            self.events_by_type.labels(self.name, kind).inc()


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        by_stream = ["stream"]
        self._families = {
            "frames_captured": Gauge("streamer_frames_captured", "Frames decoded by the source", by_stream, registry=r),
            "frames_dropped": Gauge(
                "streamer_frames_dropped", "Frames replaced before the tracker took them", by_stream, registry=r
            ),
            "reconnects": Gauge("streamer_source_reconnects", "Source reconnection attempts", by_stream, registry=r),
            "frames_processed": Counter("streamer_frames_processed", "Frames tracked", by_stream, registry=r),
            "frames_displayed": Counter(
                "streamer_frames_displayed",
                "Frames published for the viewers (every camera frame)",
                by_stream,
                registry=r,
            ),
            "video_fps": Gauge(
                "streamer_video_fps", "Frames published for the viewers per second", by_stream, registry=r
            ),
            "mask_fps": Gauge("streamer_mask_fps", "New masks from the tracker per second", by_stream, registry=r),
            "mask_age_ms": Histogram(
                "streamer_mask_age_ms",
                "Capture time of a published frame minus that of the frame its masks were computed on",
                by_stream,
                buckets=_MS_BUCKETS,
                registry=r,
            ),
            "inference_ms": Histogram(
                "streamer_inference_ms",
                "Inference round time (all streams of the round together)",
                by_stream,
                buckets=_MS_BUCKETS,
                registry=r,
            ),
            "latency_ms": Histogram(
                "streamer_latency_ms",
                "Capture to frame encoded for the viewers",
                by_stream,
                buckets=_MS_BUCKETS,
                registry=r,
            ),
            "viewers": Gauge("streamer_viewers", "Connected WebRTC viewers", by_stream, registry=r),
            "results_frames": Counter(
                "streamer_results_frames",
                "Tracked frames measured into results (only while consumed)",
                by_stream,
                registry=r,
            ),
            "results_skipped": Counter(
                "streamer_results_skipped",
                "Tracked frames replaced by a newer one before their results were measured",
                by_stream,
                registry=r,
            ),
            "results_ms": Histogram(
                "streamer_results_ms",
                "Measuring one tracked frame's results and events (every mask format asked for)",
                by_stream,
                buckets=(0.5, 1, 2, 5, 10, 20, 50, 100, 200),
                registry=r,
            ),
            "errors": Counter("streamer_errors", "Errors by kind", ["stream", "kind"], registry=r),
            "prompts": Counter("streamer_prompts", "Prompt messages by result", ["stream", "result"], registry=r),
            "events": Counter("streamer_events", "Object events by type", ["stream", "type"], registry=r),
        }
        self.batch_size = Histogram(
            "streamer_batch_streams", "Streams stepped together per round", buckets=(1, 2, 4, 8, 16, 32), registry=r
        )
        self.results_dropped = Counter(
            "streamer_results_dropped",
            "Results or events an output could not take (a slow websocket, a slow disk, MQTT disconnected too long)",
            ["output", "kind"],
            registry=r,
        )
        self.mqtt_connected = Gauge("streamer_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.mqtt_published = Counter(
            "streamer_mqtt_published", "MQTT messages handed to the client, by topic kind", ["kind"], registry=r
        )

    def stream(self, name: str) -> StreamMetrics:
        families = dict(self._families)
        errors, prompts, events = families.pop("errors"), families.pop("prompts"), families.pop("events")
        children = {key: family.labels(name) for key, family in families.items()}
        return StreamMetrics(name, errors_by_kind=errors, prompts_by_result=prompts, events_by_type=events, **children)

    def forget(self, name: str) -> None:
        """Remove a stream's series (it was removed at run time)."""
        for family in self._families.values():
            for labels in list(family._metrics):  # noqa: SLF001 - prometheus_client has no public listing
                if labels[0] == name:
                    family.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)
