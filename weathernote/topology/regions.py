"""Two or more regions side by side on loopback, and one nginx in front that fails over.

Each region is a whole `Topology` in a directory of its own: its Redis Cluster, its upstream
simulator (the upstream as that region's egress address sees it: budgets are counted per
address), its instances and its nginx. The client-id secret is the one thing they share; nothing
on the request path is. The front sends everything to the first region's nginx and to the next
one's (`backup`) when it fails: it stands for the geo DNS of a deployment (docs/regions.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from weathernote.topology.errors import TopologyError
from weathernote.topology.nginx import check_config, nginx_binary, nginx_command, region_route, write_front_config
from weathernote.topology.processes import HOST, Proc, Processes, http_status, port_free, wait_until
from weathernote.topology.state import StateDir, default_state_dir
from weathernote.topology.topology import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_INSTANCES,
    DEFAULT_PORT,
    DEFAULT_PRIMARIES,
    DEFAULT_REPLICAS,
    Topology,
)

REGIONS_FILE = "regions.json"
FRONT = "front-nginx"


def region_names(count: int) -> list[str]:
    return [f"region-{index + 1}" for index in range(count)]


def has_regions(state_dir: Path | str | None) -> bool:
    """Whether `state_dir` holds regions and their front (`up --regions N`), not one topology."""
    return (Path(state_dir or default_state_dir()) / REGIONS_FILE).exists()


class Regions:
    """The regions and their front, started and stopped as one.

    Each region gets `instances` instances and a cluster of `primaries` primaries with `replicas`
    replicas each. The front listens on `port`, the regions' nginx on `region_ports` (by default
    the ports after it: 8081, 8082, …). Built on a state directory where regions already run,
    it attaches to them: `status()` and `stop()` work on what it finds there.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        regions: int = 2,
        port: int = DEFAULT_PORT,
        region_ports: list[int] | None = None,
        instances: int = DEFAULT_INSTANCES,
        primaries: int = DEFAULT_PRIMARIES,
        replicas: int = DEFAULT_REPLICAS,
        upstream_url: str | None = None,
        drain_seconds: float = DEFAULT_DRAIN_SECONDS,
        prewarm_interval_seconds: float | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        nginx: str | None = None,
        python: str | None = None,
    ) -> None:
        if regions < 2:
            raise TopologyError("regions are two or more: one region is a plain topology")
        ports = region_ports or [port + 1 + index for index in range(regions)]
        if len(ports) != regions:
            raise TopologyError(f"{regions} regions need {regions} ports, not {ports}")
        self.dir = Path(state_dir or default_state_dir()).resolve()
        self.nginx = nginx or nginx_binary()
        self._files = StateDir(self.dir, REGIONS_FILE)
        self._processes = Processes()
        self.options: dict[str, Any] = {
            "port": port,
            "regions": [{"name": name, "port": p} for name, p in zip(region_names(regions), ports, strict=True)],
            "instances": instances,
            "primaries": primaries,
            "replicas": replicas,
        }
        self.regions = [
            Topology(
                self.dir / name,
                port=p,
                instances=instances,
                primaries=primaries,
                replicas=replicas,
                upstream_url=upstream_url,
                drain_seconds=drain_seconds,
                prewarm_interval_seconds=prewarm_interval_seconds,
                log_level=log_level,
                env=env,
                reserved_ports=(port, *ports),
                nginx=self.nginx,
                python=python or sys.executable,
            )
            for name, p in zip(region_names(regions), ports, strict=True)
        ]

    # ------------------------------------------------------------ where things are

    @property
    def url(self) -> str:
        """The front's base URL: what the clients use (GraphQL at /graphql, WebSockets too)."""
        return self._files.url

    @property
    def names(self) -> list[str]:
        return [str(region["name"]) for region in self.options["regions"]]

    @property
    def access_log(self) -> Path:
        return self.dir / "front" / "logs" / "access.log"

    def region(self, name: str) -> Topology:
        return self.regions[self.names.index(name)]

    def region_of(self, upstream_addr: str) -> str | None:
        """Which region's nginx an `$upstream_addr` entry of the front ("127.0.0.1:PORT") names."""
        for region in self.options["regions"]:
            if upstream_addr.strip() == f"{HOST}:{region['port']}":
                return str(region["name"])
        return None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120.0) -> bool:
        """Every region and the front, waited for; False if they were already running."""
        with self._files.locked():
            if self._load() and self._all_alive():
                return False
            self._stop_unlocked()  # whatever a half-dead earlier run left
            try:
                self._start(timeout)
            except BaseException:
                self._stop_unlocked()
                raise
            return True

    def stop(self, timeout: float = 30.0) -> bool:
        """The front first (no new traffic), then every region; False if nothing ran."""
        with self._files.locked():
            return self._stop_unlocked(timeout)

    def attach(self) -> bool:
        """Adopt the regions `up --regions` started in this directory; False unless all of it runs."""
        return self._load() and self._all_alive()

    def status(self) -> dict[str, Any]:
        """What runs now: the front with its readiness, each region's own `Topology.status()`."""
        if not self._load():
            return {"running": False, "state_dir": str(self.dir)}
        report: dict[str, Any] = json.loads(json.dumps(self._files.state))
        for entry in report["processes"]:
            entry["alive"] = self._processes.alive(Proc.from_state(entry))
        report["load_balancer"]["ready"] = http_status(f"{self.url}/ready")
        for region, topology in zip(report["regions"], self.regions, strict=True):
            region["status"] = topology.status()
            region["ready_through_front"] = http_status(region_route(self.url, region["name"]))
        report["running"] = all(entry["alive"] for entry in report["processes"]) and all(
            region["status"].get("running") for region in report["regions"]
        )
        return report

    # ------------------------------------------------------------ starting and stopping

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        port = int(self.options["port"])
        if not port_free(port):
            raise TopologyError(f"port {port} is in use: choose another with --port")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self._files.state = {
            "version": 1,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "state_dir": str(self.dir),
            "options": self.options,
            "processes": [],
            "regions": [
                {**region, "dir": str(self.dir / region["name"]), "url": f"http://{HOST}:{region['port']}"}
                for region in self.options["regions"]
            ],
            "load_balancer": {"url": f"http://{HOST}:{port}", "port": port},
        }
        self._files.save()  # before anything starts: a `down` finds whatever did
        secret = self._files.secret()  # the one thing the regions share
        for topology in self.regions:
            StateDir(topology.dir).share_secret(secret)
        # together: while one region's cluster forms, the other's processes start
        with ThreadPoolExecutor(len(self.regions)) as pool:
            started = [pool.submit(topology.start, timeout) for topology in self.regions]
        for name, future in zip(self.names, started, strict=True):
            failure = future.exception()
            if failure is not None:
                raise TopologyError(f"{name} did not start: {failure}") from failure
        self._start_front(max(5.0, deadline - time.monotonic()))

    def _start_front(self, timeout: float) -> None:
        prefix = self.dir / "front"
        write_front_config(prefix, self._files.port, [(r["name"], int(r["port"])) for r in self.options["regions"]])
        check_config(self.nginx, prefix)
        log = self.dir / "logs" / f"{FRONT}.log"
        proc = self._processes.spawn(
            FRONT, nginx_command(self.nginx, prefix), os.environ.copy(), log=log, cwd=self.dir, port=self._files.port
        )
        self._files.record(proc)
        self._files.save()
        wait_until(
            partial(self._processes.answers, proc, f"{self.url}/nginx-health"), timeout, "the front did not start"
        )
        for name in self.names:
            wait_until(partial(_ready, region_route(self.url, name)), timeout, f"{name} not ready through the front")
        wait_until(partial(_ready, f"{self.url}/ready"), timeout, "the front not ready")

    def _stop_unlocked(self, timeout: float = 30.0) -> bool:
        if not self._load():
            return False
        procs = self._files.procs()
        ran = any(self._processes.alive(proc) for proc in procs)
        self._processes.terminate(procs, signal.SIGTERM, timeout)
        for proc in procs:
            self._processes.reap(proc)
        for topology in self.regions:
            ran = topology.stop(timeout) or ran
        self._files.clear()
        shutil.rmtree(self.dir / "front", ignore_errors=True)
        return ran

    # ------------------------------------------------------------ bookkeeping

    def _load(self) -> bool:
        """The state of running regions, and a `Topology` attached to each of them."""
        started_here = bool(self._files.state.get("regions"))
        if not self._files.load():
            return False
        if not started_here:
            self.options = {**self.options, **self._files.state.get("options", {})}
            self.regions = [Topology(region["dir"], nginx=self.nginx) for region in self._files.state["regions"]]
        return True

    def _all_alive(self) -> bool:
        procs = self._files.procs()
        return (
            bool(procs)
            and all(self._processes.alive(proc) for proc in procs)
            and all(topology.attach() for topology in self.regions)
        )


def _ready(url: str) -> bool:
    return http_status(url) == 200
