"""Small measuring tools for the benchmarks: statistics, peak memory, machine description."""

from __future__ import annotations

import csv
import os
import platform
import resource
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; NaN for no values (a table shows it as missing, not as zero)."""
    return sum(values) / len(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100), linearly interpolated between order statistics."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux ``VmRSS``); the lifetime peak elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return max_rss_bytes()


def max_rss_bytes() -> int:
    """The process's lifetime peak resident memory (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakRss:
    """Samples resident memory on a thread while the ``with`` block runs; keeps the peak.

    A thread rather than a task: it keeps sampling while the event loop is busy, which is
    exactly when memory peaks.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.before_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="disco-bench-rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())

    def __enter__(self) -> PeakRss:
        self.before_bytes = self.peak_bytes = current_rss_bytes()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, current_rss_bytes())


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, Python, key package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("langchain-disco", "langchain-core", "openai", "langchain-openai", "litellm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": versions,
    }


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV with a header (the first row's keys)."""
    rows = list(rows)
    with path.open("w", newline="", encoding="utf-8") as out:
        if not rows:
            return
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
