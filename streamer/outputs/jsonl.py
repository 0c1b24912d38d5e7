"""``--results PATH``: every tracked frame's results and every event as JSON Lines, rotated by size.

Each line is one message exactly as the websocket sends it (``{"type": "results", ...}`` or
``{"type": "event", "event": {...}}``; docs/results.md). When the file would grow past
``max_bytes`` it becomes ``PATH.1`` (``PATH.1`` becomes ``PATH.2``, and so on; ``PATH.<keep>``
is the last kept) and a new ``PATH`` starts. A restarted server appends to ``PATH``. Live, lines
are written on a thread of their own behind a bounded queue, so a slow disk never holds up the
tracker or the video: it loses lines instead, counted in ``streamer_results_dropped``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from ..concurrency.thread import WorkerThread
from ..config import EventsConfig, ResultsFileConfig
from ..metrics import Metrics
from .events import Event, EventDetector
from .hub import QueuedSink
from .results import Tracked

MAX_QUEUED_EVENTS = 10_000


class JsonLines:
    """Appends lines to ``path``, rotating it by size. Not thread-safe: one writer."""

    def __init__(self, path: str | Path, max_bytes: int = 100_000_000, keep: int = 5) -> None:
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size

    def write(self, line: str) -> None:
        data = line + "\n"
        size = len(data.encode())
        if self._size and self._size + size > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()  # whole lines for whoever tails the file
        self._size += size

    def _rotate(self) -> None:
        self._file.close()
        if self.keep == 0:
            self.path.unlink()
        else:
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        self._file.close()


class ResultsFile(QueuedSink):
    """The live server's JSON Lines output: every stream, every tracked frame, every event."""

    kind = "file"

    def __init__(self, config: ResultsFileConfig, metrics: Metrics) -> None:
        assert config.path is not None
        super().__init__(metrics, masks=config.masks, max_events=MAX_QUEUED_EVENTS)
        self.lines = JsonLines(config.path, config.max_bytes, config.keep)  # fails now if it cannot be opened
        self._thread = WorkerThread("results file")

    async def send_results(self, tracked: Tracked) -> None:
        await self._thread.run(self.lines.write, tracked.message(self.masks))

    async def send_event(self, event: Event) -> None:
        await self._thread.run(self.lines.write, event.envelope())

    async def close(self, flush: bool = True) -> None:
        await super().close(flush)
        await self._thread.run(self.lines.close)
        await self._thread.close()


class OfflineResultsFile:
    """``--out`` mode's JSON Lines: every frame of one stream, in order, written as it is tracked."""

    def __init__(self, stream: str, config: ResultsFileConfig, events: EventsConfig) -> None:
        assert config.path is not None
        self.masks = config.masks
        self.lines = JsonLines(config.path, config.max_bytes, config.keep)
        self.detector = EventDetector(stream, events)

    def write(self, tracked: Tracked) -> list[Event]:
        self.lines.write(tracked.message(self.masks))
        events = self.detector.update(tracked.results())
        for event in events:
            self.lines.write(event.envelope())
        return events

    def close(self) -> None:
        self.lines.close()


__all__ = ["JsonLines", "OfflineResultsFile", "ResultsFile", "ResultsFileConfig"]
