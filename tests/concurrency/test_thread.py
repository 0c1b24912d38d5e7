"""WorkerThread: one thread per native context, and closing waits for the call in flight."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest

from streamer.concurrency.thread import WorkerThread


def test_calls_run_in_order_on_one_thread() -> None:
    async def main() -> None:
        worker = WorkerThread("test")
        threads = await asyncio.gather(*(worker.run(threading.get_ident) for _ in range(20)))
        assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
        await worker.close()
        await worker.close()  # twice is fine

    asyncio.run(main())


def test_drain_waits_for_a_call_whose_caller_was_cancelled() -> None:
    """Cancelling the caller does not stop the thread: drain() still waits until it is done, so
    whatever the call used can be freed safely afterwards."""

    async def main() -> None:
        worker, done = WorkerThread("test"), threading.Event()

        def slow() -> None:
            time.sleep(0.3)
            done.set()

        caller = asyncio.create_task(worker.run(slow))
        await asyncio.sleep(0.05)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        assert not done.is_set()
        assert await worker.drain()
        assert done.is_set()
        await worker.close()

    asyncio.run(main())


def test_close_gives_up_waiting_after_its_timeout() -> None:
    async def main() -> None:
        worker = WorkerThread("test")
        call = asyncio.ensure_future(worker.run(time.sleep, 0.5))
        await asyncio.sleep(0.05)
        assert not await worker.close(timeout=0.05)  # still running: say so, do not hang
        await call

    asyncio.run(main())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux's")
def test_video_threads_run_below_the_tracker() -> None:
    async def main() -> None:
        worker = WorkerThread("test", nice=5)
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        theirs = await worker.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert theirs == min(19, mine + 5)
        assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the calling thread is untouched
        await worker.close()

    asyncio.run(main())


def test_the_tracker_runs_below_the_video_on_the_threads_it_is_given() -> None:
    """The engine's inference thread runs at TRACKER_NICE below the event loop (where the video is
    sent) and the display and encoder threads (normal priority), and a round given ``threads``
    runs on that many torch threads without touching the caller's."""
    import torch

    from streamer.concurrency.thread import TRACKER_NICE
    from streamer.live.engine import Engine

    async def main() -> None:
        engine = Engine(None)
        try:
            mine, before = os.getpriority(os.PRIO_PROCESS, 0), torch.get_num_threads()
            theirs = await engine.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            assert theirs == min(19, mine + TRACKER_NICE)
            await engine.round([], threads=1)
            assert await engine.run(torch.get_num_threads) == 1
            assert torch.get_num_threads() == before
        finally:
            await engine.round([], threads=before)
            await engine.close()
            torch.set_num_threads(before)  # MKL's count is the process's: leave it as it was

    asyncio.run(main())
