"""The concurrency phase of `disco bench overhead`: N streams at once, each path in a fresh process.

Why a child process per path: memory that Python has freed is not returned to the system, so
in one process whichever path ran second would look cheaper. Each child runs its path's
levels in ascending order (a level's peak then covers what the smaller ones left behind), all
through one `DiscoChatModel` (or one endpoint), and reports its rows as JSON. The child prints
one line per finished stream, which the parent turns into progress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langchain_disco.bench._measure import PeakRss, current_rss_bytes, mean, percentile
from langchain_disco.bench._streams import PATHS, Paths, messages_for
from langchain_disco.errors import DiscoError

_STREAM_DONE = "+"
"""What the child prints when one stream has finished."""


@dataclass
class LevelResult:
    """One level of concurrent streams on one path."""

    level: int
    path: str
    completed: int
    errors: int
    wall_s: float
    ttft_mean_s: float | None
    latency_mean_s: float | None
    """Mean time from the common start to a stream's last token."""
    latency_p50_s: float | None
    latency_p99_s: float | None
    cpu_per_token_s: float | None
    rss_before_bytes: int
    """Resident memory of the (fresh) process before its first level, after a warm-up."""
    rss_peak_bytes: int
    """Peak resident memory while this level ran."""
    added_latency_mean_s: float | None = None
    """disco only: its mean latency per stream minus direct's at the same level."""
    added_latency_p99_s: float | None = None
    first_error: str | None = None


async def _level(
    paths: Paths, path: str, level: int, rss_before_bytes: int
) -> tuple[LevelResult, list[float]]:
    """`level` streams started together on one path; its row and the streams' latencies."""
    start = 0.0
    tokens = 0

    async def one(request: int) -> tuple[float, float]:
        nonlocal tokens
        first: float | None = None
        last = 0.0
        texts = paths.texts(path, messages_for(request))
        try:
            async with contextlib.aclosing(texts):
                async for _text in texts:
                    last = time.perf_counter()
                    first = last if first is None else first
                    tokens += 1
        finally:
            print(_STREAM_DONE, flush=True)
        if first is None:
            raise DiscoError("the stream ended without a token")
        return first - start, last - start

    with PeakRss() as rss:
        cpu_start = time.process_time()
        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(level)), return_exceptions=True)
        wall_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    latencies = [end for _, end in done]
    row = LevelResult(
        level=level,
        path=path,
        completed=len(done),
        errors=len(failed),
        wall_s=wall_s,
        ttft_mean_s=mean([ttft for ttft, _ in done]) if done else None,
        latency_mean_s=mean(latencies) if done else None,
        latency_p50_s=percentile(latencies, 50) if done else None,
        latency_p99_s=percentile(latencies, 99) if done else None,
        cpu_per_token_s=cpu_s / tokens if tokens else None,
        rss_before_bytes=rss_before_bytes,
        rss_peak_bytes=rss.peak_bytes,
        first_error=f"{type(failed[0]).__name__}: {failed[0]}" if failed else None,
    )
    return row, latencies


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    levels = sorted(int(level) for level in args.levels.split(","))
    paths = Paths.build(args.base_url, args.model, args.max_tokens, max(levels))
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(args.warmup):  # connections, imports, caches: not measured
            async for _text in paths.texts(args.path, messages_for(0)):
                pass
        rss_before = current_rss_bytes()
        for level in levels:
            row, latencies = await _level(paths, args.path, level, rss_before)
            rows.append({"row": asdict(row), "latencies_s": latencies})
    finally:
        await paths.aclose()
    return {"rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """The child: run one path's levels, write the rows as JSON to ``--result``."""
    parser = argparse.ArgumentParser(prog="python -m langchain_disco.bench._concurrency")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--path", choices=PATHS, required=True)
    parser.add_argument("--levels", required=True, help="comma-separated stream counts")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(_child(args))
    args.result.write_text(json.dumps(result), encoding="utf-8")
    return 0


def measure_concurrency(
    base_url: str,
    model_name: str,
    levels: Sequence[int],
    max_tokens: int,
    advance: Callable[[int], None],
    before_each: Callable[[], None] = lambda: None,
) -> list[LevelResult]:
    """Both paths at every level, each path in its own child process; disco rows get the
    latency they add over direct at the same level."""
    per_path: dict[str, dict[int, tuple[LevelResult, list[float]]]] = {}
    for path in PATHS:
        before_each()
        per_path[path] = _run_child(base_url, model_name, path, levels, max_tokens, advance)
    rows: list[LevelResult] = []
    for level in sorted(set(levels)):
        (direct, direct_lat), (disco, disco_lat) = (per_path[p][level] for p in PATHS)
        if direct_lat and disco_lat:
            disco.added_latency_mean_s = mean(disco_lat) - mean(direct_lat)
            disco.added_latency_p99_s = percentile(disco_lat, 99) - percentile(direct_lat, 99)
        rows += [direct, disco]
    return rows


def _run_child(
    base_url: str,
    model_name: str,
    path: str,
    levels: Sequence[int],
    max_tokens: int,
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
