"""Encode once per stream: one VP8 bitstream shared by every viewer, each starting on a keyframe."""

from __future__ import annotations

import asyncio

import av
import pytest

from streamer import StreamingTracker
from streamer.encoder import HISTORY, KEYFRAME_MIN_GAP_S, EncodedTrack, StreamEncoder
from streamer.pipeline import Pipeline
from streamer.sources import open_source


@pytest.fixture(scope="module")
def tracker() -> StreamingTracker:
    return StreamingTracker.build(random_init=True, image_size=128, device="cpu")


def _is_keyframe(packet: av.Packet) -> bool:
    return bytes(packet)[0] & 1 == 0


async def _frames(track: EncodedTrack, count: int) -> list[av.Packet]:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(count)]


def test_viewers_share_one_bitstream_and_start_on_keyframes(tracker) -> None:
    """Two viewers, one encoder: each frame is encoded once; a late viewer starts on a fresh
    keyframe; every viewer's packets decode into frames of the stream's size; a viewer that fell
    behind the packet history resumes on a keyframe; a keyframe request (a viewer's PLI) is met."""

    async def main() -> None:
        tracker.reset()
        pipeline = Pipeline()
        stream = pipeline.add_stream("cam", open_source("synthetic", width=192, height=144), tracker)
        encoder = StreamEncoder(stream, keyframe_interval_s=60.0)
        pipeline.start()
        try:
            first = encoder.subscribe()
            early = await _frames(first, 10)
            assert _is_keyframe(early[0]) and not any(_is_keyframe(p) for p in early[1:])
            late = encoder.subscribe()
            joined = await _frames(late, 5)
            assert _is_keyframe(joined[0])
            more = await _frames(first, 10)
            assert any(p is joined[0] for p in more)  # the very same packet object: encoded once
            assert encoder.frames_encoded <= len(early) + len(more) + 3
            decoder = av.CodecContext.create("libvpx", "r")
            decoded = [f for p in early + more for f in decoder.decode(p)]
            assert len(decoded) == 20 and {(f.width, f.height) for f in decoded} == {(192, 144)}

            await asyncio.sleep((HISTORY + 10) / 30)  # ``late`` stops reading; history moves on
            resumed = await _frames(late, 2)
            assert _is_keyframe(resumed[0])

            await _frames(first, 3)  # ``first`` lagged too: it resumed on a keyframe
            await asyncio.sleep(KEYFRAME_MIN_GAP_S)  # requests closer together than this are merged
            encoder.request_keyframe()
            assert any(_is_keyframe(p) for p in await _frames(first, 15))  # 9 queued, then the new ones
            await encoder.unsubscribe()
            await encoder.unsubscribe()
            assert encoder._task is None  # nobody watches: nothing is encoded
        finally:
            await encoder.close()
            await pipeline.stop()

    asyncio.run(main())
