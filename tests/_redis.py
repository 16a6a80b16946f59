"""A real `redis-server` (Debian's package) on a free loopback port, for the fleet tests.

Started in a temp directory with persistence off (`--save '' --appendonly no`), so nothing a
test writes outlives it; `stop()` and `start()` again on the same port simulate an outage and
a return. Without the binary the fleet tests skip, unless ``REDIS_SERVER_REQUIRED=1`` (set by
`make pytest`, which installs it), where a missing server is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._net import free_port, stop_process

STARTUP_TIMEOUT_S = 10.0


def redis_server_binary() -> Path | None:
    """`redis-server` on PATH (or ``REDIS_SERVER_BINARY``), else None."""
    override = os.environ.get("REDIS_SERVER_BINARY")
    if override:
        return Path(override)
    found = shutil.which("redis-server")
    return Path(found) if found else None


def require_redis_server() -> Path:
    """The binary, or skip the test (an error when ``REDIS_SERVER_REQUIRED=1``)."""
    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("REDIS_SERVER_REQUIRED") == "1":  # `make test` installs it
            raise RuntimeError("redis-server is required (REDIS_SERVER_REQUIRED=1) but missing")
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    return binary


def _answers_ping(port: int) -> bool:
    """One inline PING over a raw socket, so readiness does not depend on the client under
    test. `+PONG`, or `-NOAUTH` when a password is required: either means it serves."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """`with RedisServer(binary) as redis:`; `redis.url` is `redis://127.0.0.1:<port>/0`."""

    def __init__(
        self, binary: Path, *, password: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.password = password
        self._dir = Path(tempfile.mkdtemp(prefix="disco-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._dir
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if _answers_ping(self.port):
                return
            time.sleep(0.05)  # polling a child's readiness: a bounded wait
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {STARTUP_TIMEOUT_S} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server per test (milliseconds to start), stopped after."""
    with RedisServer(require_redis_server()) as server:
        yield server
