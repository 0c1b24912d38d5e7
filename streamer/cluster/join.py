"""Joining a Ray cluster in bounded time: Ray retries an unreachable head for as long as it is left
to, so ``ray.init`` runs on a thread of its own (which dies with the process) and is given up
after a timeout. Light on purpose: the doctor uses it without importing torch."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any


def join_ray(ray: Any, address: str, timeout: float, **options: Any) -> None:
    """``ray.init(address=address, **options)``; raises ``TimeoutError`` if it has not joined
    after ``timeout`` seconds, or what ``ray.init`` raised."""
    joined: concurrent.futures.Future[None] = concurrent.futures.Future()

    def join() -> None:
        try:
            ray.init(address=address, **options)
            joined.set_result(None)
        except BaseException as exc:  # ConnectionError, a version mismatch, a bad address...
            joined.set_exception(exc)

    threading.Thread(target=join, name="ray join", daemon=True).start()
    try:
        joined.result(timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no Ray cluster answered at {address} within {timeout:g} s") from None
