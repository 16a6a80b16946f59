"""A `redis-server` child on a free loopback port, owned by a benchmark that stops and restarts it.

The fleet benchmark needs the server it measures through an outage, so it starts its own (the
tests' fixture, tests/_redis.py, is not part of the package). Unlike the tests' server this one
persists with an append-only file fsynced on every write in its temporary directory: a restart
then comes back with every increment acknowledged before the stop, which is what lets the
benchmark count the fleet's requests in Redis after the run and find none lost or doubled.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """`with RedisProcess() as redis:`; `redis.url`; `stop()` then `start()` on the same port."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RuntimeError(
                "the fleet benchmark needs redis-server (Debian: apt-get install redis-server)"
            )
        self.binary = found
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="disco-bench-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--dir", str(self._dir)]
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
        """SIGTERM (Redis flushes its append-only file and exits), SIGKILL after a timeout."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
