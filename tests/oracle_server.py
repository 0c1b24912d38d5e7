"""A live server whose tracker knows the answer: ``synthetic:shapes`` cameras tracked by
``OracleTracker`` (a stand-in that returns the true masks after ``delay`` seconds), so results and
events can be checked against ground truth with no model accuracy in the way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamer.app import App
from streamer.config import Config, DisplayConfig, EventsConfig, RecordingsConfig, ServerConfig
from streamer.live.landing import PromptRequest
from streamer.live.pipeline import Pipeline
from streamer.outputs.hub import QueuedSink
from streamer.serve.server import StreamServer
from streamer.sources.shapes import ShapesSource
from tests.oracle import OracleTracker


def oracle_pipeline(
    streams: tuple[str, ...] = ("cam",),
    *,
    width: int = 640,
    height: int = 360,
    speed: float = 4.0,
    delay: float = 0.03,
    events: EventsConfig | None = None,
    restream: dict[str, str] | None = None,
    display: DisplayConfig | None = None,
) -> Pipeline:
    """A pipeline (not started) of ``synthetic:shapes`` cameras, each tracked by the oracle;
    ``restream``: RTSP servers to publish streams to, by stream name."""
    pipeline = Pipeline(events=events, display=display)
    for i, name in enumerate(streams):
        source = ShapesSource(width, height, fps=30, speed=speed, count=3, seed=i).start()
        tracker = OracleTracker(source, delay=delay)
        pipeline.add_stream(name, source, tracker, restream=(restream or {}).get(name))
    return pipeline


@contextlib.asynccontextmanager
async def oracle_server(
    streams: tuple[str, ...] = ("cam",),
    *,
    width: int = 640,
    height: int = 360,
    speed: float = 4.0,
    delay: float = 0.03,
    events: EventsConfig | None = None,
    sinks: tuple[QueuedSink, ...] = (),
    restream: dict[str, str] | None = None,
    display: DisplayConfig | None = None,
    recordings: RecordingsConfig | None = None,
    **server_options: object,
) -> AsyncIterator[StreamServer]:
    """A started server on 127.0.0.1 (any port), each stream showing frames; ``sinks`` are
    started and closed with it, in the ``App``'s order (as the command line does)."""
    options = {"events": events, "restream": restream, "display": display}
    pipeline = oracle_pipeline(streams, width=width, height=height, speed=speed, delay=delay, **options)
    config = Config(
        server=ServerConfig(port=0, **server_options),  # type: ignore[arg-type]
        events=events or EventsConfig(),
        recordings=recordings or RecordingsConfig(),
    )
    async with App(config, pipeline, sinks=sinks) as app:
        for stream in pipeline.streams.values():
            await stream.next_output(-1)
        assert app.server is not None
        yield app.server


def shapes_of(server: StreamServer, stream: str = "cam") -> ShapesSource:
    source = server.pipeline.stream(stream).source
    assert isinstance(source, ShapesSource)
    return source


async def click_shape(server: StreamServer, obj_id: int, shape: int, stream: str = "cam") -> list[int]:
    """Prompt ``obj_id`` on shape ``shape`` of the stream's newest shown frame, as a viewer would."""
    target = server.pipeline.stream(stream)
    scene = shapes_of(server, stream).scene
    newest = target.latest
    assert newest is not None
    x, y = scene.centres(newest.index)[shape]
    click = PromptRequest(obj_id, points=((x / scene.width, y / scene.height),), labels=(1,), shown=newest.index)
    return await target.prompt(click)
