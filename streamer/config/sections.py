"""Every setting, declared once: one dataclass per section of a config file, checked on
construction. YAML files (``files.py``) and the command line's flags both fill these same fields;
the code that runs reads nothing else."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .values import (
    ANCHORS,
    CLUSTER_WORKERS,
    EVENT_TYPES,
    MASK_MOTIONS,
    OBJECT_STYLES,
    IceConfig,
    Zone,
    check_detector_name,
    check_mask_format,
    check_style,
    ice_config,
    parse_broker,
    parse_labels,
    parse_zones,
)


@dataclass
class ModelConfig:
    """Which network to run, with which weights, where."""

    name: str = "auto"  # a registered model (streamer.model.families), or auto: chosen by the device
    checkpoint: str | None = None
    random_weights: bool = False
    image_size: int | None = None
    device: str | None = None
    precision: str = "auto"
    max_batch: int = 16  # streams stepped together in one round
    compile: bool = False  # torch.compile the model (slow first frames; worth it on a GPU)

    def build_options(self, tracker: TrackerConfig, device: str | None = None) -> dict[str, Any]:
        """``StreamingTracker.build``'s arguments for this model (on ``device``, if given)."""
        return {
            "model": self.name,
            "checkpoint": self.checkpoint,
            "device": device or self.device,
            "random_init": self.random_weights,
            "image_size": self.image_size,
            "precision": self.precision,
            "compile": self.compile,
            **dataclasses.asdict(tracker),
        }


@dataclass
class TrackerConfig:
    """StreamingTracker options (see its constructor)."""

    history: int = 8
    max_cond_frames: int = 8
    corrections_as_cond: bool = False
    fill_hole_area: int = 8


@dataclass
class SourceConfig:
    """What to watch: any spec open_source takes (None: webcam 0 when there is one)."""

    spec: str | None = None


@dataclass
class StreamConfig:
    """One camera of a multi-stream server: its name (in the viewer, the protocol and /metrics),
    its spec and the options ``open_source`` takes for it (``transport``, ``loop``...)."""

    name: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    auto: dict[str, Any] = field(default_factory=dict)  # this camera's ``auto`` settings over the global ones
    restream: str | None = None  # its annotated video published to this RTSP server (rtsp://HOST:PORT/PATH)
    style: str | None = None  # how its objects look, over display.style (None: that)

    def auto_config(self, base: AutoConfig) -> AutoConfig:
        """This stream's ``auto`` settings: ``base`` (the file's ``auto:``) with its own over it."""
        unknown = set(self.auto) - {f.name for f in dataclasses.fields(AutoConfig)}
        if unknown:
            raise ValueError(f"stream {self.name!r}: auto has no setting {', '.join(sorted(unknown))}")
        return dataclasses.replace(base, **self.auto)


@dataclass
class AutoConfig:
    """Tracks a detector starts and ends, with no click (``auto:``; ``--auto person,car``).

    Every ``every_frames`` tracked frames (or ``every_s`` seconds), the detector looks at the frame
    the tracker just processed; its detections are matched to the tracked objects (same label, box
    IoU at least ``match_iou``). A confident unmatched one that the masks do not already cover
    becomes an object, announced after ``probation`` detections; one whose mask drifted from its
    detection (IoU below ``reseed_iou``) is re-prompted with the box, at most every
    ``reseed_every`` runs; an automatic object undetected for ``end_after`` runs, or out of sight
    for ``absent_s`` seconds, ends. Defaults: SAM 3's video model (new tracks from detections
    scoring 0.5 and up on our detectors' calibration; probation of ~15 frames) and Grounded-SAM-2
    (detections every few frames), tuned on the synthetic scene (bench/auto.py).
    """

    enabled: bool = False
    detector: str = "rtdetr"  # rtdetr (COCO classes), owlv2 (any words), faces, or package.module:function
    labels: list[str] = field(default_factory=list)  # what to track (empty: whatever the detector finds)
    threshold: float = 0.5  # a detection's score to start an object
    every_frames: int = 5  # run on every Nth tracked frame...
    every_s: float | None = None  # ...or every this many seconds instead
    max_objects: int = 20  # automatic objects per stream, at most
    match_iou: float = 0.3  # a detection and an object's mask box overlap this much: the same thing
    cover: float = 0.6  # a detection this much covered by tracked masks starts nothing
    probation: int = 3  # detections (the first included) before a new object is announced
    reseed_iou: float = 0.5  # a matched object's mask box below this IoU with its detection: re-prompt
    reseed_every: int = 3  # detector runs between two re-prompts of one object, at least
    end_after: int = 5  # detector runs without a match before an automatic object ends
    absent_s: float = 3.0  # seconds out of sight (presence score) before an automatic object ends
    merge_iou: float = 0.8  # two objects' masks overlapping this much are one: the newer ends
    end_clicked: bool = False  # the detector may also end objects a person added (click, box, text)
    device: str | None = None  # where detectors run (None: cuda when available, else cpu)
    text_detector: str = "owlv2"  # the open-vocabulary detector a text prompt runs

    def __post_init__(self) -> None:
        check_detector_name(self.detector)
        check_detector_name(self.text_detector)
        self.labels = parse_labels(self.labels, "auto.labels")
        for name in ("threshold", "match_iou", "cover", "reseed_iou", "merge_iou"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"auto.{name} must be 0 to 1, got {value!r}")
        for name, low, high in (
            ("every_frames", 1, 10_000),
            ("max_objects", 1, 256),
            ("probation", 1, 100),
            ("reseed_every", 1, 10_000),
            ("end_after", 1, 10_000),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"auto.{name} must be an integer from {low} to {high}, got {value!r}")
        if self.every_s is not None and not 0.01 <= self.every_s <= 3600:
            raise ValueError(f"auto.every_s must be 0.01 to 3600 seconds (or null), got {self.every_s!r}")
        if not 0 < self.absent_s <= 3600:
            raise ValueError(f"auto.absent_s must be more than 0 and at most 3600 seconds, got {self.absent_s!r}")


