"""The concurrency phase of `disco bench overhead`: N streams at once, each path in a fresh process.

Why a child process per path: memory that Python has freed is not returned to the system, so
in one process whichever path ran second would look cheaper, and a path must not carry another
client's modules. Each child runs its path's levels in ascending order (a level's peak then
covers what the smaller ones left behind), all through one model (or one endpoint, or one
client), and reports its rows as JSON. A level with fewer streams than `min_streams` runs again
(rounds, one after another) until it has that many, so one stream is not one sample. The child
prints one line per finished stream, which the parent turns into progress. A path whose
optional package is missing is not started; its reason is returned instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langchain_disco.bench._alternatives import unavailable
from langchain_disco.bench._measure import PeakRss, current_rss_bytes, mean, percentile
from langchain_disco.bench._streams import ALL_PATHS, Source, messages_for, open_source
from langchain_disco.errors import DiscoError

_STREAM_DONE = "+"
"""What the child prints when one stream has finished."""


@dataclass
class LevelResult:
    """One level of concurrent streams on one path."""

    level: int
    """Streams in flight at once."""
    path: str
    completed: int
    errors: int
    wall_s: float
    """Wall time of all rounds."""
    ttft_mean_s: float | None
    latency_mean_s: float | None
    """Mean time from the common start (of its round) to a stream's last token."""
    latency_p50_s: float | None
    latency_p99_s: float | None
    cpu_per_token_s: float | None
    gap_mean_s: float | None
    """Per-token latency: the mean gap between a stream's tokens at the consumer."""
    rss_before_bytes: int
    """Resident memory of the (fresh) process before its first level, after a warm-up."""
    rss_peak_bytes: int
    """Peak resident memory while this level ran."""
    rounds: int = 1
    """Times the level ran, one after another (`completed` counts the streams of all)."""
    added_latency_mean_s: float | None = None
    """disco only: its mean latency per stream minus direct's at the same level."""
    added_latency_p99_s: float | None = None
    first_error: str | None = None

    @property
    def streams(self) -> int:
        """Streams started over all rounds."""
        return self.level * self.rounds

    @property
    def memory_per_stream_bytes(self) -> float:
        """Peak memory growth over the fresh process, per stream in flight."""
        return max(0, self.rss_peak_bytes - self.rss_before_bytes) / self.level


def rounds_for(level: int, min_streams: int) -> int:
    """How many times `level` runs so that it has at least `min_streams` streams."""
    return max(1, math.ceil(min_streams / level))


@dataclass
class _Stream:
    """One finished stream: times from its round's start, and its mean token gap."""

    ttft_s: float
    latency_s: float
    gap_s: float | None


async def _round(source: Source, level: int) -> tuple[list[BaseException | _Stream], float, int]:
    """`level` streams started together: their outcomes, CPU seconds and tokens."""
    start = time.perf_counter()
    tokens = 0

    async def one(request: int) -> _Stream:
        nonlocal tokens
        arrivals: list[float] = []
        texts = source.texts(messages_for(request))
        try:
            async with contextlib.aclosing(texts):
                async for _text in texts:
                    arrivals.append(time.perf_counter())
        finally:
            tokens += len(arrivals)
            print(_STREAM_DONE, flush=True)
        if not arrivals:
            raise DiscoError("the stream ended without a token")
        gap_s = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else None
        return _Stream(arrivals[0] - start, arrivals[-1] - start, gap_s)

    cpu_start = time.process_time()
    outcomes = await asyncio.gather(*(one(i) for i in range(level)), return_exceptions=True)
    return list(outcomes), time.process_time() - cpu_start, tokens


