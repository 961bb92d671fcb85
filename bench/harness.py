"""What every benchmark needs: a private Redis, child processes, readiness, a clean teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from weathernote.redis.embedded import EmbeddedRedis, _free_port  # noqa: E402

free_port = _free_port


def wait_http(url: str, timeout: float = 30, ready: int = 500) -> None:
    """Until `url` answers with a status below `ready`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < ready:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process `pid` has used so far: per request, a figure that
    other work on a shared machine slows less than it slows req/s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Components:
    def __init__(self, redis: EmbeddedRedis) -> None:
        self.redis = redis
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def start(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # its own process group: a server's worker processes go with it when it must be killed
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.processes.append(process)
        return process


@contextlib.contextmanager
def components() -> Iterator[Components]:
    """A private Redis (no persistence) and the processes started through it, all stopped on exit."""
    redis = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-")), persistent=False)
    redis.start()
    running = Components(redis)
    try:
        yield running
    finally:
        for process in running.processes:
            process.terminate()
        for process in running.processes:
            try:
                # a server's graceful shutdown may take its whole 20 s for requests in flight, then its lifespan's
                process.wait(30)
            except subprocess.TimeoutExpired:
                print(f"(pid {process.pid} did not exit within 30 s of SIGTERM: killed)", file=sys.stderr, flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        redis.stop()