@dataclass
class ServerConfig:
    """Where to listen and for whom (``server:`` in YAML; flags override it)."""

    host: str = "127.0.0.1"  # loopback only; any other host needs a token (or insecure)
    port: int = 8765  # 0: any free port
    token: str | None = None
    insecure: bool = False  # allow a public host without a token
    max_peers: int = 16
    rate: float = 20.0  # websocket messages per second per connection, sustained
    burst: int = 40
    state_interval: float = 0.5  # seconds between state pushes to each viewer
    stream_control: bool = False  # viewers may add and remove streams (opens files and URLs they name)
    max_streams: int = 32
    tls_cert: str | None = None  # PEM certificate (with its chain) and key: https and wss
    tls_key: str | None = None
    tls_self_signed: bool = False  # make (and cache) a self-signed certificate for this machine
    ice_servers: list[dict[str, Any]] = field(default_factory=list)  # RTCIceServer: {urls, username, credential}
    ice_transport_policy: str = "all"  # relay: TURN relays only, for the server and the page
    base_path: str = "/"  # serve under this path (a reverse proxy's sub-path, e.g. /cams/)
    trust_proxy: bool = False  # believe X-Forwarded-Host/-Proto (only behind a proxy that sets them)
    whep_origins: list[str] = field(default_factory=list)  # other web origins whose WHEP players may watch; * any

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.tls_cert and self.tls_self_signed:
            raise ValueError("a self-signed certificate is made here: leave out the certificate and key")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 to 65535, got {self.port}")
        if self.rate <= 0 or self.burst < 1 or self.state_interval <= 0:
            raise ValueError("rate and state_interval must be more than 0, burst at least 1")
        for origin in self.whep_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s]+", origin):
                raise ValueError(f"whep_origins: {origin!r} is not an origin like https://dash.example.com (or *)")
        try:
            self.ice: IceConfig = ice_config(self.ice_servers, self.ice_transport_policy)
        except ValueError as exc:
            raise ValueError(f"ice_servers / --ice-server: {exc}") from None


@dataclass
class ClusterConfig:
    """Streams tracked on a Ray cluster instead of in this process (``cluster:``; docs/cluster.md)."""

    address: str | None = None  # ray://HEAD:10001, auto (this machine's cluster) or HEAD:6379; None: no cluster
    workers: str = "auto"  # gpu: one worker per GPU; cpu: one per node; auto: gpu if the cluster has GPUs
    max_streams_per_worker: int = 8
    cpus_per_worker: float = 1.0  # what a CPU worker reserves of its node
    heartbeat_timeout_s: float = 3.0  # a worker silent this long is lost: its streams move
    start_timeout_s: float = 600.0  # a worker's model load (a first checkpoint download included)
    connect_timeout_s: float = 30.0  # joining the cluster at startup
    head_timeout_s: float = 45.0  # the Ray head silent this long: the cluster is gone, the front shuts down

    def __post_init__(self) -> None:
        if self.workers not in CLUSTER_WORKERS:
            raise ValueError(f"workers must be one of {', '.join(CLUSTER_WORKERS)}, got {self.workers!r}")
        if not 1 <= self.max_streams_per_worker <= 256:
            raise ValueError(f"max_streams_per_worker must be 1 to 256, got {self.max_streams_per_worker}")
        if not 0 < self.cpus_per_worker <= 1024:
            raise ValueError(f"cpus_per_worker must be more than 0, got {self.cpus_per_worker}")
        if not 0.5 <= self.heartbeat_timeout_s <= 60:
            raise ValueError(f"heartbeat_timeout_s must be 0.5 to 60 seconds, got {self.heartbeat_timeout_s}")
        if not 1 <= self.head_timeout_s <= 3600:
            raise ValueError(f"head_timeout_s must be 1 to 3600 seconds, got {self.head_timeout_s}")
        for name in ("start_timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0 seconds, got {getattr(self, name)}")


