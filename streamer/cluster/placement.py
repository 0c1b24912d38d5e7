"""Which cluster worker a stream goes to, and when one should move: pure policy, no Ray.

A worker's free capacity is what its model is not busy with: the fraction of the last seconds its
inference thread spent in rounds and prompts (measured on the worker, from its round times). A
new stream goes to the worker with the most free capacity that has room (fewer than
``max_streams_per_worker``), the one with fewer streams on a tie, so a worker that just joined
(idle) takes the next streams. When a worker joins, streams are moved to it one at a time while
some worker has at least two streams more than it: each move costs its stream a second or two
of masks, so balance is only pursued where it pays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BUSY_TIE = 0.05  # busy fractions this close count as equal (measurement noise)


@dataclass(frozen=True)
class Load:
    """What placement knows of one worker."""

    worker: str
    streams: int  # placed on it, or being placed
    busy: float  # 0..1


def choose(loads: Sequence[Load], max_streams: int) -> str | None:
    """The worker for one more stream, or None when every worker is full (or there is none)."""
    room = [load for load in loads if load.streams < max_streams]
    if not room:
        return None
    best = min(room, key=lambda load: (round(load.busy / BUSY_TIE), load.streams, load.worker))
    return best.worker


def rebalance(loads: Sequence[Load]) -> tuple[str, str] | None:
    """A move that evens the load: (from worker, to worker), or None when it is even enough."""
    if len(loads) < 2:
        return None
    fullest = max(loads, key=lambda load: (load.streams, load.busy, load.worker))
    emptiest = min(loads, key=lambda load: (load.streams, load.busy, load.worker))
    if fullest.streams - emptiest.streams < 2:
        return None
    return fullest.worker, emptiest.worker


def worker_slots(
    nodes: Sequence[Mapping[str, Any]], workers: str, cpus_per_worker: float
) -> tuple[bool, dict[str, int]]:
    """Whether the workers are GPU ones, and how many each alive node (an entry of ``ray.nodes()``)
    takes: one per GPU (``workers`` gpu, or auto on a cluster with any GPU), else one per node
    with ``cpus_per_worker`` CPUs."""
    alive = [node for node in nodes if node.get("Alive")]
    gpu = workers == "gpu" or (workers == "auto" and any(n["Resources"].get("GPU", 0) >= 1 for n in alive))
    slots = {}
    for node in alive:
        resources = node.get("Resources", {})
        count = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 0) >= cpus_per_worker)
        slots[node["NodeID"]] = count
    return gpu, slots
