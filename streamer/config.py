"""Run configuration: YAML files read into dataclasses; flags override them.

The package ships one config per model size (``streamer/configs/``, inside the wheel), so
``--config small`` works from any install; any other value is a path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .assets import CONFIG_DIR
from .display import DisplayConfig
from .errors import StreamerError
from .events import EventsConfig
from .mqtt import MqttConfig
from .results_file import ResultsFileConfig


class ConfigError(StreamerError):
    """A config file is unreadable or names a setting that does not exist."""

    code = "config"


@dataclass
class ModelConfig:
    """Which network to run, with which weights, where."""

    name: str = "sam2.1_hiera_tiny"
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


@dataclass
class ServerConfigSection:
    """Where to listen and for whom (see streamer.server.ServerConfig)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_peers: int = 16
    stream_control: bool = False  # viewers may add/remove streams at run time
    max_streams: int = 32
    tls_cert: str | None = None  # PEM certificate and key: serve https and wss
    tls_key: str | None = None
    tls_self_signed: bool = False  # make (and cache) a self-signed certificate for this machine
    ice_servers: list[dict[str, Any]] = field(default_factory=list)  # RTCIceServer: {urls, username, credential}
    ice_transport_policy: str = "all"  # relay: TURN relays only, for the server and the page
    base_path: str = "/"  # serve under this path (a reverse proxy's sub-path, e.g. /cams/)
    trust_proxy: bool = False  # believe X-Forwarded-Host/-Proto (only behind a proxy that sets them)


CLUSTER_WORKERS = ("auto", "gpu", "cpu")


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
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    server: ServerConfigSection = field(default_factory=ServerConfigSection)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    streams: list[StreamConfig] = field(default_factory=list)  # several cameras (overrides source)
    events: EventsConfig = field(default_factory=EventsConfig)
    results: ResultsFileConfig = field(default_factory=ResultsFileConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


CHECKED_SECTIONS = ("display", "events", "results", "mqtt", "cluster")  # their dataclasses check their values


def shipped_configs() -> dict[str, Path]:
    """The configs inside the package, by short name (``tiny``, ``small``, ``base_plus``, ``large``)."""
    return {path.stem.removeprefix("sam2.1_hiera_"): path for path in sorted(CONFIG_DIR.glob("*.yaml"))}


def resolve_config(name: str | Path) -> Path:
    """A path as given, or a shipped config by short or full name (``small``, ``sam2.1_hiera_small``)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = shipped_configs()
    found = shipped.get(str(name).removeprefix("sam2.1_hiera_"))
    if found is None:
        names = ", ".join(shipped)
        raise ConfigError(f"no config file {name!r}, and no shipped config of that name (shipped: {names})")
    return found


def load_config(path: str | Path | None) -> Config:
    """Read ``path`` (or return the defaults), rejecting unknown sections and keys by name."""
    if path is None:
        return Config()
    path = resolve_config(path)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    config = Config()
    for section, values in raw.items():
        if section == "streams":
            config.streams = _streams(values, f"{path}: streams")
            continue
        target = getattr(config, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            known = ", ".join(f.name for f in dataclasses.fields(Config))
            raise ConfigError(f"config {path}: unknown section {section!r} (known: {known})")
        _update(target, values or {}, f"{path}: {section}")
    for section in CHECKED_SECTIONS:
        try:
            setattr(config, section, dataclasses.replace(getattr(config, section)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config {path}: {section}: {exc}") from None
    return config


def _streams(values: Any, where: str) -> list[StreamConfig]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"config {where} must be a list of {{name, source, options}} entries")
    streams = []
    for i, entry in enumerate(values):
        if not isinstance(entry, dict) or "name" not in entry or "source" not in entry:
            raise ConfigError(f"config {where}[{i}] needs a name and a source")
        stream = StreamConfig(name=str(entry["name"]), source=str(entry["source"]))
        _update(stream, entry, f"{where}[{i}]")
        if not isinstance(stream.options, dict):
            raise ConfigError(f"config {where}[{i}]: options must be a mapping")
        streams.append(stream)
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        raise ConfigError(f"config {where}: stream names must be unique, got {names}")
    return streams


def _update(target: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"config {where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
        setattr(target, key, value)