@dataclass
class DisplayConfig:
    """How masks are shown between the frames the tracker finishes (``display:`` in YAML)."""

    mask_motion: str = "flow"  # flow: carried along optical flow; hold: left where they were computed
    mask_width: int = 480  # masks are kept and moved at most this wide (the model's own are 256)
    flow_width: int = 240  # optical flow is computed on frames this wide
    remember_s: float = 2.0  # how far back a click may land (at most 64 frames)
    labels: bool = True  # object ids drawn at the masks' centres
    max_width: int | None = None  # video sent to viewers at most this wide (None: the camera's width)
    bitrate: int = 2_500_000  # bits per second of each stream's video, per codec
    # How objects look in every video output (video/styles.py): overlay, outline, label, blur,
    # plain; or the background's: blur_background, replace_background, cutout.
    style: str = "overlay"
    styles: dict[str, str] = field(default_factory=dict)  # by label, over ``style``: {person: blur}
    background: str | None = None  # the image replace_background puts behind the objects
    privacy_margin: float = 0.02  # a blurred mask grows by this share of the frame's width

    def __post_init__(self) -> None:
        if self.mask_motion not in MASK_MOTIONS:
            raise ValueError(f"mask_motion must be one of {', '.join(MASK_MOTIONS)}, got {self.mask_motion!r}")
        for name in ("mask_width", "flow_width"):
            if not 32 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name} must be 32 to 4096 pixels, got {getattr(self, name)}")
        if self.max_width is not None and not 32 <= self.max_width <= 8192:
            raise ValueError(f"max_width must be 32 to 8192 pixels (or null), got {self.max_width}")
        if not 100_000 <= self.bitrate <= 50_000_000:
            raise ValueError(f"bitrate must be 100000 to 50000000 bits per second, got {self.bitrate}")
        if not 0 < self.remember_s <= 10:
            raise ValueError(f"remember_s must be more than 0 and at most 10 seconds, got {self.remember_s}")
        check_style(self.style)
        if not isinstance(self.styles, dict):
            raise ValueError("styles must map labels to styles, e.g. {person: blur}")
        self.styles = {
            str(label): check_style(style, f"styles[{label}]", OBJECT_STYLES) for label, style in self.styles.items()
        }
        if self.style == "replace_background" and not self.background:
            raise ValueError("style replace_background needs display.background, the image to show behind the objects")
        if not isinstance(self.privacy_margin, (int, float)) or not 0 <= self.privacy_margin <= 0.25:
            raise ValueError(f"privacy_margin must be 0 to 0.25 of the frame's width, got {self.privacy_margin!r}")


