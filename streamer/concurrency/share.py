"""How a CPU is shared between the video and the tracker: the video first, the tracker the rest.

A viewer wants the camera at its rate, with the masks carried along the flow between tracked
frames; a slideshow of tracked frames is worse than masks that are a little older. So the video
path (decode, display, draw, encode, send) runs at normal priority and the tracker's thread below
it (``TRACKER_NICE``): when the CPU is short, the scheduler gives the video what it needs first.

Priority alone is not enough for the tracker's own thread team: torch runs each operator on
``threads`` OpenMP threads that wait for each other, so one of them preempted by the encoder
holds the others up (they spin, then sleep). While someone watches, the tracker therefore keeps
at most ``cores - 1`` threads, and fewer while the video still falls behind (frames the encoder
had to skip); it grows back one thread at a time after the video has kept up for a while, and
takes every core when nobody watches. Measured on 2 cores: bench/results/live_cpu_*.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROW_AFTER_S = 10.0  # the video kept up this long: the tracker may take one more thread
BEHIND = 0.1  # more than this share of the frames skipped by an encoder: the video falls behind


@dataclass
class CpuShare:
    """The tracker's torch thread count, decided from what the video needs (``update``)."""

    cores: int
    threads: int = 0  # the tracker's threads now (0: all cores, set on construction)
    _calm_since: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.cores = max(1, self.cores)
        self.threads = self.threads or self.cores

    @property
    def cap(self) -> int:
        """At most this many while someone watches: one core is the video's."""
        return max(1, self.cores - 1)

    def update(self, watched: bool, skipped: float, now: float) -> int:
        """The tracker's threads for its next round. ``skipped``: the share of frames the
        encoders skipped since the last update (0 when nobody watches)."""
        if not watched:
            self.threads, self._calm_since = self.cores, now
        elif skipped > BEHIND:
            self.threads, self._calm_since = max(1, min(self.threads, self.cap) - 1), now
        elif self.threads > self.cap:
            self.threads, self._calm_since = self.cap, now
        elif now - self._calm_since >= GROW_AFTER_S and self.threads < self.cap:
            self.threads, self._calm_since = self.threads + 1, now
        return self.threads


__all__ = ["BEHIND", "GROW_AFTER_S", "CpuShare"]
