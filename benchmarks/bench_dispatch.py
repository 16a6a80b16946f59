"""Dispatch policies on the real Azure 2023 trace: budget tracking, TTFT, plots, replay speed.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_dispatch.py --jobs 2`). It writes
`docs/benchmarks.md` and its plots in `docs/img/`, and each regime's CSV and JSON results in
`bench-out/dispatch/`. `--quick` runs three budgets and a 20k-request speed check instead.

Each regime is exactly one `disco bench sim` run (the same code, `langchain_disco.bench.sim`),
so every table here can be reproduced, or extended to another trace, from the command line; the
commands are printed in the generated page. The regimes (`disco bench sim --help`):

- server-constrained: MacBook Pro M1 Max (llama.cpp, Llama 3.1 8B) + together-13b (heavy tail),
  default prices (device energy nearly free), budget on server USD;
- device-constrained: Galaxy S25 (llama3.2-1b, slow prefill) + replicate-70b (heavy tail),
  battery valued at 1e-4 USD/J, budget on device joules;
- mixed: 2-core x86 (Gemma 3 270M) + together-13b, 1e-5 USD/J so that a request costs about
  the same on either side, budget on unified cost.

Sections of `docs/benchmarks.md` that this script does not write (a `## ` heading it does not
own, such as the migration benchmark's) are kept, after the generated ones.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from langchain_disco.bench._measure import machine_info
from langchain_disco.bench._plots import plots_available, write_plots
from langchain_disco.bench._sim_report import write_results
from langchain_disco.bench.sim import (
    REGIMES,
    TOLERANCE,
    Row,
    SimBenchResult,
    SimOptions,
    load_bench_trace,
    run_sim,
)
from langchain_disco.scheduling import Budget, policy_from_name
from langchain_disco.sim import Simulator, Trace

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
DATA = ROOT / "bench-out" / "dispatch"
OWN_SECTIONS = (
    "Summary",
    "Against the paper",
    "Reading",
    "Budget tracking across seeds",
    "Stress regimes",
    "Plots",
    "Details",
)
"""`## ` headings this script writes; any other section of the page is kept."""
stderr = Console(stderr=True)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{(x - 1) * 100:+.0f}%"


def _range(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a (no single endpoint fits)"
    return f"{_pct(min(values))} .. {_pct(max(values))}"


def _num(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else format(x, fmt)


# -- running --------------------------------------------------------------------------------


def run_regimes(
    budgets: tuple[float, ...], trace: Trace, jobs: int
) -> dict[str, tuple[SimOptions, SimBenchResult]]:
    results = {}
    for name in REGIMES:
        options = SimOptions(requests=len(trace), regime=name, budgets=budgets).validate()
        with Progress(
            TextColumn(f"{name:>20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
        ) as progress:
            task = progress.add_task(name, total=None)

            def advance(done: int, total: int, task: TaskID = task) -> None:
                progress.update(task, completed=done, total=total)

            result = run_sim(options, trace=trace, jobs=jobs, progress=advance)
        write_results(result, DATA / name)
        results[name] = (options, result)
    return results


QUEUE_HEAVY_UTILISATION = 0.9
"""Device-only utilisation of the queue-heavy variant: fewer devices for the same arrivals,
the same as compressing the arrivals; chosen so that queueing is over half of device-only TTFT
in every regime (the section prints the measured share)."""
STRESS_BUDGETS = (0.3, 0.5, 0.7, 0.9)
FAST_DEVICE, FAST_SERVER = "MacBook Pro M1 Max", "anyscale-13b"
"""A server about 10x faster than the device (median TTFT 0.20 s against 2.1 s) with a short
tail: the device almost never wins a race, so racing costs the device almost nothing."""


_REFERENCES = ("local", "oracle")
"""Run for the table's bound column and the queue's share, not listed as policies."""


@dataclass(frozen=True)
class Stress:
    """One stress run: what it varies, its options and result, and the device queue's share of
    device-only TTFT."""

    label: str
    options: SimOptions
    result: SimBenchResult
    queue_share: float


def run_stress(trace: Trace, jobs: int) -> list[Stress]:
    """The queue-heavy variant of every regime, and the fast-server regime."""
    runs: list[tuple[str, SimOptions]] = []
    for name, regime in REGIMES.items():
        policies = tuple(dict.fromkeys(("generalized", *regime.paper, "random", *_REFERENCES)))
        runs.append(
            (
                f"{name}, queue-heavy",
                SimOptions(
                    requests=len(trace),
                    regime=name,
                    budgets=STRESS_BUDGETS,
                    policies=policies,
                    device_utilisation=QUEUE_HEAVY_UTILISATION,
                ),
            )
        )
    runs.append(
        (
            "fast server, budget on device",
            SimOptions(
                requests=len(trace),
                regime="device-constrained",
                budgets=(0.1, *STRESS_BUDGETS),
                policies=(
                    "generalized",
                    "wait_time",
                    "length_threshold",
                    "random",
                    "random_race",
                    *_REFERENCES,
                ),
                device=FAST_DEVICE,
                server=FAST_SERVER,
            ),
        )
    )
    out = []
    for label, options in runs:
        options.validate()
        stderr.print(f"stress: {label}")
        result = run_sim(options, trace=trace, jobs=jobs)
        prefill = Simulator(trace, options.sim_config(0)).prefill_s
        local = result.row("local", options.budgets[0])
        mean_prefill = sum(prefill) / len(prefill)
        queue = 1 - mean_prefill / local.mean_ttft_s if local is not None else math.nan
        out.append(Stress(label, options, result, queue))
    return out


def stress_section(runs: list[Stress]) -> list[str]:
    if not runs:
        return []
    lines = [
        "## Stress regimes: queue-heavy traffic and a fast server",
        "",
        "Traffic the policies were not tuned on (issue 16). *Queue-heavy*: each regime with "
        f"{QUEUE_HEAVY_UTILISATION:.0%} device-only utilisation (fewer devices for the same "
        "arrivals, as if the arrivals were compressed). *Fast server*: "
        f"{FAST_DEVICE} + {FAST_SERVER}, budget on device energy. "
        "*vs bound* is the policy's mean TTFT over the queue-aware hindsight bound at the "
        "spend the run was allowed (`langchain_disco/sim/queue_bound.py`: no first-come-first-"
        "served dispatch within that spend, knowing every draw in advance, has a lower mean); "
        "*bound s* is that bound at the budget's allowance without queueing (the oracle's). "
        "It is exact up to the duality gap between it and the best real hindsight dispatch "
        "found, which `sim.queue_bound.QueueBound.gap` reports (3e-4 or less on the "
        "server-constrained runs checked). (!) marks a realised share more than "
        f"{TOLERANCE:.0%} (relative) away from b.",
        "",
    ]
    for run in runs:
        result, options = run.result, run.options
        lines += [
            f"### {run.label}",
            "",
            f"Device queueing is {run.queue_share:.0%} of device-only mean TTFT. Command: "
            f"`{options.command(out=f'bench-out/dispatch/stress-{_slug(run.label)}')}`",
            "",
            "| b | policy | realised share | mean TTFT s | p99 TTFT s | mean vs bound | "
            "bound s | mean vs single |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in options.budgets:
            bound = result.row("oracle", b)
            for policy in options.policies:
                row = result.row(policy, b)
                if row is None or policy in _REFERENCES:
                    continue
                off = abs(row.realised_share / b - 1) > TOLERANCE
                lines.append(
                    f"| {b:g} | {policy} | {row.realised_share:.3f}{' (!)' if off else ''} | "
                    f"{row.mean_ttft_s:.3f} | {row.p99_ttft_s:.2f} | "
                    f"{_num(row.mean_vs_oracle, '.3f')}x | "
                    f"{_num(bound.mean_ttft_s if bound else math.nan, '.3f')} | "
                    f"{_pct(row.mean_vs_single)} |"
                )
        lines.append("")
    return [*lines, *_stress_reading(runs)]


def _stress_reading(runs: list[Stress]) -> list[str]:
    """The issue's targets, judged on the tables above: generalized within 1.15x of the bound
    at every b >= 0.3 when queue-heavy, and every budgeted policy within 3% of its budget."""
    worst: list[tuple[float, str, float]] = []
    off: list[str] = []
    for run in runs:
        for row in run.result.rows:
            if row.policy in _REFERENCES:
                continue
            if row.policy == "generalized" and "queue-heavy" in run.label and row.budget >= 0.3:
                worst.append((row.mean_vs_oracle, run.label, row.budget))
            if abs(row.realised_share / row.budget - 1) > TOLERANCE:
                off.append(
                    f"{row.policy} at b = {row.budget:g} ({run.label}): {row.realised_share:.3f}"
                )
    lines = ["### Reading", ""]
    if worst:
        over = sorted(w for w in worst if w[0] > 1.15)
        top = max(worst)
        lines.append(
            f"- `generalized` against the queue-aware bound, queue-heavy, b >= 0.3: within "
            f"1.15x in {len(worst) - len(over)} of {len(worst)} cells; the worst is "
            f"{top[0]:.3f}x ({top[1]}, b = {top[2]:g}). Where it is above, it is at the low "
            "budgets, where the bound (which knows every draw and schedules every device's "
            "queue in hindsight) keeps the device for requests whose server draw is slow and "
            "the queue short; the policy prices the wait a request will see, not the delay "
            "it imposes on the requests that queue behind it."
        )
    lines.append(
        "- Budgets off by more than 3%: "
        + ("; ".join(off) if off else "none")
        + ". The paper policies' are their floors: the length threshold always starts the "
        "device and the wait time the server, so out of their regime they cannot spend less "
        "(on a device budget the length threshold's least is always-race, share about 1; on "
        "the unified budget each pays its always-started side). The random split sends whole "
        "answers to the costly side, so its spend is lumpy."
    )
    return [*lines, ""]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).replace("--", "-")


SPREAD_REGIME = "device-constrained"
SPREAD_BUDGETS = (0.1, 0.2)
SPREAD_SEEDS = (1, 2)
SPREAD_POLICIES = ("random", "random_race", "wait_time", "generalized")
Spread = dict[tuple[str, float], list[float]]
"""(policy, budget) -> realised share at seed 0 (the main run), then each of SPREAD_SEEDS."""


def seed_spread(
    results: dict[str, tuple[SimOptions, SimBenchResult]], trace: Trace, jobs: int
) -> Spread:
    """The budgeted policies of the lumpy regime at low budgets, replayed on other seeds."""
    spread: Spread = {
        (r.policy, r.budget): [r.realised_share]
        for r in results[SPREAD_REGIME][1].rows
        if r.policy in SPREAD_POLICIES and r.budget in SPREAD_BUDGETS
    }
    for seed in SPREAD_SEEDS:
        options = SimOptions(
            requests=len(trace),
            regime=SPREAD_REGIME,
            budgets=SPREAD_BUDGETS,
            policies=SPREAD_POLICIES,
            seeds=(seed,),
        ).validate()
        stderr.print(f"{SPREAD_REGIME}: seed {seed} at b = {SPREAD_BUDGETS}")
        for row in run_sim(options, trace=trace, jobs=jobs).rows:
            if (row.policy, row.budget) in spread:
                spread[row.policy, row.budget].append(row.realised_share)
    return spread


def _worst(spread: Spread) -> tuple[float, str, float]:
    """The largest relative share error over every seed: (error, policy, budget)."""
    if not spread:
        return math.nan, "none", math.nan
    return max(
        (
            (max(shares, key=lambda x: abs(x / b - 1)) / b - 1, policy, b)
            for (policy, b), shares in spread.items()
        ),
        key=lambda t: abs(t[0]),
    )


def spread_section(spread: Spread) -> list[str]:
    if not spread:
        return []
    seeds = ", ".join(str(s) for s in (0, *SPREAD_SEEDS))
    lines = [
        "## Budget tracking across seeds",
        "",
        f"The {SPREAD_REGIME} regime at its lowest budgets, replayed on simulator seeds {seeds} "
        "(same trace, other server and device draws; `disco bench sim --regime "
        f"{SPREAD_REGIME} --budgets {','.join(f'{b:g}' for b in SPREAD_BUDGETS)} --seeds 1`). "
        "Realised share and its relative error; seed 0 is the run above.",
        "",
        "| policy | b | " + " | ".join(f"seed {s}" for s in (0, *SPREAD_SEEDS)) + " | mean error |",
        "|---|---|" + "---|" * (len(SPREAD_SEEDS) + 2),
    ]
    for (policy, b), shares in sorted(spread.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = " | ".join(f"{x:.3f} ({x / b - 1:+.1%})" for x in shares)
        mean = sum(shares) / len(shares) / b - 1
        lines.append(f"| {policy} | {b:g} | {cells} | {mean:+.1%} |")
    return [*lines, ""]


def speed(trace: Trace, n: int) -> list[str]:
    big = trace.repeat_to(n)
    lines = [
        f"### Replay speed ({n:,} requests, one core)",
        "",
        "| policy | wall time s | requests/s |",
        "|---|---|---|",
    ]
    options = SimOptions(regime="server-constrained")
    sim = Simulator(big, options.sim_config(0))
    for name in ("length_threshold", "generalized"):
        budget = Budget(share=0.5, resource=options.regime_spec.resource)
        start = time.perf_counter()
        sim.run(policy_from_name(name, budget), budget)
        wall = time.perf_counter() - start
        lines.append(f"| {name} | {wall:.1f} | {n / wall:,.0f} |")
        stderr.print(f"replay speed {name}: {wall:.1f} s for {n:,} requests")
    return [*lines, ""]


# -- rendering ------------------------------------------------------------------------------


def _vs_random(result: SimBenchResult, row: Row) -> tuple[float, float]:
    rnd = result.row("random", row.budget)
    if rnd is None:
        return math.nan, math.nan
    return row.mean_ttft_s / rnd.mean_ttft_s, row.p99_ttft_s / rnd.p99_ttft_s


def regime_details(options: SimOptions, result: SimBenchResult) -> list[str]:
    regime = options.regime_spec
    b0 = options.budgets[0]
    n_devices = ", ".join(str(v) for v in result.n_devices.values())
    lines = [
        f"### {regime.name}: {regime.device} + {regime.server}, budget on {regime.resource}",
        "",
        f"{n_devices} devices (round-robin); USD per J {regime.cost_model.usd_per_j:.3g}. "
        f"Command: `{options.command(out=f'bench-out/dispatch/{regime.name}')}`",
        "",
        "| baseline | mean TTFT s | p99 TTFT s | share of always-race spend | device util |",
        "|---|---|---|---|---|",
    ]
    for name in ("local", "remote", "race"):
        m = result.row(name, b0)
        assert m is not None
        lines.append(
            f"| {name} | {m.mean_ttft_s:.3f} | {m.p99_ttft_s:.2f} | {m.realised_share:.3f} | "
            f"{m.device_utilisation:.2f} |"
        )
    lines += [
        "",
        "Ratios are TTFT(policy) / TTFT(reference) - 1 (negative: faster). *single* is one "
        "endpoint alone: of device-only and server-only, among those whose spend fits the "
        "budget, the one with the better mean TTFT (its mean and its p99); *oracle* is "
        "the hindsight bound: for the mean, the queue-aware bound at the spend the run "
        "was allowed (FCFS device queues, `sim/queue_bound.py`); for the p99, the oracle "
        "without queueing. TBT is the mean gap between tokens; cost is unified USD per "
        "request (x 1e-6).",
        "",
        "| b | policy | realised share | mean TTFT s | p50 s | p90 s | p99 TTFT s | TBT ms | "
        "max stall s | cost µUSD | mean vs random | p99 vs random | mean vs single | "
        "p99 vs single | mean vs oracle | p99 vs oracle |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    shown = ("random", "random_race", *regime.paper, "generalized", "oracle")
    for b in options.budgets:
        for name in shown:
            row = result.row(name, b)
            if row is None:
                continue
            if name == "oracle":
                lines.append(
                    f"| {b:.1f} | oracle | - | {row.mean_ttft_s:.3f} | | | "
                    f"{row.p99_ttft_s:.2f} | | | | | | | | | |"
                )
                continue
            flag = "" if row.on_budget else " (!)"
            mean_rnd, p99_rnd = _vs_random(result, row)
            lines.append(
                f"| {b:.1f} | {name} | {row.realised_share:.3f}{flag} | {row.mean_ttft_s:.3f} | "
                f"{row.p50_ttft_s:.3f} | {row.p90_ttft_s:.2f} | {row.p99_ttft_s:.2f} | "
                f"{_num(row.mean_tbt_s * 1e3, '.1f')} | {row.max_stall_s:.2f} | "
                f"{row.mean_cost_usd * 1e6:.1f} | {_pct(mean_rnd)} | {_pct(p99_rnd)} | "
                f"{_pct(row.mean_vs_single)} | {_pct(row.p99_vs_single)} | "
                f"{_pct(row.mean_vs_oracle)} | {_pct(row.p99_vs_oracle)} |"
            )
    return [*lines, ""]


def summary_rows(
    results: dict[str, tuple[SimOptions, SimBenchResult]],
) -> list[tuple[str, str, list[Row]]]:
    out = []
    for name, (options, result) in results.items():
        for policy in (*options.regime_spec.paper, "generalized"):
            out.append((name, policy, [r for r in result.rows if r.policy == policy]))
    return out


def summary(results: dict[str, tuple[SimOptions, SimBenchResult]]) -> list[str]:
    lines = [
        "## Summary (generalized and the paper policy of each regime, over all budgets)",
        "",
        "| regime | policy | worst share error | mean vs single | p99 vs single | "
        "mean vs random | p99 vs random | mean vs oracle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for regime, policy, rows in summary_rows(results):
        result = results[regime][1]
        err = max(abs(r.realised_share / r.budget - 1) for r in rows)
        rnd = [_vs_random(result, r) for r in rows]
        lines.append(
            f"| {regime} | {policy} | {err * 100:.1f}% | "
            f"{_range([r.mean_vs_single for r in rows])} | "
            f"{_range([r.p99_vs_single for r in rows])} | {_range([m for m, _ in rnd])} | "
            f"{_range([p for _, p in rnd])} | {_range([r.mean_vs_oracle for r in rows])} |"
        )
    return [*lines, ""]


def _best(rows: list[Row], attr: str) -> float:
    values = [getattr(r, attr) for r in rows if not math.isnan(getattr(r, attr))]
    return min(values) if values else math.nan


def against_paper(results: dict[str, tuple[SimOptions, SimBenchResult]], migration: bool) -> str:
    """The headline against the paper's figures, with this run's numbers filled in."""
    found = {(regime, policy): rows for regime, policy, rows in summary_rows(results)}
    lines = [
        "## Against the paper",
        "",
        "The paper (DiSCo, ACL Findings 2025) reports, against its baselines, mean TTFT -6 to "
        "-78%, p99 TTFT -11 to -52%, and serving cost up to -84% through migration. Here, over "
        "budgets b = 0.1 .. 0.9, the largest reduction against the better single endpoint that "
        "fits the budget (and against the random split at the same budget):",
        "",
        "| regime | policy | best mean TTFT | best p99 TTFT | best mean vs random | "
        "best p99 vs random |",
        "|---|---|---|---|---|---|",
    ]
    for (regime, policy), rows in found.items():
        result = results[regime][1]
        rnd = [_vs_random(result, r) for r in rows]
        lines.append(
            f"| {regime} | {policy} | {_pct(_best(rows, 'mean_vs_single'))} | "
            f"{_pct(_best(rows, 'p99_vs_single'))} | {_pct(min(m for m, _ in rnd))} | "
            f"{_pct(min(p for _, p in rnd))} |"
        )
    cost = (
        "The cost side (-84% through migration) is measured in the Migration section below."
        if migration
        else "The cost side (-84% through migration) is not measured on this page: dispatch "
        "alone moves cost only along the budget axis."
    )
    return "\n".join([*lines, "", cost, ""])


def _cut(ratio: float) -> str:
    """A ratio as a reduction: 0.25 -> "75%"."""
    return "n/a" if math.isnan(ratio) else f"{(1 - ratio) * 100:.0f}%"


def reading(results: dict[str, tuple[SimOptions, SimBenchResult]], spread: Spread) -> str:
    """How to read the tables; the first bullet quotes this run's numbers."""
    server = [r for r in results["server-constrained"][1].rows if r.policy == "length_threshold"]
    device = [r for r in results["device-constrained"][1].rows if r.policy == "wait_time"]
    beyond = [r.budget for r in server if r.p99_vs_single <= 0.48]
    lo, hi = device[0], device[-1]
    tail = (
        f"from b = {beyond[0]:g} its p99 cut exceeds the paper's 52%, because together-13b's "
        "measured tail makes server-only p99 about 100 s while the device's TTFT is bounded"
        if beyond
        else "its p99 cut stays within the paper's range"
    )
    worst, worst_policy, worst_b = _worst(spread)
    return READING.format(
        generalized=generalized_reading(results),
        spread=f"up to {worst:+.1%} for `{worst_policy}` at b = {worst_b:g}",
        server_mean=f"{_cut(max(r.mean_vs_single for r in server))} to "
        f"{_cut(min(r.mean_vs_single for r in server))}",
        server_p99=_cut(min(r.p99_vs_single for r in server)),
        server_tail=tail,
        device_lo=f"{_cut(lo.mean_vs_single)} at b = {lo.budget:g}"
        + (" (below the paper's low end)" if lo.mean_vs_single > 0.94 else ""),
        device_hi=f"{_cut(hi.mean_vs_single)} at b = {hi.budget:g}",
        device_p99=f"{_cut(lo.p99_vs_single)} to {_cut(hi.p99_vs_single)}",
    )


