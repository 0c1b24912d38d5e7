"""Config files: YAML read into the ``Config`` dataclasses, unknown sections and keys refused by name.

The package ships ``defaults.yaml`` (every setting with its default and what it does: a file to
copy) and one small file per model size that says only how it differs (``--config small``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..assets import CONFIG_DIR
from ..errors import StreamerError
from .sections import Config, StreamConfig
from .values import check_restream_url, check_style


class ConfigError(StreamerError):
    """A config file is unreadable or names a setting that does not exist."""

    code = "config"


# Their dataclasses check their values.
CHECKED_SECTIONS = ("server", "display", "events", "results", "mqtt", "recordings", "cluster", "auto")


DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"


def shipped_configs() -> dict[str, Path]:
    """The model configs inside the package, by short name (``tiny``, ``small``, ``base_plus``,
    ``large``, ``edgetam``)."""
    found = {
        path.stem.removeprefix("sam2.1_hiera_"): path for path in CONFIG_DIR.glob("*.yaml") if path != DEFAULTS_FILE
    }
    return dict(sorted(found.items()))


def resolve_config(name: str | Path) -> Path:
    """A path as given, or a shipped config by short or full name (``small``, ``sam2.1_hiera_small``)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = shipped_configs()
    found = DEFAULTS_FILE if str(name) == "defaults" else shipped.get(str(name).removeprefix("sam2.1_hiera_"))
    if found is None:
        names = ", ".join(shipped)
        raise ConfigError(f"no config file {name!r}, and no shipped config of that name (shipped: {names}, defaults)")
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
    for stream in config.streams:
        try:
            stream.auto_config(config.auto)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config {path}: streams: {exc}") from None
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
        if not isinstance(stream.auto, dict):
            raise ConfigError(f"config {where}[{i}]: auto must be a mapping of auto settings")
        try:
            if stream.restream is not None:
                check_restream_url(stream.restream)
            if stream.style is not None:
                check_style(stream.style)
        except ValueError as exc:
            raise ConfigError(f"config {where}[{i}]: {exc}") from None
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
