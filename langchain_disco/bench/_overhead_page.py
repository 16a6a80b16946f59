"""The `## Results` section of docs/overhead.md, written from one `disco bench overhead` run
(`--doc docs/overhead.md`), so the page's numbers come from the command and nowhere else."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from langchain_disco.bench._overhead_report import fmt, level_figures, rate
from langchain_disco.bench._page import replace_section
from langchain_disco.bench._ratios import RATIO_METRICS
from langchain_disco.bench.overhead import OverheadOptions, OverheadResult

HEADING = "## Results"


def command_line(options: OverheadOptions) -> str:
    """The `disco bench overhead` invocation that runs `options`."""
    o = options
    return (
        f"disco bench overhead --requests {o.requests} --max-tokens {o.max_tokens} "
        f"--levels {','.join(str(level) for level in o.levels)} --tok-s {o.tok_s:g} "
        f"--warmup {o.warmup} --min-streams {o.min_streams} --paths {','.join(o.paths)}"
    )


def write_page(result: OverheadResult, page: Path, today: dt.date | None = None) -> None:
    """Replace (or append) the Results section of `page` with `result`'s tables."""
    replace_section(page, HEADING, results_section(result, today or dt.date.today()))


def results_section(result: OverheadResult, today: dt.date) -> str:
    m = result.machine
    packages = ", ".join(f"{name} {v}" for name, v in m.get("packages", {}).items() if v)
    before = ", ".join(f"{x:.2f}" for x in m.get("load_average_before", []))
    after = ", ".join(f"{x:.2f}" for x in m.get("load_average_after", []))
    o = result.options
    lines = [
        HEADING,
        "",
        f"Measured {today.isoformat()} with `{command_line(o)}` "
        f"({m.get('wall_s', 0.0):.0f} s wall). Machine: {m.get('cores')}-core "
        f"{m.get('machine')} ({m.get('cpu')}), {m.get('system')}, Python {m.get('python')}; "
        f"{packages}. The loopback server runs in its own process on the same cores. The "
        "machine is shared with other jobs: load average (1, 5, 15 min) "
        f"{before} before the run, {after} after. Treat single figures as about ±20%.",
        "",
    ]
    lines += [f"- skipped **{path}**: {reason}" for path, reason in result.skipped.items()]
    if result.skipped:
        lines.append("")
    lines += [
        f"One stream, {o.requests} requests x {o.max_tokens} tokens per path, echo at "
        f"{rate(o.tok_s)}:",
        "",
        *_single_stream(result),
        "",
        f"Concurrent streams through one model or client ({o.max_tokens} tokens each, each "
        f"path in a fresh process; a level runs in rounds until it has {o.min_streams} "
        "streams):",
        "",
        *_concurrency(result),
    ]
    ratios = _ratios(result)
    if ratios:
        lines += ["", "Ratio to ChatOpenAI at the same level (1.00 = as ChatOpenAI):", "", *ratios]
    return "\n".join(lines) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _single_stream(result: OverheadResult) -> list[str]:
    rows = []
    for row in result.summary():
        digits = 3 if row["unit"] == "ms" else 1
        limit = row["limit"]
        target = "" if limit is None else f"< {limit:g}, " + ("met" if row["pass"] else "missed")
        rows.append(
            [
                f"{row['metric']} ({row['unit']})",
                row["stat"],
                fmt(row["direct"], digits),
                fmt(row["disco"], digits),
                fmt(row["added"], digits),
                target,
            ]
        )
    return _table(("metric", "stat", "direct", "disco", "added", "target"), rows)


def _concurrency(result: OverheadResult) -> list[str]:
    header = (
        "streams",
        "path",
        "done",
        "errors",
        "TTFT ms",
        "per token µs",
        "latency ms",
        "p99 ms",
        "added ms",
        "CPU/token µs",
        "peak RSS MB",
        "KB/stream",
    )
    rows = [
        [str(r.level), r.path, str(r.completed), str(r.errors), *level_figures(r)]
        for r in result.levels
    ]
    return _table(header, rows)


def _ratios(result: OverheadResult) -> list[str]:
    ratios = result.ratios()
    if not ratios:
        return []
    header = ("streams", "path", *(label for label, _attr in RATIO_METRICS))
    rows = [
        [str(r["level"]), r["path"], *(fmt(r[attr], 2) for _label, attr in RATIO_METRICS)]
        for r in ratios
    ]
    return _table(header, rows)
