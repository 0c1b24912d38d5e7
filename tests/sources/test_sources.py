"""Capture sources against real parts: a GStreamer RTSP server on 127.0.0.1, real clips, threads, fds."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.sources import (
    FrameSource,
    SourceError,
    SourceTimeoutError,
    StreamOptions,
    mask_credentials,
    open_source,
)

from ..clips import clip_path
from ..rtsp import RtspServer


@pytest.fixture
def rtsp() -> Iterator[RtspServer]:
    server = RtspServer(clip_path("scene_720p.mp4"))
    server.start()
    yield server
    server.kill()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def _take(source: FrameSource, count: int) -> list:
    frames = []
    async for frame in source:
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def test_rtsp_frames_arrive_at_clip_size(rtsp: RtspServer) -> None:
    """A real RTSP stream decodes to RGB frames of the clip's size at its frame rate (measured over
    the last 2 s of 3: the server sends what it buffered before PLAY at once)."""

    async def main() -> None:
        async with open_source(rtsp.url) as source:
            frames = await _take(source, 90)
            assert all(f.image.shape == (720, 1280, 3) and f.image.dtype == np.uint8 for f in frames)
            assert [f.index for f in frames] == sorted({f.index for f in frames})
            assert 20 < source.stats.fps < 40 and source.stats.connected

    asyncio.run(main())


def test_rtsp_server_restart_resumes_frames(rtsp: RtspServer) -> None:
    """The server dies mid-stream and comes back: frames resume within 3 s, no exception reaches us."""

    async def main() -> None:
        source = open_source(rtsp.url)
        received: list[float] = []

        async def consume() -> None:
            async for frame in source:
                received.append(frame.captured_at)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(1.5)
        assert received, "no frames before the restart"
        rtsp.kill()
        killed_at = time.monotonic()
        await asyncio.sleep(2.0)
        assert not consumer.done()
        rtsp.start()
        back_at = time.monotonic()
        while not any(t > back_at for t in received) and time.monotonic() - back_at < 6:
            await asyncio.sleep(0.05)
        resumed = [t for t in received if t > back_at]
        assert resumed, "frames did not resume"
        assert resumed[0] - back_at < 3.0
        assert not [t for t in received if killed_at + 0.2 < t < back_at]
        assert source.stats.reconnects >= 1 and not consumer.done()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await source.close()

    asyncio.run(main())


def test_silent_server_times_out_clearly() -> None:
    """A server that accepts but never answers gives a SourceTimeoutError after the configured time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def main() -> None:
        source = open_source(f"rtsp://127.0.0.1:{port}/x", open_timeout=1.5)
        started = time.monotonic()
        with pytest.raises(SourceTimeoutError, match=r"no frame within 1.5 s"):
            await source.__anext__()
        assert 1.3 < time.monotonic() - started < 3.0
        await source.close()

    try:
        asyncio.run(main())
    finally:
        listener.close()


def test_slow_consumer_gets_fresh_frames(rtsp: RtspServer) -> None:
    """A consumer sleeping 200 ms per frame always gets the newest frame, about one interval old at
    most (RTP delivery jitters by a few ms), never a backlog."""

    async def main() -> None:
        async with open_source(rtsp.url) as source:
            ages, newest = [], []
            async for frame in source:
                ages.append(time.monotonic() - frame.captured_at)
                # At most the one frame that may have landed since the hand-over: never a backlog.
                newest.append(source.latest().index - frame.index <= 1)  # type: ignore[union-attr]
                if len(ages) == 12:
                    break
                await asyncio.sleep(0.2)
            interval = 1 / 29.97
            assert all(newest)
            assert max(ages[1:]) < 1.5 * interval, ages
            assert np.median(ages[1:]) < interval, ages
            assert source.stats.dropped >= 40

    asyncio.run(main())


def test_file_plays_at_its_frame_rate_and_loops() -> None:
    """A file plays in real time (30 frames take about a second) and loops by default."""

    async def main() -> None:
        async with open_source(str(clip_path("scene_540p.mp4"))) as source:
            first = await source.__anext__()
            frames = await _take(source, 30)
            elapsed = frames[-1].captured_at - first.captured_at
            assert 0.85 < elapsed < 1.3 and first.image.shape == (540, 960, 3)
            assert frames[-1].pts == pytest.approx(30 / 30, abs=0.05)

    asyncio.run(main())


