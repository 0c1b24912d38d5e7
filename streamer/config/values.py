"""Setting values and their checks, shared by the config sections and the code that reads them:
mask formats, display motions, event zones, MQTT broker URLs, ICE servers.

Pure parsing (no network, no codecs, no model): reading a config file checks every value here, so
a bad one is a clear error before anything starts.

ICE servers (STUN and TURN): how viewers behind NAT or strict firewalls reach the server.

One list serves both ends: the server's peer connections use it (aiortc), and the page gets it in
``hello`` for its own. ``ice_transport_policy: relay`` makes both use TURN relays only. From YAML
(``server.ice_servers``: RTCIceServer objects, ``{urls, username, credential}``) or the command
line (``--ice-server turn:USER:PASS@HOST:PORT?transport=udp``, credentials URL-encoded). TURN
credentials go to the page (it needs them) and nowhere else: ``describe`` is what logs show.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

MASK_FORMATS = ("none", "rle", "polygon")  # how results carry masks
MASK_MOTIONS = ("flow", "hold")  # how the display carries masks between tracked frames
ANCHORS = ("centroid", "bottom_center")  # the point of an object a zone holds
MAX_ZONE_POINTS = 256
CLUSTER_WORKERS = ("auto", "gpu", "cpu")
AUTO_DETECTORS = ("rtdetr", "owlv2", "faces")  # built in; or package.module:function (auto/detectors.py)
EVENT_TYPES = ("added", "removed", "lost", "found", "entered", "left")  # what happens to objects (outputs/events.py)
MQTT_PORT = 1883
MQTT_PREFIX = "sam2"


def check_mask_format(value: str, name: str = "masks") -> str:
    if value not in MASK_FORMATS:
        raise ValueError(f"{name} must be one of {', '.join(MASK_FORMATS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: np.ndarray  # float32 [K, 2], 0-1 of the frame
    labels: frozenset[str] = frozenset()  # only objects with one of these labels count (empty: every object)

    def contains(self, x: float, y: float) -> bool:
        return cv2.pointPolygonTest(self.polygon, (x, y), False) >= 0

    def admits(self, label: str | None) -> bool:
        """Whether an object with ``label`` is one this zone follows."""
        return not self.labels or label in self.labels


def parse_zones(raw: Any) -> dict[str, list[Zone]]:
    """Check ``events.zones``; a ValueError names the field (``zones.door.porch[2]``) and the fix."""
    if not isinstance(raw, dict):
        raise ValueError("zones must map stream names to {zone name: polygon}")
    parsed: dict[str, list[Zone]] = {}
    for stream, zones in raw.items():
        where = f"zones.{stream}"
        if not isinstance(zones, dict) or not zones:
            raise ValueError(f"{where} must map zone names to polygons ([[x, y], ...] in 0..1) or {{points, labels}}")
        parsed[str(stream)] = [_zone(str(name), points, f"{where}.{name}") for name, points in zones.items()]
    return parsed


def _zone(name: str, points: Any, where: str) -> Zone:
    labels: frozenset[str] = frozenset()
    if isinstance(points, dict):  # {points: [...], labels: [person, car]}
        unknown = set(points) - {"points", "labels"}
        if unknown or "points" not in points:
            raise ValueError(f"{where} must be a polygon or {{points: [[x, y], ...], labels: [...]}}")
        raw_labels = points.get("labels") or []
        if not isinstance(raw_labels, list) or not all(isinstance(v, str) and v for v in raw_labels):
            raise ValueError(f"{where}.labels must be a list of labels, e.g. [person, car]")
        labels, points = frozenset(raw_labels), points["points"]
    if not isinstance(points, list) or not 3 <= len(points) <= MAX_ZONE_POINTS:
        raise ValueError(f"{where} must be a polygon: a list of 3 to {MAX_ZONE_POINTS} [x, y] points")
    for i, point in enumerate(points):
        ok = isinstance(point, list) and len(point) == 2
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in point)
        if not ok:
            raise ValueError(f"{where}[{i}] must be [x, y] with x and y in 0..1 (of the frame), got {point!r}")
    polygon = np.array(points, np.float32)
    if abs(cv2.contourArea(polygon)) == 0:
        raise ValueError(f"{where} encloses no area: its points lie on one line")
    return Zone(name, polygon, labels)


@dataclass(frozen=True)
class Broker:
    """Where to publish, from ``mqtt://[user:pass@]HOST[:PORT][/PREFIX]``."""

    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """For log lines: no password, ever."""
        user = f"{self.username}:***@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}/{self.prefix}"


def parse_broker(url: str) -> Broker:
    """Check and split an MQTT URL; a ValueError says what is wrong (with the password masked)."""
    parts = urllib.parse.urlsplit(url)
    shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
    if parts.scheme != "mqtt":
        raise ValueError(f"MQTT URL {shown!r} must start with mqtt:// (e.g. mqtt://user:pass@broker:1883/sam2)")
    try:
        port = parts.port or MQTT_PORT
    except ValueError:
        raise ValueError(f"MQTT URL {shown!r} has a bad port") from None
    if not parts.hostname:
        raise ValueError(f"MQTT URL {shown!r} names no broker host")
    prefix = urllib.parse.unquote(parts.path).strip("/") or MQTT_PREFIX
    if any(c in prefix for c in "+#\0") or "//" in prefix or "#" in url or parts.query:
        raise ValueError(f"MQTT URL {shown!r}: the topic prefix may not hold '+', '#', '?' or empty levels")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return Broker(parts.hostname, port, prefix, username, password)


