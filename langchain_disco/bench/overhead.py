"""`disco bench overhead`: what the scheduler itself costs, against the bare endpoint and the
clients a user would use instead.

Every path streams the same requests from the loopback server's echo backend (no model, so the
server is not the bottleneck) over real HTTP, in one run (`_streams` lists them):

- **direct**: `OpenAIEndpoint.stream`, the remote adapter alone;
- **disco**: `DiscoChatModel.astream` (mode remote, failover off) over an identical endpoint,
  so the LangChain surface, dispatch, engine and report are what the difference measures;
- **disco-race**: the same in mode race (a local that never wins is started and cancelled);
- **chatopenai**: langchain-openai's `ChatOpenAI`, the baseline of every ratio;
- **litellm**: LiteLLM's `acompletion`, if installed.

Single stream, direct vs disco interleaved request by request: added TTFT; added latency per
token (the time a token spends between the endpoint yielding it and the consumer receiving
it); CPU per token. Then N concurrent streams per level (1, 10, 100, 500 by default), each path
in a fresh process (see `_concurrency`): completed and failed streams, TTFT, per-token and
per-stream latency, CPU per token, memory per stream, and their ratios to ChatOpenAI. A path
whose optional package is missing is skipped with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_disco.bench._concurrency import LevelResult, measure_concurrency, rounds_for
from langchain_disco.bench._measure import (
    machine_info,
    max_rss_bytes,
    mean,
    percentile,
)
from langchain_disco.bench._ratios import ratios_to
from langchain_disco.bench._streams import ALL_PATHS, BASELINE, PATHS, Paths, messages_for
from langchain_disco.errors import ConfigError, DiscoError
from langchain_disco.testing.echo import DEFAULT_ECHO_TOK_S
from langchain_disco.testing.loopback import LoopbackServer

__all__ = [
    "LevelResult",
    "OverheadOptions",
    "OverheadResult",
    "StreamSample",
    "measure_overhead",
    "parse_levels",
    "parse_paths",
]

ADDED_TTFT_LIMIT_MS = 2.0
ADDED_TOKEN_LIMIT_US = 100.0

Advance = Callable[[int], None]

_STATS: tuple[tuple[str, Callable[[Sequence[float]], float]], ...] = (
    ("mean", mean),
    ("p50", lambda values: percentile(values, 50)),
    ("p99", lambda values: percentile(values, 99)),
)
_LIMITS = {
    ("TTFT", "mean"): ADDED_TTFT_LIMIT_MS,
    ("latency per token", "mean"): ADDED_TOKEN_LIMIT_US,
}


@dataclass(frozen=True)
class OverheadOptions:
    """What `measure_overhead` runs; invalid values raise one `ConfigError` naming the option."""

    requests: int = 100
    """Single-stream requests per path."""
    max_tokens: int = 64
    """Tokens per answer (the echo backend always produces exactly this many)."""
    levels: tuple[int, ...] = (1, 10, 100, 500)
    """Concurrent streams per level."""
    tok_s: float = DEFAULT_ECHO_TOK_S
    """Echo decode rate per stream (0: as fast as the server can send)."""
    warmup: int = 3
    """Unrecorded requests per path first (connections, imports, caches)."""
    paths: tuple[str, ...] = ALL_PATHS
    """Concurrency paths to run (the single-stream phase always compares direct and disco)."""
    min_streams: int = 20
    """A concurrency level runs in rounds until it has at least this many streams."""

    def __post_init__(self) -> None:
        problems = []
        if self.requests < 1:
            problems.append(f"--requests must be at least 1, got {self.requests}")
        if self.max_tokens < 2:
            problems.append(
                f"--max-tokens must be at least 2 (a gap between tokens is measured), "
                f"got {self.max_tokens}"
            )
        if not self.levels or any(level < 1 for level in self.levels):
            problems.append(f"--levels must be positive stream counts, got {self.levels}")
        if not self.tok_s >= 0:
            problems.append(f"--tok-s must be 0 (unpaced) or a positive rate, got {self.tok_s}")
        if self.warmup < 0:
            problems.append(f"--warmup must be 0 or more, got {self.warmup}")
        unknown = [p for p in self.paths if p not in ALL_PATHS]
        if unknown or not self.paths:
            problems.append(
                f"--paths must name some of {', '.join(ALL_PATHS)}, got {','.join(self.paths)!r}"
            )
        if self.min_streams < 1:
            problems.append(f"--min-streams must be at least 1, got {self.min_streams}")
        if problems:
            raise ConfigError("; ".join(problems))


def parse_levels(text: str) -> tuple[int, ...]:
    """``"1,10,100,500"`` as stream counts; anything else raises a `ConfigError` saying why."""
    hint = "give comma-separated positive stream counts, such as --levels 1,10,100,500"
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise ConfigError(f"--levels is empty: {hint}")
    levels = []
    for part in parts:
        try:
            level = int(part)
        except ValueError:
            raise ConfigError(f"--levels: {part!r} is not a whole number; {hint}") from None
        if level < 1:
            raise ConfigError(f"--levels: {level} concurrent streams is not possible; {hint}")
        levels.append(level)
    return tuple(levels)


def parse_paths(text: str) -> tuple[str, ...]:
    """``"direct,chatopenai"`` as concurrency paths, in report order; unknown names raise."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [name for name in names if name not in ALL_PATHS]
    if unknown or not names:
        raise ConfigError(
            f"--paths: {', '.join(unknown) or 'nothing'} is not a path; "
            f"give comma-separated names from {','.join(ALL_PATHS)}"
        )
    return tuple(p for p in ALL_PATHS if p in names)


