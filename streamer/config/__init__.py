"""Settings: one dataclass per section (``sections``), the checks their values share
(``values``), and config files (``files``). Imports no implementation: reading a config file
needs only PyYAML, NumPy and OpenCV."""

from .files import ConfigError, load_config, resolve_config, shipped_configs
from .sections import (
    AutoConfig,
    ClusterConfig,
    Config,
    DisplayConfig,
    EventsConfig,
    ModelConfig,
    MqttConfig,
    RecordingsConfig,
    ResultsFileConfig,
    ServerConfig,
    SourceConfig,
    StreamConfig,
    TrackerConfig,
    WorkerSettings,
)
from .values import MASK_FORMATS, check_mask_format

__all__ = [
    "MASK_FORMATS",
    "AutoConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DisplayConfig",
    "EventsConfig",
    "ModelConfig",
    "MqttConfig",
    "RecordingsConfig",
    "ResultsFileConfig",
    "ServerConfig",
    "SourceConfig",
    "StreamConfig",
    "TrackerConfig",
    "WorkerSettings",
    "check_mask_format",
    "load_config",
    "resolve_config",
    "shipped_configs",
]
