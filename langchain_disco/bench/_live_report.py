"""Rendering `disco bench live` results: a rich table, and CSV and JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from langchain_disco.bench._measure import write_csv
from langchain_disco.bench._sim_report import _sig
from langchain_disco.bench.live import TTFT_TOLERANCE, LiveBenchResult


def _err(value: float, limit: float | None = None) -> str:
    if math.isnan(value):
        return "-"
    text = f"{value:+.1%}"
    return f"[red]{text}[/]" if limit is not None and abs(value) > limit else text


def comparison_table(result: LiveBenchResult) -> Table:
    """Per policy: measured vs simulated mean and p99 TTFT and mean cost, relative errors."""
    o = result.options
    table = Table(
        title=f"simulator vs live: {o.requests} requests per policy ({result.trace_name}, "
        f"prompts {o.min_prompt_tokens}..{o.max_prompt_tokens} tokens, answers <= "
        f"{o.max_tokens}; remote replays {o.latency_profile}; budget {o.budget:g})",
        caption="TTFT in s; cost in µUSD per request (unified); err = sim / live - 1, red "
        f"beyond {TTFT_TOLERANCE:.0%} for the mean; p99 of {o.requests} requests is about "
        "their maximum. local wins: share of requests the device answered first. device vs line: "
        "the device's measured TTFT over the learned line, while this policy ran (1: as learned)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        show_edge=False,
    )
    table.add_column("policy", no_wrap=True)
    for column in (
        "mean\nlive",
        "mean\nsim",
        "mean\nerr",
        "p99\nlive",
        "p99\nsim",
        "p99\nerr",
        "cost\nlive",
        "cost\nsim",
        "cost\nerr",
        "local wins\nlive / sim",
        "same\naction",
        "device\nvs line",
    ):
        table.add_column(column, justify="right")
    for c in result.comparisons:
        table.add_row(
            c.policy,
            _sig(c.live.mean_ttft_s),
            _sig(c.sim.mean_ttft_s),
            _err(c.mean_ttft_err, TTFT_TOLERANCE),
            _sig(c.live.p99_ttft_s),
            _sig(c.sim.p99_ttft_s),
            _err(c.p99_ttft_err),
            _sig(c.live.mean_cost_usd, 1e6),
            _sig(c.sim.mean_cost_usd, 1e6),
            _err(c.cost_err),
            f"{c.live.local_win_share:.0%} / {c.sim.local_win_share:.0%}",
            f"{c.same_action_share:.0%}",
            _sig(c.device_vs_learned),
        )
    return table


def learned_line(result: LiveBenchResult) -> str:
    """One line on what the replay was given: the learned device, the server's overhead."""
    d = result.learned
    return (
        f"learned device: {d['device_overhead_s'] * 1e3:.0f} ms + prompt / "
        f"{d['device_prefill_tok_s']:.0f} tok/s, decode {d['device_decode_tok_s']:.1f} tok/s "
        f"({d['device_ttft_observations']:.0f} TTFTs); server: the loopback's draws + "
        f"{d['server_http_overhead_s'] * 1e3:.1f} ms HTTP overhead"
    )


def _blank_nan(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
        for k, v in row.items()
    }


def write_results(result: LiveBenchResult, out: Path) -> list[Path]:
    """`results.csv` (one row per policy: live and sim columns, relative errors),
    `requests.csv` (every request, measured and simulated) and `results.json` (all of it)."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", [_blank_nan(c.row()) for c in result.comparisons])
    write_csv(out / "requests.csv", [_blank_nan(r) for r in result.sim_requests])
    (out / "results.json").write_text(
        json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8"
    )
    return [out / "results.csv", out / "requests.csv", out / "results.json"]
