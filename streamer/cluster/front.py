"""Past one machine: streams placed on the workers of a Ray cluster, surviving a worker's loss.

The front (this module, in the server's process) is the only public endpoint: viewers, the
websocket, /healthz and /metrics are the same as a local server's (``live/serving.py``). Each worker is
a Ray actor holding one model (one per GPU, or one per node on a CPU cluster): it opens its
streams' cameras itself, tracks, draws and encodes them (``worker.py``), and answers the
front's long poll with encoded packets, status and tracked frames (``reports.py``). The front
relays the packets to its viewers' peer connections, so a viewer's WebRTC session lives at the
front and outlasts any worker (docs/cluster.md says why this beats a worker serving WebRTC).

A supervisor task keeps the workers in step with the cluster: it starts one on every GPU (or CPU
node) that joins, places streams by free capacity (``placement.py``), moves streams to a worker
that joined, and notices when a worker dies: its poll fails, it stops answering for
``heartbeat_timeout_s``, or Ray marks its node dead. Its streams then move to the other workers,
their objects restored under the same ids from each one's last mask; meanwhile prompts get an
``unavailable`` error, and a stream with no room anywhere says so in /healthz and starts when a
worker joins. Viewers keep their peer connection through all of it: packets from the new worker
continue the same RTP stream, starting on a keyframe.

The head is the one machine a Ray cluster cannot lose (its control store; Ray ends every driver
that loses it). While it is silent the streams go on (the front talks to its workers directly) and
/healthz and the viewers say so; silent for ``head_timeout_s``, the cluster is gone: the front
says why and ends (``gone``), cleanly and before Ray would end it, so that a service manager can
start it again once the head is back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..concurrency.waits import event_set, stop_tasks, within
from ..config import AutoConfig, ClusterConfig, EventsConfig, WorkerSettings
from ..errors import BadSourceError, RemoteError, StreamerError, UnavailableError
from ..live.serving import stream_named
from ..live.stream import check_stream_name
from ..metrics import ClusterMetrics, Metrics
from ..model.families import AUTO, model_spec
from ..outputs.hub import Outputs
from ..sources import mask_credentials
from .handle import WorkerHandle
from .join import join_ray
from .placement import choose, rebalance, worker_slots
from .remote_stream import RemoteStream
from .reports import WorkerReport

logger = logging.getLogger(__name__)

SUPERVISE_S = 1.0  # how often the supervisor looks at the cluster
CALL_TIMEOUT_S = 30.0  # a prompt may re-propagate an object: seconds on a CPU worker
PLACE_TIMEOUT_S = 20.0  # opening a camera on a worker, and restoring its objects
RETRY_START_S = 10.0  # after a worker failed to start on a node
RETRY_PLACE_S = 5.0  # after a worker could not open a stream's camera
STARTUP_GRACE_S = 20.0  # streams wait this long at most for workers that start together
KILL_TIMEOUT_S = 5.0  # ending an actor asks the head: not forever when it is away
# Ray ends a driver that has lost the head for this long (seconds; its default is 60): the front
# sets it to its own head_timeout_s plus this margin, so that it always ends first, in order.
RAY_HEAD_TIMEOUT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
RAY_HEAD_MARGIN_S = 30


class ClusterError(StreamerError):
    """The cluster cannot be used: Ray is missing, or its head cannot be reached."""

    code = "cluster"


def check_cluster_source(spec: str) -> None:
    """Refuse what a worker elsewhere cannot open: a viewer's browser camera (its frames would
    cross the network) and a camera plugged into one machine."""
    if spec == "browser":
        raise ClusterError(
            "a browser camera cannot feed a cluster worker (its frames would cross the network): "
            "serve --source browser from a server without --cluster"
        )
    if spec.isdigit() or spec.startswith("webcam:"):
        raise ClusterError(
            f"{spec!r} is a camera plugged into one machine, which a cluster worker elsewhere cannot open: "
            "publish it as an RTSP stream on the network, or serve it without --cluster"
        )


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "--cluster needs Ray, which is not installed: pip install 'sam2-streamer[cluster]'"
        ) from None
    return ray


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: Any) -> None:
    """From another thread: give ``future`` (of ``loop``) its result or error, unless nobody
    waits any more (it is done, or the loop is closed)."""

    def apply() -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed
        loop.call_soon_threadsafe(apply)


def _on_own_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """``fn()`` on a daemon thread: a Ray call that waits on a lost head may never return, and
    must hold neither the event loop nor, at exit, the default executor."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        try:
            result, error = fn(), None
        except Exception as exc:
            result, error = None, exc
        _settle(loop, future, result, error)

    threading.Thread(target=run, name="ray call", daemon=True).start()
    return future


