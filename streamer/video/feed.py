"""What an encoder reads: a stream's displayed frames, seen only through this small interface, so
that video knows nothing of streams, trackers or servers."""

from __future__ import annotations

import contextlib
from typing import Protocol

from ..metrics import StreamMetrics
from .frame import Output


class VideoFeed(Protocol):
    """A stream's displayed frames, as an encoder consumes them."""

    name: str
    metrics: StreamMetrics

    async def next_output(self, after: int) -> Output:
        """The newest displayed frame with ``seq > after`` (waits for one)."""
        ...

    def watching(self) -> contextlib.AbstractContextManager[None]:
        """Held while someone consumes the frames (the stream draws only then)."""
        ...

    def record_sent(self, output: Output) -> None:
        """``output`` was encoded: record its capture-to-sent latency."""
        ...
