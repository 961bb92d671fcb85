"""A Redis Cluster of embedded servers: primaries and replicas on loopback, from the same binary.

The tests run every Redis-touching behaviour against one of these as well as
against a single server, and `deploy/local` runs the whole topology on one.
Each node is an `EmbeddedRedis` with cluster mode on; `valkey-cli --cluster
create` joins them and assigns one replica to each primary.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from weathernote.errors import EmbeddedRedisError
from weathernote.redis.embedded import EmbeddedRedis, binary_path

# The cluster bus listens on port + 10000, so a node's port must leave room for it.
_MAX_PORT = 55535


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_cluster_ports(host: str, count: int, start: int = 30000) -> list[int]:
    """`count` ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port > _MAX_PORT:
            raise EmbeddedRedisError("no free ports for a cluster")
        if _port_free(host, port) and _port_free(host, port + 10000):
            ports.append(port)
        port += 1
    return ports


def _command(host: str, port: int, *args: str, timeout: float = 2.0) -> str:
    """One command through valkey-cli, its raw reply as text."""
    return subprocess.run(
        [str(binary_path("valkey-cli")), "-h", host, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    ).stdout


@dataclass
class Node:
    """One server of the cluster and its role as last seen."""

    server: EmbeddedRedis
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.server.host}:{self.port}/0"


class EmbeddedCluster:
    """`primaries` primaries with `replicas` replicas each, started and joined on loopback.

    `node_timeout_ms` is how long a primary may be unreachable before its
    replica takes over: short in the failover tests.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        host: str = "127.0.0.1",
        ports: list[int] | None = None,
        node_timeout_ms: int = 2000,
        persistent: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.primaries = primaries
        self.replicas = replicas
        count = primaries * (1 + replicas)
        self.ports = ports or free_cluster_ports(host, count)
        if len(self.ports) != count or max(self.ports) > _MAX_PORT:
            raise EmbeddedRedisError(f"a cluster of {count} nodes needs {count} ports ≤ {_MAX_PORT}")
        self.nodes = [
            Node(
                EmbeddedRedis(
                    self.data_dir / f"node-{port}",
                    host=host,
                    port=port,
                    persistent=persistent,
                    extra_config={
                        "cluster-enabled": "yes",
                        "cluster-config-file": "nodes.conf",
                        "cluster-node-timeout": str(node_timeout_ms),
                        # a replica whose primary is gone takes over however stale it is
                        "cluster-replica-validity-factor": "0",
                        # the rest of the cluster keeps serving the slots it still has
                        "cluster-require-full-coverage": "no",
                        "cluster-allow-reads-when-down": "no",
                        "appendonly": "no",
                        "timeout": "0",
                    },
                ),
                port,
            )
            for port in self.ports
        ]

    @property
    def url(self) -> str:
        """A URL of one running node: enough for a cluster client to discover the rest."""
        running = self.running()
        return (running or self.nodes)[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.server.start()
        addresses = [f"{self.host}:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [
                str(binary_path("valkey-cli")),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            self.stop()
            raise EmbeddedRedisError(f"cluster create failed:\n{created.stdout}\n{created.stderr}")
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every running node sees the cluster ok with all slots served and every replica synced."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise EmbeddedRedisError("cluster did not become healthy in time")
            time.sleep(0.1)

    def healthy(self) -> bool:
        running = [node for node in self.nodes if node.server.running]
        for node in running:
            info = _command(self.host, node.port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
            replication = _command(self.host, node.port, "INFO", "replication")
            if "role:slave" in replication and "master_link_status:up" not in replication:
                return False
        return sum(self.role(node) == "role:master" for node in running) == self.primaries

    def role(self, node: Node) -> str:
        """ "role:master" or "role:slave", as the node says."""
        for line in _command(self.host, node.port, "INFO", "replication").splitlines():
            if line.startswith("role:"):
                return line.strip()
        return "role:unknown"

    def primary_of(self, key: str) -> Node:
        """The running node that serves `key` now."""
        slot = int(_command(self.host, self.running()[0].port, "CLUSTER", "KEYSLOT", key).strip())
        for node in self.running():
            if self.role(node) != "role:master":
                continue
            for line in _command(self.host, node.port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for assigned in fields[8:]:
                    low, _, high = assigned.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return node
        raise EmbeddedRedisError(f"no running primary serves slot {slot}")

    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.server.running]

    def kill(self, node: Node) -> None:
        """SIGKILL one node, as a crash would."""
        node.server.kill()

    def restart(self, node: Node) -> None:
        """Start a killed node again: it rejoins the cluster (as a replica if it lost its slots)."""
        node.server.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()
