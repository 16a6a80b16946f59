"""Dispatch policies on the real Azure 2023 trace: budget tracking, TTFT, and replay speed.

Run: `.venv/bin/python benchmarks/bench_dispatch.py` (writes `docs/benchmarks.md`; about five
minutes on one core). `--quick` runs three budgets and a 20k-request speed check instead.

Three regimes, each a measured device and a measured hosted API (llmperf) from
`langchain_disco/data`:

- server-constrained: MacBook Pro M1 Max (llama.cpp, Llama 3.1 8B) + together-13b (heavy tail),
  default prices (device energy nearly free), budget on server USD;
- device-constrained: Galaxy S25 (llama3.2-1b, slow prefill) + replicate-70b (heavy tail),
  battery valued at 1e-4 USD/J, budget on device joules;
- mixed: 2-core x86 (Gemma 3 270M) + together-13b, 1e-5 USD/J so that a request costs about
  the same on either side, budget on unified cost.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from langchain_disco.scheduling import (
    Budget,
    CostModel,
    DispatchPolicy,
    Generalized,
    LengthThreshold,
    LocalOnly,
    Race,
    RandomSplit,
    RemoteOnly,
    Resource,
    WaitTime,
)
from langchain_disco.sim import RunMetrics, SimConfig, Simulator, load_trace
from langchain_disco.sim.trace import Trace

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
TOLERANCE = 0.03  # relative: realised share within +-3% of the budget


@dataclass(frozen=True)
class Regime:
    name: str
    config: SimConfig
    resource: Resource
    paper: tuple[str, ...]


REGIMES = (
    Regime(
        "server-constrained",
        SimConfig(device="MacBook Pro M1 Max", server="together-13b"),
        "server",
        ("length_threshold",),
    ),
    Regime(
        "device-constrained",
        SimConfig(
            device="Galaxy S25", server="replicate-70b", cost_model=CostModel(usd_per_j=1e-4)
        ),
        "device",
        ("wait_time",),
    ),
    Regime(
        "mixed",
        SimConfig(
            device="2-core x86 cloud VM",
            server="together-13b",
            cost_model=CostModel(usd_per_j=1e-5),
        ),
        "unified",
        ("length_threshold", "wait_time"),
    ),
)

FACTORIES: dict[str, Callable[[Budget], DispatchPolicy]] = {
    "random": lambda b: RandomSplit(b, seed=0),
    "random_race": lambda b: RandomSplit(b, seed=0, race=True),
    "length_threshold": LengthThreshold,
    "wait_time": WaitTime,
    "generalized": Generalized,
}


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{(x - 1) * 100:+.0f}%"


def _fits(share: float, b: float) -> bool:
    return share <= b * (1 + TOLERANCE) + 1e-9


def run_regime(regime: Regime, trace: Trace, budgets: list[float]) -> tuple[list[str], dict]:  # type: ignore[type-arg]
    sim = Simulator(trace, regime.config)
    lines = [
        f"### {regime.name}: {regime.config.device} + {regime.config.server}, "
        f"budget on {regime.resource}",
        "",
        f"{sim.n_devices} devices (round-robin); "
        f"USD per J {regime.config.cost_model.usd_per_j:.3g}.",
        "",
    ]
    singles: dict[str, dict[float, RunMetrics]] = {"local": {}, "remote": {}}
    base = {}
    for policy in (LocalOnly(), RemoteOnly(), Race()):
        base[policy.name] = sim.run(policy, Budget(share=0.5, resource=regime.resource)).metrics
    lines += [
        "| baseline | mean TTFT s | p99 TTFT s | share of always-race spend | device util |",
        "|---|---|---|---|---|",
    ]
    for name, m in base.items():
        lines.append(
            f"| {name} | {m.mean_ttft_s:.3f} | {m.p99_ttft_s:.2f} | {m.realised_share:.3f} | "
            f"{m.device_utilisation:.2f} |"
        )
    singles["local"] = {0: base["local"]}
    singles["remote"] = {0: base["remote"]}
    lines += [
        "",
        "Ratios are TTFT(policy) / TTFT(reference) - 1 (negative: faster). *single* is the better "
        "of device-only and server-only among those whose spend fits the budget; *oracle* is "
        "the hindsight bound (mean-optimal and p99-optimal solved separately, no queueing).",
        "",
        "| b | policy | realised share | mean TTFT s | p99 TTFT s | mean vs random | "
        "p99 vs random | mean vs single | p99 vs single | mean vs oracle | p99 vs oracle |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, list[tuple[float, float, float, float, float, float]]] = {}
    for b in budgets:
        budget = Budget(share=b, resource=regime.resource)
        oracle = sim.oracle(budget)
        results = {}
        for name in ("random", "random_race", *regime.paper, "generalized"):
            results[name] = sim.run(FACTORIES[name](budget), budget).metrics
        feasible = [m for m in (base["local"], base["remote"]) if _fits(m.realised_share, b)]
        single_mean = min((m.mean_ttft_s for m in feasible), default=math.nan)
        single_p99 = min((m.p99_ttft_s for m in feasible), default=math.nan)
        rnd = results["random"]
        for name, m in results.items():
            flag = "" if abs(m.realised_share / b - 1) <= TOLERANCE else " (!)"
            lines.append(
                f"| {b:.1f} | {name} | {m.realised_share:.3f}{flag} | {m.mean_ttft_s:.3f} | "
                f"{m.p99_ttft_s:.2f} | {_pct(m.mean_ttft_s / rnd.mean_ttft_s)} | "
                f"{_pct(m.p99_ttft_s / rnd.p99_ttft_s)} | {_pct(m.mean_ttft_s / single_mean)} | "
                f"{_pct(m.p99_ttft_s / single_p99)} | {_pct(m.mean_ttft_s / oracle.mean_ttft_s)} "
                f"| {_pct(m.p99_ttft_s / oracle.p99_ttft_s)} |"
            )
            summary.setdefault(name, []).append(
                (
                    b,
                    m.realised_share,
                    m.mean_ttft_s / single_mean,
                    m.p99_ttft_s / single_p99,
                    m.mean_ttft_s / rnd.mean_ttft_s,
                    m.p99_ttft_s / rnd.p99_ttft_s,
                )
            )
        lines.append(
            f"| {b:.1f} | oracle | - | {oracle.mean_ttft_s:.3f} | {oracle.p99_ttft_s:.2f} | "
            "| | | | | |"
        )
        print(f"{regime.name} b={b} done", file=sys.stderr, flush=True)
    lines.append("")
    return lines, summary


def speed(trace: Trace, n: int) -> list[str]:
    big = trace.repeat_to(n)
    lines = [
        f"### Replay speed ({n:,} requests, one core)",
        "",
        "| policy | wall time s | requests/s |",
        "|---|---|---|",
    ]
    regime = REGIMES[0]
    sim = Simulator(big, regime.config)
    for name in ("length_threshold", "generalized"):
        budget = Budget(share=0.5, resource=regime.resource)
        start = time.perf_counter()
        sim.run(FACTORIES[name](budget), budget)
        wall = time.perf_counter() - start
        lines.append(f"| {name} | {wall:.1f} | {n / wall:,.0f} |")
        print(f"speed {name} {wall:.1f}s", file=sys.stderr, flush=True)
    return [*lines, ""]


def _range(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a (no single endpoint fits)"
    return f"{_pct(min(values))} .. {_pct(max(values))}"


READING = """## Reading (how to interpret these numbers)

