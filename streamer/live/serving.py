"""What the server serves, wherever streams run: the local ``Pipeline`` (streams tracked in this
process) and a cluster's front (``cluster/front.py``: streams tracked on Ray workers) both look like
this to the server, its websocket and WebRTC, so viewers, /healthz, /metrics and the protocol
are the same for both."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ..errors import UnknownStreamError
from ..metrics import Metrics, StreamMetrics
from ..outputs.hub import Outputs
from ..sources import BrowserSource
from ..video.packets import EncodedFrame
from ..video.restream import Restream
from ..video.track import EncodedTrack
from .landing import PromptRequest
from .status import StreamStatus

S = TypeVar("S")


def stream_named(streams: Mapping[str, S], name: str | None) -> S:
    """The stream called ``name``, or the first one when ``name`` is None (what a message without
    ``stream`` is about)."""
    if name is None and streams:
        return next(iter(streams.values()))
    if name is None or name not in streams:
        raise UnknownStreamError(f"no stream named {name!r}; streams are {list(streams)}")
    return streams[name]


class Video(Protocol):
    """One stream's video in one codec, encoded once for all its viewers."""

    def subscribe(self) -> EncodedTrack: ...

    async def unsubscribe(self) -> None: ...

    def request_keyframe(self) -> None: ...

    def source_index(self, pts: int) -> int | None: ...

    async def next_frame(self, after: int | None) -> EncodedFrame: ...


class ServedStream(Protocol):
    name: str
    metrics: StreamMetrics
    restream: Restream | None  # its RTSP restream, if it has one

    @property
    def camera(self) -> BrowserSource | None: ...

    @property
    def obj_ids(self) -> list[int]: ...

    def status(self) -> StreamStatus: ...

    def video(self, codec: str) -> Video: ...

    async def prompt(self, request: PromptRequest) -> list[int]: ...

    async def remove_object(self, obj_id: int) -> list[int]: ...

    async def reset(self) -> list[int]: ...

    async def auto_settings(self, changes: dict) -> dict:
        """Change the stream's automatic tracking; its settings now."""
        ...

    async def text(self, labels: list[str]) -> None:
        """Track what ``labels`` name, found on the next tracked frame."""
        ...

    async def set_style(self, style: str | None, obj_id: int | None = None) -> dict:
        """How the stream's objects look (``obj_id``: one object's; None clears it); its styles now."""
        ...


class Serving(Protocol):
    metrics: Metrics
    on_error: Callable[[str, str, str], None] | None

    @property
    def streams(self) -> Mapping[str, ServedStream]: ...

    @property
    def random_weights(self) -> bool: ...

    @property
    def model(self) -> dict[str, Any]:
        """Which model tracks: ``name``, ``family``, ``size``, ``title``, ``image_size``..."""
        ...

    @property
    def hub(self) -> Outputs:
        """Where results and events reach their sinks (subscriptions, the results file, MQTT)."""
        ...

    def stream(self, name: str | None) -> ServedStream: ...

    def check_new_name(self, name: str) -> None: ...

    async def open_stream(self, name: str, spec: str, options: dict | None = None) -> ServedStream: ...

    async def remove_stream(self, name: str) -> None: ...

    def describe(self) -> dict:
        """What /healthz adds about where streams run: parts by name, each a dict that may say
        ``ok`` (False makes the whole server not ok)."""
        ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...
