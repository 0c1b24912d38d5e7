"""One worker as the front sees it: its actor, where it runs, its streams and its load."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .placement import Load


@dataclass(eq=False)
class WorkerHandle:
    """One worker as the front sees it."""

    id: str
    node: str  # Ray node id
    address: str  # the node's IP
    actor: Any
    device: str = "?"  # what its model runs on, as it says once started: "cuda:0 (NVIDIA H200, bfloat16)"
    pid: int | None = None  # the actor's process, on its node
    ready: bool = False
    dead: bool = False
    streams: set[str] = field(default_factory=set)
    reserved: int = 0  # streams being placed on it
    busy: float = 0.0
    round_ms: float = 0.0
    bytes_in: int = 0
    last_reply: float = 0.0
    poller: asyncio.Task[None] | None = None

    def load(self) -> Load:
        return Load(self.id, len(self.streams) + self.reserved, self.busy)

    def describe(self) -> dict:
        return {
            "id": self.id,
            "node": self.node,
            "address": self.address,
            "device": self.device,
            "pid": self.pid,
            "ready": self.ready,
            "streams": sorted(self.streams),
            "busy": round(self.busy, 3),
            "round_ms": round(self.round_ms, 1),
        }