- Against the paper (mean TTFT -6..-78%, p99 -11..-52% versus their baselines): the rows
  above give our reductions per regime against the random split and against the single
  endpoint that fits the budget. In the server-constrained regime they span roughly the
  paper's range and beyond at high budgets (the together-13b tail makes server-only p99
  100 s); in the device-constrained regime the phone is slow (about 20 ms per prompt token
  on this trace's ~1,150-token prompts), so the device can only rescue requests stuck in the
  server's tail and the gains are smaller at low budgets.
- The length threshold is close to the mean-optimal oracle in the server-constrained regime
  (within ~1-10%): with a predictable device, knowing the server's TTFT in hindsight buys
  little on average. The oracle's p99 ignores device queueing, so p99 gaps to it are an
  upper bound on what is left.
- `generalized` matches the length threshold in the server-constrained regime (it reduces to
  a threshold there), beats the wait time on mean TTFT and on p99 in the device-constrained
  one at most budgets, and in the mixed regime it is the only policy that can meet budgets
  below the paper policies' floors (the device-first or server-first endpoint is always paid).
- Known gaps, stated rather than tuned away: the random split (a baseline) underspends by
  ~5-7% in the device-constrained regime (its ceiling estimate for server-only requests uses
  the phone's mean TTFT while the spend is convex in it); `generalized`'s p99 can trail the
  best paper policy by a few percent at some budgets (it optimises mean + CVaR99, not p99
  itself); the simulator's device queue is FIFO per device and the oracle has no queue.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three budgets, 20k speed check")
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    budgets = [0.1, 0.5, 0.9] if args.quick else [round(0.1 * i, 1) for i in range(1, 10)]
    trace = load_trace(limit=args.requests)
    command = "python benchmarks/bench_dispatch.py" + (" --quick" if args.quick else "")
    body: list[str] = []
    summaries = {}
    for regime in REGIMES:
        lines, summary = run_regime(regime, trace, budgets)
        body += lines
        summaries[regime.name] = summary
    body += speed(trace, 20_000 if args.quick else 100_000)
    head = [
        "# Benchmarks: cost-aware dispatch",
        "",
        "Generated by `benchmarks/bench_dispatch.py`; do not edit by hand.",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (the replay uses one), Python {platform.python_version()}",
        f"- trace: first {len(trace):,} requests of the bundled Azure LLM inference trace 2023 "
        "(conversation); server TTFTs and inter-token gaps drawn from the llmperf "
        "measurements of the named provider; device TTFT/decode from `device_speeds.csv`.",
        "- budget share b: 0 = never start the constrained resource, 1 = always race "
        "(see `langchain_disco/scheduling/budget.py`); realised share = spend over the run "
        "between those two, measured with the true counterfactual race spend of every "
        "request. (!) marks a realised share more than 3% (relative) away from b.",
        "",
        "## Summary (generalized and the paper policy of each regime, over all budgets)",
        "",
        "| regime | policy | worst share error | mean vs single | p99 vs single | "
        "mean vs random | p99 vs random |",
        "|---|---|---|---|---|---|---|",
    ]
    for regime in REGIMES:
        for name in (*regime.paper, "generalized"):
            rows = summaries[regime.name][name]
            err = max(abs(share / b - 1) for b, share, *_ in rows)
            head.append(
                f"| {regime.name} | {name} | {err * 100:.1f}% | "
                f"{_range([r[2] for r in rows])} | {_range([r[3] for r in rows])} | "
                f"{_range([r[4] for r in rows])} | {_range([r[5] for r in rows])} |"
            )
    head.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([*head, READING, "## Details", "", *body]) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
