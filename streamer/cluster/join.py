"""Joining a Ray cluster in bounded time, and leaving no half-made join behind.

Ray retries an unreachable head for as long as it is left to, so ``ray.init`` runs on a thread of
its own and is given up after a timeout. Ray's connection is process-wide state that allows one
join at a time, so joins here are serial, and a join given up on that later succeeds disconnects
at once: the next join starts from a clean process instead of failing on the old one's state.

A Ray Client join (``ray://``) can wait without end for the head's client server (which starts a
server process per client and may lose it). Closing the client ends that wait, so such a join is
tried again, in attempts of at most ``CLIENT_ATTEMPT_S``, until the timeout.

Light on purpose: the doctor uses it without importing torch.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

CLIENT_PREFIX = "ray://"
CLIENT_ATTEMPT_S = 20.0  # a Ray Client join takes 1-3 s here; one that takes longer has hung

_joining = threading.Lock()  # held by the thread in ray.init, until it has joined or cleaned up


def join_ray(ray: Any, address: str, timeout: float, **options: Any) -> None:
    """``ray.init(address=address, **options)``; raises ``TimeoutError`` if it has not joined
    after ``timeout`` seconds, or what ``ray.init`` raised."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if not _joining.acquire(timeout=max(left, 0.0)):
            raise TimeoutError(
                f"no Ray cluster answered at {address} within {timeout:g} s "
                "(an earlier join in this process had not ended)"
            )
        attempt = _Attempt(ray, address, options)  # it releases _joining when its ray.init ends
        left = deadline - time.monotonic()
        wait = min(left, CLIENT_ATTEMPT_S) if attempt.client else left
        if attempt.joined_within(wait):
            return
        if not attempt.client or deadline - time.monotonic() < 1.0:
            raise TimeoutError(f"no Ray cluster answered at {address} within {timeout:g} s")
        logger.warning("the Ray Client server at %s did not answer within %g s; trying again", address, wait)


class _Attempt:
    """One ``ray.init`` on its own thread (a daemon: it dies with the process)."""

    def __init__(self, ray: Any, address: str, options: dict[str, Any]) -> None:
        self._ray, self.address = ray, address
        self.client = address.startswith(CLIENT_PREFIX)  # a Ray Client join
        self._joined: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._decided = threading.Lock()  # the joiner's success and the caller's giving up, in one order
        self._abandoned = False
        self._thread = threading.Thread(target=self._join, args=(options,), name="ray join", daemon=True)
        self._thread.start()

    def _join(self, options: dict[str, Any]) -> None:
        try:
            try:
                self._ray.init(address=self.address, **options)
            except BaseException as exc:  # ConnectionError, a version mismatch, a bad address...
                if self.client:
                    # A failed Ray Client join leaves Ray in client mode, and a later join to a
                    # head's own address then fails inside Ray (an AssertionError, no message).
                    self._ray.util.client.ray.disconnect()
                self._joined.set_exception(exc)
                return
            with self._decided:
                if not self._abandoned:
                    self._joined.set_result(None)
                    return
            logger.info("a join of %s given up on has ended; leaving that cluster", self.address)
            self._ray.shutdown()
        finally:
            _joining.release()

    def joined_within(self, timeout: float) -> bool:
        """Whether it joined within ``timeout`` (raises what ``ray.init`` raised). If not, it is
        given up: it leaves the cluster should it join later, and a Ray Client join is ended now,
        by closing its client (a join to a head's own address cannot be ended so: it ends when Ray
        gives up, and the next join waits for that)."""
        try:
            self._joined.result(max(timeout, 0.0))
            return True
        except concurrent.futures.TimeoutError:
            pass
        with self._decided:
            if self._joined.done():  # joined, or failed, just now
                self._joined.result()
                return True
            self._abandoned = True
        if self.client:
            self._close_client_channel()
            self._thread.join(5.0)
        return False

    def _close_client_channel(self) -> None:
        """Close the joining client's gRPC channel: the calls in flight fail, and Ray's own
        clean-up of a failed join disconnects the client (disconnecting from here would race the
        next attempt's new client, which shares Ray's default context)."""
        worker = getattr(self._ray.util.client.ray.get_context(), "client_worker", None)
        channel = getattr(worker, "channel", None)
        if channel is not None:
            channel.close()
