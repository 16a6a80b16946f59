"""Rendering `disco bench overhead` results: rich tables, and CSV and JSON files.

The Markdown tables of docs/overhead.md come from `_overhead_page`, from the same result."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from langchain_disco.bench._measure import write_csv
from langchain_disco.bench._ratios import RATIO_METRICS
from langchain_disco.bench.overhead import LevelResult, OverheadResult


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def single_stream_table(result: OverheadResult) -> Table:
    """Direct vs disco at one stream: every metric's mean, p50 and p99, and what disco adds."""
    o = result.options
    table = Table(
        title=f"one stream: DiscoChatModel vs the bare endpoint ({o.requests} requests x "
        f"{o.max_tokens} tokens per path, echo at {rate(o.tok_s)})"
    )
    for column in ("metric", "stat", "direct", "disco", "added", "limit"):
        table.add_column(column, justify="left" if column in ("metric", "stat") else "right")
    for row in result.summary():
        digits = 3 if row["unit"] == "ms" else 1
        limit = row["limit"]
        verdict = "" if row["pass"] is None else (" [green]ok[/]" if row["pass"] else " [red]no[/]")
        table.add_row(
            f"{row['metric']} ({row['unit']})",
            row["stat"],
            fmt(row["direct"], digits),
            fmt(row["disco"], digits),
            fmt(row["added"], digits),
            ("-" if limit is None else f"< {limit:g}") + verdict,
        )
    return table


def concurrency_table(result: OverheadResult) -> Table:
    """Per level and path: completed, errors, latency per stream, added latency, memory, wall."""
    table = Table(
        title=f"concurrent streams through one model ({result.options.max_tokens} tokens each, "
        "each path in a fresh process)"
    )
    columns = (
        "streams",
        "path",
        "done",
        "errors",
        "TTFT ms",
        "per tok µs",
        "latency ms",
        "p99 ms",
        "added ms",
        "CPU/tok µs",
        "peak RSS MB",
        "KB/stream",
        "wall s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right")
    for r in result.levels:
        errors = f"[red]{r.errors}[/]" if r.errors else "0"
        table.add_row(
            str(r.level), r.path, str(r.completed), errors, *level_figures(r), fmt(r.wall_s, 2)
        )
    return table


def level_figures(r: LevelResult) -> list[str]:
    """One level's figures as the tables show them: TTFT, per-token gap, latency (mean, p99,
    added), CPU per token, peak RSS and memory per stream (the terminal's and the page's)."""
    return [
        fmt(scaled(r.ttft_mean_s, 1e3)),
        fmt(scaled(r.gap_mean_s, 1e6)),
        fmt(scaled(r.latency_mean_s, 1e3)),
        fmt(scaled(r.latency_p99_s, 1e3)),
        fmt(scaled(r.added_latency_mean_s, 1e3)),
        fmt(scaled(r.cpu_per_token_s, 1e6)),
        fmt(r.rss_peak_bytes / 2**20, 0),
        fmt(r.memory_per_stream_bytes / 1024, 0),
    ]


def ratios_table(result: OverheadResult) -> Table | None:
    """Each path's figures over ChatOpenAI's at the same level; None if it did not run."""
    ratios = result.ratios()
    if not ratios:
        return None
    table = Table(title="ratio to ChatOpenAI at the same level (1.00 = as ChatOpenAI)")
    table.add_column("streams", justify="right")
    table.add_column("path")
    for label, _attr in RATIO_METRICS:
        table.add_column(label, justify="right")
    for row in ratios:
        table.add_row(
            str(row["level"]),
            row["path"],
            *(fmt(row[attr], 2) for _label, attr in RATIO_METRICS),
        )
    return table


def skipped_lines(result: OverheadResult) -> list[str]:
    """One line per path that did not run, with its reason."""
    return [f"skipped {path}: {reason}" for path, reason in result.skipped.items()]


def scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def rate(tok_s: float) -> str:
    return "full speed" if tok_s == 0 else f"{tok_s:g} tok/s"


def write_results(result: OverheadResult, out: Path) -> list[Path]:
    """Write the summary, the per-request samples and the levels as CSV, and all as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    files = {
        "summary.csv": data["single_stream"],
        "requests.csv": data["requests"],
        "concurrency.csv": data["concurrency"],
        "ratios.csv": data["ratios"],
    }
    written = []
    for name, rows in files.items():
        write_csv(out / name, rows)
        written.append(out / name)
    (out / "overhead.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    written.append(out / "overhead.json")
    return written
