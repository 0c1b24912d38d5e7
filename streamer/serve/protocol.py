"""The viewer's websocket protocol: parsing and validating JSON messages, building replies.

No I/O here: the server feeds raw messages in and sends what comes out. Every malformed input
becomes a ``ProtocolError`` with a stable ``code`` and a human message; nothing a client sends can
raise anything else. See docs/protocol.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import MASK_FORMATS
from ..config.values import AUTO_DETECTORS, OBJECT_STYLES, STYLES, parse_labels
from ..errors import StreamerError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_POINTS = 64
MAX_OBJ_ID = 2**31 - 1
MAX_CLIENT_ID_CHARS = 64
MAX_SDP_CHARS = 32 * 1024
MAX_STREAM_NAME_CHARS = 32
MAX_SOURCE_CHARS = 2048
MAX_SUBSCRIBED_STREAMS = 64
RESULT_RATE = (0.1, 60.0)  # results messages per second per stream a subscriber may ask for
DEFAULT_RESULT_RATE = 10.0
MAX_TEXT_CHARS = 512
# What a viewer may change of a stream's automatic tracking (never an import path: that runs code).
AUTO_FIELDS = (
    *("enabled", "detector", "labels", "threshold", "every_frames", "every_s"),
    *("max_objects", "probation", "end_after", "absent_s"),
)


class ProtocolError(StreamerError):
    """A client message that cannot be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, msg_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.msg_id = code, message, msg_id


@dataclass(frozen=True)
class AddPoints:
    id: str | int | None
    stream: str | None  # None: the server's first stream
    obj_id: int
    points: list[tuple[float, float]]  # normalised 0..1 of the displayed frame
    labels: list[int]
    frame_index: int | None  # a tracked frame, from a state message
    frame_ts: float | None  # capture time of the frame the user saw, server clock, ms
    frame_rtp: int | None  # RTP timestamp of the frame the user saw (exact, where the browser says)


@dataclass(frozen=True)
class AddBox:
    id: str | int | None
    stream: str | None
    obj_id: int
    box: tuple[float, float, float, float]  # normalised x0, y0, x1, y1
    frame_index: int | None
    frame_ts: float | None
    frame_rtp: int | None


@dataclass(frozen=True)
class RemoveObject:
    id: str | int | None
    stream: str | None
    obj_id: int


@dataclass(frozen=True)
class Reset:
    id: str | int | None
    stream: str | None


@dataclass(frozen=True)
class SetStyle:
    id: str | int | None
    stream: str | None
    style: str | None  # None with obj_id: that object back to the stream's (or its label's) style
    obj_id: int | None  # None: the stream's own style


@dataclass(frozen=True)
class Offer:
    id: str | int | None
    stream: str | None
    sdp: str


@dataclass(frozen=True)
class AddStream:
    """Open a new camera at run time (only where the server allows stream control)."""

    id: str | int | None
    stream: str
    source: str


@dataclass(frozen=True)
class RemoveStream:
    id: str | int | None
    stream: str


@dataclass(frozen=True)
class Subscribe:
    """Results and events of some streams (None: every stream, those added later too)."""

    id: str | int | None
    streams: list[str] | None
    masks: str  # none | rle | polygon
    max_rate: float  # results messages per second per stream, at most
    events: bool


@dataclass(frozen=True)
class Unsubscribe:
    id: str | int | None


@dataclass(frozen=True)
class AutoSettings:
    """Switch a stream's automatic tracking on or off, or change what it looks for."""

    id: str | int | None
    stream: str | None
    changes: dict[str, Any]


@dataclass(frozen=True)
class TextPrompt:
    """Track what these words name ("person, red car"), found on the next tracked frame."""

    id: str | int | None
    stream: str | None
    labels: list[str]


Message = (
    AddPoints
    | AddBox
    | RemoveObject
    | Reset
    | Offer
    | AddStream
    | RemoveStream
    | Subscribe
    | Unsubscribe
    | AutoSettings
    | TextPrompt
    | SetStyle
)
TYPES = (
    "add_points",
    "add_box",
    "remove_object",
    "reset",
    "offer",
    "add_stream",
    "remove_stream",
    "subscribe",
    "unsubscribe",
    "auto",
    "text",
    "style",
)


