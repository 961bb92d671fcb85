"""The `Topology` class: the local topology as one object for tests, benchmarks and the command
line. It decides when to start, stop or restart, under the state directory's lock; how each part
starts is `startup.py`'s business, processes `processes.py`'s, the state file `state.py`'s."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from weathernote.topology.errors import TopologyError
from weathernote.topology.nginx import instance_route, nginx_binary
from weathernote.topology.processes import HOST, Proc, Processes, http_status, tail, wait_until
from weathernote.topology.startup import Startup
from weathernote.topology.state import StateDir, default_state_dir, instance_name

DEFAULT_PORT = 8080
DEFAULT_INSTANCES = 3
DEFAULT_DRAIN_SECONDS = 3.0
DEFAULT_PRIMARIES = 3
DEFAULT_REPLICAS = 1


class Topology:
    """The cluster, the upstream, the instances and nginx, started and stopped as one.

    `env` adds or overrides WEATHERNOTE_* variables of every instance (the tests lift the
    rate limits and shorten the pre-warm period). The cluster has `primaries` primaries with
    `replicas` replicas each; `reserved_ports` are never taken by its processes (a larger setup,
    two regions and their front, binds them later). A `Topology` built on a state directory
    where one already runs (`up` from another command) attaches to it: `stop()`, `status()`
    and `restart_instance()` work on the processes it finds there.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        port: int = DEFAULT_PORT,
        instances: int = DEFAULT_INSTANCES,
        primaries: int = DEFAULT_PRIMARIES,
        replicas: int = DEFAULT_REPLICAS,
        upstream_url: str | None = None,
        drain_seconds: float = DEFAULT_DRAIN_SECONDS,
        prewarm_interval_seconds: float | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        reserved_ports: tuple[int, ...] = (),
        nginx: str | None = None,
        python: str | None = None,
    ) -> None:
        self.dir = Path(state_dir or default_state_dir()).resolve()
        self.options: dict[str, Any] = {
            "port": port,
            "instances": instances,
            "primaries": primaries,
            "replicas": replicas,
            "upstream_url": upstream_url,
            "drain_seconds": drain_seconds,
            "prewarm_interval_seconds": prewarm_interval_seconds,
            "log_level": log_level,
            "env": {_variable(name): str(value) for name, value in (env or {}).items()},
            "reserved_ports": list(reserved_ports),
        }
        self.nginx = nginx or nginx_binary()
        self.python = python or sys.executable
        self._files = StateDir(self.dir)
        self._processes = Processes()
        self._startup = Startup(self._files, self._processes, python=self.python, nginx=self.nginx)

    # ------------------------------------------------------------ where things are

    @property
    def state(self) -> dict[str, Any]:
        """What the state file says: pids, ports, URLs (empty while nothing runs)."""
        return self._files.state

    @property
    def state_file(self) -> Path:
        return self._files.file

    @property
    def url(self) -> str:
        """The load balancer's base URL (GraphQL at /graphql, WebSockets at ws://…/graphql)."""
        return self._files.url

    @property
    def port(self) -> int:
        return self._files.port

    @property
    def instance_urls(self) -> list[str]:
        return self._files.instance_urls

    @property
    def instance_ports(self) -> list[int]:
        return self._files.instance_ports

    @property
    def redis_url(self) -> str:
        return self._files.redis_url

    @property
    def upstream_url(self) -> str:
        return self._files.upstream_url

    @property
    def access_log(self) -> Path:
        return self.dir / "nginx" / "logs" / "access.log"

    def instance_log(self, index: int) -> str:
        return tail(self._files.proc(instance_name(index)).log, 10_000)

    def instance_pid(self, index: int) -> int:
        return self._files.proc(instance_name(index)).pid

    def instance_of(self, upstream_addr: str) -> int | None:
        """Which instance (0-based) an nginx `$upstream_addr` entry ("127.0.0.1:PORT") names."""
        for index, port in enumerate(self.instance_ports):
            if upstream_addr.strip() == f"{HOST}:{port}":
                return index
        return None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120.0) -> bool:
        """Bring everything up and wait until it answers; False if it was already running."""
        with self._files.locked():
            if self._load() and self._all_alive():
                return False
            self._stop_unlocked()  # whatever a half-dead earlier run left
            try:
                self._startup.run(self.options, timeout)
            except BaseException:
                self._stop_unlocked()
                raise
            return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop everything this topology started and remove its state; False if nothing ran."""
        with self._files.locked():
            return self._stop_unlocked(timeout)

    def attach(self) -> bool:
        """Adopt the topology `up` started in this state directory; False unless all of it runs."""
        return self._load() and self._all_alive()

    def restart_instance(self, index: int, timeout: float = 60.0) -> None:
        """Instance `index` (0-based) anew on its own port: stopped first if it still runs,
        then ready directly and through nginx's route to it."""
        with self._files.locked():
            if not self._load():
                raise TopologyError("the topology is not running")
            proc = self._files.proc(instance_name(index))
            if self._processes.alive(proc):
                self._processes.terminate([proc], signal.SIGTERM, timeout)
            self._processes.reap(proc)
            self._startup.spawn_instance(index, int(proc.port or 0))
            self._files.save()
            self._startup.wait_instance(index, timeout)
            self._startup.wait_routed(index, timeout)

    def signal_instance(self, index: int, sig: int) -> int:
        """Send `sig` to instance `index` (0-based), as an operator or a crash would; its pid."""
        proc = self._files.proc(instance_name(index))
        if not self._processes.alive(proc):
            raise TopologyError(f"instance {index + 1} is not running")
        os.kill(proc.pid, sig)
        return proc.pid

    def wait_instance_exit(self, index: int, timeout: float = 30.0) -> int | None:
        """Until instance `index` has exited; its exit code when this process started it."""
        proc = self._files.proc(instance_name(index))
        wait_until(partial(self._processes.gone, proc), timeout, f"instance {index + 1} did not exit", interval=0.02)
        return self._processes.exit_code(proc)

    def signal_load_balancer(self, sig: int) -> int:
        """Send `sig` to this topology's nginx (its whole process group), as an outage would; its pid."""
        proc = self._files.proc("nginx")
        if not self._processes.alive(proc):
            raise TopologyError("nginx is not running")
        os.killpg(proc.pid, sig)
        return proc.pid

    def load_balancer_alive(self) -> bool:
        return self._processes.alive(self._files.proc("nginx"))

    def instance_alive(self, index: int) -> bool:
        return self._processes.alive(self._files.proc(instance_name(index)))

    def heal(self, timeout: float = 60.0) -> list[int]:
        """Restart every instance that no longer runs; the indexes restarted."""
        dead = [index for index in range(len(self.state["instances"])) if not self.instance_alive(index)]
        for index in dead:
            self.restart_instance(index, timeout)
        return dead

    def status(self) -> dict[str, Any]:
        """What runs now: every process with `alive`, instances with their /ready status."""
        if not self._load():
            return {"running": False, "state_dir": str(self.dir)}
        report: dict[str, Any] = json.loads(json.dumps(self.state))
        for entry in report["processes"]:
            entry["alive"] = self._processes.alive(Proc.from_state(entry))
        for index, instance in enumerate(report["instances"]):
            instance["ready"] = http_status(f"{instance['url']}/ready")
            instance["ready_through_nginx"] = http_status(instance_route(self.url, index))
        report["load_balancer"]["ready"] = http_status(f"{self.url}/ready")
        report["running"] = all(entry["alive"] for entry in report["processes"])
        return report

    # ------------------------------------------------------------ stopping

    def _stop_unlocked(self, timeout: float = 30.0) -> bool:
        if not self._load():
            self._startup.stop_cluster()
            return False
        procs = self._files.procs()
        ran = any(self._processes.alive(proc) for proc in procs)
        self._processes.terminate([p for p in procs if p.name == "nginx"], signal.SIGTERM, timeout)  # no new traffic
        instances = [p for p in procs if p.name.startswith("instance-")]
        if instances:
            # nginx is gone: nothing routes to them, so no drain (a second signal skips it)
            self._processes.terminate(instances, signal.SIGTERM, timeout, again_after=0.3)
        self._processes.terminate([p for p in procs if p.name == "simulator"], signal.SIGTERM, timeout)
        self._processes.terminate([p for p in procs if p.name.startswith("redis-")], signal.SIGTERM, timeout)
        self._startup.stop_cluster()
        for proc in procs:
            self._processes.reap(proc)
        self._files.clear()
        for leftover in ("cluster", "nginx", *(instance_name(i) for i in range(16))):
            shutil.rmtree(self.dir / leftover, ignore_errors=True)
        return ran

    # ------------------------------------------------------------ bookkeeping

    def _load(self) -> bool:
        """The state of a running topology (kept when this object started it), and its options."""
        if not self._files.load():
            return False
        self.options = {**self.options, **self.state.get("options", {})}
        return True

    def _all_alive(self) -> bool:
        procs = self._files.procs()
        return bool(procs) and all(self._processes.alive(proc) for proc in procs)


def _variable(name: str) -> str:
    """'rate_limit_per_minute' or 'WEATHERNOTE_RATE_LIMIT_PER_MINUTE' → the variable."""
    name = name.strip().upper().replace("-", "_")
    return name if name.startswith("WEATHERNOTE_") else f"WEATHERNOTE_{name}"
