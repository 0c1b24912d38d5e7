"""A stream's encoded frames, kept briefly for viewers that are behind, and which camera frame each was."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import av

RTP_WRAP = 1 << 32  # RTP timestamps are 32-bit

logger = logging.getLogger(__name__)


HISTORY = 60  # packets kept for viewers that are briefly behind (~2 s at 30 fps)
SHOWN = 256  # encoded frames whose source frame is remembered (clicks name them by RTP time)


@dataclass(frozen=True)
class EncodedFrame:
    seq: int
    packet: av.Packet
    keyframe: bool
    source: int  # the camera frame it shows
    captured: float  # that frame's capture time, seconds since the epoch


class PacketFeed(Protocol):
    """A stream's video in one codec as its viewers take it (``StreamEncoder``, or a cluster's
    relay): read in order while keeping up, from the next keyframe after falling behind."""

    def subscribe(self) -> object: ...

    async def unsubscribe(self) -> None: ...

    async def next_frame(self, after: int | None) -> EncodedFrame: ...


class PacketHistory:
    """One stream's last ``HISTORY`` encoded frames in one codec, for every viewer of it: each
    viewer reads them in order, and a new or lagging one waits for the next keyframe (asked for
    through ``request_keyframe``). It also remembers which camera frame the last ``SHOWN``
    frames showed, by pts (a click names the frame on screen by its RTP timestamp)."""

    def __init__(self, request_keyframe: Callable[[], None]) -> None:
        self.request_keyframe = request_keyframe
        self._frames: deque[EncodedFrame] = deque(maxlen=HISTORY)
        self._shown: OrderedDict[int, int] = OrderedDict()  # pts mod 2**32 -> source frame
        self._changed = asyncio.Condition()
        self._next_seq = 0  # never reset: a viewer's place stays meaningful across a clear()

    @property
    def newest_seq(self) -> int:
        return self._next_seq - 1

    async def append(self, packet: av.Packet, keyframe: bool, source: int, captured: float) -> EncodedFrame:
        """The next frame (numbered one after the last: viewers rely on it)."""
        async with self._changed:
            frame = EncodedFrame(self._next_seq, packet, keyframe, source, captured)
            self._next_seq += 1
            self._frames.append(frame)
            self._changed.notify_all()
        assert packet.pts is not None  # the encoder dates every packet
        self._shown[packet.pts % RTP_WRAP] = source
        while len(self._shown) > SHOWN:
            self._shown.popitem(last=False)
        return frame

    def clear(self) -> None:
        """Forget the frames: every viewer then waits for a keyframe."""
        self._frames.clear()

    def forget_shown(self) -> None:
        """A new bitstream whose pts start afresh: earlier ones no longer name camera frames."""
        self._shown.clear()

    def source_index(self, pts: int) -> int | None:
        """The camera frame of a recently encoded frame, by its pts (modulo 2**32, as RTP has it)."""
        return self._shown.get(pts % RTP_WRAP)

    async def next_frame(self, after: int | None) -> EncodedFrame:
        """The frame after ``after``; or, for a new or lagging viewer, the next keyframe."""
        async with self._changed:
            oldest = self._frames[0].seq if self._frames else None
            if after is not None and (oldest is None or after + 1 >= oldest):
                await self._changed.wait_for(lambda: self.newest_seq > after)
                found = next((f for f in self._frames if f.seq == after + 1), None)
                if found is not None:
                    return found
            self.request_keyframe()  # joining, lagging, or after a clear()
            newest = self.newest_seq
            await self._changed.wait_for(lambda: any(f.keyframe and f.seq > newest for f in self._frames))
            return next(f for f in self._frames if f.keyframe and f.seq > newest)
