"""The simulator as a child process: the one way the tests, the benchmarks, `weathernote serve
--simulator` and the local topology start it.

The child is `python -m weathernote.simulator`. With port 0 it binds any free port and prints
`simulator listening on http://HOST:PORT` once bound (`cli.py`); reading the port from that
line, rather than picking a free one here and passing it on, leaves no moment in which another
process can take it. Ready means: announced, and `GET /__simulator/stats` answers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from weathernote.simulator.config import SimulatorConfig

# the line weathernote.simulator.cli prints once its socket is bound
_ANNOUNCEMENT = re.compile(rb"^simulator listening on http://\S+:(?P<port>\d+)$", re.MULTILINE)
_LOG_TAIL_LINES = 30


class SimulatorError(RuntimeError):
    """The simulator did not start: it exited first, or did not answer in time."""


class SimulatorProcess:
    """`python -m weathernote.simulator` on `port` (0: any free one) with the given knobs.

    Knobs are `SimulatorConfig` fields (`rate_limit_per_day=10_000`), checked here and passed as
    flags; `configure` changes them while it runs. `start()`, or `with`, starts it and waits until
    it answers; `spawn()` and `wait_ready()` are its two halves, for a caller with other things to
    start meanwhile. Its stdout is read here and its stderr is this process's, unless `log` names
    a file: both are then appended there, which a `detached` simulator (a session of its own,
    outliving this process) needs, since nobody may be left to read a pipe.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        clock_start: float | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
        detached: bool = False,
        python: str | None = None,
        **knobs: Any,
    ) -> None:
        SimulatorConfig().update(knobs)  # a misspelt or invalid knob fails here, not as the child's usage error
        self.host = host
        self.log = log
        self.command = [python or sys.executable, "-m", "weathernote.simulator", "--host", host, "--port", str(port)]
        if clock_start is not None:
            self.command.append(f"--clock-start={clock_start}")
        # None is the default of every knob that takes it: nothing to pass
        self.command += [f"--{name.replace('_', '-')}={value}" for name, value in knobs.items() if value is not None]
        self.process: subprocess.Popen[bytes] | None = None
        self._cwd = cwd
        self._detached = detached
        self._port: int | None = None
        self._log_offset = 0  # where this run's output starts in `log`
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on, as it announced it."""
        if self._port is None:
            raise SimulatorError("the simulator has not announced its port yet")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn it and wait until it answers; stopped again if it does not."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the child and return at once, with it (for a caller that tracks processes itself)."""
        if self.process is not None:
            raise SimulatorError("this simulator was started already")
        if self.log is None:
            self.process = self._popen(subprocess.PIPE, None)
            assert self.process.stdout is not None
            self._reader = threading.Thread(
                target=self._read_stdout, args=(self.process.stdout,), name="simulator-stdout", daemon=True
            )
            self._reader.start()
        else:
            with self.log.open("ab") as handle:
                self._log_offset = handle.tell()
                self.process = self._popen(handle, subprocess.STDOUT)
        return self.process

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until it has announced its port and answers `GET /__simulator/stats`."""
        if self.process is None:
            raise SimulatorError("the simulator was not started")
        deadline = time.monotonic() + timeout
        while not (self._announced() and self._answers()):
            if self.process.poll() is not None:
                raise SimulatorError(f"the simulator exited with status {self.process.returncode}{self._log_tail()}")
            if time.monotonic() > deadline:
                raise SimulatorError(f"the simulator did not answer within {timeout:g} s{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL if it still runs after `timeout`; returns once it has exited."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout)

    def __enter__(self) -> Self:
        """Started now, unless `start()` was called (with a timeout of its own)."""
        return self if self.process is not None else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ control endpoints

    def stats(self) -> dict[str, Any]:
        """Its counters since the last reset: calls, their weight, 429s, concurrency."""
        stats: dict[str, Any] = self._control("GET", "stats")
        return stats

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change these knobs now (the others keep their values); the whole configuration after."""
        config: dict[str, Any] = self._control("POST", "config", knobs)
        return config

    def reset(self) -> None:
        """Zero the counters and the rate limits' windows."""
        self._control("POST", "reset")

    def clock(self) -> dict[str, float]:
        """The simulated time (`now`) and the wall clock's (`real`), read at the same moment."""
        clock: dict[str, float] = self._control("GET", "clock")
        return clock

    def _control(self, method: str, name: str, knobs: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.url}/__simulator/{name}", json=knobs, timeout=5)
        response.raise_for_status()
        return response.json()

    # ------------------------------------------------------------ the child

    def _popen(self, stdout: IO[bytes] | int, stderr: int | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=self._cwd,
            start_new_session=self._detached,
        )

    def _read_stdout(self, stream: IO[bytes]) -> None:
        """Its stdout to the end: the announcement, then whatever follows (dropped), so that a
        full pipe never stalls it."""
        with stream:
            for line in stream:
                match = _ANNOUNCEMENT.search(line)
                if match and self._port is None:
                    self._port = int(match["port"])

    def _announced(self) -> bool:
        if self._port is None and self.log is not None:
            with self.log.open("rb") as handle:
                handle.seek(self._log_offset)
                match = _ANNOUNCEMENT.search(handle.read())
            if match:
                self._port = int(match["port"])
        return self._port is not None

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/__simulator/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _log_tail(self) -> str:
        """The end of its log, for an error message (without a log its stderr was this process's)."""
        if self.log is None:
            return ""
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"; the end of its log ({self.log}):\n" + "\n".join(lines)