@dataclass
class EventsConfig:
    """Event settings (``events:`` in YAML). ``zones`` maps a stream's name to its zones, each a
    name and a polygon: ``{door: {porch: [[0, 0.6], [1, 0.6], [1, 1], [0, 1]]}}``."""

    lost_after: float = 1.0  # seconds not visible before an object is reported lost
    anchor: str = "centroid"  # the point of an object a zone holds: centroid or bottom_center
    zones: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.lost_after, (int, float)) or not 0 < self.lost_after <= 3600:
            raise ValueError(f"lost_after must be more than 0 and at most 3600 seconds, got {self.lost_after!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        self._zones = parse_zones(self.zones)

    def zones_for(self, stream: str) -> list[Zone]:
        return self._zones.get(stream, [])


@dataclass
class ResultsFileConfig:
    """``results:`` in YAML (``--results PATH`` sets ``path``)."""

    path: str | None = None  # None: no file
    masks: str = "none"  # none | rle | polygon
    max_bytes: int = 100_000_000  # rotate when the file would grow past this
    keep: int = 5  # rotated files kept beside it: PATH.1 (newest) ... PATH.<keep>

    def __post_init__(self) -> None:
        check_mask_format(self.masks)
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be an integer of at least 1024, got {self.max_bytes!r}")
        if not isinstance(self.keep, int) or not 0 <= self.keep <= 1000:
            raise ValueError(f"keep must be an integer from 0 to 1000, got {self.keep!r}")


@dataclass
class RecordingsConfig:
    """``recordings:`` in YAML (``--record DIR`` sets ``dir``): MP4 clips of the masked video around
    events, and optionally the whole stream in segments (video/recordings.py)."""

    dir: str | None = None  # None: no recordings
    events: list[str] = field(default_factory=lambda: ["added", "entered"])  # what starts or extends a clip
    labels: list[str] = field(default_factory=list)  # only objects with these labels (empty: any object)
    streams: list[str] = field(default_factory=list)  # only these streams (empty: every stream)
    masks: str = "rle"  # none | rle | polygon: the tracked frames' masks in each sidecar (for a dataset)
    pre_roll_s: float = 3.0  # a clip starts this long before its event (at the keyframe at or before)
    post_roll_s: float = 5.0  # and ends this long after the last event about its objects
    max_clip_s: float = 300.0  # a longer clip is cut, and the next one goes on from there
    segment_s: float | None = None  # also record everything, in segments of this length (None: events only)
    max_bytes: int = 10_000_000_000  # the folder's recordings at most; the oldest are deleted first
    max_days: float | None = 30.0  # recordings older than this are deleted (None: kept while they fit)

    def __post_init__(self) -> None:
        check_mask_format(self.masks, "recordings.masks")
        unknown = [e for e in self.events if e not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"recordings.events: {unknown} are not events; choose from {', '.join(EVENT_TYPES)}")
        for name, value, low, high in (
            ("pre_roll_s", self.pre_roll_s, 0, 60),
            ("post_roll_s", self.post_roll_s, 0, 600),
            ("max_clip_s", self.max_clip_s, 1, 86400),
        ):
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"recordings.{name} must be {low} to {high} seconds, got {value!r}")
        segment = self.segment_s
        if segment is not None and (not isinstance(segment, (int, float)) or not 1 <= segment <= 86400):
            raise ValueError(f"recordings.segment_s must be 1 to 86400 seconds (or null), got {self.segment_s!r}")
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1_000_000:
            raise ValueError(f"recordings.max_bytes must be an integer of at least 1000000, got {self.max_bytes!r}")
        if self.max_days is not None and (not isinstance(self.max_days, (int, float)) or self.max_days <= 0):
            raise ValueError(f"recordings.max_days must be more than 0 (or null), got {self.max_days!r}")

    def records(self, stream: str) -> bool:
        return self.dir is not None and (not self.streams or stream in self.streams)


@dataclass
class MqttConfig:
    """``mqtt:`` in YAML (``--mqtt URL`` sets ``url``)."""

    url: str | None = None  # None: no MQTT
    rate: float = 5.0  # objects messages per second per stream, at most
    masks: str = "none"  # none | rle | polygon, in objects messages
    buffer: int = 1000  # events kept while the broker is away
    keepalive: int = 15  # seconds; the broker publishes the last will after 1.5x this of silence
    client_id: str | None = None  # None: sam2-stream-HOSTNAME-PID

    def __post_init__(self) -> None:
        if self.url is not None:
            parse_broker(self.url)
        check_mask_format(self.masks)
        if not isinstance(self.rate, (int, float)) or not 0.1 <= self.rate <= 60:
            raise ValueError(f"rate must be 0.1 to 60 messages a second, got {self.rate!r}")
        if not isinstance(self.buffer, int) or not 1 <= self.buffer <= 1_000_000:
            raise ValueError(f"buffer must be an integer from 1 to 1000000, got {self.buffer!r}")
        if not isinstance(self.keepalive, int) or not 5 <= self.keepalive <= 3600:
            raise ValueError(f"keepalive must be 5 to 3600 seconds, got {self.keepalive!r}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    streams: list[StreamConfig] = field(default_factory=list)  # several cameras (overrides source)
    events: EventsConfig = field(default_factory=EventsConfig)
    results: ResultsFileConfig = field(default_factory=ResultsFileConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of one front runs: the same model, tracker and display settings."""

    model: ModelConfig
    tracker: TrackerConfig
    display: DisplayConfig
    device: str = "cpu"  # "cuda" on a GPU worker (the GPU Ray gave the actor)
    auto: AutoConfig = field(default_factory=AutoConfig)  # every stream's automatic tracking
