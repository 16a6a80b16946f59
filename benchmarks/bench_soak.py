"""Soak: thousands of abandoned streams, and what they leave behind (issue 13).

Run: `.venv/bin/python benchmarks/bench_soak.py --streams 10000` (about 20 minutes on a quiet
2-core machine; `--streams 600` takes about two). It is one `langchain_disco.bench._soak` run:
`DiscoChatModel` in race mode over the shared embedded Gemma 3 270M (llama.cpp, in-process)
and a real HTTP server (the loopback server in a child process, or `--remote-url`), every
stream abandoned in one of six ways (break, aclose, task cancel, wait_for timeout, never
iterated, sync stream broken), then asyncio tasks, threads, file descriptors, TCP connections
to the server, HTTP pool connections and RSS counted against the same counts before the run.

It prints the tables, writes the result as JSON to `bench-out/soak/result.json` and writes the
`## Soak: abandoned streams` section of `docs/benchmarks.md` (replacing it or appending it;
every other section is kept; `--no-page` leaves the page alone). The exit status is 1 if
anything leaked, the device was not idle afterwards, a stream failed, or Python or asyncio
reported an error nobody saw (see `Complaints`); 0 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from langchain_disco.bench._page import replace_section
from langchain_disco.bench._soak import PATTERNS, Snapshot, SoakOptions, SoakResult, run_soak

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
DATA = ROOT / "bench-out" / "soak"
HEADING = "## Soak: abandoned streams"
stderr = Console(stderr=True, width=160)

PATTERN_TEXT = {
    "break": "`async for ... break` after k chunks (half after the first), no reference kept: "
    "the loop's async-generator finaliser closes it",
    "aclose": "k chunks (0 to max_tokens), then `await gen.aclose()`",
    "cancel": "a task consuming the stream, cancelled before it runs (10%), after one loop pass "
    "(10%) or after a uniform delay up to the window",
    "wait_for": "`asyncio.wait_for` of a consumer with a uniform timeout up to the window",
    "never": "`model.astream(...)` created and dropped, never iterated",
    "sync": "the sync `model.stream(...)` broken after k chunks (on a thread of the soak's)",
}


def _mb(n_bytes: float) -> str:
    return "-" if math.isnan(n_bytes) else f"{n_bytes / 2**20:+.1f} MB"


# -- rows (one source for the console and the page) -------------------------------------------


def pattern_rows(result: SoakResult) -> tuple[list[str], list[list[str]]]:
    header = [
        "pattern",
        "streams",
        "before the first token",
        "mid-stream",
        "answer already complete",
        "errors",
        "first chunk from device / server",
        "mean s",
    ]
    rows = []
    for p in result.patterns.values():
        rows.append(
            [
                p.pattern,
                f"{p.streams:,}",
                f"{p.before_first_token:,}",
                f"{p.mid_stream:,}",
                f"{p.completed:,}",
                f"{p.errors:,}" + (f" ({p.first_error})" if p.first_error else ""),
                f"{p.local_first:,} / {p.remote_first:,}",
                f"{p.total_s / p.streams:.3f}" if p.streams else "-",
            ]
        )
    total = list(result.patterns.values())
    rows.append(
        [
            "**all**",
            f"**{sum(p.streams for p in total):,}**",
            f"{sum(p.before_first_token for p in total):,}",
            f"{sum(p.mid_stream for p in total):,}",
            f"{sum(p.completed for p in total):,}",
            f"**{result.errors:,}**",
            f"{sum(p.local_first for p in total):,} / {sum(p.remote_first for p in total):,}",
            f"{sum(p.total_s for p in total) / max(1, sum(p.streams for p in total)):.3f}",
        ]
    )
    return header, rows


def resource_rows(result: SoakResult) -> tuple[list[str], list[list[str]]]:
    header = ["", "before", "after, settled", "after", "leaked"]
    b, s, a = result.before, result.settled, result.after
    leaked = result.leaked
    rows = []
    for name, before in b.judged().items():
        after = a.judged().get(name, 0)
        verdict = f"**{after - before:+d}**" if name in leaked else "0"
        rows.append([name, str(before), str(s.judged().get(name, 0)), str(after), verdict])

    def unjudged(name: str, value: Callable[[Snapshot], str]) -> None:
        rows.append([name, *(value(x) for x in (b, s, a)), "(not judged)"])

    unjudged("pool connections idle", lambda x: "-" if x.pool_idle is None else str(x.pool_idle))
    unjudged("other sockets to the server", lambda x: _states(x) or "0")
    unjudged("RSS", lambda x: f"{x.rss_bytes / 2**20:.0f} MB")
    unjudged("RSS, anonymous", lambda x: f"{x.rss_anon_bytes / 2**20:.0f} MB")
    return header, rows


def _states(snapshot: Snapshot) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(snapshot.other_sockets.items()))


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def console_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(cell.replace("**", "") for cell in row))
    return table


# -- the page ---------------------------------------------------------------------------------


def _and(items: list[str]) -> str:
    """``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def verdict(result: SoakResult) -> str:
    """The leak count first (the acceptance criterion), then every other check."""
    n = f"{result.options.streams:,}"
    leaked = result.leaked
    if leaked:
        head = f"**Leaked after {n} abandoned streams: " + ", ".join(
            f"{name} {before} -> {after}" for name, (before, after) in leaked.items()
        )
    else:
        head = f"**0 leaked tasks, threads, file descriptors and connections after {n} abandoned "
        head += "streams"
    fine: list[str] = []
    wrong: list[str] = []
    if result.idle_after.idle:
        fine.append("the device was idle afterwards")
    else:
        wrong.append("the device was not idle afterwards")
    if result.errors:
        wrong.append(f"{result.errors:,} stream(s) failed")
    else:
        fine.append("no stream failed")
    running = (result.server_statuses or {}).get("running", 0)
    if running:
        wrong.append(f"{running} request(s) were still running on the server")
    if result.complaints:
        wrong.append(
            f"Python reported {result.complaints} error(s) that no caller saw (below, under "
            "complaints)"
        )
    else:
        fine.append("Python and asyncio reported no error behind a caller's back")
    text = head + "**" + (f"; {_and(fine)}" if fine else "") + "."
    if wrong:
        text += f" **But {'; '.join(wrong)}.**"
    return text