@dataclass
class StreamSample:
    """One single-stream request as its consumer saw it (times in seconds)."""

    path: str
    request: int
    prompt_chars: int
    tokens: int
    ttft_s: float
    gap_s: float
    """Mean gap between content tokens."""
    cpu_per_token_s: float
    """Process CPU from the first to the last token, per gap."""
    cpu_s: float
    """Process CPU of the whole request, call to end of stream."""
    lags_s: list[float] = field(repr=False)
    """Per token: from the endpoint yielding it to the consumer receiving it."""


@dataclass
class OverheadResult:
    """Everything one run measured, ready to print and write."""

    options: OverheadOptions
    machine: dict[str, Any]
    samples: list[StreamSample]
    levels: list[LevelResult]
    ru_maxrss_bytes: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    """Concurrency paths that did not run, with the reason (a missing optional package)."""

    def summary(self) -> list[dict[str, Any]]:
        """The single-stream metrics: direct, disco, added (disco - direct), limit, pass."""
        rows: list[dict[str, Any]] = []

        def add(metric: str, unit: str, scale: float, values: Callable[[str], list[float]]) -> None:
            for stat, of in _STATS:
                got = {path: of(values(path)) * scale for path in PATHS}
                added = got["disco"] - got["direct"]
                limit = _LIMITS.get((metric, stat))
                rows.append(
                    {
                        "metric": metric,
                        "stat": stat,
                        "unit": unit,
                        "direct": got["direct"],
                        "disco": got["disco"],
                        "added": added,
                        "limit": limit,
                        "pass": None if limit is None else added < limit,
                    }
                )

        def per(path: str, attr: str) -> list[float]:
            return [float(getattr(s, attr)) for s in self.samples if s.path == path]

        def lags(path: str) -> list[float]:
            return [lag for s in self.samples if s.path == path for lag in s.lags_s]

        add("TTFT", "ms", 1e3, lambda p: per(p, "ttft_s"))
        add("latency per token", "µs", 1e6, lags)
        add("gap between tokens", "µs", 1e6, lambda p: per(p, "gap_s"))
        add("CPU per token", "µs", 1e6, lambda p: per(p, "cpu_per_token_s"))
        add("CPU per request", "ms", 1e3, lambda p: per(p, "cpu_s"))
        return rows

    def concurrency_ok(self) -> bool:
        """True when every stream of every level completed."""
        return all(r.errors == 0 and r.completed == r.streams for r in self.levels)

    def ratios(self) -> list[dict[str, Any]]:
        """Every concurrency row's figures as ratios to ChatOpenAI's at the same level (none
        when ChatOpenAI did not run)."""
        return ratios_to(self.levels, BASELINE)

    def to_json(self) -> dict[str, Any]:
        return {
            "options": {**asdict(self.options), "levels": list(self.options.levels)},
            "machine": self.machine,
            "single_stream": self.summary(),
            "concurrency": [
                {
                    **asdict(r),
                    "streams": r.streams,
                    "memory_per_stream_bytes": r.memory_per_stream_bytes,
                }
                for r in self.levels
            ],
            "concurrency_ok": self.concurrency_ok(),
            "baseline": BASELINE,
            "ratios": self.ratios(),
            "skipped": self.skipped,
            "ru_maxrss_bytes": self.ru_maxrss_bytes,
            "requests": [
                {k: v for k, v in asdict(s).items() if k != "lags_s"} for s in self.samples
            ],
        }