def test_file_without_loop_ends() -> None:
    """With loop=False a file ends the iteration after its last frame."""
    with av.open(str(clip_path("scene_540p.mp4"))) as probe:
        total = probe.streams.video[0].frames

    async def main() -> None:
        async with open_source(str(clip_path("scene_540p.mp4")), loop=False, realtime=False) as source:
            last = None
            async for frame in source:
                last = frame
            assert total > 100 and last is not None and last.index == total - 1
            assert source.stats.decoded == total

    asyncio.run(main())


def test_synthetic_source_moves() -> None:
    """The synthetic pattern has the asked size and changes from frame to frame."""

    async def main() -> None:
        async with open_source("synthetic", width=320, height=240, fps=30) as source:
            a, b = await _take(source, 2)
            assert a.image.shape == (240, 320, 3)
            assert np.abs(a.image.astype(int) - b.image.astype(int)).sum() > 0

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["file", "synthetic", "rtsp"])
def test_close_leaves_no_thread_or_fd(kind: str, rtsp: RtspServer) -> None:
    """close() stops the reader thread and releases the file/socket, also after a cancelled consumer."""
    spec = {"file": str(clip_path()), "synthetic": "synthetic", "rtsp": rtsp.url}[kind]
    threads_before, fds_before = set(threading.enumerate()), _open_fds()

    async def main() -> None:
        source = open_source(spec)
        task = asyncio.create_task(_take(source, 1000))
        await asyncio.sleep(0.8)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close()
        await source.close()

    asyncio.run(main())
    time.sleep(0.1)
    assert set(threading.enumerate()) - threads_before == set()
    assert _open_fds() - fds_before == set()


def test_bad_specs_fail_at_once() -> None:
    """Unknown specs list what is accepted; a missing file or absent camera fails immediately."""
    with pytest.raises(ValueError, match="rtsp://.*video file path.*synthetic"):
        open_source("bogus")
    with pytest.raises(SourceError, match="no such file"):
        open_source("/nonexistent/video.mp4")
    if not Path("/dev/video63").exists():
        with pytest.raises(SourceError, match="cannot open webcam:63"):
            open_source("webcam:63")


def test_credentials_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """user:password in an RTSP URL is masked in logs, stats and errors."""
    caplog.set_level(logging.DEBUG, logger="streamer")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"rtsp://admin:hunter2@127.0.0.1:{port}/cam"

    async def main() -> None:
        source = open_source(url, open_timeout=1.0, backoff_initial=0.1)
        with pytest.raises(SourceTimeoutError) as error:
            await source.__anext__()
        await source.close()
        assert "hunter2" not in str(error.value) and "***@127.0.0.1" in str(error.value)
        assert "hunter2" not in (source.stats.last_error or "") and source.stats.reconnects >= 1

    asyncio.run(main())
    assert caplog.records and "hunter2" not in caplog.text
    assert mask_credentials("see rtsp://u:p@h/x and http://a@b") == "see rtsp://***@h/x and http://***@b"


def test_udp_transport_option() -> None:
    """RTSP over UDP is an option; the low-latency FFmpeg options are set for network streams."""
    options = StreamOptions(transport="udp", stall_timeout=3).ffmpeg_options("rtsp://h/x")
    assert options["rtsp_transport"] == "udp" and options["timeout"] == "3000000"
    assert "rtsp_transport" not in StreamOptions().ffmpeg_options("http://h/x.mjpg")


@pytest.mark.skipif(not Path("/dev/video0").exists(), reason="no webcam at /dev/video0")
def test_webcam_frames() -> None:
    """A real local camera delivers RGB frames."""

    async def main() -> None:
        async with open_source("0") as source:
            (frame,) = await _take(source, 1)
            assert frame.image.ndim == 3 and frame.image.shape[2] == 3

    asyncio.run(main())