PAPER_POLICY = {"server-constrained": ("length_threshold",), "device-constrained": ("wait_time",)}
MIXED_PAPER = ("length_threshold", "wait_time")


def generalized_reading(results: dict[str, tuple[SimOptions, SimBenchResult]]) -> str:
    """Where `generalized` is at least as good as the paper policy (mean and p99, 1% slack),
    budget by budget, against each paper policy that meets that budget (+-3%)."""
    lost: list[str] = []
    checked = 0
    for regime, (_, result) in results.items():
        rows = {(r.policy, r.budget): r for r in result.rows}
        for (policy, b), ours in rows.items():
            if policy != "generalized":
                continue
            for paper in PAPER_POLICY.get(regime, MIXED_PAPER):
                theirs = rows.get((paper, b))
                if theirs is None or abs(theirs.realised_share - b) > 0.03 * b:
                    continue
                checked += 1
                for what, a, z in (
                    ("mean", ours.mean_ttft_s, theirs.mean_ttft_s),
                    ("p99", ours.p99_ttft_s, theirs.p99_ttft_s),
                ):
                    if a > z * 1.01:
                        lost.append(f"{regime} b = {b:g} {what} {a / z - 1:+.1%} vs {paper}")
    verdict = (
        "at every one of them it is at least as good on both (within 1%)"
        if not lost
        else "it trails at: " + "; ".join(lost)
    )
    return (
        "`generalized` against the paper policy of each regime (both in the mixed one), at "
        f"every budget where that policy meets the budget ({checked} comparisons): {verdict}. "
        "In the mixed regime it is also the only policy that meets budgets below the paper "
        "policies' floors (the device-first or server-first endpoint is always paid)."
    )


