"""Waiting with a time limit without ever losing a cancellation.

On Python 3.10 and 3.11, ``asyncio.wait_for`` swallows the cancellation of the task awaiting it
when the awaited thing completes in the same loop iteration as the cancel (CPython gh-86296,
fixed in 3.12 by rewriting ``wait_for``): the caller carries on as if nothing happened, so a
``while True`` loop that waits on an event with a timeout keeps running after ``cancel()``, and
whoever awaits it after cancelling waits forever. ``asyncio.wait`` has no such window: the
caller's own await is what gets cancelled. Every timed wait in this package goes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

# How long a close waits for a cancelled task before it logs and goes on without it.
CLOSE_TIMEOUT_S = 10.0


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``awaitable``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds (None: no
    limit). Like ``wait_for`` it cancels the awaitable on a timeout or when the caller is
    cancelled; unlike it, it never swallows the caller's cancellation, and never waits for the
    cancelled awaitable to finish (a cancel it ignores cannot hang the caller)."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        raise asyncio.TimeoutError  # not the builtin TimeoutError on Python 3.10
    return task.result()


async def event_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` has passed; True if it was set."""
    if event.is_set():
        return True
    with contextlib.suppress(asyncio.TimeoutError):
        await within(event.wait(), timeout)
    return event.is_set()


async def stop_tasks(*tasks: asyncio.Task[Any] | None, what: str, timeout: float = CLOSE_TIMEOUT_S) -> bool:
    """Cancel ``tasks`` and wait for them at most ``timeout`` seconds in all. One still running
    then is logged and left behind: a bounded close goes on rather than hanging. A task's own
    failure is logged too (it is stopping; nobody else will read it). True if all ended."""
    live = {task for task in tasks if task is not None and not task.done()}
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live, timeout=timeout)
    stuck = [task.get_name() for task in live if not task.done()]
    if stuck:
        logger.error("%s: %s did not stop within %g s of being cancelled; going on without", what, stuck, timeout)
    for task in live:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.error("%s: %s failed while stopping", what, task.get_name(), exc_info=task.exception())
    return not stuck


def _abandon(task: asyncio.Future[T]) -> None:
    """Cancel ``task`` and make sure its outcome, whatever it is, is retrieved (no "exception was
    never retrieved" later)."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


__all__ = ["CLOSE_TIMEOUT_S", "event_set", "stop_tasks", "within"]
