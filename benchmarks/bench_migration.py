"""Token-level migration on the real Azure 2023 trace: cost with and without, at what QoE.

Run: `.venv/bin/python benchmarks/bench_migration.py` (about 15 minutes on one core, part
of `make bench`). It writes the `## Migration (issue 5)` section of `docs/benchmarks.md` (the
rest of the page is kept) and, with matplotlib (the `bench` extra), the token timeline of one
migrated answer per regime into `docs/img/`. It replays the first `DEFAULT_REQUESTS` requests of
the trace; `--requests 10000` replays the 10k of the dispatch benchmark (about 50 minutes),
and `--quick` replays 2,000 and skips the equal-TTFT budget search.

The live engine's `CostAwareMigration` (default settings) runs in the simulator
(`langchain_disco.sim`), after the dispatch policy's first token, in two regimes:

- server-expensive: MacBook Pro M1 Max (llama.cpp, Llama 3.1 8B) + together-13b at the
  default prices (USD 0.15 / 0.60 per 1M input / output tokens) and electricity-priced device
  energy: generation moves server -> device;
- device-expensive: Galaxy S25 (llama3.2-1b) on battery (1e-4 USD/J, issue 4's device-
  constrained price) + the same together-13b server, assumed to continue a partial answer
  like vLLM: generation moves device -> server.

Each with paced delivery at 10 tokens/s (a fast reader) and eager delivery, under two
dispatch policies: always-race (no budget feedback, so dispatch is identical with and without
migration) and `Generalized` at a budget share of 0.5 (its budget controller sees the lower
spend and reinvests it in racing, so migration shows up as TTFT instead). For the latter the
benchmark also searches the lowest budget at which the run *with* migration has a mean and a
p99 TTFT no worse than the run without it at 0.5: the cost reduction at equal TTFT.
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
from functools import partial
from pathlib import Path
from typing import get_args

from langchain_disco.bench._page import replace_section
from langchain_disco.bench._plots import INSTALL_HINT, plot_token_timeline, plots_available
from langchain_disco.scheduling import Budget, CostModel, DispatchPolicy, Generalized, Race
from langchain_disco.scheduling.budget import Resource
from langchain_disco.scheduling.migration import Blocker, CostAwareMigration, usd_per_token
from langchain_disco.scheduling.roles import Role
from langchain_disco.sim import RunMetrics, SimConfig, SimResult, Simulator, load_trace
from langchain_disco.sim.timeline import MigratedStream
from langchain_disco.sim.trace import Trace

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
HEADING = "## Migration (issue 5)"
DEFAULT_REQUESTS = 3_000
"""Enough for stable means and p99s (30 p99 samples per run) within `make bench`'s time."""
PACE_TOK_S = 10.0
BUDGET = 0.5
TTFT_SLACK = 0.05  # "comparable TTFT": mean and p99 within 5% of no migration
SEARCH_STEPS = 5


@dataclass(frozen=True)
class Regime:
    name: str
    config: SimConfig
    resource: Resource
    direction: str


REGIMES = (
    Regime(
        "server-expensive",
        SimConfig(device="MacBook Pro M1 Max", server="together-13b"),
        "server",
        "server -> device",
    ),
    Regime(
        "device-expensive",
        SimConfig(device="Galaxy S25", server="together-13b", cost_model=CostModel(usd_per_j=1e-4)),
        "device",
        "device -> server",
    ),
)
DELIVERIES: tuple[tuple[str, float | None], ...] = (
    (f"paced {PACE_TOK_S:g} tok/s", PACE_TOK_S),
    ("eager", None),
)


@dataclass
class Row:
    regime: str
    delivery: str
    dispatch: str
    migration: bool
    metrics: RunMetrics
    wall_s: float
    budget: float | None = None
    blocked: dict[str, float] | None = None
    """With migration: the share of the run's migratable saving (its bound) each outcome
    holds, `moved` or the condition that kept the answer where it was (`blocked_shares`)."""
    bound: float = math.nan
    """With migration: the run's own migratable share of its cost (`migratable_share`)."""


