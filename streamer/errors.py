"""The package's exception tree: catch ``StreamerError`` to handle anything we raise on purpose."""

from __future__ import annotations


class StreamerError(Exception):
    """Root of every error this package raises deliberately; the message says what to do."""


class CheckpointError(StreamerError):
    """A checkpoint is missing, corrupt, or does not fit the requested model."""


class DownloadError(CheckpointError):
    """The official checkpoint could not be fetched (offline, server error, bad checksum)."""


class PromptError(StreamerError, ValueError):
    """A prompt (points, box, mask, frame reference) cannot be applied as given."""


class FrameError(StreamerError, ValueError):
    """A frame has the wrong shape or dtype."""


class UnknownObjectError(StreamerError, KeyError):
    """An object id that the tracker does not hold."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
