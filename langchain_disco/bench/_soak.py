"""The soak of abandoned streams (issue 13): thousands of streams given up in every way a caller
can give one up, then a count of what they left behind.

One `DiscoChatModel` races the shared embedded llama.cpp model (built from settings, as
`DiscoChatModel()` does) against a real HTTP server: the loopback OpenAI-compatible server in a
child process (echo backend, replaying a measured provider's TTFT and pace, so the two sides
win in turn), or any server given by URL. The streams are abandoned round-robin by pattern:

- ``break``: ``async for ... break`` after k chunks; the generator is left to the event loop's
  async-generator finaliser, as in most user code;
- ``aclose``: k chunks, then an explicit ``aclose()`` of the `astream` generator;
- ``cancel``: a task consuming the stream, cancelled before it starts, after one loop pass, or
  at a random moment (before, during or after the first token);
- ``wait_for``: ``asyncio.wait_for`` with a random short timeout;
- ``never``: ``model.astream(...)`` created and dropped without being iterated;
- ``sync``: the sync ``stream()`` broken after k chunks (on a thread of the soak's own, since
  the sync bridge blocks its caller).

k, delays and timeouts come from one `random.Random(seed)`, so a run is reproducible. Before
(after a warm-up) and after, once the counts stop changing (a bounded wait, `gc.collect()`
between looks), it counts this process's asyncio tasks (its own loop and the sync bridge's),
threads (Python and OS), file descriptors, TCP connections to the remote's port, the HTTP
pools' connections in use, and RSS, and checks that the device is idle. A leak is any judged
count that is higher after than before; RSS is reported, not judged.

Idle keep-alive connections are the pool working, not a leak, and how many there are depends
on timing (a server closes them after a few seconds). So both counts are taken on a canonical
pool: after the keep-alive expiry, one complete remote-only request per event loop, which
leaves exactly one idle connection per loop plus anything that is still held.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import gc
import os
import random
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from langchain_core.messages import BaseMessage, BaseMessageChunk, HumanMessage

from langchain_disco import _sync
from langchain_disco.bench._measure import current_rss_bytes, machine_info
from langchain_disco.chat_models import DiscoChatModel
from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint
from langchain_disco.errors import ConfigError, DiscoError
from langchain_disco.testing.latency import profile_names
from langchain_disco.testing.loopback import LoopbackServer

__all__ = [
    "PATTERNS",
    "IdleCheck",
    "PatternResult",
    "Snapshot",
    "SoakOptions",
    "SoakResult",
    "run_soak",
    "schedule",
]

PATTERNS = ("break", "aclose", "cancel", "wait_for", "never", "sync")
"""Every way of abandoning a stream the soak exercises, in round-robin order."""

PROMPTS = (
    "Name a colour.",
    "Say hello to a friend.",
    "Count to five.",
    "Name a river in Europe.",
    "What is two plus two?",
)
"""Short prompts, so that 10,000 streams fit in minutes; used in turn."""

KEEPALIVE_EXPIRY_S = 5.0
"""httpx's default keep-alive expiry (the SDK's too): an idle connection older than this is
closed by the pool at its next request. uvicorn closes idle ones after 5 s as well."""
IDLE_TIMEOUT_S = 30.0
"""The fresh local request of the idle check must complete within this."""
IDLE_QUEUE_WAIT_S = 0.25
"""...and wait at most this long in the device's queue: nothing may be ahead of it."""
CHECKPOINTS = 20
"""RSS is sampled this many times over the run (for growth per 1,000 streams)."""

Progress = Callable[[int, int], None]
"""Called with (streams done, streams in total)."""

Judged = dict[str, int]
"""Counts that must not grow: name -> value."""


# -- options and the schedule ------------------------------------------------------------------