READING = """## Reading (how to interpret these numbers)

- Against the paper (mean TTFT -6 to -78%, p99 -11 to -52%): in the server-constrained regime
  the length threshold cuts mean TTFT by {server_mean} against the better single endpoint that
  fits the budget (the device alone, below b = 1), and p99 TTFT by up to {server_p99};
  {server_tail}. In the device-constrained regime the phone is slow (about 20 ms per prompt
  token on this trace's ~1,150-token prompts), so the device can only rescue requests stuck in
  the server's tail: the wait time cuts mean TTFT by {device_lo} up to {device_hi}, and p99
  by {device_p99}.
- The length threshold is close to the mean-optimal oracle in the server-constrained regime
  (see *mean vs oracle*): with a predictable device, knowing the server's TTFT in hindsight
  buys little on average. The mean is compared with the queue-aware bound; the oracle's p99
  ignores device queueing, so p99 gaps to it are an
  upper bound on what is left.
- {generalized}
- TBT and stalls: dispatch alone does not change how the winner streams; TBT is the winner's
  decode gap (the measured provider's or the device's), and the largest "stall" is the slowest
  measured provider gap, not a hand-over (there is none without migration).
- Known gaps, stated rather than tuned away: a budget is met over the run, not per request.
  On the phone, device spend is lumpy (a device answer costs ~10 requests' headroom, so about
  100 of them make the whole budget at b = 0.1, and several are still in flight when the trace
  ends): the realised share at b <= 0.2 moves from one simulator seed to the next,
  {spread} (*Budget tracking across seeds*). A single run's
  p99 is the 100th worst of 10,000 TTFTs, so differences of a few percent between policies
  there are within what another seed moves; the simulator's device queue is FIFO per device,
  and so is the queue-aware bound's (its p99 counterpart has no queue).
"""