# How objects look in the video (video/styles.py): each object's style, or the background's.
OBJECT_STYLES = ("overlay", "outline", "label", "blur", "plain")
BACKGROUND_STYLES = ("blur_background", "replace_background", "cutout")
STYLES = OBJECT_STYLES + BACKGROUND_STYLES


def check_style(value: Any, where: str = "style", styles: tuple[str, ...] = STYLES) -> str:
    if value not in styles:
        raise ValueError(f"{where} must be one of {', '.join(styles)}, got {value!r}")
    return str(value)


def check_restream_url(url: Any, where: str = "restream") -> str:
    """An RTSP server's URL a stream's video can be published to, rtsp://[USER:PASS@]HOST[:PORT]/PATH;
    a ValueError (with the password masked) says what is wrong."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "rtsp" or not parts.hostname or not parts.path.strip("/"):
        shown = re.sub(r"//[^/@]*@", "//***@", str(url))
        raise ValueError(f"{where} must be an RTSP server's URL, rtsp://HOST[:PORT]/PATH, got {shown!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{where}: {re.sub(r'//[^/@]*@', '//***@', url)!r} has a bad port") from None
    return url


POLICIES = ("all", "relay")
URI = re.compile(r"(stun|stuns|turn|turns):([^?@/]+)(\?transport=(udp|tcp))?")
MAX_SERVERS = 8


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def for_page(self) -> dict[str, Any]:
        """As the browser's RTCIceServer."""
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            entry.update(username=self.username, credential=self.credential)
        return entry

    def describe(self) -> str:
        """For logs: the URLs and the user, never the credential."""
        return ", ".join(self.urls) + (f" (user {self.username})" if self.username else "")


@dataclass(frozen=True)
class IceConfig:
    servers: tuple[IceServer, ...] = ()
    policy: str = "all"

    def for_page(self) -> dict[str, Any]:
        return {"ice_servers": [s.for_page() for s in self.servers], "ice_transport_policy": self.policy}

    def describe(self) -> str:
        servers = "; ".join(s.describe() for s in self.servers) or "none (host candidates only)"
        return f"{servers}, policy {self.policy}"


def ice_config(servers: list[Any], policy: str = "all") -> IceConfig:
    """Check YAML-style ICE servers and the policy; a ValueError names the entry (never its
    credential)."""
    if policy not in POLICIES:
        raise ValueError(f"ice_transport_policy must be all or relay, got {policy!r}")
    if not isinstance(servers, list) or len(servers) > MAX_SERVERS:
        raise ValueError(f"ice_servers must be a list of at most {MAX_SERVERS} {{urls, username, credential}}")
    parsed = tuple(_server(entry, i) for i, entry in enumerate(servers))
    if policy == "relay" and not any(url.startswith("turn") for s in parsed for url in s.urls):
        raise ValueError("ice_transport_policy relay needs a TURN server in ice_servers")
    return IceConfig(parsed, policy)


def _server(entry: Any, index: int) -> IceServer:
    where = f"ice_servers[{index}]"
    if not isinstance(entry, dict) or "urls" not in entry or set(entry) - {"urls", "username", "credential"}:
        raise ValueError(f"{where} must be {{urls, username, credential}} (username and credential for TURN)")
    urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
    for url in urls:
        if not isinstance(url, str) or not URI.fullmatch(url):
            shown = url if isinstance(url, str) and "@" not in url else "(not shown)"
            kinds = "a stun:, stuns:, turn: or turns: URI (HOST[:PORT][?transport=udp|tcp])"
            raise ValueError(f"{where}: {shown} is not {kinds}")
    username, credential = entry.get("username"), entry.get("credential")
    if any(u.startswith("turn") for u in urls) and not (isinstance(username, str) and isinstance(credential, str)):
        raise ValueError(f"{where}: a TURN server needs a username and a credential")
    return IceServer(tuple(urls), username, credential)


def parse_ice_url(text: str) -> dict[str, Any]:
    """``--ice-server``: ``stun:HOST[:PORT]`` or ``turn[s]:USER:PASS@HOST[:PORT][?transport=...]``
    as a YAML-style entry."""
    scheme, _, rest = text.partition(":")
    user, at, address = rest.rpartition("@")
    if not at:
        return {"urls": text}
    username, _, credential = user.partition(":")
    return {
        "urls": f"{scheme}:{address}",
        "username": urllib.parse.unquote(username),
        "credential": urllib.parse.unquote(credential),
    }


def parse_labels(raw: Any, where: str = "labels") -> list[str]:
    """Labels from a list or a comma-separated text (``person, red car``): stripped, no blanks,
    no repeats, at most 32 of 64 characters each."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{where} must be a list of labels or a comma-separated text, got {raw!r}")
    labels = list(dict.fromkeys(v.strip() for v in items if v.strip()))
    if len(labels) > 32 or any(len(v) > 64 for v in labels):
        raise ValueError(f"{where}: at most 32 labels of at most 64 characters each")
    return labels


def check_detector_name(name: Any) -> str:
    """A built-in detector's name, or an import path ``package.module:function``."""
    if not isinstance(name, str) or not (name in AUTO_DETECTORS or re.fullmatch(r"[\w.]+:[\w.]+", name)):
        raise ValueError(
            f"detector must be one of {', '.join(AUTO_DETECTORS)} or an import path "
            f"package.module:function, got {name!r}"
        )
    return name
