"""The RTSP restream against real RTSP servers run here: FFmpeg listening and GStreamer's RTSP
server in record mode. ffprobe reads what arrived (codec, size, rate, duration); the overlay's
colour is in the received frames once an object is tracked, and not before; a receiver killed
mid-stream and started again gets the stream again; one that is not there is a clear error that
costs the viewers nothing; the URL is checked with the password masked."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from streamer.cli import parse_args
from streamer.config import ConfigError, load_config
from streamer.config.values import check_restream_url
from streamer.metrics import Metrics
from streamer.sources.shapes import ShapesScene
from streamer.video.codecs import CODECS, TIME_BASE, VIDEO_CLOCK
from streamer.video.encoder import _yuv_frame
from streamer.video.overlay import color_for
from streamer.video.packets import PacketHistory
from streamer.video.restream import Restream
from tests.oracle_server import click_shape, oracle_server
from tests.outputs.test_mqtt import until
from tests.rtsp_receivers import FfmpegReceiver, GstReceiver, probe

WIDTH, HEIGHT = 640, 360


def colour_pixels(path, obj_id: int = 1, tolerance: int = 40) -> list[int]:
    """Per received frame, the pixels within ``tolerance`` of the object's outline colour."""
    colour = np.array(color_for(obj_id), np.int16)
    counts = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24").astype(np.int16)
            counts.append(int((np.abs(rgb - colour).max(axis=2) <= tolerance).sum()))
    return counts


async def restreaming(server) -> tuple:
    """The server's stream and its restream, once a second of frames has gone out."""
    stream = server.pipeline.stream("cam")
    restream = stream.restream
    assert restream is not None
    await until(lambda: restream.status.frames_sent >= 30, 20, "frames restreamed")
    return stream, restream


@pytest.mark.parametrize("receiver_kind", [FfmpegReceiver, GstReceiver], ids=["ffmpeg", "gstreamer"])
def test_the_masked_video_reaches_an_rtsp_server(tmp_path, receiver_kind) -> None:
    receiver = receiver_kind(tmp_path)
    receiver.start()

    async def main() -> None:
        async with oracle_server(width=WIDTH, height=HEIGHT, restream={"cam": receiver.url}) as server:
            stream, restream = await restreaming(server)
            assert restream.status.connected and restream.status.connections == 1
            assert list(stream.encoders) == ["h264"]  # the restream takes the viewers' H.264 encoder
            await click_shape(server, 1, shape=0)
            sent = restream.status.frames_sent
            await until(lambda: restream.status.frames_sent >= sent + 60, 20, "frames after the click")
            status = server.pipeline.stream("cam").status()
            assert status.restream is not None and status.restream["connected"]
            metrics = server.pipeline.metrics.registry
            assert metrics.get_sample_value("streamer_restream_connected", {"stream": "cam"}) == 1
            assert metrics.get_sample_value("streamer_restream_frames_total", {"stream": "cam"}) >= sent + 60

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # the receiver writes out what it has after the TEARDOWN
    receiver.kill()
    found = probe(receiver.file)
    assert (found["codec"], found["width"], found["height"]) == ("h264", WIDTH, HEIGHT)
    assert 20 <= found["fps"] <= 31, found  # the camera's 30 fps (a frame the encoder skips lowers it)
    assert found["frames"] >= 90 and 2.5 <= found["duration"] <= elapsed + 1, found
    counts = colour_pixels(receiver.file)
    assert max(counts[:10]) < 50, counts[:10]  # no object yet: no outline colour
    assert min(counts[-20:]) > 300, counts[-20:]  # the tracked shape's outline, in every late frame


def test_the_restream_comes_back_when_the_receiver_does(tmp_path) -> None:
    receiver = FfmpegReceiver(tmp_path)
    receiver.start()

    async def main() -> None:
        async with oracle_server(width=WIDTH, height=HEIGHT, restream={"cam": receiver.url}) as server:
            stream, restream = await restreaming(server)

            # FFmpeg writes nothing until it has probed the stream (over a second on a busy host):
            # it is killed once its file holds some of the stream.
            def written() -> bool:
                return receiver.file.is_file() and receiver.file.stat().st_size > 150_000

            await until(written, 30, "the first receiver to write")
            await asyncio.to_thread(receiver.kill)
            await until(lambda: not restream.status.connected, 15, "the restream to notice")
            assert "restream to rtsp://127.0.0.1" in (restream.status.last_error or "")
            shown = stream.latest.seq  # type: ignore[union-attr]
            await until(lambda: stream.latest.seq > shown + 30, 10, "video while the receiver is away")  # type: ignore[union-attr]
            await asyncio.to_thread(receiver.start)
            await until(lambda: restream.status.connections == 2, 20, "a second connection")
            sent = restream.status.frames_sent
            await until(lambda: restream.status.frames_sent >= sent + 60, 20, "frames on the new connection")
            assert restream.status.last_error is None
            errors = server.pipeline.metrics.registry.get_sample_value(
                "streamer_errors_total", {"stream": "cam", "kind": "restream"}
            )
            assert errors is not None and errors >= 1

    asyncio.run(main())
    time.sleep(0.5)
    receiver.kill()
    first, second = (probe(path) for path in receiver.files)
    assert first["frames"] >= 10 and second["frames"] >= 55, (first, second)
    assert (second["codec"], second["width"], second["height"]) == ("h264", WIDTH, HEIGHT)


