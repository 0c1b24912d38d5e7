"""Prometheus metrics of one running server (its own registry, so tests can run several).

Per-stream series carry a ``stream`` label; ``StreamMetrics`` holds one stream's children so the
code that updates them never repeats the label, and ``forget`` drops them when a stream goes.

On a cluster the streams run on workers but the front serves /metrics. A worker's ``Metrics``
are made with ``tap=True``: the series its pipeline updates (``TAPPED``) also keep what happened
to them until ``StreamMetrics.take()`` hands it over as a ``MetricsDelta``, which the front
applies to its own series of that stream (``apply``), so the front's /metrics reads as a local
server's, whichever worker a stream ran on. Per-worker series are ``ClusterMetrics``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Base units, as Prometheus names them (promtool rejects "_ms"): durations are in seconds.
_SECONDS_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5)
TAPPED = {  # what a worker's pipeline updates, by kind
    "frames_processed": "counter",
    "frames_displayed": "counter",
    "mask_age_s": "histogram",
    "inference_s": "histogram",
    "frames_captured": "gauge",
    "frames_dropped": "gauge",
    "reconnects": "gauge",
}
MAX_TAPPED_VALUES = 1000  # observations kept between two reports (the newest win)


@dataclass
class MetricsDelta:
    """What changed in one stream's tapped series since the last ``take()``."""

    counters: dict[str, float] = field(default_factory=dict)
    observations: dict[str, list[float]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


class _Tap:
    """A series' child that also keeps what happened to it until taken."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.count = 0.0
        self.values: deque[float] = deque(maxlen=MAX_TAPPED_VALUES)
        self.value: float | None = None

    def inc(self, amount: float = 1.0) -> None:
        self.child.inc(amount)
        self.count += amount

    def observe(self, value: float) -> None:
        self.child.observe(value)
        self.values.append(value)

    def set(self, value: float) -> None:
        self.child.set(value)
        self.value = value

    def set_function(self, function: Any) -> None:
        self.child.set_function(function)


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
    mask_age_s: Histogram
    inference_s: Histogram
    latency_s: Histogram
    viewers: Gauge
    results_frames: Counter
    results_skipped: Counter
    results_s: Histogram
    prompt_wait_s: Histogram
    prompt_run_s: Histogram
    errors_by_kind: Counter
    prompts_by_result: Counter
    events_by_type: Counter
    objects_by_label: Gauge
    restream_connected: Gauge
    restream_frames: Counter
    removed: bool = False  # the stream is gone: late events must not bring its series back
    tapped_errors: Tally[str] | None = None  # on a worker: errors since the last take()

    def error(self, kind: str) -> None:
        if not self.removed:
            self.errors_by_kind.labels(self.name, kind).inc()
            if self.tapped_errors is not None:
                self.tapped_errors[kind] += 1

    def take(self) -> MetricsDelta:
        """What happened to the tapped series since the last call (a worker's pipeline only)."""
        delta = MetricsDelta()
        for name, kind in TAPPED.items():
            tap = getattr(self, name)
            if not isinstance(tap, _Tap):
                raise TypeError("take() needs metrics made with Metrics(tap=True)")
            if kind == "counter" and tap.count:
                delta.counters[name], tap.count = tap.count, 0.0
            elif kind == "histogram" and tap.values:
                delta.observations[name] = list(tap.values)
                tap.values.clear()
            elif kind == "gauge" and tap.value is not None:
                delta.gauges[name] = tap.value
        if self.tapped_errors:
            delta.errors = dict(self.tapped_errors)
            self.tapped_errors.clear()
        return delta

    def apply(self, delta: MetricsDelta) -> None:
        """Add what a worker's stream did to this (the front's) stream's series."""
        if self.removed:
            return
        for name, amount in delta.counters.items():
            getattr(self, name).inc(amount)
        for name, values in delta.observations.items():
            for value in values:
                getattr(self, name).observe(value)
        for name, value in delta.gauges.items():
            getattr(self, name).set(value)
        for kind, count in delta.errors.items():
            self.errors_by_kind.labels(self.name, kind).inc(count)

    def prompt(self, result: str) -> None:
        if not self.removed:
            self.prompts_by_result.labels(self.name, result).inc()

    def event(self, kind: str) -> None:
        if not self.removed:
            self.events_by_type.labels(self.name, kind).inc()

    def set_objects(self, by_label: dict[str, int]) -> None:
        """Objects tracked now, by label ("" for none); labels no longer seen go to 0."""
        if self.removed:
            return
        for labels in list(self.objects_by_label._metrics):  # noqa: SLF001 - no public listing
            if labels[0] == self.name and labels[1] not in by_label:
                self.objects_by_label.labels(*labels).set(0)
        for label, count in by_label.items():
            self.objects_by_label.labels(self.name, label).set(count)


class Metrics:
    def __init__(self, tap: bool = False) -> None:
        self.tap = tap  # a cluster worker's: the front takes what happens to each stream
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
            "mask_age_s": Histogram(
                "streamer_mask_age_seconds",
                "Capture time of a published frame minus that of the frame its masks were computed on",
                by_stream,
                buckets=_SECONDS_BUCKETS,
                registry=r,
            ),
            "inference_s": Histogram(
                "streamer_inference_seconds",
                "Inference round time (all streams of the round together)",
                by_stream,
                buckets=_SECONDS_BUCKETS,
                registry=r,
            ),
            "latency_s": Histogram(
                "streamer_latency_seconds",
                "Capture to frame encoded for the viewers",
                by_stream,
                buckets=_SECONDS_BUCKETS,
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
            "results_s": Histogram(
                "streamer_results_seconds",
                "Measuring one tracked frame's results and events (every mask format asked for)",
                by_stream,
                buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
                registry=r,
            ),
            "prompt_wait_s": Histogram(
                "streamer_prompt_wait_seconds",
                "A prompt's wait for the tracker (the round in flight, up to its pause for changes) before it ran",
                by_stream,
                buckets=_SECONDS_BUCKETS,
                registry=r,
            ),
            "prompt_run_s": Histogram(
                "streamer_prompt_run_seconds",
                "A prompt's own tracker time (with any frame it had the tracker take first)",
                by_stream,
                buckets=_SECONDS_BUCKETS,
                registry=r,
            ),
            "restream_connected": Gauge(
                "streamer_restream_connected", "1 while the stream's RTSP restream is connected", by_stream, registry=r
            ),
            "restream_frames": Counter(
                "streamer_restream_frames", "Frames sent to the stream's RTSP restream", by_stream, registry=r
            ),
            "errors": Counter("streamer_errors", "Errors by kind", ["stream", "kind"], registry=r),
            "prompts": Counter("streamer_prompts", "Prompt messages by result", ["stream", "result"], registry=r),
            "events": Counter("streamer_events", "Object events by type", ["stream", "type"], registry=r),
            "objects": Gauge(
                "streamer_objects",
                "Objects tracked now by label ('' for none; automatic ones once past probation)",
                ["stream", "label"],
                registry=r,
            ),
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
        self.tracker_threads = Gauge(
            "streamer_tracker_threads",
            "CPU threads the tracker may use (fewer while the video needs the cores)",
            registry=r,
        )
        self.mqtt_published = Counter(
            "streamer_mqtt_published", "MQTT messages handed to the client, by topic kind", ["kind"], registry=r
        )

    def stream(self, name: str) -> StreamMetrics:
        families = dict(self._families)
        errors: Any = families.pop("errors")  # the labelled families, labelled per use
        prompts: Any = families.pop("prompts")
        events: Any = families.pop("events")
        objects: Any = families.pop("objects")
        children: dict[str, Any] = {key: family.labels(name) for key, family in families.items()}
        if self.tap:
            children.update({key: _Tap(children[key]) for key in TAPPED})
        return StreamMetrics(
            name,
            errors_by_kind=errors,
            prompts_by_result=prompts,
            events_by_type=events,
            objects_by_label=objects,
            tapped_errors=Tally() if self.tap else None,
            **children,
        )

    def forget(self, name: str) -> None:
        """Remove a stream's series (it was removed at run time)."""
        for family in self._families.values():
            for labels in list(family._metrics):  # noqa: SLF001 - prometheus_client has no public listing
                if labels[0] == name:
                    family.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ClusterMetrics:
    """A cluster front's own series: its workers, and what failovers cost."""

    def __init__(self, registry: CollectorRegistry) -> None:
        by_worker = ["worker"]
        self.workers = Gauge("streamer_workers", "Cluster workers ready to take streams", registry=registry)
        self.worker_streams = Gauge("streamer_worker_streams", "Streams on each worker", by_worker, registry=registry)
        self.worker_busy = Gauge(
            "streamer_worker_busy", "Fraction of recent time the worker's model was busy", by_worker, registry=registry
        )
        self.worker_round_s = Gauge(
            "streamer_worker_round_seconds", "The worker's last inference round", by_worker, registry=registry
        )
        self.worker_bytes = Counter(
            "streamer_worker_bytes", "Bytes the front received from each worker", by_worker, registry=registry
        )
        self.streams_waiting = Gauge(
            "streamer_streams_waiting", "Streams no worker has room for (they start when one joins)", registry=registry
        )
        self.failovers = Counter(
            "streamer_failovers", "Streams restarted on another worker after theirs was lost", registry=registry
        )
        failover_buckets = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60)
        self.failover_s = Histogram(
            "streamer_failover_seconds",
            "A moved stream's outage as its clients see it: from its lost worker's last report to the first "
            "video or masks from the next worker",
            buckets=failover_buckets,
            registry=registry,
        )
        self.failover_detection_s = Histogram(
            "streamer_failover_detection_seconds",
            "From a lost worker's last report to the front declaring it lost (part of each outage)",
            buckets=failover_buckets,
            registry=registry,
        )
        self.moves = Counter("streamer_rebalanced", "Streams moved to a worker that joined", registry=registry)

    def forget(self, worker: str) -> None:
        for family in (self.worker_streams, self.worker_busy, self.worker_round_s, self.worker_bytes):
            if (worker,) in family._metrics:  # noqa: SLF001 - prometheus_client has no public listing
                family.remove(worker)