@dataclass(frozen=True)
class SoakOptions:
    """What `run_soak` runs; `validate()` names the option and the fix of a bad value."""

    streams: int = 10_000
    """Abandoned streams in total, the patterns in turn."""
    patterns: tuple[str, ...] = PATTERNS
    seed: int = 0
    """Seeds the abandonment points and the loopback's latency draws."""
    max_tokens: int = 8
    """Answer cap: short answers keep a stream's cost to its set-up and abandonment."""
    concurrency: int = 2
    """Streams in flight at once (each abandoned on its own); above 1, streams also queue for
    the device and are abandoned while queued."""
    window_s: float = 0.5
    """`cancel` delays and `wait_for` timeouts are drawn up to this: a whole race answer of
    `max_tokens` takes about 0.3 s here, so some fall before the first token, most during the
    answer and some after it."""
    remote_url: str | None = None
    """Any OpenAI-compatible base URL; None starts the loopback server (echo backend)."""
    remote_model: str = "loopback"
    latency_profile: str = "bedrock-13b"
    latency_scale: float = 0.5
    """The loopback replays this provider-size's measured TTFTs and pace, scaled: bedrock-13b
    at 0.5x has TTFTs of 0.08-0.38 s (median 0.13 s) against the device's ~0.15 s for these
    prompts, so each side wins races and each is abandoned mid-stream."""
    local_threads: int = 1
    """llama.cpp threads of the local model (one core each for it and the client and server)."""
    local_n_ctx: int = 4096
    settle_timeout_s: float = 60.0
    """Longest wait for the counts to stop changing after the run."""
    quiet_s: float = 1.0
    """The counts must stay unchanged this long to count as settled."""
    warmup_rounds: int = 2
    """Every pattern runs this many times before the first count (not recorded)."""

    def validate(self) -> SoakOptions:
        problems = []
        if self.streams < 1:
            problems.append(f"--streams must be at least 1, got {self.streams}")
        unknown = sorted(set(self.patterns) - set(PATTERNS))
        if unknown or not self.patterns:
            problems.append(
                f"--patterns {','.join(self.patterns)!r} is not a list of: {', '.join(PATTERNS)}"
            )
        if self.max_tokens < 1:
            problems.append(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.concurrency < 1:
            problems.append(f"--concurrency must be at least 1, got {self.concurrency}")
        if not self.window_s > 0:
            problems.append(f"--window-s must be a positive number of seconds, got {self.window_s}")
        if self.remote_url is None and self.latency_profile not in profile_names():
            problems.append(
                f"--latency-profile {self.latency_profile!r} is not one of "
                f"{', '.join(profile_names())}"
            )
        if self.remote_url is not None and urlsplit(self.remote_url).scheme not in (
            "http",
            "https",
        ):
            problems.append(f"--remote-url {self.remote_url!r} is not an http(s) base URL")
        if self.local_threads < 1:
            problems.append(f"--local-threads must be at least 1, got {self.local_threads}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


@dataclass(frozen=True)
class Abandonment:
    """How stream number `index` is given up."""

    index: int
    pattern: str
    prompt: str
    after_chunks: int = 0
    """break, aclose, sync: content chunks read first (aclose: 0 closes it unstarted)."""
    cancel_at: str = "timed"
    """cancel: ``unstarted`` (before the task runs), ``first-step`` (after one loop pass) or
    ``timed`` (after `delay_s`)."""
    delay_s: float = 0.0
    """cancel: when it is cancelled; wait_for: its timeout."""


def schedule(
    options: SoakOptions, *, count: int | None = None, seed: int | None = None
) -> list[Abandonment]:
    """The run's abandonments, drawn in order from one seeded generator."""
    rng = random.Random(options.seed if seed is None else seed)
    patterns, k_max = options.patterns, options.max_tokens
    out = []
    for i in range(options.streams if count is None else count):
        pattern = patterns[i % len(patterns)]
        prompt = PROMPTS[(i // len(patterns)) % len(PROMPTS)]
        how: dict[str, Any] = {}
        if pattern in ("break", "sync"):  # half after the first chunk, the rest anywhere
            k = 1 if rng.random() < 0.5 or k_max < 2 else rng.randint(2, k_max)
            how["after_chunks"] = k
        elif pattern == "aclose":
            how["after_chunks"] = rng.randint(0, k_max)
        elif pattern == "cancel":
            r = rng.random()
            how["cancel_at"] = "unstarted" if r < 0.1 else "first-step" if r < 0.2 else "timed"
            how["delay_s"] = rng.uniform(0, options.window_s)
        elif pattern == "wait_for":
            how["delay_s"] = rng.uniform(0.001, options.window_s)
        out.append(Abandonment(i, pattern, prompt, **how))
    return out


# -- what one stream did ----------------------------------------------------------------------


@dataclass
class _Tally:
    """What the consumer of one stream saw before it let go."""

    chunks: int = 0
    """Content chunks."""
    first_from: str | None = None
    """The endpoint of the first content chunk."""
    completed: bool = False
    """The last chunk (with the report) arrived: the answer ended before the abandonment."""

    def see(self, chunk: BaseMessageChunk) -> None:
        metadata = chunk.response_metadata
        if "disco_report" in metadata:
            self.completed = True
        elif chunk.content:
            self.chunks += 1
            if self.first_from is None:
                self.first_from = ",".join(metadata.get("disco_endpoints", ()))


@dataclass
class PatternResult:
    """Every stream of one pattern: where it was abandoned, and what went wrong."""

    pattern: str
    streams: int = 0
    before_first_token: int = 0
    """Abandoned before any content chunk reached the consumer."""
    mid_stream: int = 0
    completed: int = 0
    """The answer ended before the abandonment point (nothing left to abandon)."""
    errors: int = 0
    first_error: str | None = None
    local_first: int = 0
    """The consumer's first content chunk came from the device..."""
    remote_first: int = 0
    """...or from the server."""
    total_s: float = 0.0

    def add(self, tally: _Tally, elapsed_s: float, error: BaseException | None) -> None:
        self.streams += 1
        self.total_s += elapsed_s
        if error is not None:
            self.errors += 1
            self.first_error = self.first_error or f"{type(error).__name__}: {error}"
        elif tally.completed:
            self.completed += 1
        elif tally.chunks:
            self.mid_stream += 1
        else:
            self.before_first_token += 1
        self.local_first += tally.first_from == "local"
        self.remote_first += tally.first_from == "remote"


# -- what the process holds -------------------------------------------------------------------

_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def sockets_to(port: int) -> Counter[str]:
    """TCP states of this process's sockets whose remote end is `port` (/proc, Linux)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed between the listing and the readlink
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    states: Counter[str] = Counter()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                rows = lines.read().splitlines()[1:]
        except OSError:  # no IPv6 table on this kernel
            continue
        for row in rows:
            cells = row.split()
            if int(cells[2].rsplit(":", 1)[1], 16) == port and cells[9] in inodes:
                states[_TCP_STATES.get(cells[3], cells[3])] += 1
    return states


def _pool_connections(endpoint: object) -> tuple[int, int] | None:
    """(in use, idle) connections of the endpoint's HTTP pools, every event loop's; None when
    the SDK is not built the way this reads it (openai's client -> httpx -> httpcore pool)."""
    clients = getattr(endpoint, "_clients", None)
    if clients is None:
        return None
    in_use = idle = 0
    for client in list(clients.values()):
        transport = getattr(getattr(client, "_client", None), "_transport", None)
        connections = getattr(getattr(transport, "_pool", None), "connections", None)
        if connections is None:
            return None
        for connection in connections:
            if connection.is_idle():
                idle += 1
            else:
                in_use += 1
    return in_use, idle


def rss_anon_bytes() -> int:
    """This process's anonymous resident memory (Linux ``RssAnon``; 0 where unknown)."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class RssPoint:
    """Resident memory after `streams` streams."""

    streams: int
    rss_bytes: int
    rss_anon_bytes: int
    full_collections: int
    """Full (generation 2) collections of Python's cyclic garbage collector so far."""

    @classmethod
    def now(cls, streams: int) -> RssPoint:
        full = gc.get_stats()[2]["collections"]
        return cls(streams, current_rss_bytes(), rss_anon_bytes(), full)


@dataclass(frozen=True)
class Snapshot:
    """What the process holds at one moment."""

    tasks: tuple[str, ...]
    """Names of the pending asyncio tasks on the soak's loop (but the one measuring)."""
    sync_loop_tasks: tuple[str, ...]
    """...and on the sync bridge's background loop."""
    threads: tuple[str, ...]
    """Names of the live Python threads."""
    os_threads: int
    """Threads of the process as the kernel sees them (llama.cpp's own ones included)."""
    fds: int
    connections: int
    """ESTABLISHED TCP connections of this process to the remote's port."""
    other_sockets: dict[str, int]
    """Sockets to that port in other states (CLOSE_WAIT: closed by the server, still open here)."""
    pool_in_use: int | None
    """Connections checked out of the endpoint's HTTP pools (None: not readable)."""
    pool_idle: int | None
    rss_bytes: int
    rss_anon_bytes: int
    """The anonymous part of RSS (heap); the rest is mapped files, the model's pages above all."""
    local_pending: int
    local_busy: bool

    def judged(self) -> Judged:
        """The counts a leak would raise."""
        counts = {
            "asyncio tasks": len(self.tasks),
            "sync-loop tasks": len(self.sync_loop_tasks),
            "threads": len(self.threads),
            "OS threads": self.os_threads,
            "file descriptors": self.fds,
            "TCP connections": self.connections,
            "device queue": self.local_pending,
        }
        if self.pool_in_use is not None:
            counts["pool connections in use"] = self.pool_in_use
        return counts


def leaks(before: Snapshot, after: Snapshot) -> dict[str, tuple[int, int]]:
    """Every judged count that is higher after than before: name -> (before, after)."""
    b, a = before.judged(), after.judged()
    return {name: (b[name], a[name]) for name in a if a[name] > b.get(name, 0)}


@dataclass(frozen=True)
class IdleCheck:
    """A fresh short request to the device after the run: it must find nothing ahead of it."""

    pending: int
    busy: bool
    completed: bool
    elapsed_s: float
    queue_wait_s: float
    error: str | None = None

    @property
    def idle(self) -> bool:
        return (
            self.pending == 0
            and not self.busy
            and self.completed
            and self.queue_wait_s <= IDLE_QUEUE_WAIT_S
        )


@dataclass
class SoakResult:
    """Everything one soak measured."""

    options: SoakOptions
    remote_url: str
    started: str
    """Local date and time of the start (ISO 8601)."""
    machine: dict[str, Any]
    patterns: dict[str, PatternResult]
    before: Snapshot
    settled: Snapshot
    """Right after the run, once the counts stopped changing (before the idle check)."""
    after: Snapshot
    """On the canonical pool (what `leaks` compares with `before`)."""
    settle_s: float
    settled_in_time: bool
    idle_before: IdleCheck
    idle_after: IdleCheck
    run_s: float
    """The streams alone."""
    answer_s: float = float("nan")
    """Mean time of a whole race answer, measured after the warm-up."""
    wall_s: float = 0.0
    """Everything: server start-up, model load, warm-up, counts."""
    rss_checkpoints: list[RssPoint] = field(default_factory=list)
    """Resident memory during the run, from its start (0 streams done)."""
    rss_midpoint: RssPoint | None = None
    """Resident memory halfway through, right after a full garbage collection."""
    complaints: int = 0
    """What Python and asyncio reported instead of raising (`Complaints`): must be 0."""
    first_complaints: list[str] = field(default_factory=list)
    server_statuses: dict[str, int] | None = None
    """The loopback's request log after the run: requests by final status (None: not ours)."""

    @property
    def leaked(self) -> dict[str, tuple[int, int]]:
        return leaks(self.before, self.after)

    @property
    def ok(self) -> bool:
        server_clean = not (self.server_statuses or {}).get("running")
        return (
            not self.leaked
            and self.idle_after.idle
            and server_clean
            and self.errors == 0
            and self.complaints == 0
        )

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.patterns.values())

    def rss_growth_per_1000(self, *, anon: bool = False) -> tuple[float, float]:
        """RSS (or its anonymous part) growth per 1,000 streams in bytes, between readings
        taken after a full garbage collection: over the whole run (before -> after), and over
        its second half (midpoint -> after), when the model's pages are in and the allocator
        has warmed up."""

        def value(point: RssPoint | Snapshot) -> int:
            return point.rss_anon_bytes if anon else point.rss_bytes

        whole = (value(self.after) - value(self.before)) / self.options.streams * 1000
        mid = self.rss_midpoint
        if mid is None or mid.streams >= self.options.streams:
            return whole, float("nan")
        span = self.options.streams - mid.streams
        return whole, (value(self.after) - value(mid)) / span * 1000


class Complaints:
    """What Python and asyncio report about abandoned streams instead of raising them to anyone:
    errors in async-generator finalisers and callbacks, tasks destroyed while pending (both
    through the loops' exception handlers), exceptions ignored in ``__del__`` and generator
    finalisers (`sys.unraisablehook`), and unclosed sockets or transports (`ResourceWarning`)."""

    KEPT = 5

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []
        self._lock = threading.Lock()  # the sync bridge's loop and thread report too

    def note(self, what: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.first) < self.KEPT:
                self.first.append(what)

    @contextlib.contextmanager
    def listening(self, loops: list[asyncio.AbstractEventLoop]) -> Iterator[None]:
        """Note every complaint while the block runs; the previous handlers are restored."""

        def on_loop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            self.note(f"asyncio: {context.get('message')}" + (f" ({exc!r})" if exc else ""))

        def on_unraisable(u: Any) -> None:
            where = traceback.extract_tb(u.exc_traceback)[-3:] if u.exc_traceback else []
            self.note(
                f"unraisable in thread {threading.current_thread().name}: "
                f"{u.exc_type.__name__}: {u.exc_value} ({u.err_msg or 'in'} {u.object!r}; at "
                + " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in where)
                + ")"
            )

        def on_warning(message: Any, category: type[Warning], *args: Any, **kw: Any) -> None:
            if issubclass(category, ResourceWarning):
                self.note(f"ResourceWarning: {message}")
            else:
                show(message, category, *args, **kw)

        handlers = [(loop, loop.get_exception_handler()) for loop in loops]
        unraisable = sys.unraisablehook
        with warnings.catch_warnings():
            show = warnings.showwarning
            warnings.simplefilter("always", ResourceWarning)
            warnings.showwarning = on_warning
            for loop, _ in handlers:
                loop.set_exception_handler(on_loop)
            sys.unraisablehook = on_unraisable
            try:
                yield
            finally:
                sys.unraisablehook = unraisable
                for loop, handler in handlers:
                    loop.set_exception_handler(handler)


# -- the soak ---------------------------------------------------------------------------------


def run_soak(options: SoakOptions, progress: Progress | None = None) -> SoakResult:
    """Run the soak (blocking): the loopback server, unless a URL is given, for its duration."""
    options.validate()
    start = time.perf_counter()
    if options.remote_url is not None:
        result = asyncio.run(_Soak(options, options.remote_url, options.remote_model).run(progress))
    else:
        with LoopbackServer(
            backend="echo",
            latency_profile=options.latency_profile,
            latency_scale=options.latency_scale,
            seed=options.seed,
            model_name=options.remote_model,
        ) as server:
            result = asyncio.run(_Soak(options, server.base_url, server.model_name).run(progress))
            result.server_statuses = _server_statuses(server)
    result.wall_s = time.perf_counter() - start
    return result


def _server_statuses(server: LoopbackServer, timeout_s: float = 10.0) -> dict[str, int]:
    """The loopback's request log by status, once no request is ``running`` (bounded wait):
    the server saw every abandoned stream end."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = Counter(entry["status"] for entry in server.requests())
        if not statuses.get("running") or time.monotonic() >= deadline:
            return dict(sorted(statuses.items()))
        time.sleep(0.1)


class _Soak:
    """One soak run on one event loop (the one `run` is awaited on)."""

    def __init__(self, options: SoakOptions, base_url: str, model_name: str) -> None:
        self.options = options
        self.base_url = base_url
        split = urlsplit(base_url)
        self.port = split.port or (443 if split.scheme == "https" else 80)
        self.model = DiscoChatModel(
            mode="race",
            policy=None,
            remote_base_url=base_url,
            remote_model=model_name,
            remote_continuation="none",
            max_tokens=options.max_tokens,
            local_n_threads=options.local_threads,
            local_n_ctx=options.local_n_ctx,
            failover=True,
            migration="off",
            pace_tok_s=None,
            persist_profiles=False,
        )
        if not isinstance(self.model.local, LlamaCppEndpoint):
            raise ConfigError("the soak needs the local llama.cpp model (DISCO_LOCAL_MODEL_PATH)")
        self.local = self.model.local
        # Same endpoint, so the same HTTP pools: the canonical pool's complete requests.
        self.remote_only = DiscoChatModel(
            mode="remote",
            policy=None,
            remote=self.model.remote,
            failover=False,
            max_tokens=2,
            persist_profiles=False,
        )
        self.uses_sync = "sync" in options.patterns
        self.sync_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self.results = {p: PatternResult(p) for p in options.patterns}
        self.midpoint: RssPoint | None = None
        self.patterns: dict[str, Callable[[Abandonment, _Tally], Awaitable[None]]] = {
            "break": self._break,
            "aclose": self._aclose,
            "cancel": self._cancel,
            "wait_for": self._wait_for,
            "never": self._never,
        }

    # -- counting ---------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        here = asyncio.current_task()
        tasks = sorted(t.get_name() for t in asyncio.all_tasks() if t is not here)
        sync_tasks: list[str] = []
        if self.uses_sync:
            found = asyncio.run_coroutine_threadsafe(_task_names(), _sync.background_loop())
            sync_tasks = await asyncio.wrap_future(found)
        pool = _pool_connections(self.model.remote)
        sockets = sockets_to(self.port)
        return Snapshot(
            tasks=tuple(tasks),
            sync_loop_tasks=tuple(sync_tasks),
            threads=tuple(sorted(t.name for t in threading.enumerate())),
            os_threads=len(os.listdir("/proc/self/task")),
            fds=len(os.listdir("/proc/self/fd")),
            connections=sockets.pop("ESTABLISHED", 0),
            other_sockets=dict(sockets),
            pool_in_use=None if pool is None else pool[0],
            pool_idle=None if pool is None else pool[1],
            rss_bytes=current_rss_bytes(),
            rss_anon_bytes=rss_anon_bytes(),
            local_pending=self.local.pending,
            local_busy=self.local.busy,
        )

    async def settle(self) -> tuple[Snapshot, float, bool]:
        """Look until the judged counts have not changed for `quiet_s` (a garbage collection
        before each look), at most `settle_timeout_s`; (snapshot, seconds, settled in time)."""
        start = time.monotonic()
        deadline = start + self.options.settle_timeout_s
        gc.collect()
        last = await self.snapshot()
        quiet_since = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            gc.collect()
            now = await self.snapshot()
            moment = time.monotonic()
            if (now.judged(), now.local_busy) != (last.judged(), last.local_busy):
                quiet_since = moment
            last = now
            if moment - quiet_since >= self.options.quiet_s:
                return now, moment - start, True
            if moment >= deadline:
                return now, moment - start, False

    async def canonical(self) -> Snapshot:
        """The counts on a canonical pool: every idle connection expired, then one complete
        remote-only request per event loop (one idle connection each, plus whatever is held)."""
        await asyncio.sleep(KEEPALIVE_EXPIRY_S + 0.5)
        await self.remote_only.ainvoke("Say hi.")
        if self.uses_sync:
            await self._on_sync_thread(lambda: self.remote_only.invoke("Say hi."))
        snapshot, _, _ = await self.settle()
        return snapshot

    async def answer_time(self) -> float:
        """Mean seconds of a whole race answer, one per prompt (what the window compares to)."""
        start = time.perf_counter()
        for prompt in PROMPTS:
            await self.model.ainvoke(prompt)
        return (time.perf_counter() - start) / len(PROMPTS)

    async def idle_check(self) -> IdleCheck:
        """A fresh 2-token request straight to the device, timed; what it found ahead of it."""
        pending, busy = self.local.pending, self.local.busy
        stats = StreamStats()
        start = time.perf_counter()
        items = self.local.stream(
            [HumanMessage("Say hi.")], GenerationParams(max_tokens=2, temperature=0.0), stats
        )
        error = None
        try:
            async with contextlib.aclosing(cast(AsyncGenerator[Any, None], items)) as stream:
                await asyncio.wait_for(_drain(stream), IDLE_TIMEOUT_S)
        except Exception as exc:  # a failed check (a timeout included) is a result
            error = f"{type(exc).__name__}: {exc}"
        return IdleCheck(
            pending=pending,
            busy=busy,
            completed=error is None,
            elapsed_s=time.perf_counter() - start,
            queue_wait_s=stats.queue_wait_s,
            error=error,
        )

    # -- the run ----------------------------------------------------------------------------

    async def run(self, progress: Progress | None) -> SoakResult:
        o = self.options
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.sync_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="disco-soak-sync"
        )
        complaints = Complaints()
        loops = [asyncio.get_running_loop()]
        if self.uses_sync:
            loops.append(_sync.background_loop())
        try:
            with complaints.listening(loops):
                await self.local.load()
                warm = PatternResult("warm-up")
                for a in schedule(o, count=o.warmup_rounds * len(o.patterns), seed=o.seed + 1):
                    await self._one(a, warm)
                if warm.errors:
                    raise DiscoError(f"the soak's warm-up failed: {warm.first_error}")
                answer_s = await self.answer_time()
                await self.settle()
                idle_before = await self.idle_check()
                before = await self.canonical()

                start = time.perf_counter()
                checkpoints = await self._drive(schedule(o), progress)
                run_s = time.perf_counter() - start

                settled, settle_s, in_time = await self.settle()
                idle_after = await self.idle_check()
                after = await self.canonical()
        finally:
            assert self.model.remote is not None
            await self.model.remote.aclose()  # every loop's HTTP pool (the device is shared)
            self.sync_thread.shutdown(wait=True)
        return SoakResult(
            options=o,
            remote_url=self.base_url,
            started=started,
            machine=machine_info(),
            patterns=self.results,
            before=before,
            settled=settled,
            after=after,
            settle_s=settle_s,
            settled_in_time=in_time,
            idle_before=idle_before,
            idle_after=idle_after,
            run_s=run_s,
            rss_checkpoints=checkpoints,
            rss_midpoint=self.midpoint,
            answer_s=answer_s,
            complaints=complaints.count,
            first_complaints=list(complaints.first),
        )

    async def _drive(
        self, abandonments: list[Abandonment], progress: Progress | None
    ) -> list[RssPoint]:
        """Every abandonment, `concurrency` at a time; RSS at `CHECKPOINTS` points."""
        total = len(abandonments)
        every = max(1, total // CHECKPOINTS)
        queue: Iterator[Abandonment] = iter(abandonments)
        checkpoints = [RssPoint.now(0)]
        done = 0

        async def worker() -> None:
            nonlocal done
            for a in queue:  # one iterator shared by the workers: each takes the next
                await self._one(a, self.results[a.pattern])
                done += 1
                if done % every == 0 or done == total:
                    checkpoints.append(RssPoint.now(done))
                if done == total // 2 and done:  # collected, like the counts before and after
                    gc.collect()
                    self.midpoint = RssPoint.now(done)
                if progress is not None:
                    progress(done, total)

        workers = [
            asyncio.create_task(worker(), name=f"disco-soak-worker-{i}")
            for i in range(min(self.options.concurrency, total))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return checkpoints

    async def _one(self, a: Abandonment, into: PatternResult) -> None:
        tally = _Tally()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            if a.pattern == "sync":
                await self._on_sync_thread(lambda: self._sync_break(a, tally))
            else:
                await self.patterns[a.pattern](a, tally)
        except Exception as exc:  # a stream that fails is counted, and the soak goes on
            error = exc
        into.add(tally, time.perf_counter() - start, error)

    async def _on_sync_thread(self, work: Callable[[], object]) -> None:
        assert self.sync_thread is not None
        await asyncio.get_running_loop().run_in_executor(self.sync_thread, work)

    # -- the patterns -----------------------------------------------------------------------

    def _messages(self, a: Abandonment) -> list[BaseMessage]:
        return [HumanMessage(a.prompt)]

    async def _consume(self, a: Abandonment, tally: _Tally) -> None:
        async for chunk in self.model.astream(self._messages(a)):
            tally.see(chunk)

    async def _break(self, a: Abandonment, tally: _Tally) -> None:
        # No reference kept: the generator is closed by the loop's async-generator finaliser.
        async for chunk in self.model.astream(self._messages(a)):
            tally.see(chunk)
            if tally.chunks >= a.after_chunks:
                break

    async def _aclose(self, a: Abandonment, tally: _Tally) -> None:
        chunks = cast(AsyncGenerator[BaseMessageChunk, None], self.model.astream(self._messages(a)))
        if a.after_chunks:
            async for chunk in chunks:
                tally.see(chunk)
                if tally.chunks >= a.after_chunks:
                    break
        await chunks.aclose()

    async def _cancel(self, a: Abandonment, tally: _Tally) -> None:
        task = asyncio.create_task(self._consume(a, tally), name="disco-soak-consumer")
        if a.cancel_at == "first-step":
            await asyncio.sleep(0)
        elif a.cancel_at == "timed":
            await asyncio.wait({task}, timeout=a.delay_s)
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())

    async def _wait_for(self, a: Abandonment, tally: _Tally) -> None:
        with contextlib.suppress(asyncio.TimeoutError):  # the timeout is the abandonment
            await asyncio.wait_for(self._consume(a, tally), a.delay_s)

    async def _never(self, a: Abandonment, tally: _Tally) -> None:
        chunks = self.model.astream(self._messages(a))
        del chunks  # created and dropped, never iterated

    def _sync_break(self, a: Abandonment, tally: _Tally) -> None:
        for chunk in self.model.stream(self._messages(a)):
            tally.see(chunk)
            if tally.chunks >= a.after_chunks:
                break


async def _task_names() -> list[str]:
    """Names of the pending tasks of the running loop, but the caller's own."""
    here = asyncio.current_task()
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not here)


async def _drain(items: AsyncGenerator[Any, None]) -> None:
    async for _ in items:
        pass