async def _result(ref: Any, timeout: float | None = None) -> Any:
    """An ObjectRef's value, awaited (plain and Ray Client refs alike). Giving up on it (a timeout,
    a cancelled caller) leaves Ray's own future alone: Ray settles it later from its thread, and
    would complain if it had been cancelled under it."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def settled(done: concurrent.futures.Future[Any]) -> None:
        error = done.exception()  # retrieved here, whether or not anyone still waits
        _settle(loop, waiter, None if error is not None else done.result(), error)

    ref.future().add_done_callback(settled)
    return await within(waiter, timeout)


class ClusterPipeline:
    """The streams of a server whose tracking runs on a Ray cluster (what ``--cluster`` serves)."""

    def __init__(
        self,
        config: ClusterConfig,
        settings: WorkerSettings,  # its device is chosen per worker
        *,
        metrics: Metrics | None = None,
        events: EventsConfig | None = None,
    ) -> None:
        if not config.address:
            raise ClusterError("a cluster needs an address: ray://HEAD:10001, auto, or HEAD:6379")
        self.config, self.settings = config, settings
        self.metrics = metrics or Metrics()
        self.cluster_metrics = ClusterMetrics(self.metrics.registry)
        self.outputs = Outputs(self.metrics, events)
        self.on_error: Any = None  # (stream, code, message) -> None, e.g. broadcast to viewers
        self.streams: dict[str, RemoteStream] = {}
        self.workers: dict[str, WorkerHandle] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._start_failed: dict[str, tuple[float, str]] = {}  # worker -> (retry at, why it did not start)
        self._moving: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ray: Any = None
        self._actor_class: Any = None
        self._started_at = 0.0
        self._nodes_call: asyncio.Future[Any] | None = None
        self._head_answered_at = 0.0
        self._head_silent = False  # past heartbeat_timeout_s without an answer: said so once
        self.gone = asyncio.Event()  # set when the head stayed silent for head_timeout_s
        self.gone_reason: ClusterError | None = None

    @property
    def random_weights(self) -> bool:
        return bool(self.settings.model.random_weights)

    @property
    def model(self) -> dict[str, Any]:
        """The workers' model as configured (``auto`` resolves on each worker, by its device)."""
        name = self.settings.model.name
        title = "auto (each worker picks by its device)" if name == AUTO else model_spec(name).title
        return {"name": name, "title": title, "image_size": self.settings.model.image_size, "device": "cluster"}

    # -- connecting -----------------------------------------------------------------------------

    @property
    def hub(self) -> Outputs:
        """Where sinks take every stream's results (measured here, from what the workers send)."""
        return self.outputs

    async def connect(self) -> None:
        """Join the cluster as a driver (off the event loop: it may take seconds)."""
        ray = self._ray = _ray()
        from .worker import StreamWorker

        address = self.config.address
        assert address is not None  # checked when made
        # Ray cannot set its SIGTERM handler from the joining thread, and says so; the server
        # handles SIGTERM itself (and leaves the cluster on it).
        logging.getLogger("ray._private.worker").addFilter(_NoSigtermWarning())
        timeout = self.config.connect_timeout_s
        options = {"namespace": "sam2-streamer", "logging_level": logging.WARNING}
        os.environ[RAY_HEAD_TIMEOUT_ENV] = str(math.ceil(self.config.head_timeout_s) + RAY_HEAD_MARGIN_S)
        try:
            await asyncio.to_thread(join_ray, ray, address, timeout, **options)
        except TimeoutError:
            raise ClusterError(
                f"no Ray cluster answered at {address} within {timeout:g} s: is its head running "
                "(ray start --head) and reachable from here?"
            ) from None
        except Exception as exc:
            detail = str(exc).strip() or type(exc).__name__
            raise ClusterError(f"cannot join the Ray cluster at {address}: {detail}") from None
        self._actor_class = ray.remote(StreamWorker)
        logger.info("joined the Ray cluster at %s", address)

    # -- the Serving interface ------------------------------------------------------------------

    def add_stream(
        self,
        name: str,
        spec: str,
        options: dict | None = None,
        auto: AutoConfig | None = None,
        restream: str | None = None,
        style: str | None = None,
    ) -> RemoteStream:
        """A stream to place on a worker (it waits for one if none has room); ``auto``: its
        automatic tracking, if not the workers' own; ``restream``: an RTSP server its video is
        published to (from here)."""
        self.check_new_name(name)
        check_cluster_source(spec)
        stream = self.streams[name] = RemoteStream(name, spec, options, self, auto, restream, style)
        self.outputs.register(name, stream.metrics)
        if self._task is not None and stream.restream is not None:
            stream.restream.start()
        self._wake.set()
        return stream

    async def open_stream(self, name: str, spec: str, options: dict | None = None) -> RemoteStream:
        """Stream control at run time: placed now, or refused with the worker's reason."""
        try:
            stream = self.add_stream(name, spec, options)
        except ClusterError as exc:
            raise BadSourceError(str(exc)) from None
        worker = self._choose()
        if worker is None:
            return stream  # it waits, and says so in /healthz
        worker.reserved += 1
        stream.placing = asyncio.create_task(self._placing(stream, worker), name=f"place {name}")
        await asyncio.shield(stream.placing)
        if stream.placement != "running":
            note = stream.note or f"cannot open {mask_credentials(spec)!r}"
            await self.remove_stream(name)
            raise BadSourceError(note)
        return stream

    def check_new_name(self, name: str) -> None:
        check_stream_name(name, self.streams)

    def stream(self, name: str | None) -> RemoteStream:
        """The named stream, or the first one when ``name`` is None."""
        return stream_named(self.streams, name)

    async def remove_stream(self, name: str) -> None:
        stream = self.stream(name)
        del self.streams[name]
        if stream.restream is not None:
            await stream.restream.close()
        if stream.placing is not None:
            await stop_tasks(stream.placing, what=f"placing {name}")
        worker = stream.worker
        if worker is not None:
            worker.streams.discard(name)
            with contextlib.suppress(Exception):
                await _result(worker.actor.remove_stream.remote(name), CALL_TIMEOUT_S)
        for other in list(self.workers.values()):  # a placement cut short may have opened it there
            if other is not worker:
                self._fire(other.actor.remove_stream.remote(name))
        stream.metrics.removed = True
        self.outputs.forget(name)
        self.metrics.forget(name)

    def describe(self) -> dict:
        waiting = [s.name for s in self.streams.values() if s.placement == "waiting"]
        workers = [w.describe() for w in self.workers.values()]
        failed = {worker: reason for worker, (_, reason) in self._start_failed.items()}
        silent = time.monotonic() - self._head_answered_at if self._head_silent else None
        head = {"answering": not self._head_silent, "silent_s": None if silent is None else round(silent, 1)}
        cluster = {"address": self.config.address, "workers": workers, "waiting": waiting, "failed_starts": failed}
        return {"cluster": {"ok": not self._head_silent, "head": head, **cluster}}

    def _why_no_room(self) -> str:
        if self.workers:
            return f"all {len(self.workers)} full"
        if self._start_failed:
            worker, (_, reason) = next(reversed(self._start_failed.items()))
            return f"none is ready: worker {worker} did not start: {reason}"
        return "none is ready"

    def start(self) -> None:
        self.outputs.start()
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._supervise(), name="cluster supervisor")
        for stream in self.streams.values():
            if stream.restream is not None:
                stream.restream.start()

    async def stop(self) -> None:
        """Stop supervising, close every worker's streams, leave the cluster. Safe to call twice."""
        await asyncio.gather(*(s.restream.close() for s in self.streams.values() if s.restream is not None))
        tasks = [self._task, self._moving, *self._starting.values()]
        tasks += [s.placing for s in self.streams.values()] + [w.poller for w in self.workers.values()]
        await stop_tasks(*tasks, what="cluster front")
        self._task = self._moving = None
        self._starting.clear()
        workers, self.workers = list(self.workers.values()), {}
        await asyncio.gather(*(self._close_worker(w) for w in workers))
        await self.outputs.stop()
        # Leaving asks the head; without it Ray would wait long, and ends this process anyway.
        if self._ray is not None and self._ray.is_initialized() and not self._head_silent:
            await asyncio.to_thread(self._ray.shutdown)

    # -- calls to a stream's worker -------------------------------------------------------------

    async def call(self, stream: RemoteStream, method: str, *args: Any) -> Any:
        """``method`` of ``stream``'s worker; a coded error back as this package's, a lost worker
        as ``unavailable``."""
        worker = stream.worker
        if stream.placement != "running" or worker is None:
            raise UnavailableError(f"stream {stream.name!r} is not running now: {stream.note}; try again shortly")
        try:
            reply = await _result(getattr(worker.actor, method).remote(stream.name, *args), CALL_TIMEOUT_S)
        except Exception as exc:  # the actor died, or its node is gone or unreachable
            self._wake.set()
            raise UnavailableError(
                f"stream {stream.name!r}'s worker {worker.id} did not answer ({_reason(exc)}); if it was lost, "
                "the stream is moving to another worker: try again in a few seconds"
            ) from None
        if reply[0] == "error":
            raise RemoteError(reply[1], reply[2])
        return reply[1]

    def watch(self, stream: RemoteStream, codec: str, on: bool) -> None:
        """A codec's first viewer came (or its last left): its worker starts (or stops) sending it."""
        if stream.placement == "running" and stream.worker is not None:
            self._fire(stream.worker.actor.watch.remote(stream.name, codec, on))

    def keyframe(self, stream: RemoteStream, codec: str) -> None:
        if stream.placement == "running" and stream.worker is not None:
            self._fire(stream.worker.actor.keyframe.remote(stream.name, codec))

    @staticmethod
    def _fire(ref: Any) -> None:
        """A call whose answer nobody waits for (its failure shows as the worker's, elsewhere)."""
        ref.future().add_done_callback(lambda future: future.exception())

    # -- supervision ----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        self._head_answered_at = time.monotonic()
        while True:
            try:
                nodes = await self._head_nodes()
                if nodes is not None:
                    await self._discover(nodes)
                self._place_waiting()
                self._rebalance()
                self._update_metrics()
            except Exception:  # a bug, or Ray's control plane away a moment: look again soon
                logger.exception("cluster supervision failed; trying again")
            await event_set(self._wake, SUPERVISE_S)
            self._wake.clear()

    async def _head_nodes(self) -> list[dict] | None:
        """The cluster's nodes as its head knows them; None while the head does not answer (after
        ``head_timeout_s`` of that, the cluster is gone: ``gone`` is set)."""
        if self._nodes_call is None:
            self._nodes_call = _on_own_thread(self._ray.nodes)
        done, _ = await asyncio.wait({self._nodes_call}, timeout=SUPERVISE_S)
        nodes: list[dict] | None = None
        if done:
            call, self._nodes_call = self._nodes_call, None
            if call.exception() is None:
                nodes = call.result()
        now = time.monotonic()
        if nodes is not None:
            if self._head_silent:
                logger.warning("the Ray head at %s answers again", self.config.address)
                self._head_silent = False
            self._head_answered_at = now
            return nodes
        silent = now - self._head_answered_at
        if silent >= self.config.heartbeat_timeout_s and not self._head_silent:
            self._head_silent = True
            message = (
                f"the cluster's head ({self.config.address}) does not answer: streams go on on their workers, "
                f"but if it stays away for {self.config.head_timeout_s:g} s the server shuts down"
            )
            logger.warning("%s", message)
            for name in self.streams:
                if self.on_error is not None:
                    self.on_error(name, ClusterError.code, message)
        if silent >= self.config.head_timeout_s and not self.gone.is_set():
            self._head_silent = True
            self.gone_reason = ClusterError(
                f"the Ray head at {self.config.address} has not answered for {silent:.0f} s: the cluster is gone "
                "(Ray ends its workers too). Start the head again (ray start --head), then this server; "
                "a service manager that restarts it on failure does the second"
            )
            self.gone.set()
        return None

    async def _discover(self, nodes: list[dict]) -> None:
        """Workers for every GPU (or CPU node) that is alive; lost ones for nodes that are not."""
        alive = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        for worker in list(self.workers.values()):
            if worker.node not in alive:
                await self._lost(worker, "its node left the cluster")
        prefixes = {node_id[:8] for node_id in alive}
        for worker_id in [w for w in self._start_failed if w.split(":")[0] not in prefixes]:
            logger.info("worker %s's node left the cluster: no longer retrying to start it", worker_id)
            del self._start_failed[worker_id]
        gpus, slots = worker_slots(nodes, self.config.workers, self.config.cpus_per_worker)
        now = time.monotonic()
        for node_id, count in slots.items():
            node = alive[node_id]
            for slot in range(count):
                worker_id = f"{node_id[:8]}:{slot}"
                busy = worker_id in self.workers or worker_id in self._starting
                if busy or now < self._start_failed.get(worker_id, (0.0, ""))[0]:
                    continue
                task = asyncio.create_task(self._start_worker(worker_id, node, gpus), name=f"start {worker_id}")
                self._starting[worker_id] = task

    async def _start_worker(self, worker_id: str, node: dict, gpu: bool) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        resources = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": self.config.cpus_per_worker}
        settings = replace(self.settings, device="cuda" if gpu else "cpu")
        actor = self._actor_class.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            max_restarts=0,
            name=f"sam2-worker-{worker_id}-{time.time_ns()}",
            **resources,
        ).remote(settings)
        worker = WorkerHandle(worker_id, node["NodeID"], node.get("NodeManagerAddress", "?"), actor)
        try:
            info = await _result(actor.start.remote(), self.config.start_timeout_s)
        except asyncio.CancelledError:
            await self._kill(actor)
            raise
        except Exception as exc:
            reason = _reason(exc)
            logger.warning("worker %s on %s did not start (%s); retrying", worker_id, worker.address, reason)
            self._start_failed[worker_id] = (time.monotonic() + RETRY_START_S, reason)
            await self._kill(actor)
            return
        finally:
            self._starting.pop(worker_id, None)
        worker.ready, worker.last_reply, worker.pid = True, time.monotonic(), info["pid"]
        worker.device = info["device"]
        self._start_failed.pop(worker_id, None)
        self.workers[worker_id] = worker
        worker.poller = asyncio.create_task(self._poll(worker), name=f"poll {worker_id}")
        load_s = info["load_s"]
        logger.info("worker %s ready on %s (%s, model in %.1f s)", worker_id, worker.address, worker.device, load_s)
        self._wake.set()

    def _choose(self) -> WorkerHandle | None:
        ready = [w for w in self.workers.values() if w.ready and not w.dead]
        chosen = choose([w.load() for w in ready], self.config.max_streams_per_worker)
        return None if chosen is None else self.workers[chosen]

    def _place_waiting(self) -> None:
        now = time.monotonic()
        # Workers that start together: spread first placements over them at once, not later by moves.
        grace = bool(self._starting) and now - self._started_at < STARTUP_GRACE_S
        for stream in self.streams.values():
            if stream.placement == "running" or stream.placing is not None or now < stream.retry_at:
                continue
            if grace and stream.epoch == 0:
                continue
            worker = self._choose()
            if worker is None:
                why = self._why_no_room()
                stream.unplaced("waiting", f"no worker has room for it ({why}); it starts when one joins")
                continue
            worker.reserved += 1
            stream.placing = asyncio.create_task(self._placing(stream, worker), name=f"place {stream.name}")

    async def _placing(self, stream: RemoteStream, worker: WorkerHandle) -> None:
        try:
            await self._place(stream, worker)
        finally:
            worker.reserved -= 1
            stream.placing = None

    async def _place(self, stream: RemoteStream, worker: WorkerHandle) -> bool:
        """Open ``stream`` on ``worker``, with its objects and its viewers' codecs."""
        restore, codecs = stream.restore_masks(), stream.watched()
        labels = dict(stream.last_tracked.labels) if stream.last_tracked is not None else {}
        args = (stream.name, stream.spec, stream.options, restore, codecs, stream.auto, labels, stream.styles)
        try:
            reply = await _result(worker.actor.add_stream.remote(*args), PLACE_TIMEOUT_S)
        except Exception as exc:
            await self._lost(worker, f"placing {stream.name} failed: {_reason(exc)}")
            return False
        if reply[0] == "error":
            logger.warning("worker %s cannot open %s: %s", worker.id, stream.name, reply[2])
            stream.unplaced(stream.placement, f"worker {worker.id} cannot open it: {reply[2]}")
            stream.retry_at = time.monotonic() + RETRY_PLACE_S
            return False
        if stream.name not in self.streams:  # removed meanwhile
            self._fire(worker.actor.remove_stream.remote(stream.name))
            return False
        if worker.dead:  # lost meanwhile: the stream goes elsewhere
            return False
        worker.streams.add(stream.name)
        stream.placed(worker)
        for codec in set(stream.watched()) - set(codecs):  # a viewer came while it was being placed
            self.watch(stream, codec, True)
        if stream.lost_at is not None:  # its outage ends with the new worker's first report of it
            self.cluster_metrics.failovers.inc()
        objects = sorted(restore or {})
        logger.info("stream %s runs on worker %s%s", stream.name, worker.id, f", objects {objects}" if objects else "")
        return True

    def _rebalance(self) -> None:
        """Move one stream to a worker that has far fewer, when nothing else is moving."""
        if self._moving is not None or any(s.placement != "running" for s in self.streams.values()):
            return
        ready = [w for w in self.workers.values() if w.ready and not w.dead]
        move = rebalance([w.load() for w in ready])
        if move is not None:
            source, target = self.workers[move[0]], self.workers[move[1]]
            name = sorted(source.streams)[-1]
            self._moving = asyncio.create_task(self._move(self.streams[name], source, target), name=f"move {name}")

    async def _move(self, stream: RemoteStream, source: WorkerHandle, target: WorkerHandle) -> None:
        try:
            logger.info("moving stream %s from worker %s to %s (rebalancing)", stream.name, source.id, target.id)
            target.reserved += 1
            stream.unplaced("moving", f"moving to worker {target.id}, which joined")
            source.streams.discard(stream.name)
            try:
                await _result(source.actor.remove_stream.remote(stream.name), CALL_TIMEOUT_S)
            except Exception as exc:
                await self._lost(source, f"removing {stream.name} failed: {_reason(exc)}")
            if await self._place(stream, target):
                self.cluster_metrics.moves.inc()
        finally:
            target.reserved -= 1
            self._moving = None
            self._wake.set()

    async def _poll(self, worker: WorkerHandle) -> None:
        """Collect the worker's reports until it is lost."""
        while True:
            wanted = [name for name in worker.streams if self._results_wanted(name)]
            try:
                blob = await _result(worker.actor.poll.remote(wanted), self.config.heartbeat_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # timed out (no answer), actor died, node gone
                await self._lost(worker, _reason(exc))
                return
            worker.last_reply = time.monotonic()
            worker.bytes_in += len(blob)
            self.cluster_metrics.worker_bytes.labels(worker.id).inc(len(blob))
            try:
                await self._dispatch(worker, WorkerReport.unpack(blob))
            except Exception:  # a bug in handling one report: never stop listening to the worker
                logger.exception("worker %s: a report could not be handled", worker.id)

    def _results_wanted(self, name: str) -> bool:
        return any(sink.wants(name) is not None for sink in self.outputs.sinks)

    async def _dispatch(self, worker: WorkerHandle, report: WorkerReport) -> None:
        worker.busy, worker.round_ms = report.busy, report.round_ms
        mine = {name: s for name, s in self.streams.items() if s.worker is worker}
        for packet in report.packets:
            stream = mine.get(packet.stream)
            if stream is not None:
                self._back(stream)
                await stream.receive_packet(packet)
        for compact in report.tracked:
            stream = mine.get(compact.stream)
            if stream is not None:
                self._back(stream)
                stream.last_tracked = compact
                self.outputs.offer(compact.tracked())
        for entry in report.streams:
            stream = mine.get(entry.name)
            if stream is not None:
                stream.receive_status(entry.status)
                stream.metrics.apply(entry.metrics)
        for name, code, message in report.errors:
            if name in mine and self.on_error is not None:
                self.on_error(name, code, message)

    def _back(self, stream: RemoteStream) -> None:
        """Video or masks of a moved stream again: its outage, as its viewers and subscribers saw it,
        ran from the lost worker's last report to now."""
        if stream.lost_at is not None:
            self.cluster_metrics.failover_s.observe(time.monotonic() - stream.lost_at)
            stream.lost_at = None

    async def _lost(self, worker: WorkerHandle, reason: str) -> None:
        """A worker is gone: its streams move to the others (or wait for room)."""
        if worker.dead:
            return
        worker.dead = True
        self.workers.pop(worker.id, None)
        names = sorted(worker.streams)
        logger.warning("worker %s on %s lost (%s); moving its streams %s", worker.id, worker.address, reason, names)
        now = time.monotonic()
        last_report = worker.last_reply or now
        self.cluster_metrics.failover_detection_s.observe(now - last_report)
        for name in names:
            stream = self.streams.get(name)
            if stream is not None and stream.worker is worker:
                stream.unplaced("moving", f"its worker {worker.id} was lost ({reason}); moving to another worker")
                if stream.lost_at is None:  # lost again before it came back: the outage goes on
                    stream.lost_at = last_report
        worker.streams.clear()
        self.cluster_metrics.forget(worker.id)
        if worker.poller is not None and worker.poller is not asyncio.current_task():
            worker.poller.cancel()
        await self._kill(worker.actor)
        self._wake.set()

    async def _close_worker(self, worker: WorkerHandle) -> None:
        with contextlib.suppress(Exception):
            await _result(worker.actor.stop.remote(), 10.0)
        await self._kill(worker.actor)

    async def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):
            await within(_on_own_thread(lambda: self._ray.kill(actor, no_restart=True)), KILL_TIMEOUT_S)

    def _update_metrics(self) -> None:
        metrics = self.cluster_metrics
        metrics.workers.set(sum(w.ready and not w.dead for w in self.workers.values()))
        metrics.streams_waiting.set(sum(s.placement != "running" for s in self.streams.values()))
        for worker in self.workers.values():
            metrics.worker_streams.labels(worker.id).set(len(worker.streams))
            metrics.worker_busy.labels(worker.id).set(worker.busy)
            metrics.worker_round_s.labels(worker.id).set(worker.round_ms / 1000)


class _NoSigtermWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _reason(exc: BaseException) -> str:
    """A short account of why a call to a worker failed: what the worker raised, if it did."""
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's own exception
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
