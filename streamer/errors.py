"""The package's exception tree: catch ``StreamerError`` to handle anything we raise on purpose.

Every class carries ``code``, the stable machine-readable name a client gets in an ``error``
message (docs/protocol.md); the message itself is for a person and says what to do.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Root of every error this package raises deliberately; the message says what to do."""

    code = "error"


class CheckpointError(StreamerError):
    """A checkpoint is missing, corrupt, or does not fit the requested model."""

    code = "checkpoint"


class DownloadError(CheckpointError):
    """The official checkpoint could not be fetched (offline, server error, bad checksum)."""

    code = "download"


class ModelError(StreamerError, ValueError):
    """A model that is not registered, or an input size its family does not take."""

    code = "model"


class DetectorError(StreamerError):
    """A detector cannot be loaded or run: its weights or library are missing, or a detector named
    by import path is not there or returned something else than boxes, labels and scores."""

    code = "detector"


class PromptError(StreamerError, ValueError):
    """A prompt (points, box, mask, frame reference) cannot be applied as given."""

    code = "prompt"


class NoFrameError(PromptError):
    """A prompt came before the stream's tracker had any frame."""

    code = "no_frame"


class StaleFrameError(PromptError):
    """A prompt names a frame that is no longer remembered."""

    code = "stale_frame"


class FrameError(StreamerError, ValueError):
    """A frame has the wrong shape or dtype."""

    code = "frame"


class UnknownObjectError(StreamerError, KeyError):
    """An object id that the tracker does not hold."""

    code = "unknown_object"

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class StreamNameError(StreamerError, ValueError):
    """A stream name that is not allowed."""

    code = "bad_field"


class StyleError(StreamerError, ValueError):
    """A style the stream cannot take (unknown, or an image it does not have)."""

    code = "bad_field"


class StreamExistsError(StreamerError):
    """A new stream's name is taken."""

    code = "stream_exists"


class UnknownStreamError(StreamerError, KeyError):
    """A message names a stream the server does not have."""

    code = "unknown_stream"

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class BadSourceError(StreamerError):
    """A camera to add at run time cannot be opened (the message says why)."""

    code = "bad_source"


class UnavailableError(StreamerError):
    """A stream cannot take requests right now (its cluster worker was lost and it is moving, or
    no worker has room for it); trying again in a few seconds is the remedy."""

    code = "unavailable"


class RemoteError(StreamerError):
    """An error a cluster worker raised on purpose, carried to the front with its code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
