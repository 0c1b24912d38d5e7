"""A thread of its own for work that must never run on two threads at once.

A native context (a libvpx encoder, a tracker's state on the GPU) belongs to one thread at a
time. Cancelling an asyncio task that awaits ``run_in_executor`` does not stop the thread: the
call runs on with whatever state it touches, and the next caller could start a second one beside
it, or free the context under it. A ``WorkerThread`` runs its calls one after another on one
thread, and ``drain()`` / ``close()`` wait for the call in flight however its caller was
cancelled, so whoever frees or replaces the context afterwards is alone with it. It may run
below normal priority (``nice``), so that bulk work yields the CPU to what matters more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .waits import CLOSE_TIMEOUT_S, within

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The tracker's thread (and the OpenMP threads torch starts from it) runs this much below normal
# priority: the video path (decode, display, draw, encode) stays at normal priority, so when the
# CPU is short the tracker slows before the video drops frames (concurrency/share.py).
TRACKER_NICE = 10
# The detector thread (automatic tracking) runs lower still: on a short CPU it is the last to get
# it, after the video and the tracker; its detections are periodic and may come late
# (bench/results/live_cpu_256_auto.json).
DETECTOR_NICE = 19


class WorkerThread:
    def __init__(self, name: str, nice: int = 0) -> None:
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=name, initializer=_lower_priority, initargs=(nice,)
        )
        self._last: concurrent.futures.Future[Any] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread, after any call before it; raises what it raises."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``run`` for a caller that does not wait on the call itself (it waits on what the call
        leaves behind); the future is cancelled if the thread closes before the call starts."""
        future = self._executor.submit(fn, *args)
        self._last = future
        return future

    async def drain(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until the calls submitted so far are done; False (and a log line) if one is still
        running after ``timeout``: whoever frees the context must then leave it to the thread."""
        last = self._last
        if last is None or last.done():
            return True
        with contextlib.suppress(Exception):  # its own failure is its caller's business
            await within(asyncio.shield(asyncio.wrap_future(last)), timeout)
        if not last.done():
            logger.warning("%s: a call is still running after %g s; going on without it", self.name, timeout)
        return last.done()

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Drop calls not started yet, wait for the one in flight, let the thread go. Safe twice;
        False if a call was still running after ``timeout`` (it finishes in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        return await self.drain(timeout)


def _lower_priority(nice: int) -> None:
    """Lower this thread's scheduling priority by ``nice`` (Linux: per thread; threads it starts
    inherit it). Elsewhere, or where refused, the thread keeps its priority."""
    if nice and sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
