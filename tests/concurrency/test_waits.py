"""Timed waits never lose a cancellation, and closes are bounded.

On Python 3.10/3.11 ``asyncio.wait_for`` returns normally, swallowing the cancel, when the awaited
thing completes in the same loop iteration as the cancel: setting an event and cancelling its
waiter at once reproduces it every time there. A loop that waited that way ran on after being
cancelled, and whoever closed it waited forever (the hang of ``test_subscription_errors_and_
unsubscribe``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest

from streamer.concurrency.waits import event_set, stop_tasks, within
from streamer.metrics import Metrics
from streamer.outputs.hub import QueuedSink

CYCLES = 300


class _Loop:
    """The shape of every run loop here: wait on an event with a timeout, forever."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.waiting = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.waiting.set()
            await event_set(self.wake, 5.0)
            self.wake.clear()


def test_a_cancel_that_comes_with_the_wake_up_ends_the_loop() -> None:
    async def main() -> None:
        for _ in range(CYCLES):
            loop = _Loop()
            task = asyncio.create_task(loop.run())
            await loop.waiting.wait()
            loop.wake.set()
            task.cancel()  # the same iteration as the wake-up: wait_for's window
            done, _ = await asyncio.wait({task}, timeout=2.0)
            assert done, "the loop kept running after cancel(): the cancellation was lost"
            assert task.cancelled()

    asyncio.run(main())


def test_within_keeps_the_cancel_when_the_result_arrives_at_once() -> None:
    async def main() -> None:
        for _ in range(CYCLES):
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            async def waiter(f: asyncio.Future[int] = future) -> int:
                return await within(f, 5.0)

            task = asyncio.create_task(waiter())
            await asyncio.sleep(0)
            future.set_result(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


def test_within_times_out_and_cancels_what_it_waited_for() -> None:
    async def main() -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        with pytest.raises(asyncio.TimeoutError):
            await within(inner, 0.05)
        await asyncio.sleep(0)
        assert inner.cancelled()
        assert await within(asyncio.sleep(0, result=7), 1.0) == 7

    asyncio.run(main())


class _Sink(QueuedSink):
    kind = "test"

    def __init__(self) -> None:
        super().__init__(Metrics(), max_rate=0.5)  # the second results wait 2 s: a timed wait
        self.sent = 0

    async def send_results(self, tracked: object) -> None:
        self.sent += 1


def test_a_results_sink_woken_as_it_closes_stops(caplog: pytest.LogCaptureFixture) -> None:
    """The websocket subscription's hang: ``kick()`` then ``close()`` while its loop waits for the
    next results' turn. The close must end the loop, not time out on it."""

    async def main() -> None:
        for _ in range(CYCLES):
            sink = _Sink()
            sink.start()
            sink.results(SimpleNamespace(stream="a"), "none")  # type: ignore[arg-type]  # only .stream is read
            while sink.sent == 0:
                await asyncio.sleep(0)
            sink.results(SimpleNamespace(stream="a"), "none")  # type: ignore[arg-type]
            for _ in range(3):
                await asyncio.sleep(0)  # into the timed wait
            task = sink._task
            sink.kick()
            await asyncio.wait_for(sink.close(), 3.0)
            assert task is not None and task.done()

    with caplog.at_level(logging.ERROR, logger="streamer"):
        asyncio.run(main())
    assert "did not stop" not in caplog.text


def test_stopping_a_task_that_ignores_cancel_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[bool, float]:
        released = False

        async def stubborn() -> None:
            while not released:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    continue

        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        started = time.monotonic()
        ended = await stop_tasks(task, what="test", timeout=0.2)
        elapsed = time.monotonic() - started
        released = True
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        return ended, elapsed

    with caplog.at_level(logging.ERROR, logger="streamer"):
        ended, elapsed = asyncio.run(main())
    assert not ended and elapsed < 2.0
    assert "stubborn" in caplog.text and "did not stop" in caplog.text