def plots_section(
    results: dict[str, tuple[SimOptions, SimBenchResult]], images: dict[str, list[Path]]
) -> list[str]:
    lines = ["## Plots", ""]
    if not images:
        return [*lines, "Not drawn: matplotlib is missing (`pip install -e '.[bench]'`).", ""]
    lines += [
        "Per regime: mean and p99 TTFT against the budget (baselines as horizontal lines, the "
        "oracle dashed), and the TTFT distribution of every policy at b = 0.5 (log time axis).",
        "",
    ]
    for name, paths in images.items():
        lines += [f"### {name}", ""]
        for path in paths:
            rel = path.relative_to(OUT.parent).as_posix()
            lines += [f"![{name}: {path.stem}]({rel})", ""]
    return lines


def _kept_sections(text: str) -> list[str]:
    """`## ` sections of an existing page that this script does not own, in their order."""
    kept: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            if current is not None:
                kept.append("\n".join(current).rstrip() + "\n")
            title = line[3:].strip()
            owned = any(title.startswith(own) for own in OWN_SECTIONS)
            current = None if owned else [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        kept.append("\n".join(current).rstrip() + "\n")
    return kept


def render(
    results: dict[str, tuple[SimOptions, SimBenchResult]],
    images: dict[str, list[Path]],
    speed_lines: list[str],
    command: str,
    wall_s: float,
    jobs: int,
    kept: list[str],
    spread: Spread,
    stress: list[Stress],
) -> str:
    info = machine_info()
    first = next(iter(results.values()))[1]
    head = [
        "# Benchmarks: cost-aware dispatch",
        "",
        "Generated by `make bench` (`benchmarks/bench_dispatch.py`); do not edit the generated "
        "sections by hand (other sections, such as the migration benchmark's, are kept).",
        "",
        f"- command: `{command}` (the first of the three scripts `make bench` runs, then "
        "`benchmarks/bench_migration.py` and `benchmarks/bench_live.py`, which write their own "
        f"sections below); took {wall_s / 60:.1f} min on this machine. Each regime below is "
        "one `disco bench sim` run; its command is under its heading.",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['system']}, Python "
        f"{info['python']}; the replay runs on {jobs} worker process(es).",
        f"- trace: first {first.n_requests:,} requests of the bundled Azure LLM inference trace "
        "2023 (conversation); server TTFTs and inter-token gaps drawn from the llmperf "
        "measurements of the named provider; device TTFT/decode from `device_speeds.csv`.",
        "- budget share b: 0 = never start the constrained resource, 1 = always race "
        "(see `langchain_disco/scheduling/budget.py`); realised share = spend over the run "
        "between those two, measured with the true counterfactual race spend of every "
        f"request. (!) marks a realised share more than {TOLERANCE:.0%} (relative) away from b.",
        "",
    ]
    migration = any(section.startswith("## Migration") for section in kept)
    body = [
        *head,
        *summary(results),
        against_paper(results, migration),
        reading(results, spread),
        *spread_section(spread),
        *stress_section(stress),
        *plots_section(results, images),
        "## Details",
        "",
    ]
    for options, result in results.values():
        body += regime_details(options, result)
    body += speed_lines
    text = "\n".join(body).rstrip() + "\n"
    for section in kept:
        text += "\n" + section
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three budgets, 20k speed check")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args()
    start = time.perf_counter()
    budgets = (0.1, 0.5, 0.9) if args.quick else tuple(round(0.1 * i, 1) for i in range(1, 10))
    trace = load_bench_trace(None, args.requests)
    results = run_regimes(budgets, trace, args.jobs)
    spread = seed_spread(results, trace, args.jobs)
    stress = run_stress(trace, args.jobs)
    images: dict[str, list[Path]] = {}
    if plots_available():
        for name, (_, result) in results.items():
            images[name] = write_plots(result, IMG, prefix=f"sim-{name}-")
    else:
        stderr.print("matplotlib is missing: no plots (pip install -e '.[bench]')")
    speed_lines = speed(trace, 20_000 if args.quick else 100_000)
    command = "python benchmarks/bench_dispatch.py" + "".join(
        f" {flag}"
        for flag in (
            "--quick" if args.quick else "",
            f"--requests {args.requests}" if args.requests != 10_000 else "",
            f"--jobs {args.jobs}" if args.jobs != 1 else "",
        )
        if flag
    )
    kept = _kept_sections(OUT.read_text("utf-8")) if OUT.exists() else []
    wall = time.perf_counter() - start
    text = render(results, images, speed_lines, command, wall, args.jobs, kept, spread, stress)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    stderr.print(f"wrote {OUT} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