async def _one_stream(paths: Paths, path: str, request: int) -> StreamSample:
    endpoint = paths.endpoint(path)
    stamps: list[float] = []
    endpoint.stamps = stamps
    messages = messages_for(request)
    arrivals: list[float] = []
    cpu: list[float] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    texts = paths.texts(path, messages)
    try:
        async with contextlib.aclosing(texts):
            async for _text in texts:
                arrivals.append(time.perf_counter())
                cpu.append(time.process_time())
    finally:
        endpoint.stamps = None
    cpu_s = time.process_time() - cpu_start
    if len(arrivals) < 2:
        raise DiscoError(
            f"the {path} stream of request {request} delivered {len(arrivals)} token(s); "
            "the benchmark needs at least 2 per answer"
        )
    gaps = len(arrivals) - 1
    matched = len(stamps) == len(arrivals)
    lags = [a - s for a, s in zip(arrivals, stamps, strict=True)] if matched else []
    return StreamSample(
        path=path,
        request=request,
        prompt_chars=len(str(messages[0].content)),
        tokens=len(arrivals),
        ttft_s=arrivals[0] - start,
        gap_s=(arrivals[-1] - arrivals[0]) / gaps,
        cpu_per_token_s=(cpu[-1] - cpu[0]) / gaps,
        cpu_s=cpu_s,
        lags_s=lags,
    )


async def _single_stream(
    paths: Paths, options: OverheadOptions, advance: Advance
) -> list[StreamSample]:
    """Each request on both paths back to back, alternating which goes first."""
    for i in range(options.warmup):
        for path in PATHS:
            await _one_stream(paths, path, i)
    samples: list[StreamSample] = []
    for i in range(options.requests):
        order = PATHS if i % 2 == 0 else PATHS[::-1]
        for path in order:
            samples.append(await _one_stream(paths, path, i))
            advance(1)
    return samples


async def _measure_single(
    server: LoopbackServer,
    options: OverheadOptions,
    progress: Callable[[str, int], Advance],
) -> list[StreamSample]:
    paths = Paths.build(server.base_url, server.model_name, options.max_tokens, connections=4)
    try:
        total = options.requests * len(PATHS)
        return await _single_stream(paths, options, progress("single stream", total))
    finally:
        await paths.aclose()


def measure_overhead(
    options: OverheadOptions, progress: Callable[[str, int], Advance] | None = None
) -> OverheadResult:
    """Start the echo loopback server, run both phases, and return what was measured.

    `progress(description, total)` is called at the start of each phase and returns a
    callable advanced once per finished stream.
    """

    def silent(_description: str, _total: int) -> Advance:
        return lambda _n: None

    progress = progress or silent
    load_before = os.getloadavg()
    started = time.perf_counter()
    with LoopbackServer(backend="echo", echo_tok_s=options.tok_s, latency_profile="none") as srv:
        samples = asyncio.run(_measure_single(srv, options, progress))
        streams = sum(
            level * rounds_for(level, options.min_streams) for level in set(options.levels)
        )
        concurrency = measure_concurrency(
            srv.base_url,
            srv.model_name,
            options.levels,
            options.max_tokens,
            progress("concurrent streams", streams * len(options.paths)),
            paths=options.paths,
            min_streams=options.min_streams,
            # The server logs every request; keep its memory flat across thousands of them.
            before_each=srv.clear_requests,
        )
    machine = machine_info()
    machine["echo_tok_s"] = options.tok_s
    machine["load_average_before"] = list(load_before)
    machine["load_average_after"] = list(os.getloadavg())
    machine["wall_s"] = time.perf_counter() - started
    return OverheadResult(
        options,
        machine,
        samples,
        concurrency.rows,
        ru_maxrss_bytes=max_rss_bytes(),
        skipped=concurrency.skipped,
    )
