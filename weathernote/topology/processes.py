"""The topology's processes: each started in a session of its own (so it outlives `up` and a
Ctrl-C on the terminal does not reach it), found again from another command by pid and start
time, signalled as a whole process group, and reaped.

A `Proc` is what the state file keeps of one; `Processes` also holds the `Popen` of each one this
process started, which says more exactly than /proc whether it runs and how it exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from weathernote.topology.errors import TopologyError

# everything listens on loopback only
HOST = "127.0.0.1"


@dataclass
class Proc:
    """A process the topology started: enough to find it again from another command."""

    name: str
    pid: int
    start_ticks: int | None  # /proc/PID/stat's start time: a recycled pid is not ours
    log: str | None = None
    port: int | None = None

    @classmethod
    def from_state(cls, entry: dict[str, Any]) -> Proc:
        """From its entry in the state file (`status` adds keys of its own: ignored)."""
        return cls(**{field.name: entry[field.name] for field in fields(cls)})


class Processes:
    """Signals and liveness of the topology's processes: those this process started through
    their `Popen`, any other (started by another command) through /proc."""

    def __init__(self) -> None:
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self, name: str, command: list[str], env: dict[str, str], *, log: Path, cwd: Path, port: int | None
    ) -> Proc:
        """`command` in a session of its own, its stdout and stderr appended to `log`."""
        with log.open("ab") as handle:
            child = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # outlives `up`; a Ctrl-C on the terminal does not reach it
            )
        return self.adopt(name, child, log, port)

    def adopt(self, name: str, child: subprocess.Popen[bytes], log: Path, port: int | None) -> Proc:
        """A child started elsewhere (the simulator's own launcher), tracked like a spawned one."""
        self._children[name] = child
        return Proc(name, child.pid, start_ticks(child.pid), str(log), port)

    def alive(self, proc: Proc) -> bool:
        child = self._child(proc)
        if child is not None:
            return child.poll() is None
        stat = _proc_stat(proc.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return proc.start_ticks is None or stat[1] == proc.start_ticks

    def gone(self, proc: Proc) -> bool:
        return not self.alive(proc)

    def answers(self, proc: Proc, url: str) -> bool:
        """`url`, served by `proc`, answers 200; a TopologyError with its log's end if it exited."""
        if not self.alive(proc):
            raise TopologyError(f"{proc.name} exited; the end of its log ({proc.log}):\n{tail(proc.log)}")
        return http_status(url) == 200

    def exit_code(self, proc: Proc) -> int | None:
        """How it exited, when this process started it (None for another command's)."""
        child = self._child(proc)
        return child.returncode if child is not None else None

    def terminate(self, procs: list[Proc], sig: int, timeout: float, again_after: float | None = None) -> None:
        """`sig` to each (its whole session's group), SIGKILL whatever still runs after `timeout`."""
        for proc in procs:
            self._send(proc, sig)
        if again_after is not None:
            time.sleep(again_after)
            for proc in procs:
                self._send(proc, sig)
        deadline = time.monotonic() + timeout
        while any(self.alive(proc) for proc in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in procs:
            if self.alive(proc):
                self._send(proc, signal.SIGKILL)
        for proc in procs:
            wait_until(partial(self.gone, proc), 10, f"{proc.name} (pid {proc.pid}) survived SIGKILL", interval=0.02)

    def reap(self, proc: Proc) -> None:
        child = self._child(proc)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)

    def _send(self, proc: Proc, sig: int) -> None:
        if not self.alive(proc):
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)  # its own session: uvicorn workers, nginx workers too
            else:
                os.kill(proc.pid, sig)

    def _child(self, proc: Proc) -> subprocess.Popen[bytes] | None:
        child = self._children.get(proc.name)
        return child if child is not None and child.pid == proc.pid else None


def start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a live pid, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def port_free(port: int) -> bool:
    """Nobody listens there (connections of an earlier run in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel says are free now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Until `predicate` holds (a failed connection counts as not yet); TopologyError(`what`) after `timeout`."""
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


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status `GET url` answers, None when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def tail(path: str | None, lines: int = 30) -> str:
    if not path:
        return ""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
