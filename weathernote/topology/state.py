"""The state directory: `state.json` says what runs (so that `status` and `down`, from another
command, find it), `client_id_secret` is shared by every instance, and a lock keeps two commands
from changing the topology at once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from weathernote.topology.errors import TopologyError
from weathernote.topology.processes import Proc

STATE_FILE = "state.json"
SECRET_FILE = "client_id_secret"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "weathernote" / "topology"


def instance_name(index: int) -> str:
    """Instances are numbered from 1 for people (names, logs, routes), from 0 in the API."""
    return f"instance-{index + 1}"


class StateDir:
    """One topology's state directory, and in `state` what its state file says (empty: nothing runs).

    `state_file` is `state.json` for one region's topology, `regions.json` for the regions and
    their front (`regions.py`), so that neither takes the other's directory for its own.
    """

    def __init__(self, directory: Path, state_file: str = STATE_FILE) -> None:
        self.dir = directory
        self.state_file = state_file
        self.state: dict[str, Any] = {}

    @property
    def file(self) -> Path:
        return self.dir / self.state_file

    # where things are, once started

    @property
    def url(self) -> str:
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

    def load(self) -> bool:
        """The state of a running topology into `state` (kept when this object started it)."""
        if self.state.get("processes"):
            return True
        try:
            self.state = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.state = {}
            return False
        return True

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state, indent=2) + "\n")
        temporary.replace(self.file)  # a reader never sees half a file

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)
        self.state = {}

    def procs(self) -> list[Proc]:
        return [Proc.from_state(entry) for entry in self.state.get("processes", [])]

    def proc(self, name: str) -> Proc:
        for entry in self.state.get("processes", []):
            if entry["name"] == name:
                return Proc.from_state(entry)
        raise TopologyError(f"no {name} in this topology")

    def record(self, proc: Proc) -> None:
        """`proc` in the state, in place of an earlier process of the same name."""
        processes = [entry for entry in self.state.setdefault("processes", []) if entry["name"] != proc.name]
        processes.append(asdict(proc))
        self.state["processes"] = processes

    def secret(self) -> str:
        """The instances' client-id secret: generated once, then read (mode 0600)."""
        path = self.dir / SECRET_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            secret = secrets.token_hex(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret + "\n")
            return secret

    def share_secret(self, secret: str) -> None:
        """Use `secret` as this directory's client-id secret (the regions share one)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / SECRET_FILE
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        temporary.replace(path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Alone on this directory: another command's start, stop or restart waits for this one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another topology command on {self.dir} …", file=sys.stderr)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield
