"""Rendering `disco bench sim` results: rich tables, and CSV and JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich import box
from rich.table import Table

from langchain_disco.bench._measure import write_csv
from langchain_disco.bench.sim import BASELINES, ORACLE, Row, SimBenchResult


def _num(value: float, digits: int = 3, scale: float = 1.0) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * scale:,.{digits}f}"


def _sig(value: float, scale: float = 1.0) -> str:
    """About three significant digits in at most five characters: 0.553, 8.21, 41.9, 622."""
    if math.isnan(value):
        return "-"
    x = value * scale
    if abs(x) >= 99.95:
        return f"{x:,.0f}"
    if abs(x) >= 9.995:
        return f"{x:.1f}"
    if abs(x) >= 0.9995:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _share(row: Row) -> str:
    if math.isnan(row.realised_share):
        return "-"
    text = f"{row.realised_share:.3f}"
    if row.policy not in BASELINES and row.on_budget is False:
        return f"[red]{text}![/]"
    return text


_COLUMNS = (
    "share",
    "TTFT\nmean",
    "TTFT\np50",
    "TTFT\np90",
    "TTFT\np99",
    "TBT\nmean",
    "TBT\np99",
    "max\nstall",
    "cost",
    "single\nmean",
    "single\np99",
    "oracle\nmean",
    "oracle\np99",
)


def budget_tables(result: SimBenchResult) -> list[Table]:
    """One table per budget: every policy's TTFT, TBT, stall, cost, share and ratios."""
    o = result.options
    seeds = ",".join(str(s) for s in o.seeds)
    tables = []
    for b in o.budgets:
        table = Table(
            title=f"budget b={b:g} on {o.regime_spec.resource} ({o.regime}: {o.device_name} + "
            f"{o.server_name}; {result.n_requests:,} requests x seeds {seeds})",
            caption="TTFT in s, TBT in ms, cost in µUSD per request (unified). single / oracle: "
            "the policy's TTFT over the better endpoint alone whose spend fits b / over the "
            "hindsight oracle (< 1 is faster). ! realised share more than 3% off b",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            collapse_padding=True,
            show_edge=False,
        )
        table.add_column("policy", no_wrap=True)
        for column in _COLUMNS:
            table.add_column(column, justify="right")
        for row in result.rows_at(b):
            style = (
                "bold" if row.policy in o.regime_spec.paper or row.policy == "generalized" else ""
            )
            table.add_row(
                row.policy,
                _share(row),
                _sig(row.mean_ttft_s),
                _sig(row.p50_ttft_s),
                _sig(row.p90_ttft_s),
                _sig(row.p99_ttft_s),
                _sig(row.mean_tbt_s, 1e3),
                _sig(row.p99_tbt_s, 1e3),
                _sig(row.max_stall_s),
                _sig(row.mean_cost_usd, 1e6),
                _sig(row.mean_vs_single),
                _sig(row.p99_vs_single),
                "-" if row.policy == ORACLE else _sig(row.mean_vs_oracle),
                "-" if row.policy == ORACLE else _sig(row.p99_vs_oracle),
                style=style,
            )
        tables.append(table)
    return tables


def migration_table(result: SimBenchResult) -> Table:
    """Per policy and budget: how often generation moved, and the cost with and without."""
    o = result.options
    delivery = "eager" if o.pace_tok_s is None else f"paced at {o.pace_tok_s:g} tok/s"
    table = Table(
        title=f"token-level migration (CostAwareMigration, {delivery}): unified cost per request",
        caption="without: the same dispatch outcomes, each winner generating its whole answer",
        box=box.SIMPLE_HEAD,
    )
    for column in ("b", "policy", "migrated", "µUSD with", "µUSD without", "saving", "max stall s"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    first = o.budgets[0]
    for row in result.rows:
        # The oracle has no cost; the baselines ignore the budget: shown once.
        if row.policy == ORACLE or (row.policy in BASELINES and row.budget != first):
            continue
        base = row.mean_cost_without_migration_usd
        saving = 1 - row.mean_cost_usd / base if base > 0 else math.nan
        table.add_row(
            f"{row.budget:g}",
            row.policy,
            f"{row.migration_rate:.1%}",
            _sig(row.mean_cost_usd, 1e6),
            _sig(row.mean_cost_without_migration_usd, 1e6),
            "-" if math.isnan(saving) else f"{saving:.1%}",
            _sig(row.max_stall_s),
        )
    return table


def write_results(result: SimBenchResult, out: Path) -> list[Path]:
    """`results.csv` (one row per policy and budget) and `results.json` (options, rows, notes)."""
    out.mkdir(parents=True, exist_ok=True)
    regime = result.options.regime
    rows = [{"regime": regime, **row.to_dict()} for row in result.rows]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[key] = ""
    write_csv(out / "results.csv", rows)
    (out / "results.json").write_text(
        json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8"
    )
    return [out / "results.csv", out / "results.json"]