def _run(
    sim: Simulator,
    policy: Callable[[], DispatchPolicy],
    budget: Budget | None,
    *,
    migration: bool,
    pace: float | None,
) -> tuple[SimResult, float]:
    start = time.perf_counter()
    result = sim.run(
        policy(),
        budget,
        migration=CostAwareMigration() if migration else None,
        pace_tok_s=pace,
    )
    return result, time.perf_counter() - start


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _comparable(m: RunMetrics, base: RunMetrics, slack: float = TTFT_SLACK) -> bool:
    """Mean and p99 TTFT at most `slack` (relative) above `base`'s."""
    mean_ok = m.mean_ttft_s <= base.mean_ttft_s * (1 + slack)
    return mean_ok and m.p99_ttft_s <= base.p99_ttft_s * (1 + slack)


def migratable_share(sim: Simulator, result: SimResult) -> float:
    """Upper bound on any migration's saving: every token after the first moved to the other
    side for free (no re-prefill, no probe), as a share of the run's cost without migration."""
    cm = sim.config.cost_model
    out = {role: usd_per_token(cm, role, output=True) for role in ("local", "remote")}
    saving = 0.0
    for winner, o in zip(result.winner, sim.trace.output_tokens, strict=True):
        other = "remote" if winner == "local" else "local"
        saving += max(out[winner] - out[other], 0.0) * (o - 1)
    return saving / sum(result.cost_without_migration_usd)


def _migratable_usd(sim: Simulator, result: SimResult) -> list[float]:
    """Per request, what moving every token after the first to the other side for free would
    save (0 where the winner is the cheaper side per output token)."""
    cm = sim.config.cost_model
    out = {role: usd_per_token(cm, role, output=True) for role in ("local", "remote")}
    return [
        max(out[winner] - out["remote" if winner == "local" else "local"], 0.0) * (o - 1)
        for winner, o in zip(result.winner, sim.trace.output_tokens, strict=True)
    ]


BLOCKERS = ("moved", "handed_back", "not_asked", "probe_not_ready", *get_args(Blocker))
"""The outcomes `blocked_shares` splits the bound into, in table order (`Playout.blocked_by`
and `migration.Blocker` say what each means)."""


def blocked_shares(sim: Simulator, result: SimResult) -> dict[str, float]:
    """The run's migratable saving split by what became of each request that holds some: it
    moved, or the condition the policy (or the engine) last named for keeping it. Shares of
    the run's bound, summing to 1 (empty when nothing was migratable)."""
    weights = _migratable_usd(sim, result)
    total = sum(weights)
    shares: dict[str, float] = {}
    if total <= 0:
        return shares
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        key = "moved" if result.migrated[i] else (result.migration_blocked_by[i] or "not_asked")
        shares[key] = shares.get(key, 0.0) + w / total
    return shares


def run_regime(
    regime: Regime, trace: Trace, search: bool
) -> tuple[list[Row], float, MigratedStream | None]:
    """Every row of one regime, the migratable share of its race's cost, and the first answer
    that migrated in the paced race (the acceptance run), to draw token by token."""
    sim = Simulator(trace, regime.config)
    rows: list[Row] = []
    bound = math.nan
    example: MigratedStream | None = None
    budget = Budget(share=BUDGET, resource=regime.resource)
    for delivery, pace in DELIVERIES:
        for dispatch, factory, b in (
            ("race", Race, None),
            (f"generalized b={BUDGET:g}", partial(Generalized, budget), budget),
        ):
            base: RunMetrics | None = None
            for migration in (False, True):
                result, wall = _run(sim, factory, b, migration=migration, pace=pace)
                row = Row(regime.name, delivery, dispatch, migration, result.metrics, wall)
                if migration:
                    row.blocked = blocked_shares(sim, result)
                    row.bound = migratable_share(sim, result)
                rows.append(row)
                _log(f"{regime.name} {delivery} {dispatch} migration={migration}: {wall:.1f}s")
                if migration and pace is not None and dispatch == "race":
                    example = result.first_migration
                if not migration:
                    base = result.metrics
                    if dispatch == "race" and math.isnan(bound):
                        bound = migratable_share(sim, result)
            if search and b is not None and base is not None:
                rows.append(_equal_ttft(sim, regime, delivery, pace, base))
    return rows, bound, example