def parse_message(raw: str | bytes) -> Message:
    """Validate one raw websocket message; raise ProtocolError saying what is wrong."""
    data = _object(raw)
    msg_id = _message_id(data)
    kind = data.get("type")
    if kind not in TYPES:
        raise ProtocolError("unknown_type", f"type must be one of {', '.join(TYPES)}", msg_id)
    try:
        return _PARSERS[kind](data, msg_id)
    except ProtocolError as exc:
        exc.msg_id = msg_id
        raise


def message_id(raw: str | bytes) -> str | int | None:
    """The client's id of a raw message that will not be parsed (a refused one), so that its
    error reply carries it as every reply does; None where the message has no valid id."""
    try:
        return _message_id(_object(raw))
    except ProtocolError:
        return None


def _object(raw: str | bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad_json", "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    return data


def _message_id(data: dict[str, Any]) -> str | int | None:
    msg_id = data.get("id")
    if msg_id is not None and not (
        (isinstance(msg_id, str) and len(msg_id) <= MAX_CLIENT_ID_CHARS)
        or (isinstance(msg_id, int) and not isinstance(msg_id, bool))
    ):
        raise ProtocolError(
            "bad_field", f"id must be a string of at most {MAX_CLIENT_ID_CHARS} characters or an integer"
        )
    return msg_id


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise ProtocolError("missing_field", f"{data['type']} needs {name!r}")
    return data[name]


def _number(value: Any, name: str, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError("bad_field", f"{name} must be a number")
    if not low <= value <= high:
        raise ProtocolError("out_of_range", f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _int(value: Any, name: str, low: int = 0, high: int = MAX_OBJ_ID) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_field", f"{name} must be an integer")
    if not low <= value <= high:
        raise ProtocolError("out_of_range", f"{name} must be between {low} and {high}, got {value}")
    return value


def _string(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ProtocolError("bad_field", f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _stream(data: dict[str, Any]) -> str | None:
    value = data.get("stream")
    return None if value is None else _string(value, "stream", MAX_STREAM_NAME_CHARS)


def _named_stream(data: dict[str, Any]) -> str:
    return _string(_field(data, "stream"), "stream", MAX_STREAM_NAME_CHARS)


def _frame_ref(data: dict[str, Any]) -> tuple[int | None, float | None, int | None]:
    index, ts, rtp = data.get("frame_index"), data.get("frame_ts"), data.get("frame_rtp")
    return (
        None if index is None else _int(index, "frame_index", 0, 2**62),
        None if ts is None else _number(ts, "frame_ts", 0.0, 1e15),
        None if rtp is None else _int(rtp, "frame_rtp", 0, 2**32 - 1),
    )


def _add_points(data: dict[str, Any], msg_id: str | int | None) -> AddPoints:
    points, labels = _field(data, "points"), _field(data, "labels")
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS:
        raise ProtocolError("bad_field", f"points must be a list of 1 to {MAX_POINTS} [x, y] pairs")
    if not isinstance(labels, list) or len(labels) != len(points):
        raise ProtocolError("bad_field", "labels must be a list with one label per point")
    pairs = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise ProtocolError("bad_field", "each point must be [x, y]")
        pairs.append((_number(point[0], "x"), _number(point[1], "y")))
    checked = [_int(label, "label", 0, 1) for label in labels]
    obj_id = _int(_field(data, "obj_id"), "obj_id")
    return AddPoints(msg_id, _stream(data), obj_id, pairs, checked, *_frame_ref(data))


def _add_box(data: dict[str, Any], msg_id: str | int | None) -> AddBox:
    box = _field(data, "box")
    if not isinstance(box, list) or len(box) != 4:
        raise ProtocolError("bad_field", "box must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (_number(v, "box coordinate") for v in box)
    if not (x0 < x1 and y0 < y1):
        raise ProtocolError("out_of_range", "box needs x0 < x1 and y0 < y1")
    return AddBox(msg_id, _stream(data), _int(_field(data, "obj_id"), "obj_id"), (x0, y0, x1, y1), *_frame_ref(data))


def _remove(data: dict[str, Any], msg_id: str | int | None) -> RemoveObject:
    return RemoveObject(msg_id, _stream(data), _int(_field(data, "obj_id"), "obj_id"))


def _offer(data: dict[str, Any], msg_id: str | int | None) -> Offer:
    return Offer(msg_id, _stream(data), _string(_field(data, "sdp"), "sdp", MAX_SDP_CHARS))


def _add_stream(data: dict[str, Any], msg_id: str | int | None) -> AddStream:
    source = _string(_field(data, "source"), "source", MAX_SOURCE_CHARS)
    return AddStream(msg_id, _named_stream(data), source)


def _subscribe(data: dict[str, Any], msg_id: str | int | None) -> Subscribe:
    streams = data.get("streams")
    if streams is not None:
        if not isinstance(streams, list) or not 1 <= len(streams) <= MAX_SUBSCRIBED_STREAMS:
            raise ProtocolError("bad_field", f"streams must be a list of 1 to {MAX_SUBSCRIBED_STREAMS} stream names")
        streams = [_string(name, "stream", MAX_STREAM_NAME_CHARS) for name in streams]
    masks = data.get("masks", "none")
    if masks not in MASK_FORMATS:
        raise ProtocolError("bad_field", f"masks must be one of {', '.join(MASK_FORMATS)}")
    rate = _number(data.get("max_rate", DEFAULT_RESULT_RATE), "max_rate", *RESULT_RATE)
    events = data.get("events", True)
    if not isinstance(events, bool):
        raise ProtocolError("bad_field", "events must be true or false")
    return Subscribe(msg_id, streams, masks, rate, events)


def _auto(data: dict[str, Any], msg_id: str | int | None) -> AutoSettings:
    changes = {key: value for key, value in data.items() if key not in ("type", "id", "stream")}
    unknown = set(changes) - set(AUTO_FIELDS)
    if unknown:
        raise ProtocolError("bad_field", f"auto takes {', '.join(AUTO_FIELDS)}; not {', '.join(sorted(unknown))}")
    if "enabled" in changes and not isinstance(changes["enabled"], bool):
        raise ProtocolError("bad_field", "enabled must be true or false")
    if "detector" in changes and changes["detector"] not in AUTO_DETECTORS:
        raise ProtocolError("bad_field", f"detector must be one of {', '.join(AUTO_DETECTORS)}")
    if "labels" in changes:
        changes["labels"] = _labels(changes["labels"])
    return AutoSettings(msg_id, _stream(data), changes)


def _text(data: dict[str, Any], msg_id: str | int | None) -> TextPrompt:
    labels = _labels(_string(_field(data, "text"), "text", MAX_TEXT_CHARS))
    if not labels:
        raise ProtocolError("bad_field", 'text must name something to track, e.g. "person, red car"')
    return TextPrompt(msg_id, _stream(data), labels)


def _style(data: dict[str, Any], msg_id: str | int | None) -> SetStyle:
    obj_id = data.get("obj_id")
    style = data.get("style")
    if obj_id is not None:
        obj_id = _int(obj_id, "obj_id")
    allowed = STYLES if obj_id is None else OBJECT_STYLES
    if style not in allowed and not (style is None and obj_id is not None):
        raise ProtocolError("bad_field", f"style must be one of {', '.join(allowed)}")
    return SetStyle(msg_id, _stream(data), style, obj_id)


def _labels(value: Any) -> list[str]:
    try:
        return parse_labels(value)
    except ValueError as exc:
        raise ProtocolError("bad_field", str(exc)) from None


_PARSERS: dict[str, Callable[[dict[str, Any], str | int | None], Message]] = {
    "add_points": _add_points,
    "add_box": _add_box,
    "remove_object": _remove,
    "reset": lambda data, msg_id: Reset(msg_id, _stream(data)),
    "offer": _offer,
    "add_stream": _add_stream,
    "remove_stream": lambda data, msg_id: RemoveStream(msg_id, _named_stream(data)),
    "subscribe": _subscribe,
    "unsubscribe": lambda data, msg_id: Unsubscribe(msg_id),
    "auto": _auto,
    "text": _text,
    "style": _style,
}


def encode(kind: str, **fields: Any) -> str:
    """A server message: ``{"type": kind, ...fields}`` as compact JSON."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), allow_nan=False)


def error_reply(exc: StreamerError, msg_id: str | int | None = None) -> str:
    """The ``error`` message for ``exc`` (a ProtocolError carries the id of the message it is about)."""
    own = getattr(exc, "msg_id", None)
    return encode("error", id=msg_id if own is None else own, code=exc.code, message=str(exc))
