"""Rendering `disco bench overhead` results: rich tables, and CSV and JSON files."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from langchain_disco.bench._measure import write_csv
from langchain_disco.bench.overhead import OverheadResult


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def single_stream_table(result: OverheadResult) -> Table:
    """Direct vs disco at one stream: every metric's mean, p50 and p99, and what disco adds."""
    o = result.options
    table = Table(
        title=f"one stream: DiscoChatModel vs the bare endpoint ({o.requests} requests x "
        f"{o.max_tokens} tokens per path, echo at {_rate(o.tok_s)})"
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
            _fmt(row["direct"], digits),
            _fmt(row["disco"], digits),
            _fmt(row["added"], digits),
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
        "latency ms",
        "p99 ms",
        "added ms",
        "CPU/tok µs",
        "peak RSS MB",
        "memory +MB",
        "wall s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right")
    for r in result.levels:
        errors = f"[red]{r.errors}[/]" if r.errors else "0"
        growth_mb = (r.rss_peak_bytes - r.rss_before_bytes) / 2**20
        table.add_row(
            str(r.level),
            r.path,
            str(r.completed),
            errors,
            _fmt(_scaled(r.ttft_mean_s, 1e3)),
            _fmt(_scaled(r.latency_mean_s, 1e3)),
            _fmt(_scaled(r.latency_p99_s, 1e3)),
            _fmt(_scaled(r.added_latency_mean_s, 1e3)),
            _fmt(_scaled(r.cpu_per_token_s, 1e6)),
            _fmt(r.rss_peak_bytes / 2**20, 0),
            _fmt(growth_mb, 0),
            _fmt(r.wall_s, 2),
        )
    return table


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _rate(tok_s: float) -> str:
    return "full speed" if tok_s == 0 else f"{tok_s:g} tok/s"


def write_results(result: OverheadResult, out: Path) -> list[Path]:
    """Write the summary, the per-request samples and the levels as CSV, and all as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    files = {
        "summary.csv": data["single_stream"],
        "requests.csv": data["requests"],
        "concurrency.csv": data["concurrency"],
    }
    written = []
    for name, rows in files.items():
        write_csv(out / name, rows)
        written.append(out / name)
    (out / "overhead.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    written.append(out / "overhead.json")
    return written