def _equal_ttft(
    sim: Simulator, regime: Regime, delivery: str, pace: float | None, base: RunMetrics
) -> Row:
    """Bisect the lowest budget whose run with migration has TTFT no worse than `base`'s (no
    slack: a lower budget within 5% would credit migration with what the slack bought)."""
    lo, hi = 0.0, BUDGET
    best: tuple[float, RunMetrics, float] | None = None
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        b = Budget(share=mid, resource=regime.resource)
        result, wall = _run(sim, partial(Generalized, b), b, migration=True, pace=pace)
        _log(f"{regime.name} {delivery} search b={mid:.3f}: {wall:.1f}s")
        if _comparable(result.metrics, base, slack=0.0):
            hi, best = mid, (mid, result.metrics, wall)
        else:
            lo = mid
    if best is None:  # no lower budget keeps TTFT: the same budget is the answer
        b = Budget(share=BUDGET, resource=regime.resource)
        result, wall = _run(sim, partial(Generalized, b), b, migration=True, pace=pace)
        best = (BUDGET, result.metrics, wall)
    share, metrics, wall = best
    return Row(
        regime.name, delivery, f"generalized b={share:.3f}", True, metrics, wall, budget=share
    )


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x * 100:+.1f}%"


def _pairs(rows: list[Row]) -> list[tuple[Row, RunMetrics]]:
    """Each row with migration, with the run without migration it is compared to."""
    out: list[tuple[Row, RunMetrics]] = []
    base: RunMetrics | None = None
    for row in rows:
        if not row.migration:
            base = row.metrics
        elif base is not None:
            out.append((row, base))
    return out


def _label(row: Row) -> str:
    return row.dispatch + (" (equal TTFT)" if row.budget is not None else "")


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| regime | delivery | dispatch | migration | mean cost µUSD | cost vs without | "
        "mean TTFT s | p99 TTFT s | mean TTFT vs without | p99 TTFT vs without | "
        "mean TBT ms | p99 TBT ms | max gap s | stall added mean / max s | migrated | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base: RunMetrics | None = None
    for row in rows:
        m = row.metrics
        if not row.migration:
            base = m
        assert base is not None
        vs = row.migration
        lines.append(
            f"| {row.regime} | {row.delivery} | {_label(row)} | {'yes' if vs else 'no'} | "
            f"{m.mean_cost_usd * 1e6:.1f} | "
            f"{_pct(m.mean_cost_usd / base.mean_cost_usd - 1) if vs else ''} | "
            f"{m.mean_ttft_s:.3f} | {m.p99_ttft_s:.2f} | "
            f"{_pct(m.mean_ttft_s / base.mean_ttft_s - 1) if vs else ''} | "
            f"{_pct(m.p99_ttft_s / base.p99_ttft_s - 1) if vs else ''} | "
            f"{m.mean_tbt_s * 1e3:.1f} | {m.p99_tbt_s * 1e3:.0f} | {m.max_stall_s:.2f} | "
            f"{m.mean_stall_added_s:.3f} / {m.max_stall_added_s:.2f} | "
            f"{m.migration_rate:.1%} | {row.wall_s:.1f} |"
        )
    return lines


