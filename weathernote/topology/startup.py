"""Starting the local topology: in which order the parts start (the simulator while the cluster
forms, then the instances, then nginx in front of them), how each is configured, and when each
counts as up. `Topology` decides when to start; this module knows how."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from weathernote.redis.cluster import EmbeddedCluster, free_cluster_ports
from weathernote.simulator.process import SimulatorError, SimulatorProcess
from weathernote.topology.errors import TopologyError
from weathernote.topology.nginx import check_config, instance_route, nginx_command, write_config
from weathernote.topology.processes import (
    HOST,
    Proc,
    Processes,
    free_ports,
    http_status,
    port_free,
    start_ticks,
    wait_until,
)
from weathernote.topology.state import StateDir, instance_name


class Startup:
    """Starts the parts of one topology and records each in its state directory.

    `cluster` is the cluster object formed by this process, kept so that a start that fails
    half-way (or the `stop` after it) can stop even nodes not recorded yet.
    """

    def __init__(self, files: StateDir, processes: Processes, *, python: str, nginx: str) -> None:
        self.files = files
        self.processes = processes
        self.python = python
        self.nginx = nginx
        self.cluster: EmbeddedCluster | None = None

    def run(self, options: dict[str, Any], timeout: float) -> None:
        """Everything, each part waited for, within `timeout` (each wait gets at least 5 s)."""
        lb_port = int(options["port"])
        if not port_free(lb_port):
            raise TopologyError(f"port {lb_port} is in use: choose another with --port")
        if not Path(self.nginx).exists():
            raise TopologyError(f"nginx not found ({self.nginx}): `make nginx` or apt-get install nginx")
        directory = self.files.dir
        directory.mkdir(parents=True, exist_ok=True)
        logs = directory / "logs"
        logs.mkdir(exist_ok=True)
        for old in logs.glob("*.log"):
            old.unlink()
        self.files.state = {
            "version": 1,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "state_dir": str(directory),
            "options": options,
            "processes": [],
            "instances": [],
            "load_balancer": {"url": f"http://{HOST}:{lb_port}", "port": lb_port},
        }
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(5.0, deadline - time.monotonic())

        # the upstream simulator starts (a Python process takes a moment) while the cluster forms
        simulator = self._spawn_simulator(options["upstream_url"])
        self._start_cluster(int(options.get("primaries", 3)), int(options.get("replicas", 1)), left)
        if simulator is not None:
            self._simulator_ready(simulator, left())
        self._start_instances(int(options["instances"]), left)
        self._start_nginx(left)

    def spawn_instance(self, index: int, port: int) -> Proc:
        """`weathernote serve` as instance `index` (0-based) on `port`, recorded (not saved)."""
        command = [self.python, "-m", "weathernote", "serve"]
        return self._spawn(instance_name(index), command, self._instance_env(index, port), port)

    def wait_instance(self, index: int, timeout: float) -> None:
        """Until instance `index` answers /ready on its own port."""
        proc = self.files.proc(instance_name(index))
        ready = partial(self.processes.answers, proc, f"http://{HOST}:{proc.port}/ready")
        wait_until(ready, timeout, f"instance {index + 1} not ready")

    def wait_routed(self, index: int, timeout: float) -> None:
        """Until nginx's route to instance `index` answers /ready (nginx may have skipped it)."""
        url = instance_route(self.files.url, index)
        wait_until(lambda: http_status(url) == 200, timeout, f"instance {index + 1} not ready through nginx")

    def stop_cluster(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()

    # ------------------------------------------------------------ the parts, in order

    def _spawn_simulator(self, upstream_url: str | None) -> SimulatorProcess | None:
        if upstream_url:
            self.files.state["upstream"] = {"url": upstream_url, "simulated": False}
            return None
        log = self.files.dir / "logs" / "simulator.log"
        simulator = SimulatorProcess(host=HOST, log=log, cwd=self.files.dir, detached=True, python=self.python)
        self.files.record(self.processes.adopt("simulator", simulator.spawn(), log, None))
        self.files.save()
        return simulator

    def _simulator_ready(self, simulator: SimulatorProcess, timeout: float) -> None:
        try:
            simulator.wait_ready(timeout)
        except SimulatorError as error:
            raise TopologyError(f"the upstream simulator did not start: {error}") from None
        self.files.record(replace(self.files.proc("simulator"), port=simulator.port))
        self.files.state["upstream"] = {"url": simulator.url, "simulated": True}
        self.files.save()

    def _start_cluster(self, primaries: int, replicas: int, left: Callable[[], float]) -> None:
        """`primaries` primaries with `replicas` replicas each (3 and 1 by default); ports (and
        bus ports +10000) from a random base, so two topologies or test sessions starting
        together rarely pick the same ones."""
        cluster_dir = self.files.dir / "cluster"
        shutil.rmtree(cluster_dir, ignore_errors=True)
        for attempt in range(3):
            ports = free_cluster_ports(HOST, primaries * (1 + replicas), start=random.randrange(31000, 50000))
            if self._reserved() & {*ports, *(p + 10000 for p in ports)}:
                continue
            cluster = EmbeddedCluster(
                cluster_dir / f"try-{attempt}", primaries=primaries, replicas=replicas, ports=ports, persistent=False
            )
            self.cluster = cluster
            try:
                cluster.start(timeout=left())
                break
            except Exception:
                cluster.stop()
                if attempt == 2:
                    raise
        else:
            raise TopologyError("no free ports for the cluster")
        for node in cluster.nodes:
            pid = int(node.server.port_file.read_text().split()[1])
            log = str(node.server.data_dir / "valkey.log")
            self.files.record(Proc(f"redis-{node.port}", pid, start_ticks(pid), log, node.port))
        self.files.state["redis"] = {"url": cluster.url, "nodes": cluster.urls}
        self.files.save()

    def _start_instances(self, count: int, left: Callable[[], float]) -> None:
        """All started together, then each waited for."""
        reserved = self._reserved()
        ports = [p for p in free_ports(count + 1 + len(reserved)) if p not in reserved][:count]
        self.files.secret()  # created before any instance reads it, so that they all find the same one
        for index, port in enumerate(ports):
            self.files.state["instances"].append({"index": index, "url": f"http://{HOST}:{port}", "port": port})
            self.spawn_instance(index, port)
        self.files.save()
        for index in range(count):
            self.wait_instance(index, left())

    def _start_nginx(self, left: Callable[[], float]) -> None:
        prefix = self.files.dir / "nginx"
        lb_url = self.files.url
        write_config(prefix, self.files.port, self.files.instance_ports)
        check_config(self.nginx, prefix)
        nginx = self._spawn("nginx", nginx_command(self.nginx, prefix), os.environ.copy(), self.files.port)
        self.files.save()
        wait_until(partial(self.processes.answers, nginx, f"{lb_url}/nginx-health"), left(), "nginx did not start")
        for index in range(len(self.files.instance_ports)):
            self.wait_routed(index, left())
        wait_until(lambda: http_status(f"{lb_url}/ready") == 200, left(), "the load balancer not ready")

    # ------------------------------------------------------------ processes

    def _reserved(self) -> set[int]:
        """Ports this topology's own processes must not take: its nginx's, and those the rest of a
        larger setup will bind later (another region's nginx, the front)."""
        return {self.files.port, *self.files.state["options"].get("reserved_ports", [])}

    def _instance_env(self, index: int, port: int) -> dict[str, str]:
        options = self.files.state["options"]
        env = {name: value for name, value in os.environ.items() if not name.startswith("WEATHERNOTE_")}
        env.update(
            {
                "WEATHERNOTE_REDIS_URL": self.files.redis_url,
                "WEATHERNOTE_UPSTREAM_URL": self.files.upstream_url,
                "WEATHERNOTE_CLIENT_ID_SECRET": self.files.secret(),
                "WEATHERNOTE_TRUSTED_PROXIES": HOST,
                "WEATHERNOTE_DRAIN_SECONDS": str(options["drain_seconds"]),
                "WEATHERNOTE_HOST": HOST,
                "WEATHERNOTE_PORT": str(port),
                "WEATHERNOTE_DATA_DIR": str(self.files.dir / instance_name(index)),
                "WEATHERNOTE_LOG_LEVEL": str(options["log_level"]),
            }
        )
        if options["prewarm_interval_seconds"] is not None:
            env["WEATHERNOTE_PREWARM_INTERVAL_SECONDS"] = str(options["prewarm_interval_seconds"])
        env.update(options["env"])
        return env

    def _spawn(self, name: str, command: list[str], env: dict[str, str], port: int) -> Proc:
        log = self.files.dir / "logs" / f"{name}.log"
        proc = self.processes.spawn(name, command, env, log=log, cwd=self.files.dir, port=port)
        self.files.record(proc)
        return proc
