"""One App owns start and stop: the fixed shutdown order, each step bounded, and a second signal
that ends the process at once."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import streamer.app
from streamer.app import App
from streamer.config import Config, ServerConfig
from streamer.live.pipeline import Pipeline
from streamer.metrics import Metrics
from streamer.outputs.hub import QueuedSink

from .oracle_server import oracle_pipeline

ROOT = Path(__file__).resolve().parents[1]


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class _Witness(QueuedSink):
    """A stand-in output that notes, when it is flushed, what else is still up."""

    kind = "witness"

    def __init__(self, metrics: Metrics, pipeline: Pipeline, port: list[int]) -> None:
        super().__init__(metrics)
        self.pipeline, self.port = pipeline, port
        self.seen: dict[str, bool] = {}

    async def send_results(self, tracked: object) -> None:
        pass

    async def send_event(self, event: object) -> None:
        pass

    async def close(self, flush: bool = False) -> None:
        stream = self.pipeline.stream("cam")
        self.seen = {
            "accepting": _accepting(self.port[0]),
            "streams running": stream.reconnecting or stream._feeder is not None,
            "engine running": self.pipeline._task is not None,
        }
        await super().close(flush)


def _oracle_pipeline() -> Pipeline:
    return oracle_pipeline(width=160, height=120, speed=2.0)


def test_stop_runs_in_the_fixed_order() -> None:
    """Viewers go first (the port refuses connections, websockets are closed), then the sinks are
    flushed while the streams and the engine still run, then those stop."""

    async def main() -> tuple[dict[str, bool], bool, bool]:
        pipeline, port = _oracle_pipeline(), [0]
        witness = _Witness(pipeline.metrics, pipeline, port)
        app = App(Config(server=ServerConfig(port=0)), pipeline, sinks=[witness])
        await app.start()
        assert app.server is not None
        port[0] = app.server.port
        await pipeline.stream("cam").next_output(-1)
        async with connect(f"ws://127.0.0.1:{port[0]}/ws") as ws:
            await ws.recv()
            await app.stop()
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        return witness.seen, pipeline._task is None, pipeline.stream("cam")._feeder is None

    seen, engine_stopped, feeder_stopped = asyncio.run(main())
    assert seen == {"accepting": False, "streams running": True, "engine running": True}, seen
    assert engine_stopped and feeder_stopped


def test_a_step_that_hangs_is_logged_and_the_rest_still_stops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(streamer.app, "STEP_TIMEOUT_S", 0.3)

    class Stuck(_Witness):
        async def close(self, flush: bool = False) -> None:
            await asyncio.Event().wait()  # a broker that never answers, say

    async def main() -> tuple[float, bool]:
        pipeline = _oracle_pipeline()
        app = App(Config(server=ServerConfig(port=0)), pipeline, sinks=[Stuck(pipeline.metrics, pipeline, [0])])
        await app.start()
        started = time.monotonic()
        await app.stop()
        return time.monotonic() - started, pipeline._task is None

    with caplog.at_level(logging.ERROR, logger="streamer"):
        elapsed, engine_stopped = asyncio.run(main())
    assert elapsed < 3.0 and engine_stopped
    assert "flush the outputs took over 0.3 s" in caplog.text


SLOW_TO_STOP = """
import asyncio, logging, sys
sys.path.insert(0, {root!r})
from streamer.app import App
from streamer.config import Config, ServerConfig
from streamer.outputs.hub import QueuedSink
from tests.test_app import _oracle_pipeline

logging.basicConfig(level=logging.INFO)


class SlowToFlush(QueuedSink):  # a stand-in for an output that takes a minute to let go
    kind = "slow"

    async def send_results(self, tracked):
        pass

    async def send_event(self, event):
        pass

    async def close(self, flush=False):
        await asyncio.sleep(600)


async def main():
    pipeline = _oracle_pipeline()
    await App(Config(server=ServerConfig(port=0)), pipeline, sinks=[SlowToFlush(pipeline.metrics)]).serve()


asyncio.run(main())
"""


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    """The first Ctrl-C stops in order (here: an output that takes a minute to flush); a second
    one ends the process at once, saying so."""
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_TO_STOP.format(root=str(ROOT))))
    process = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()

    def until(text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in lines):
            assert process.poll() is None, f"exited {process.returncode}: {''.join(lines)}"
            assert time.monotonic() < deadline, f"{text!r} never logged: {''.join(lines)}"
            time.sleep(0.05)

    try:
        until("open http://")
        process.send_signal(signal.SIGINT)
        until("shutting down")
        time.sleep(0.3)  # into the slow flush
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
        reader.join(timeout=5)
    log = "".join(lines)
    assert code == streamer.app.FORCED_EXIT and took < 3.0, log
    assert "SIGINT again while shutting down: exiting now" in log and "Traceback" not in log, log