async def _level(
    source: Source, path: str, level: int, rounds: int, rss_before_bytes: int
) -> tuple[LevelResult, list[float]]:
    """`level` streams started together on one path, `rounds` times; its row and latencies."""
    outcomes: list[BaseException | _Stream] = []
    cpu_s = 0.0
    tokens = 0
    with PeakRss() as rss:
        start = time.perf_counter()
        for _ in range(rounds):
            got, cpu, count = await _round(source, level)
            outcomes += got
            cpu_s += cpu
            tokens += count
        wall_s = time.perf_counter() - start
    done = [o for o in outcomes if isinstance(o, _Stream)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    latencies = [s.latency_s for s in done]
    gaps = [s.gap_s for s in done if s.gap_s is not None]
    row = LevelResult(
        level=level,
        path=path,
        completed=len(done),
        errors=len(failed),
        wall_s=wall_s,
        ttft_mean_s=mean([s.ttft_s for s in done]) if done else None,
        latency_mean_s=mean(latencies) if done else None,
        latency_p50_s=percentile(latencies, 50) if done else None,
        latency_p99_s=percentile(latencies, 99) if done else None,
        cpu_per_token_s=cpu_s / tokens if tokens else None,
        gap_mean_s=mean(gaps) if gaps else None,
        rss_before_bytes=rss_before_bytes,
        rss_peak_bytes=rss.peak_bytes,
        rounds=rounds,
        first_error=f"{type(failed[0]).__name__}: {failed[0]}" if failed else None,
    )
    return row, latencies


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    levels = sorted(int(level) for level in args.levels.split(","))
    source = open_source(args.path, args.base_url, args.model, args.max_tokens, max(levels))
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(args.warmup):  # connections, imports, caches: not measured
            async for _text in source.texts(messages_for(0)):
                pass
        rss_before = current_rss_bytes()
        for level in levels:
            rounds = rounds_for(level, args.min_streams)
            row, latencies = await _level(source, args.path, level, rounds, rss_before)
            rows.append({"row": asdict(row), "latencies_s": latencies})
    finally:
        await source.aclose()
    return {"rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """The child: run one path's levels, write the rows as JSON to ``--result``."""
    parser = argparse.ArgumentParser(prog="python -m langchain_disco.bench._concurrency")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--path", choices=ALL_PATHS, required=True)
    parser.add_argument("--levels", required=True, help="comma-separated stream counts")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--min-streams", type=int, default=1, help="streams per level at least")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(_child(args))
    args.result.write_text(json.dumps(result), encoding="utf-8")
    return 0


@dataclass
class ConcurrencyResult:
    """The rows of every path that ran, and why the others did not."""

    rows: list[LevelResult]
    skipped: dict[str, str]


def measure_concurrency(
    base_url: str,
    model_name: str,
    levels: Sequence[int],
    max_tokens: int,
    advance: Callable[[int], None],
    *,
    paths: Sequence[str] = ALL_PATHS,
    min_streams: int = 1,
    before_each: Callable[[], None] = lambda: None,
) -> ConcurrencyResult:
    """Every available path at every level, each path in its own child process. Rows are in
    level order, then path order; disco rows get the latency they add over direct."""
    per_path: dict[str, dict[int, tuple[LevelResult, list[float]]]] = {}
    skipped: dict[str, str] = {}
    for path in paths:
        reason = unavailable(path)
        if reason is not None:
            skipped[path] = reason
            continue
        before_each()
        per_path[path] = _run_child(
            base_url, model_name, path, levels, max_tokens, min_streams, advance
        )
    rows: list[LevelResult] = []
    for level in sorted(set(levels)):
        direct = per_path.get("direct", {}).get(level)
        for path, by_level in per_path.items():
            row, latencies = by_level[level]
            if path.startswith("disco") and direct is not None and direct[1] and latencies:
                row.added_latency_mean_s = mean(latencies) - mean(direct[1])
                row.added_latency_p99_s = percentile(latencies, 99) - percentile(direct[1], 99)
            rows.append(row)
    return ConcurrencyResult(rows, skipped)


def _run_child(
    base_url: str,
    model_name: str,
    path: str,
    levels: Sequence[int],
    max_tokens: int,
    min_streams: int,
    advance: Callable[[int], None],
) -> dict[int, tuple[LevelResult, list[float]]]:
    with tempfile.TemporaryDirectory(prefix="disco-bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "langchain_disco.bench._concurrency",
            "--base-url",
            base_url,
            "--model",
            model_name,
            "--path",
            path,
            "--levels",
            ",".join(str(level) for level in sorted(set(levels))),
            "--max-tokens",
            str(max_tokens),
            "--min-streams",
            str(min_streams),
            "--result",
            str(result),
        ]
        # stderr to a file, not a pipe: a chatty child must not block on a full pipe buffer.
        with (
            (Path(tmp) / "stderr.txt").open("w+", encoding="utf-8") as stderr,
            subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True
            ) as child,
        ):
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == _STREAM_DONE:
                    advance(1)
            child.wait()
            stderr.seek(0)
            errors = stderr.read()
        if child.returncode != 0 or not result.exists():
            tail = "\n".join(errors.strip().splitlines()[-15:])
            raise DiscoError(
                f"the {path} concurrency run failed (exit code {child.returncode}):\n{tail}"
            )
        data = json.loads(result.read_text(encoding="utf-8"))
    return {
        item["row"]["level"]: (LevelResult(**item["row"]), item["latencies_s"])
        for item in data["rows"]
    }


if __name__ == "__main__":
    sys.exit(main())