def render(result: SoakResult, command: str, load: tuple[float, float]) -> str:
    o, m = result.options, result.machine
    whole, second_half = result.rss_growth_per_1000()
    anon_whole, anon_second = result.rss_growth_per_1000(anon=True)
    rate = o.streams / result.run_s
    remote = (
        f"the loopback server (`langchain_disco.testing`, a real HTTP server in a child "
        f"process; echo backend replaying the TTFT and token pace of measured "
        f"{o.latency_profile} requests at {o.latency_scale:g}x, seed {o.seed}), model "
        f"`{o.remote_model}`"
        if o.remote_url is None
        else f"`{o.remote_url}` (model `{o.remote_model}`)"
    )
    ia, ib = result.idle_after, result.idle_before
    server = (
        "- server side: the loopback's request log after the run, by final status: "
        + ", ".join(f"{status} {n:,}" for status, n in (result.server_statuses or {}).items())
        + " (every request it saw ended; `disconnected`: the client went away first)."
        if result.server_statuses is not None
        else "- server side: not observed (not our server)."
    )
    complaints = (
        "none"
        if not result.complaints
        else f"{result.complaints}, first: " + "; ".join(f"`{c}`" for c in result.first_complaints)
    )
    p_header, p_rows = pattern_rows(result)
    r_header, r_rows = resource_rows(result)
    lines = [
        HEADING,
        "",
        "Generated by `benchmarks/bench_soak.py`; do not edit this section by hand.",
        "",
        f"- command: `{command}`; run {result.started}; took {result.wall_s / 60:.1f} min, of "
        f"which the streams {result.run_s / 60:.1f} min ({rate:.1f} streams/s) and the rest "
        "server start-up, model load, warm-up and the counts.",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; load "
        f"average (1 min) {load[0]:.2f} before and {load[1]:.2f} after the run.",
        "- what runs: one `DiscoChatModel` in race mode (both endpoints start every request, "
        "the first token wins and the other is cancelled; failover on, no migration, eager "
        "delivery) over the shared embedded Gemma 3 270M (llama.cpp in-process, built from "
        f"settings, {o.local_threads} thread(s), n_ctx {o.local_n_ctx}) and {remote}. Short "
        f"prompts (5, in turn), answers capped at {o.max_tokens} tokens, "
        + (
            f"{o.concurrency} streams in flight at once (so streams also wait in the device's "
            "queue, and some are abandoned there)"
            if o.concurrency > 1
            else "one stream at a time"
        )
        + f", {o.streams:,} streams, the patterns in turn; where each is "
        f"abandoned is drawn from `random.Random({o.seed})` (delays and timeouts up to "
        f"{o.window_s:g} s; a whole answer took {result.answer_s:.2f} s on average after the "
        "warm-up).",
        "- patterns: "
        + "; ".join(f"**{p}**: {PATTERN_TEXT[p]}" for p in PATTERNS if p in o.patterns)
        + ".",
        "",
        verdict(result),
        "",
        "### Streams by pattern",
        "",
        "Where the consumer let go: before any content chunk, after some, or not at all because "
        "the answer had already ended (a timeout longer than the answer); *first chunk from*: "
        "which endpoint had won the race when the consumer saw its first chunk.",
        "",
        *markdown(p_header, p_rows),
        "",
        "### What the process holds, before and after",
        "",
        "*before*: after a warm-up (every pattern twice) and on the canonical pool (below); "
        "*after, settled*: right after the last stream, once the counts stopped changing; "
        "*after*: then on the canonical pool, compared with *before*. A leak is a count that "
        "is higher after than before. Tasks: pending asyncio tasks of the soak's loop and of "
        "the sync bridge's loop, the measuring one left out; TCP connections: ESTABLISHED "
        "sockets of this process to the server's port (`/proc/self/net/tcp*`, by socket "
        "inode); pool connections: the endpoint's HTTP pools, every event loop's.",
        "",
        *markdown(r_header, r_rows),
        "",
        f"- threads, before and after: {', '.join(result.before.threads)} (after: "
        + (
            "the same"
            if result.after.threads == result.before.threads
            else ", ".join(result.after.threads)
        )
        + ").",
        f"- RSS: {_mb(whole)} per 1,000 streams over the whole run "
        f"({_mb(result.after.rss_bytes - result.before.rss_bytes)} in all), {_mb(second_half)} "
        f"per 1,000 over its second half; the anonymous part (the heap) {_mb(anon_whole)} and "
        f"{_mb(anon_second)} (each between readings taken after a full garbage collection). "
        + rss_reading(result),
        f"- device idle afterwards: {'yes' if ia.idle else '**no**'}. Nothing queued or running "
        f"(queue {ia.pending}, busy {ia.busy}); a fresh 2-token request waited "
        f"{ia.queue_wait_s * 1e3:.1f} ms in the queue and took {ia.elapsed_s:.2f} s "
        f"(before the run: {ib.elapsed_s:.2f} s)" + (f"; {ia.error}" if ia.error else "") + ".",
        server,
        f"- settling took {result.settle_s:.1f} s"
        + (
            ""
            if result.settled_in_time
            else " (**the counts were still changing at the deadline**)"
        )
        + f"; complaints (errors in async-generator finalisers, tasks destroyed while pending, "
        f"exceptions ignored in `__del__`, unclosed resources): {complaints}.",
        "",
        "### Reading (the method, and what it does not see)",
        "",
        "- **Counting.** Before each look the soak runs `gc.collect()`: an abandoned stream "
        "may hold its resources until its generator is collected, and that is what happens to "
        "`break` without a reference, whose generator the event loop closes in a task of its "
        "own. *Settled* means no judged count (and not the device's busy flag) changed for "
        f"{o.quiet_s:g} s, with a deadline of {o.settle_timeout_s:g} s.",
        "- **The canonical pool.** An idle keep-alive connection is the pool working, not a "
        "leak, but how many there are is a matter of timing (the server closes them after 5 s, "
        "the pool at its next request once they are 5 s old). So before and after, the soak "
        "waits out that expiry and sends one complete remote-only request per event loop "
        "(through the same endpoint): each pool then holds exactly one idle connection, plus "
        "whatever an abandoned stream still has checked out, which no expiry releases.",
        "- **Not seen.** The server's own resources (it is another process; its log shows "
        "whether every request ended); memory held by llama.cpp outside Python is only in RSS; "
        "a leak of memory alone (no task, thread, descriptor or connection) shows only as RSS "
        "growth, which is reported, not judged.",
        "",
    ]
    return "\n".join(lines)