def breakdown(rows: list[Row]) -> list[str]:
    """Where each migration run's bound went: moved, or the condition that held it back."""
    runs = [r for r in rows if r.migration and r.blocked is not None and r.budget is None]
    used = [k for k in BLOCKERS if any((r.blocked or {}).get(k, 0.0) > 0 for r in runs)]
    lines = [
        "| regime | delivery | dispatch | bound (share of cost) | saved / bound | "
        + " | ".join(used)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(used),
    ]
    for row, base in _pairs(rows):
        if row.blocked is None or row.budget is not None:
            continue
        saved = 1 - row.metrics.mean_cost_usd / base.mean_cost_usd
        captured = saved / row.bound if row.bound > 0 else math.nan
        cells = [f"{row.blocked.get(k, 0.0):.1%}" for k in used]
        lines.append(
            f"| {row.regime} | {row.delivery} | {_label(row)} | {row.bound:.1%} | "
            f"{'n/a' if math.isnan(captured) else f'{captured:.0%}'} | " + " | ".join(cells) + " |"
        )
    return lines


def headline(rows: list[Row]) -> list[str]:
    lines = [
        "| regime | delivery | dispatch | cost reduction | mean TTFT | p99 TTFT | "
        "TTFT at most +5% | mean / max stall added s | migrated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, base in _pairs(rows):
        m = row.metrics
        lines.append(
            f"| {row.regime} | {row.delivery} | {_label(row)} | "
            f"{1 - m.mean_cost_usd / base.mean_cost_usd:.1%} | "
            f"{_pct(m.mean_ttft_s / base.mean_ttft_s - 1)} | "
            f"{_pct(m.p99_ttft_s / base.p99_ttft_s - 1)} | "
            f"{'yes' if _comparable(m, base) else 'NO'} | "
            f"{m.mean_stall_added_s:.3f} / {m.max_stall_added_s:.2f} | {m.migration_rate:.1%} |"
        )
    return lines


def _find(rows: list[Row], regime: str, delivery: str, dispatch: str) -> tuple[Row, RunMetrics]:
    for row, base in _pairs(rows):
        if (row.regime, row.delivery, row.dispatch) == (regime, delivery, dispatch):
            return row, base
    raise KeyError((regime, delivery, dispatch))


def reading(rows: list[Row], bounds: dict[str, float], trace: Trace) -> list[str]:
    """The interpretation, with this run's figures."""
    paced, eager = DELIVERIES[0][0], DELIVERIES[1][0]
    gen = f"generalized b={BUDGET:g}"
    n = len(trace)
    prompt = sum(trace.prompt_tokens) / n
    output = sum(trace.output_tokens) / n
    cm = REGIMES[0].config.cost_model
    input_usd = cm.price_in_per_mtok * prompt
    input_share = input_usd / (input_usd + cm.price_out_per_mtok * output)

    def saving(regime: str, delivery: str, dispatch: str = "race") -> str:
        row, base = _find(rows, regime, delivery, dispatch)
        return f"{1 - row.metrics.mean_cost_usd / base.mean_cost_usd:.0%}"

    def rate(regime: str, delivery: str) -> str:
        return f"{_find(rows, regime, delivery, 'race')[0].metrics.migration_rate:.1%}"

    def ttft(regime: str, delivery: str) -> str:
        row, base = _find(rows, regime, delivery, gen)
        m = row.metrics
        return (
            f"{_pct(m.mean_ttft_s / base.mean_ttft_s - 1)} mean, "
            f"{_pct(m.p99_ttft_s / base.p99_ttft_s - 1)} p99"
        )

    equal = [
        f"{row.regime}, {row.delivery}: budget {row.budget:.3f} instead of {BUDGET:g}, "
        f"cost {1 - row.metrics.mean_cost_usd / base.mean_cost_usd:.0%} lower"
        for row, base in _pairs(rows)
        if row.budget is not None
    ]
    se, de = REGIMES[0].name, REGIMES[1].name
    stalls = {r.name: _find(rows, r.name, paced, "race")[0].metrics for r in REGIMES}
    return [
        "### Reading",
        "",
        f"- **Race, paced (the acceptance rows)**: dispatch is the same with and without "
        "migration and the first token is never delayed, so TTFT moves only through the device "
        "load a server -> device migration adds for later requests; the difference is cost. "
        f"Server -> device saves {saving(se, paced)} of the bill ({rate(se, paced)} of the "
        f"answers move), out of at most {bounds[se]:.0%} that any migration could save here. "
        f"Device -> server saves {saving(de, paced)} (at most {bounds[de]:.0%}): the phone wins "
        f"only a few percent of races (short prompts, the server's tail), {rate(de, paced)} of "
        "the answers move, and the rest of the bill (server input and output, the phone's "
        "prefill while racing) is not migratable.",
        f"- **Eager delivery barely migrates, by design** ({rate(se, eager)} and "
        f"{rate(de, eager)}): server -> device goes through a probe, and the device must "
        f"prefill the whole conversation (~{prompt / 500:.1f} s at 500 tok/s for these "
        f"requests' ~{prompt:,.0f}-token prompts) while together-13b streams at ~100 "
        "tok/s, so most answers are done first "
        "(the probe is cancelled and bills its partial prefill); once the server's decode rate "
        "is learned the device is also below the policy's `eager_min_speed_ratio`. Device -> "
        "server needs the server's predicted (p90) TTFT within `eager_stall_bound_s` = 0.5 s; "
        "together-13b's p90 is ~0.66 s, so the policy does not move eagerly.",
        f"- **Budgeted dispatch**: at the same budget the controller reinvests what migration "
        f"saves in racing, so TTFT improves instead of cost (paced: {ttft(se, paced)} "
        f"server-expensive, {ttft(de, paced)} device-expensive)."
        + (
            " At equal TTFT (mean and p99 no worse than without migration at b = "
            f"{BUDGET:g}): " + "; ".join(equal) + "."
            if equal
            else " (`--quick` skips the equal-TTFT budget search.)"
        ),
        "- **Stalls**: paced migration hides the target's TTFT behind the buffer (it waits "
        "for buffer >= predicted TTFT x pace x 1.5), and the mean stall added stays at "
        f"milliseconds. The maximum ({stalls[se].max_stall_added_s:.1f} s server-expensive, "
        f"{stalls[de].max_stall_added_s:.1f} s device-expensive) "
        + (
            "is the tail of prediction errors: "
            if max(m.max_stall_added_s for m in stalls.values()) >= 0.05
            else "is nil in these requests, but the exposure remains: "
        )
        + "a device whose queue turns out longer than predicted, or a server "
        "continuation that lands in together-13b's measured ~100 s tail (about 1% of its "
        "requests). The simulator runs the live engine's own core, so both bound it the same "
        "way: a target silent past its predicted TTFT plus the stall threshold hands the "
        "answer back to the source.",
        "- **Replay cost**: every answer a migration policy can move is played token by token "
        "through the engine's core (the same code the live model runs), so the migration runs "
        "take several times longer than the dispatch-only ones (the *run s* column); the "
        "figures moved by at most two points against the former analytic replay.",
        '- **Against the paper\'s "up to 84% cost reduction through migration"**: we do not '
        "reach it on this trace, and the bounds above say why. The Azure conversation prompts "
        f"are long (~{prompt:,.0f} tokens on average here) and the answers short "
        f"(~{output:,.0f}), so at gpt-4o-mini-like prices (output 4x input) the input is "
        f"~{input_share:.0%} of a server request's bill, and it is paid before "
        "any migration can happen; on the phone, the prefill burnt while racing is likewise "
        "spent. Traces with short prompts and long answers, or output-heavy prices, raise the "
        "migratable share and our reduction with it. The paper's exact setting (prices, "
        "traces, which requests count) is not public in enough detail to reproduce its figure.",
        "",
    ]


def _names(regime: Regime) -> dict[Role, str]:
    return {
        "local": f"device ({regime.config.device})",
        "remote": f"server ({regime.config.server})",
    }


def draw_timelines(examples: dict[str, MigratedStream | None], n: int) -> dict[str, Path] | None:
    """Each regime's example answer as `docs/img/migration-timeline-<regime>.png` (None:
    matplotlib is missing)."""
    if not plots_available():
        _log(f"matplotlib is missing: no token timeline plots ({INSTALL_HINT})")
        return None
    IMG.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for regime in REGIMES:
        stream = examples.get(regime.name)
        if stream is None:
            continue
        paths[regime.name] = plot_token_timeline(
            stream,
            IMG / f"migration-timeline-{regime.name}.png",
            title=f"{regime.name}: race, {DELIVERIES[0][0]}, CostAwareMigration() - the first "
            f"answer that migrated among the first {n:,} requests of the Azure 2023 trace",
            names=_names(regime),
        )
    return paths


def timeline_section(
    examples: dict[str, MigratedStream | None], images: dict[str, Path] | None
) -> list[str]:
    """One migrated answer per regime, token by token, with what the plot shows in words."""
    lines = [
        "### Token timeline of one migrated answer",
        "",
        f"The first request (in trace order) that migrated in each regime's race, "
        f"{DELIVERIES[0][0]} run. Dots: tokens as generated; line: tokens as delivered to the "
        "reader; both coloured by the endpoint that generated them. Red line: the migration "
        "decision (the target starts); shaded: until the target's first token; dashed: the "
        "hand-over token. Lower panel: tokens generated but not yet delivered (the buffer that "
        "hides the target's TTFT).",
        "",
    ]
    if images is None:
        return [*lines, f"Not drawn: matplotlib is missing (`{INSTALL_HINT}`).", ""]
    for regime in REGIMES:
        stream = examples.get(regime.name)
        if stream is None:
            lines += [f"- {regime.name}: no request migrated in this run; nothing to draw.", ""]
            continue
        names = _names(regime)
        line, play = stream.timeline(), stream.playout
        k = line.handover_token
        decided = line.decided_s or 0.0
        first = line.target_first_token_s or decided
        lines += [
            f"- {regime.name}: request #{stream.index} ({stream.prompt_tokens:,} prompt tokens, "
            f"{line.tokens} output tokens). The {names[stream.source]} generates the first {k}; at "
            f"{decided:.2f} s, with {line.buffered(decided)} tokens buffered, the "
            f"{names[stream.target]} takes over and its first token comes "
            f"{first - decided:.2f} s later; stall added {play.stall_added_s:.2f} s.",
            "",
            f"![{regime.name}: token timeline of one migrated answer]"
            f"({images[regime.name].relative_to(OUT.parent).as_posix()})",
            "",
        ]
    return lines


def render(
    rows: list[Row],
    bounds: dict[str, float],
    command: str,
    trace: Trace,
    wall_s: float,
    timelines: list[str],
) -> str:
    n = len(trace)
    lines = [
        HEADING,
        "",
        "Generated by `benchmarks/bench_migration.py`; do not edit by hand.",
        "",
        f"- command: `{command}`; took {wall_s / 60:.1f} min.",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (the replay uses one), Python {platform.python_version()}.",
        f"- trace: first {n:,} requests of the bundled Azure LLM inference trace 2023 "
        "(conversation); server TTFT and decode gap (dispatch and continuation) drawn from the "
        "llmperf measurements of together-13b; device TTFT/decode from `device_speeds.csv`.",
        *_sample_note(n),
        "- regimes: server-expensive = MacBook Pro M1 Max + together-13b at the default prices "
        "(USD 0.15 / 0.60 per 1M tokens, device energy at electricity price); device-expensive "
        "= Galaxy S25 on battery (1e-4 USD/J) + together-13b, assumed to continue a partial "
        "answer like vLLM.",
        "- policy: `CostAwareMigration()` with its defaults (margin 1.5, hedged hand-over "
        "on, eager stall bound 0.5 s, eager minimum speed ratio 0.5), asked after every source "
        "token with the view the live engine builds (`ViewBuilder`, "
        "`ProfileMigrationPredictor`: device TTFT from its learned line plus its predicted "
        "queue, server TTFT at its p90).",
        "- *vs without*: the same dispatch policy and delivery without migration. *Stall "
        "added*: how much longer the consumer waited at the hand-over than the source's own "
        "delivery gap. *max gap*: the largest gap between delivered tokens. *Equal TTFT*: the "
        "lowest budget (bisection) at which the run with migration has mean and p99 TTFT no "
        f"worse than without migration at b = {BUDGET:g}.",
        "",
        f"### Headline ({n:,} requests per run)",
        "",
        *headline(rows),
        "",
        *reading(rows, bounds, trace),
        "### What held migration back (issue 20)",
        "",
        "Each run's *bound* is what moving every token after the first to the other side "
        "for free would save (`migratable_share`, on the run's own winners), as a share of its "
        "cost without migration; *saved / bound* is how much of it the run saved. The other "
        "columns split the bound by what became of the requests that hold it, weighted by "
        "their migratable saving: *moved*, or the condition that kept the answer where it was, "
        "the last one `CostAwareMigration` named (`migration.Blocker`: *buffer_below_ttft*, "
        "the paced buffer never reached the target's predicted TTFT; *buffer_below_margin*, it "
        "covered the TTFT but not the margin and safety on top; *few_remaining*, too few "
        "tokens were expected to remain; *no_saving*, the target's re-prefill outweighed the "
        "saving; *target_too_slow*, eager, the target decodes below half the source's speed; "
        "*stall_above_bound*, eager, the predicted stall is above 0.5 s), or what the engine "
        "saw (*probe_not_ready*, eager, the answer ended before the probed device had "
        "prefilled; *handed_back*, the target stayed silent and the source took the answer "
        "back; *not_asked*, the answer ended before the policy was asked).",
        "",
        *breakdown(rows),
        "",
        *timelines,
        "### Details",
        "",
        *table(rows),
        "",
    ]
    return "\n".join(lines).rstrip() + "\n"


def _sample_note(n: int) -> list[str]:
    """Why fewer requests than the dispatch benchmark, and what that does to the figures."""
    if n >= 10_000:
        return []
    why = (
        f"{n:,} is this benchmark's default (`--requests`), so that it fits in `make bench`"
        if n == DEFAULT_REQUESTS
        else f"{n:,} requests"
    )
    return [
        f"- sample: {why}; the dispatch benchmark replays 10,000. The figures move with the "
        f"sample: a run's p99 TTFT, which the equal-TTFT search must not exceed, rests on its "
        f"{max(n // 100, 1)} slowest requests, and the largest stalls come from rare tail "
        "events. `--requests 10000` replays the larger sample (about 50 min)."
    ]


def write_section(section: str) -> None:
    """Replace this benchmark's `## ` section of the page (or append it), keeping the rest."""
    replace_section(OUT, HEADING, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 requests, no budget search")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"requests of the trace to replay [default: {DEFAULT_REQUESTS:,}; 2,000 with --quick]",
    )
    args = parser.parse_args()
    n = args.requests or (2_000 if args.quick else DEFAULT_REQUESTS)
    if n < 1:
        parser.error(f"--requests must be at least 1, got {n}")
    trace = load_trace(limit=n)
    start = time.perf_counter()
    rows: list[Row] = []
    bounds: dict[str, float] = {}
    examples: dict[str, MigratedStream | None] = {}
    for regime in REGIMES:
        regime_rows, bounds[regime.name], examples[regime.name] = run_regime(
            regime, trace, search=not args.quick
        )
        rows += regime_rows
    command = "python benchmarks/bench_migration.py" + (" --quick" if args.quick else "")
    if args.requests:
        command += f" --requests {args.requests}"
    timelines = timeline_section(examples, draw_timelines(examples, len(trace)))
    wall_s = time.perf_counter() - start
    write_section(render(rows, bounds, command, trace, wall_s, timelines))
    _log(f"wrote the migration section of {OUT}")


if __name__ == "__main__":
    main()
