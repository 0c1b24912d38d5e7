"""One running server, built from one ``Config``: what it serves, the outputs it feeds, and the
order in which they start and stop.

Start: the outputs the config names (the results file, MQTT, the recordings) and any given; the TLS certificate
(made and cached when self-signed); the server (it listens only once everything behind it is
there); then the streams and the sinks. Stop, in this fixed order, each step bounded
(``STEP_TIMEOUT_S``: a step that hangs is logged and the next one runs):

1. stop accepting: the server closes its listener, its websockets and every viewer's peer;
2. flush the sinks: what the results file and MQTT hold goes out (MQTT says ``offline``), and
   open recordings are finished;
3. stop the streams and the engine: feeders, encoders, sources, then the inference thread
   (or, on a cluster's front, every worker);
4. free the GPU last: nothing can touch the model any more.

``serve()`` runs until SIGINT or SIGTERM (or, on a cluster, until the head is gone): the first
signal stops as above; a second one, while that is under way, ends the process at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from types import TracebackType

from .cluster.front import ClusterPipeline
from .concurrency.waits import stop_tasks, within
from .config import Config, ServerConfig, StreamConfig, WorkerSettings
from .errors import StreamerError
from .live.auto import Detectors
from .live.pipeline import Pipeline
from .live.serving import Serving
from .model.interface import Tracker
from .outputs.hub import QueuedSink
from .outputs.jsonl import ResultsFile
from .outputs.mqtt import MqttPublisher
from .serve.server import StreamServer
from .serve.tls import local_names, self_signed
from .sources import open_source
from .video.recordings import Recorder
from .video.styles import load_background

logger = logging.getLogger(__name__)

STEP_TIMEOUT_S = 15.0  # each shutdown step at most; then it is logged and the next one runs
FORCED_EXIT = 130  # the exit status of a second signal's immediate exit (128 + SIGINT)


class App:
    """A server for ``serving`` (a local ``Pipeline`` or a cluster's front, with its streams), set
    up as ``config`` says; ``sinks``: outputs beyond the ones the config names."""

    def __init__(self, config: Config, serving: Serving, *, sinks: Sequence[QueuedSink] = ()) -> None:
        self.config, self.serving = config, serving
        self.sinks: list[QueuedSink] = list(sinks)
        self.server: StreamServer | None = None
        self.recorder: Recorder | None = None
        self._started = False
        self._stopping = False

    @classmethod
    async def build(cls, config: Config, streams: Sequence[StreamConfig], tracker: Tracker | None = None) -> App:
        """The app the command line runs: ``streams`` on a local pipeline whose first stream holds
        ``tracker`` (the model), or, with ``config.cluster.address``, on that cluster's workers."""
        if config.cluster.address:
            worker = WorkerSettings(config.model, config.tracker, config.display, auto=config.auto)
            cluster = ClusterPipeline(config.cluster, worker, events=config.events)
            try:
                await cluster.connect()
                for stream in streams:
                    auto = stream.auto_config(config.auto)
                    cluster.add_stream(stream.name, stream.source, stream.options, auto, stream.restream, stream.style)
            except BaseException:
                await cluster.stop()
                raise
            return cls(config, cluster)
        if config.display.background:  # before any camera opens: a missing image is a usage error
            load_background(config.display.background)
        if tracker is None:
            raise ValueError("a local server needs a tracker (the model): build one from config.model")
        detectors = Detectors(config.auto.device, random_weights=config.model.random_weights)
        pipeline = Pipeline(
            display=config.display,
            events=config.events,
            max_batch=config.model.max_batch,
            auto=config.auto,
            detectors=detectors,
        )
        try:
            for i, stream in enumerate(streams):
                try:
                    source = await asyncio.to_thread(open_source, stream.source, **stream.options)
                except TypeError as exc:  # an option the source does not take
                    raise ValueError(f"stream {stream.name}: bad options {stream.options}: {exc}") from None
                auto = stream.auto_config(config.auto)
                tracker_here = tracker if i == 0 else None
                pipeline.add_stream(stream.name, source, tracker_here, auto, stream.restream, stream.style)
        except BaseException:
            await pipeline.stop()
            raise
        return cls(config, pipeline)

    @property
    def url(self) -> str:
        """What to open in a browser (once started)."""
        if self.server is None:
            raise RuntimeError("the app is not started")
        return self.server.url

    async def start(self) -> None:
        """Everything up, in order; whatever started is stopped again if a step fails."""
        if self._started:
            return
        self._started = True
        try:
            self._warn_unserved_zones()
            self.sinks += self._configured_sinks()
            if self.config.recordings.dir:
                self.recorder = self._recorder()
            server_config = await self._with_certificate()
            if server_config.ice.servers:
                logger.info("ICE servers: %s", server_config.ice.describe())
            store = None if self.recorder is None else self.recorder.store
            self.server = StreamServer(self.serving, server_config, recordings=store)
            await self.server.start()
        except BaseException:
            await self.stop()
            raise
        self.serving.start()
        for sink in self.sinks:
            sink.start()
            self.serving.hub.add(sink)
        if self.recorder is not None:
            self.serving.hub.add(self.recorder)

    async def stop(self) -> None:
        """Down in the fixed order (module docstring), each step bounded. Once: later calls return."""
        if self._stopping:
            return
        self._stopping = True
        if self.server is not None:
            await self._step("stop accepting and close the viewers", self.server.stop())
        for sink in self.sinks:
            self.serving.hub.discard(sink)
        closing = [sink.close() for sink in self.sinks]
        if self.recorder is not None:  # its open clips are finished, not lost
            self.serving.hub.discard(self.recorder)
            closing.append(self.recorder.close())
        if closing:
            await self._step("flush the outputs", asyncio.gather(*closing))
        await self._step("stop the streams and the engine", self.serving.stop())
        _free_gpu()

    async def serve(self) -> None:
        """Start, serve until a signal (or a cluster's lost head), then stop. The signals are
        handled from the very start: one during startup stops as soon as startup is done."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig, stop)
        ends = [asyncio.create_task(stop.wait(), name="signal")]
        cluster = self.serving if isinstance(self.serving, ClusterPipeline) else None
        if cluster is not None:  # a cluster's front also ends when the cluster's head is gone
            ends.append(asyncio.create_task(cluster.gone.wait(), name="cluster gone"))
        try:
            await self.start()
            names = ", ".join(f"{s.name} ({s.status().source})" for s in self.serving.streams.values())
            logger.info("serving %s: open %s in a browser (Ctrl-C to stop)", names, self.url)
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop_tasks(*ends, what="serve")
            logger.info("shutting down")
            began = time.monotonic()
            await self.stop()
            logger.info("stopped in %.2f s", time.monotonic() - began)
        if cluster is not None and cluster.gone_reason is not None:
            raise cluster.gone_reason

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    # -- parts --------------------------------------------------------------------------------------

    def _configured_sinks(self) -> list[QueuedSink]:
        sinks: list[QueuedSink] = []
        results, mqtt = self.config.results, self.config.mqtt
        if results.path:
            try:
                sinks.append(ResultsFile(results, self.serving.metrics))
            except OSError as exc:
                raise StreamerError(f"cannot write results to {results.path}: {exc}") from None
        if mqtt.url:
            sinks.append(MqttPublisher(mqtt, self.serving.metrics))
        return sinks

    def _recorder(self) -> Recorder:
        """Recordings of every stream the config records, from each one's H.264 packets; a folder
        that cannot be written is a usage error here, before anything serves."""
        streams = self.serving.streams
        recorder = Recorder(
            self.config.recordings,
            lambda: {name: stream.video("h264") for name, stream in streams.items()},
            self.serving.hub.announce,
            self.serving.metrics,
        )
        recorder.start()
        return recorder

    async def _with_certificate(self) -> ServerConfig:
        """The server's settings, with a self-signed certificate made (or taken from the cache)."""
        config = self.config.server
        if not config.tls_self_signed:
            return config
        made = await asyncio.to_thread(self_signed, local_names(config.host))
        logger.info("self-signed TLS certificate %s, SHA-256 fingerprint %s", made.cert, made.fingerprint)
        return replace(config, tls_cert=str(made.cert), tls_key=str(made.key), tls_self_signed=False)

    def _warn_unserved_zones(self) -> None:
        for name in self.config.events.zones:
            if name not in self.serving.streams:
                served = ", ".join(self.serving.streams)
                logger.warning("events.zones names stream %r, which is not served (streams: %s)", name, served)

    def _on_signal(self, sig: int, stop: asyncio.Event) -> None:
        """The first signal stops in order; another, once that is under way, ends the process now."""
        if self._stopping or stop.is_set():
            logger.error("%s again while shutting down: exiting now", signal.Signals(sig).name)
            logging.shutdown()
            os._exit(FORCED_EXIT)
        stop.set()

    @staticmethod
    async def _step(what: str, awaitable: Awaitable[object]) -> None:
        """One shutdown step: at most ``STEP_TIMEOUT_S``; a failure or a hang is logged, and the
        shutdown goes on."""
        try:
            await within(awaitable, STEP_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error("shutdown: %s took over %g s; going on without it", what, STEP_TIMEOUT_S)
        except Exception:
            logger.exception("shutdown: %s failed; going on", what)


def _free_gpu() -> None:
    """Give the allocator's cache back to the device (the models are unreachable by now)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["App", "STEP_TIMEOUT_S"]