def rss_reading(result: SoakResult) -> str:
    """RSS during the run, and how its drops line up with Python's full collections."""
    points = result.rss_checkpoints
    if len(points) < 2:
        return ""
    shown = points[:: max(1, (len(points) - 1) // 10)]
    drops = [(a, b) for a, b in itertools.pairwise(points) if b.rss_anon_bytes < a.rss_anon_bytes]
    after_gc = sum(b.full_collections > a.full_collections for a, b in drops)
    full = points[-1].full_collections - points[0].full_collections
    return (
        "During the run: "
        + ", ".join(f"{p.rss_bytes / 2**20:.0f}" for p in shown)
        + f" MB (after {', '.join(f'{p.streams:,}' for p in shown)} streams). Python's cyclic "
        f"garbage collector made {full} full collection(s) during the run (one of them the "
        "soak's own, at the midpoint); the heap shrank between "
        f"{len(drops)} pair(s) of consecutive readings, {after_gc} of them across a full "
        "collection."
    )


def command_line(args: argparse.Namespace) -> str:
    """The command as run, with only the options that differ from the defaults."""
    defaults = SoakOptions()
    parts = ["python benchmarks/bench_soak.py"]
    for name, value in vars(args).items():
        if name in ("no_page",):
            continue
        default = None if name == "streams" else getattr(defaults, name)  # always shown
        if name == "patterns":
            value = tuple(p for p in value.split(",") if p)
        if value != default:
            shown = ",".join(value) if isinstance(value, tuple) else value
            parts.append(f"--{name.replace('_', '-')} {shown}")
    return " ".join(parts)


def main() -> None:
    defaults = SoakOptions()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=defaults.streams)
    parser.add_argument(
        "--patterns", default=",".join(defaults.patterns), help=f"of {','.join(PATTERNS)}"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--window-s", type=float, default=defaults.window_s)
    parser.add_argument(
        "--remote-url", default=None, help="any OpenAI-compatible base URL instead of the loopback"
    )
    parser.add_argument("--remote-model", default=defaults.remote_model)
    parser.add_argument("--latency-profile", default=defaults.latency_profile)
    parser.add_argument("--latency-scale", type=float, default=defaults.latency_scale)
    parser.add_argument("--local-threads", type=int, default=defaults.local_threads)
    parser.add_argument(
        "--no-page", action="store_true", help=f"do not write the section of {OUT.name}"
    )
    args = parser.parse_args()
    options = SoakOptions(
        streams=args.streams,
        patterns=tuple(p for p in args.patterns.split(",") if p),
        seed=args.seed,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        window_s=args.window_s,
        remote_url=args.remote_url,
        remote_model=args.remote_model,
        latency_profile=args.latency_profile,
        latency_scale=args.latency_scale,
        local_threads=args.local_threads,
    ).validate()
    load_before = os.getloadavg()[0]
    with Progress(
        TextColumn("abandoned streams"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        auto_refresh=False,  # no refresh thread of rich's among the threads the soak counts
    ) as progress:
        task = progress.add_task("streams", total=options.streams)
        result = run_soak(
            options,
            lambda done, total: progress.update(task, completed=done, total=total, refresh=True),
        )
    load_after = os.getloadavg()[0]
    stderr.print(console_table("streams by pattern", *pattern_rows(result)))
    stderr.print(console_table("what the process holds", *resource_rows(result)))
    stderr.print(verdict(result).replace("**", ""))
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "result.json").write_text(
        json.dumps(dataclasses.asdict(result), indent=1, default=str), encoding="utf-8"
    )
    if not args.no_page:
        replace_section(OUT, HEADING, render(result, command_line(args), (load_before, load_after)))
        stderr.print(f"wrote {HEADING!r} of {OUT}")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
