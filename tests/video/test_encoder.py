"""Encode once per stream: one VP8 bitstream shared by every viewer, each starting on a keyframe."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import AsyncIterator
from fractions import Fraction

import av
import numpy as np
import psutil
import pytest

from streamer import StreamingTracker
from streamer.live.pipeline import Pipeline
from streamer.sources import open_source
from streamer.sources.shapes import ShapesScene
from streamer.video.codecs import CODECS, TIME_BASE
from streamer.video.encoder import KEYFRAME_MIN_GAP_S, StreamEncoder, _yuv_frame
from streamer.video.packets import HISTORY
from streamer.video.track import EncodedTrack


@pytest.fixture(scope="module")
def tracker() -> StreamingTracker:
    return StreamingTracker.build(random_init=True, image_size=128, device="cpu")


def _is_keyframe(packet: av.Packet) -> bool:
    return bytes(packet)[0] & 1 == 0


async def _frames(track: EncodedTrack, count: int) -> list[av.Packet]:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(count)]


@contextlib.asynccontextmanager
async def encoding(tracker: StreamingTracker, width: int, height: int, **options) -> AsyncIterator[StreamEncoder]:
    """A running synthetic stream and its encoder (``encoder.stream``), both closed afterwards."""
    tracker.reset()
    pipeline = Pipeline()
    stream = pipeline.add_stream("cam", open_source("synthetic", width=width, height=height), tracker)
    encoder = StreamEncoder(stream, **options)
    pipeline.start()
    try:
        yield encoder
    finally:
        await encoder.close()
        await pipeline.stop()


def test_viewers_share_one_bitstream_and_start_on_keyframes(tracker) -> None:
    """Two viewers, one encoder: each frame is encoded once; a late viewer starts on a fresh
    keyframe; every viewer's packets decode into frames of the stream's size; a viewer that fell
    behind the packet history resumes on a keyframe; a keyframe request (a viewer's PLI) is met."""

    async def main() -> None:
        async with encoding(tracker, 192, 144, keyframe_interval_s=60.0) as encoder:
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

    asyncio.run(main())


def test_viewers_joining_and_leaving_never_share_the_codec(tracker) -> None:
    """Hundreds of join/leave cycles, each leaving while a frame is being encoded: the codec is
    never used by two threads at once (that crashed libvpx), threads stay flat, a viewer joining
    afterwards gets a decodable stream, and shutting down takes moments."""

    async def main() -> float:
        async with encoding(tracker, 320, 240) as encoder:
            inside, most = [0], [0]
            encode = encoder._encode

            def slow_encode(output, keyframe):  # wide window for a leave to land mid-encode
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                try:
                    time.sleep(0.004)
                    return encode(output, keyframe)
                finally:
                    inside[0] -= 1

            encoder._encode = slow_encode  # type: ignore[method-assign]
            await _frames(encoder.subscribe(), 1)
            await encoder.unsubscribe()
            threads, rss = threading.active_count(), psutil.Process().memory_info().rss
            rng = random.Random(7)
            for _ in range(300):
                encoder.subscribe()
                await asyncio.sleep(rng.uniform(0, 0.008))
                await encoder.unsubscribe()
            assert most[0] == 1
            assert threading.active_count() == threads
            assert psutil.Process().memory_info().rss - rss < 40 * 2**20
            decoder = av.CodecContext.create("libvpx", "r")
            decoded = [f for p in await _frames(encoder.subscribe(), 10) for f in decoder.decode(p)]
            assert len(decoded) == 10 and {(f.width, f.height) for f in decoded} == {(320, 240)}
            closing = time.monotonic()
        return time.monotonic() - closing

    assert asyncio.run(main()) < 3


def test_a_failed_encode_is_counted_and_the_video_comes_back(tracker) -> None:
    """An encode that raises is logged and counted in /metrics; the encoder starts afresh and the
    viewer keeps getting frames, from a keyframe."""

    async def main() -> None:
        async with encoding(tracker, 192, 144, keyframe_interval_s=60.0) as encoder:
            encode, failures = encoder._encode, []

            def failing_once(output, keyframe):
                if not failures:
                    failures.append(output.seq)
                    raise RuntimeError("libvpx fell over (simulated)")
                return encode(output, keyframe)

            track = encoder.subscribe()
            await _frames(track, 3)
            encoder._encode = failing_once  # type: ignore[method-assign]
            after = await _frames(track, 5)
            assert failures and any(_is_keyframe(p) for p in after)  # the fresh codec starts on one
            errors = encoder.stream.metrics.errors_by_kind.collect()[0].samples
            counted = {s.labels["kind"]: s.value for s in errors if s.name == "streamer_errors_total"}
            assert counted.get("encode") == 1.0, counted

    asyncio.run(main())


def test_h264_bitstream_is_shared_and_starts_on_idr_frames(tracker) -> None:
    """An H.264 encoder (for viewers that offer only H.264): constrained baseline, each viewer
    starts on an IDR frame with its SPS and PPS (it decodes from there on its own), a keyframe
    request is met, and an odd-sized camera still encodes."""

    def nal_types(packet: av.Packet) -> set[int]:
        data = bytes(packet)
        return {data[i + 3] & 0x1F for i in range(len(data) - 3) if data[i : i + 3] == b"\x00\x00\x01"}

    async def main() -> None:
        async with encoding(tracker, 193, 145, keyframe_interval_s=60.0, codec="h264") as encoder:
            first = encoder.subscribe()
            early = await _frames(first, 8)
            assert {5, 7, 8} <= nal_types(early[0])  # IDR slice, SPS, PPS
            assert not any(5 in nal_types(p) for p in early[1:])
            late = encoder.subscribe()
            joined = await _frames(late, 4)
            assert 5 in nal_types(joined[0])
            decoder = av.CodecContext.create("h264", "r")  # a viewer that joined late, alone
            decoded = [f for p in joined for f in decoder.decode(p)]
            assert len(decoded) >= 3 and {(f.width, f.height) for f in decoded} == {(192, 144)}
            assert decoder.profile == "Constrained Baseline"
            await asyncio.sleep(KEYFRAME_MIN_GAP_S)
            encoder.request_keyframe()
            assert any(5 in nal_types(p) for p in await _frames(first, 15))
            await encoder.unsubscribe()
            await encoder.unsubscribe()

    asyncio.run(main())


def test_both_codecs_spend_the_bitrate_asked_on_a_clear_picture() -> None:
    """Each codec's rate control, on the moving textured scene at 640x360, 1 Mbit/s: the bitstream
    is within a third of the bitrate asked and decodes to what was sent (PSNR over 30 dB). libx264
    budgets bits per frame from the codec's frame rate, not its 90 kHz time base: without one it
    took 90,000 frames a second and sent 12-byte frames, a grey smear at 11 dB."""
    scene = ShapesScene(640, 360, speed=4.0, count=3, seed=3)
    frames = [scene.render(n)[0] for n in range(60)]
    for codec in CODECS:
        context = CODECS[codec].new(640, 360, 1_000_000)
        decoder = av.CodecContext.create("libvpx" if codec == "vp8" else "h264", "r")
        sent, psnr = 0, []
        for n, image in enumerate(frames):
            frame = _yuv_frame(image)
            frame.pts, frame.time_base = n * 3000, TIME_BASE  # 30 fps at 90 kHz, as the encoder dates them
            for packet in context.encode(frame):
                sent += packet.size
                for decoded in decoder.decode(packet):
                    error = (decoded.to_ndarray(format="rgb24").astype(float) - frames[len(psnr)]) ** 2
                    psnr.append(10 * np.log10(255**2 / error.mean()))
        bitrate = sent * 8 / (len(frames) / 30)
        assert 0.67e6 < bitrate < 1.33e6, (codec, bitrate)
        assert min(psnr[5:]) > 30, (codec, min(psnr[5:]))


def test_codec_is_chosen_from_the_offer() -> None:
    from streamer.video.codecs import offered_codec

    vp8_and_h264 = "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n"
    h264_only = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n"
    assert offered_codec(vp8_and_h264) == "vp8"
    assert offered_codec(h264_only) == "h264"
    assert offered_codec(vp8_and_h264, prefer="h264") == "h264"  # the stream restreams: no second encode
    vp8_only = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"
    assert offered_codec(vp8_only, prefer="h264") == "vp8"
    assert offered_codec("m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 VP9/90000\r\n") is None


def test_video_is_downscaled_to_max_width_at_the_bitrate_asked(tracker) -> None:
    """``display.max_width`` (a big camera shown smaller) and ``display.bitrate`` reach the codec:
    a 384x288 camera is sent 128x96, in both codecs."""

    async def main() -> None:
        for codec, decoder_name in (("vp8", "libvpx"), ("h264", "h264")):
            async with encoding(tracker, 384, 288, codec=codec, max_width=128, bitrate=400_000) as encoder:
                track = encoder.subscribe()
                packets = await _frames(track, 5)
                assert encoder._codec is not None and encoder._codec.bit_rate == 400_000
                decoder = av.CodecContext.create(decoder_name, "r")
                sizes = {(f.width, f.height) for p in packets for f in decoder.decode(p)}
                assert sizes == {(128, 96)}, (codec, sizes)
                await encoder.unsubscribe()

    asyncio.run(main())


def test_packet_timestamps_count_capture_time_at_90_khz(tracker) -> None:
    """What RTP carries (aiortc adds only an origin): a viewer's jitter buffer paces frames by it,
    and the page dates each frame by it. Both codecs: a frame's pts, in 90 kHz ticks, advances as
    its capture time does (PyAV's encode() rebases a frame's pts to the codec's own time base:
    VP8's was microseconds, eleven times too fast)."""

    async def main() -> None:
        for codec in ("vp8", "h264"):
            async with encoding(tracker, 160, 120, codec=codec) as encoder:
                encoder.subscribe()
                frames, seq = [], None
                while len(frames) < 8:
                    frame = await asyncio.wait_for(encoder.next_frame(seq), 10)
                    frames.append(frame)
                    seq = frame.seq
                ticks = [(b.packet.pts - a.packet.pts) / 90 for a, b in zip(frames, frames[1:])]
                captured = [1000 * (b.captured - a.captured) for a, b in zip(frames, frames[1:])]
                assert all(abs(t - c) < 0.1 for t, c in zip(ticks, captured)), (codec, ticks, captured)
                assert all(frame.packet.time_base == Fraction(1, 90_000) for frame in frames)
                await encoder.unsubscribe()

    asyncio.run(main())


def test_display_settings_for_the_video_are_checked() -> None:
    from streamer.config import DisplayConfig

    with pytest.raises(ValueError, match="max_width must be 32 to 8192"):
        DisplayConfig(max_width=8)
    with pytest.raises(ValueError, match="bitrate must be"):
        DisplayConfig(bitrate=10)