def test_no_server_there_is_a_clear_error_and_the_video_goes_on(tmp_path) -> None:
    nobody = FfmpegReceiver(tmp_path).url  # a free port nothing listens on

    async def main() -> None:
        async with oracle_server(width=WIDTH, height=HEIGHT, restream={"cam": nobody}) as server:
            stream = server.pipeline.stream("cam")
            restream = stream.restream
            assert restream is not None
            await until(lambda: restream.status.last_error is not None, 15, "the error")
            error = restream.status.last_error or ""
            assert nobody in error and "Connection refused" in error and "trying again in" in error, error
            shown = stream.latest.seq  # type: ignore[union-attr]
            await until(lambda: stream.latest.seq > shown + 30, 10, "the video going on")  # type: ignore[union-attr]
            assert not restream.status.connected and restream.status.frames_sent == 0
            reason = error.split("; trying again")[0]  # the wait grows with each attempt
            assert stream.status().restream["last_error"].startswith(reason)  # type: ignore[index]

    asyncio.run(main())


def test_restream_urls_flags_and_yaml(tmp_path, capsys) -> None:
    assert check_restream_url("rtsp://nvr:8554/cams/door") == "rtsp://nvr:8554/cams/door"
    for bad in ("http://nvr/live", "rtsp://nvr", "rtsp:///live", "rtsp://nvr:x/live", None):
        with pytest.raises(ValueError, match="rtsp://HOST|bad port"):
            check_restream_url(bad)
    with pytest.raises(ValueError) as caught:
        check_restream_url("rtmp://me:hunter2@nvr/live")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)

    args = parse_args(["--source", "synthetic", "--restream", "rtsp://nvr:8554/a"])
    assert args.streams[0].restream == "rtsp://nvr:8554/a"
    args = parse_args(["--source", "a=synthetic", "--source", "b=synthetic", "--restream", "b=rtsp://nvr/b?x=1"])
    assert [s.restream for s in args.streams] == [None, "rtsp://nvr/b?x=1"]
    for flags, message in (
        (["--restream", "rtsp://nvr/a"], "say which stream"),
        (["--restream", "c=rtsp://nvr/c"], "no stream named 'c'"),
        (["--restream", "a=rtsp://u:hunter2@nvr"], "rtsp://HOST"),
    ):
        with pytest.raises(SystemExit):
            parse_args(["--source", "a=synthetic", "--source", "b=synthetic", *flags])
        error = capsys.readouterr().err
        assert message in error and "hunter2" not in error, error

    config = tmp_path / "cams.yaml"
    config.write_text("streams:\n  - {name: door, source: synthetic, restream: 'rtsp://nvr:8554/door'}\n")
    assert load_config(str(config)).streams[0].restream == "rtsp://nvr:8554/door"
    config.write_text("streams:\n  - {name: door, source: synthetic, restream: 'rtsp://u:hunter2@nvr'}\n")
    with pytest.raises(ConfigError, match=r"streams\[0\]: restream must be") as caught:
        load_config(str(config))
    assert "hunter2" not in str(caught.value)


def test_a_new_picture_size_is_a_new_session(tmp_path) -> None:
    """The encoder restarts at another size (the camera changed): the restream starts a new RTSP
    session whose SDP says so, rather than sending the new size under the old description."""
    receiver = GstReceiver(tmp_path)  # it takes one session after another
    receiver.start()
    feed = PacketFeedStandIn()
    restream = Restream("cam", receiver.url, feed, Metrics().stream("cam"))

    async def main() -> None:
        restream.start()
        for width, height in ((320, 240), (160, 128)):
            await feed.play(width, height, frames=45)
        await restream.close()

    asyncio.run(main())
    time.sleep(0.5)
    receiver.kill()
    assert restream.status.connections == 2 and restream.status.last_error is None, restream.status
    found = probe(receiver.file)  # the second session's file
    assert (found["width"], found["height"]) == (160, 128) and found["frames"] >= 20, found


class PacketFeedStandIn:
    """A stream's H.264 packets made here, at a size the test picks (a stand-in for an encoder)."""

    def __init__(self) -> None:
        self.history = PacketHistory(lambda: None)
        self.pts = 0

    def subscribe(self) -> None:
        pass

    async def unsubscribe(self) -> None:
        pass

    async def next_frame(self, after: int | None):
        return await self.history.next_frame(after)

    async def play(self, width: int, height: int, frames: int) -> None:
        """``frames`` frames at 30 fps in real time, a keyframe every 10."""
        scene = ShapesScene(width, height, speed=4.0, count=2, seed=0)
        codec = CODECS["h264"].new(width, height, 500_000)
        for n in range(frames):
            frame = _yuv_frame(scene.render(n)[0])
            frame.pts, frame.time_base = self.pts, TIME_BASE
            if n % 10 == 0:
                frame.pict_type = PictureType.I
            data = b"".join(bytes(p) for p in codec.encode(frame))
            packet = av.Packet(data)
            packet.pts, packet.time_base = self.pts, TIME_BASE
            await self.history.append(packet, n % 10 == 0, n, time.time())
            self.pts += VIDEO_CLOCK // 30
            await asyncio.sleep(1 / 30)
