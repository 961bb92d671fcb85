"""The unit tier: in-process tests only, which start no process.

The fixtures of tests/conftest.py that start a Redis, the simulator or a server (and those
built on them) are replaced here by ones that fail at once, and subprocess.Popen (which
subprocess.run and asyncio's subprocesses go through) fails too: a unit test that needs a
process belongs in tests/service (or tests/system, for the whole topology and outside tools).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

MOVE = "unit tests start no processes: move this test to tests/service"


def _refuse(name: str) -> NoReturn:
    pytest.fail(f"{MOVE} (it asks for the `{name}` fixture)", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> NoReturn:
    _refuse("redis_server")


@pytest.fixture(scope="session")
def redis_cluster() -> NoReturn:
    _refuse("redis_cluster")


@pytest.fixture(scope="session")
def redis_url() -> NoReturn:
    _refuse("redis_url")


@pytest.fixture
def redis_client() -> NoReturn:
    _refuse("redis_client")


@pytest.fixture(scope="session")
def simulator() -> NoReturn:
    _refuse("simulator")


@pytest.fixture
def clean() -> NoReturn:
    _refuse("clean")


@pytest.fixture(scope="module")
def server() -> NoReturn:
    _refuse("server")


class _NoProcess:
    """Stands in for subprocess.Popen: any attempt to start a process fails the test."""

    def __init__(self, args: Any, *_: Any, **__: Any) -> None:
        pytest.fail(f"{MOVE} (it started {args!r})", pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def _no_processes() -> Iterator[None]:
    """Module-scoped, so a module's own fixtures are held to it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("subprocess.Popen", _NoProcess)
        yield
