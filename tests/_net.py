"""Loopback helpers for the tests: a free port, this process's open TCP connections to a port
(from /proc, Linux), and stopping a child server."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

_ESTABLISHED = "01"


def open_connections_to(port: int) -> set[int]:
    """Local ports of this process's ESTABLISHED TCP connections whose remote end is `port`."""
    ours = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[len("socket:[") : -1])
    found: set[int] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == _ESTABLISHED and fields[9] in ours:
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Terminate a child server, killing it if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
