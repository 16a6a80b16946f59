"""How much of `generalized`'s distance to the hindsight bound is information, and how much policy.

Writes the "Information or policy" section of docs/benchmarks.md:

    .venv/bin/python benchmarks/bench_information.py                 # 5,000 requests
    .venv/bin/python benchmarks/bench_information.py --requests 2000 # a quick look

The queue-aware bound (`sim.queue_bound`) knows every request's server TTFT before it is sent;
no online policy does. This benchmark adds the *non-anticipating* reference: per request, the
best dispatch action (device alone, server alone, a race, or a hedge at any offset) knowing the
simulated server's true TTFT distribution (the measured pool it draws from) and the device's
true prefill time, but not the server's draw, priced against the run's spend like the bound
(per-request lower convex hulls of (expected spend, expected TTFT), merged by slope: the linear
relaxation's optimum, which weak duality makes a lower bound for such policies). Device queues
are left out, so it is run where there is none to speak of (2% device-only utilisation): with
a queue, a raced device that waits burns less energy than this model charges, and the
reference is no bound. Where it sits close to the clairvoyant bound, knowing the server's draws
is worth little, and what is left to `generalized` is policy error or the one thing both
references still know: each request's answer length (what a server answer costs), which no
policy knows in advance.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import sys
from pathlib import Path

from langchain_disco.bench._measure import machine_info
from langchain_disco.bench._page import replace_section
from langchain_disco.bench._sim_options import REGIMES, SimOptions
from langchain_disco.scheduling import Budget
from langchain_disco.scheduling.estimates import expect, lower_hull, unit_costs
from langchain_disco.scheduling.policies import Generalized
from langchain_disco.sim import Simulator, load_trace
from langchain_disco.sim.queue_bound import hindsight_queue_bound
from langchain_disco.sim.simulator import _server_pool

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
HEADING = "## Information or policy"
BUDGETS = (0.3, 0.5, 0.7, 0.9)
UTILISATION = 0.02

_Hull = list[tuple[float, float]]
_Row = tuple[str, float, float, float, float, float, float]


def request_hulls(sim: Simulator, budget: Budget) -> list[_Hull]:
    """Per request, the lower convex hull of (E[spend], E[TTFT]) over every action."""
    cm = sim.config.cost_model
    xs = sorted(ttft for ttft, _ in _server_pool(sim.config))
    prefix = list(itertools.accumulate(xs, initial=0.0))
    hulls = []
    for prompt, output, prefill in zip(
        sim.trace.prompt_tokens, sim.trace.output_tokens, sim.prefill_s, strict=True
    ):
        units = unit_costs(cm, prompt, output)
        # Expected TTFT and spend are linear in a hedge's offset between the pool's atoms (and
        # the atoms shifted by the prefill), so the hull's vertices are among these offsets.
        offsets: set[tuple[float | None, float | None]] = {(0.0, None), (None, 0.0), (0.0, 0.0)}
        for s in xs:
            offsets.update((w, 0.0) for w in (s, s - prefill) if w > 0)
            if prefill - s > 0:
                offsets.add((0.0, prefill - s))
        points = []
        for local_at, remote_at in offsets:
            ttft, usd, joules, _ = expect(local_at, remote_at, xs, prefix, prefill, 0.0, units)
            points.append((budget.spend(cm.total(usd, joules)), ttft))
        hulls.append(lower_hull(points))
    return hulls


def information_bound(hulls: list[_Hull], spend_limit: float) -> float:
    """Mean TTFT of the relaxation: every request at its cheapest vertex, then the steepest
    hull segments bought until the spend limit (the last one in part)."""
    room = spend_limit - sum(h[0][0] for h in hulls)
    total = sum(h[0][1] for h in hulls)
    segments = sorted(
        (
            ((t0 - t1) / (s1 - s0), s1 - s0, t0 - t1)
            for h in hulls
            for (s0, t0), (s1, t1) in itertools.pairwise(h)
        ),
        reverse=True,
    )
    for _, spend, gain in segments:
        if room <= 0:
            break
        part = min(1.0, room / spend)
        total -= part * gain
        room -= part * spend
    return total / len(hulls)


def measure(requests: int) -> list[_Row]:
    """(regime, budget, generalized mean, information bound, clairvoyant bound, share, luck):
    luck is how far this run's server draws' mean sits from their distribution's."""
    rows = []
    for regime in REGIMES:
        options = SimOptions(regime=regime, device_utilisation=UTILISATION)
        sim = Simulator(load_trace().repeat_to(requests), options.sim_config(0))
        pool = [ttft for ttft, _ in _server_pool(sim.config)]
        luck = sum(sim.server_ttft_s) / requests - sum(pool) / len(pool)
        hulls: list[_Hull] | None = None
        for b in BUDGETS:
            budget = Budget(share=b, resource=options.regime_spec.resource)
            hulls = hulls if hulls is not None else request_hulls(sim, budget)
            result = sim.run(Generalized(budget), budget)
            bounds = zip(result.floor, result.ceiling, strict=True)
            allowed = sum(budget.allowance(f, c) for f, c in bounds)
            info = information_bound(hulls, allowed)
            clairvoyant = hindsight_queue_bound(sim, budget, allowed).mean_ttft_s
            rows.append(
                (
                    regime,
                    b,
                    result.metrics.mean_ttft_s,
                    info,
                    clairvoyant,
                    result.metrics.realised_share,
                    luck,
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def section(rows: list[_Row], command: str) -> str:
    m = machine_info()
    lines = [
        HEADING,
        "",
        "Generated by `benchmarks/bench_information.py`; do not edit this section by hand.",
        "",
        f"- command: `{command}`; run {datetime.date.today().isoformat()}.",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}.",
        "",
        "`generalized` (10,000-request runs elsewhere on this page; here the bundled trace at "
        f"{UTILISATION:.0%} device utilisation) against two references at the spend each run "
        "was allowed: the *clairvoyant* queue-aware bound (knows every server draw) and the "
        "*non-anticipating* one (knows the server's true distribution and the device's time, "
        "not the draw; no queue). Where the two sit together, knowing the draws is worth "
        "little, and what is left is policy error or what both still know: each request's "
        "answer length, which sets what a server answer costs and which no policy knows in "
        "advance.",
        "",
        "| regime | budget | generalized mean TTFT (s) | non-anticipating bound | clairvoyant "
        "bound | x non-anticipating | x clairvoyant | realised share | server draws' luck (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for regime, b, mean, info, clairvoyant, share, luck in rows:
        lines.append(
            f"| {regime} | {b:.1f} | {mean:.3f} | {info:.3f} | {clairvoyant:.3f} | "
            f"{mean / info:.3f} | {mean / clairvoyant:.3f} | {share:.3f} | {luck:+.3f} |"
        )
    lines += [
        "",
        "The non-anticipating reference leaves out queueing (hence the low utilisation: with a "
        "queue, a raced device that waits burns less energy than it charges, and it is no "
        "bound); it bounds policies of the engine's actions (a device that has not answered is "
        "cancelled only by the server's token). It is an expectation over the server's draws, "
        "so one run's mean can land below it by the draws' luck: the last column is how far "
        "this run's server TTFTs average from their distribution's mean (negative: faster "
        "than expected), the scale of that noise.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--no-write", action="store_true", help="print, leave the page alone")
    args = parser.parse_args()
    command = "python benchmarks/bench_information.py" + (
        f" --requests {args.requests}" if args.requests != 5000 else ""
    )
    text = section(measure(args.requests), command)
    print(text)
    if not args.no_write:
        replace_section(OUT, HEADING, text)


if __name__ == "__main__":
    main()
