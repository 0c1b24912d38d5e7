"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head with no
CPUs (nothing is placed there, so the front's own node can never be the one killed) and worker
nodes of one CPU each, added and killed as a test needs. No node has a GPU unless a test gives it
one (Ray would otherwise count this machine's GPUs on every node, and the front would start GPU
workers where the tests expect CPU ones). Every node is on 127.0.0.1 (see
``conftest.RAY_LOOPBACK``, which must be in the environment before Ray is imported).
"""

from __future__ import annotations

import glob
import os
import socket

from .conftest import RAY_LOOPBACK


class LocalCluster:
    """The head, and worker nodes of ``cpus`` CPUs and ``gpus`` GPUs each."""

    def __init__(self) -> None:
        os.environ.update(RAY_LOOPBACK)  # for a script that imports this before Ray (tests/webrtc_scenarios.py)
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray was imported before RAY_LOOPBACK was set: not on loopback"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.client_port = probe.getsockname()[1]
        head = {"num_cpus": 0, "num_gpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False}
        head["ray_client_server_port"] = self.client_port
        # Ray marks a killed node dead after missing its health checks for ~15 s by default;
        # sooner here, so that one test's killed nodes are gone before the next test starts.
        # (The front does not wait for that: it finds a lost worker itself, in about 2 s.)
        head["_system_config"] = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
        self.cluster = Cluster(initialize_head=True, head_node_args=head)

    @property
    def address(self) -> str:
        """The head's GCS (what ``auto`` finds on a cluster node)."""
        return self.cluster.address

    @property
    def client_address(self) -> str:
        """The head's Ray Client server (``ray://``, for a front outside the cluster)."""
        return f"ray://127.0.0.1:{self.client_port}"

    def client_server_logs(self, lines: int = 30) -> str:
        """The last lines of the head's Ray Client server logs (its proxy and one server per
        client): what a failed Ray Client join leaves to read."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.cluster.head_node.get_logs_dir_path(), "ray_client_server*"))):
            with open(path, errors="replace") as log:
                tail = log.readlines()[-lines:]
            found.append(f"--- {os.path.basename(path)}\n{''.join(tail)}")
        return "\n".join(found) or "(no Ray Client server logs)"

    def add_node(self, cpus: int = 1, gpus: int = 0):  # type: ignore[no-untyped-def]
        node = self.cluster.add_node(num_cpus=cpus, num_gpus=gpus, node_ip_address="127.0.0.1")
        self.cluster.wait_for_nodes()
        return node

    def kill_node(self, node) -> None:  # type: ignore[no-untyped-def]
        """As a machine that loses power: every process of the node killed at once."""
        self.cluster.remove_node(node, allow_graceful=False)

    def node_of(self, node_id: str):  # type: ignore[no-untyped-def]
        return next(node for node in self.cluster.worker_nodes if node.node_id == node_id)

    def clear(self) -> None:
        """Remove every worker node; return once Ray agrees (the next test starts with the bare head)."""
        for node in list(self.cluster.worker_nodes):
            self.cluster.remove_node(node, allow_graceful=False)
        self.cluster.wait_for_nodes(timeout=60)

    def shutdown(self) -> None:
        self.cluster.shutdown()
