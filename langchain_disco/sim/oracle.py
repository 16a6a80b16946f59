"""The hindsight oracle: the best any dispatch policy could do at a budget (simulator only).

It knows every request's real server TTFT and device TTFT. In hindsight the best plan for a
request starts only the endpoint that will answer first or the cheaper one: any plan's TTFT is
its winner's, and it pays at least the winner's full cost (the winner generates the answer), so
every plan is dominated by "the winner alone". Each request thus has two options, (TTFT, spend)
of the device alone and of the server alone, and the oracle picks per request:

- for the mean: greedy by TTFT gain per unit of extra spend (the Lagrangian of the knapsack;
  within one request of the LP optimum), starting from the cheaper option everywhere;
- for the p99: the smallest tau such that all but 1% of requests can be brought to TTFT <= tau
  within the spend (each at its cheapest option meeting tau; the 1% allowed to miss are those
  most expensive to fix), by bisection over the candidate TTFTs.

Device TTFTs are taken without queueing (the oracle may spread load perfectly), which makes it
a bound: the physical limit at that budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_disco.scheduling.budget import Budget
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan
from langchain_disco.scheduling.estimates import (
    LOCAL,
    RACE,
    REMOTE,
    Resolution,
    resolve_action,
)
from langchain_disco.sim.metrics import percentile


@dataclass(frozen=True)
class OracleResult:
    """Best mean TTFT and best p99 TTFT reachable within `spend_limit` (each optimised alone)."""

    mean_ttft_s: float
    p99_ttft_s: float
    spend_limit: float
    mean_spend: float
    """Per request, of the mean-optimal assignment."""
    ttft_s: list[float]
    """Per request, of the mean-optimal assignment."""


def solve_oracle(
    *,
    server_ttft_s: Sequence[float],
    device_ttft_s: Sequence[float],
    prompt_tokens: Sequence[int],
    output_tokens: Sequence[int],
    budget: Budget,
    cost_model: CostModel,
    spend_limit: float | None = None,
    device_prompt_tokens: Sequence[int] | None = None,
    server_cached_tokens: Sequence[int] | None = None,
) -> OracleResult:
    """Solve both oracles; without `spend_limit` the budget's allowance over the trace applies
    (its ceiling is always-race with these TTFTs and no queueing). A multi-turn replay gives
    what the device would prefill of each prompt and what the provider holds cached of it (the
    TTFTs given already account for both)."""
    n = len(server_ttft_s)
    options: list[tuple[tuple[float, float], tuple[float, float]]] = []
    allowance = 0.0
    for i in range(n):

        def resolve(action: Plan, i: int = i) -> Resolution:
            return resolve_idle(
                action,
                server_ttft_s=server_ttft_s[i],
                prefill_s=device_ttft_s[i],
                prompt_tokens=prompt_tokens[i],
                output_tokens=output_tokens[i],
                cost_model=cost_model,
                device_prompt_tokens=None
                if device_prompt_tokens is None
                else device_prompt_tokens[i],
                server_cached_tokens=0 if server_cached_tokens is None else server_cached_tokens[i],
            )

        local, remote = resolve(LOCAL), resolve(REMOTE)
        options.append(
            (
                (local.ttft_s, budget.spend(local.cost)),
                (remote.ttft_s, budget.spend(remote.cost)),
            )
        )
        if spend_limit is None:
            race = resolve(RACE)
            floor = budget.floor(prompt_tokens[i], output_tokens[i], cost_model)
            allowance += budget.allowance(floor, max(budget.spend(race.cost), floor))
    limit = allowance if spend_limit is None else spend_limit
    ttft, spent = _best_mean(options, limit)
    return OracleResult(
        mean_ttft_s=sum(ttft) / n,
        p99_ttft_s=_best_p99(options, limit),
        spend_limit=limit,
        mean_spend=spent / n,
        ttft_s=ttft,
    )


def resolve_idle(
    action: Plan,
    *,
    server_ttft_s: float,
    prefill_s: float,
    prompt_tokens: int,
    output_tokens: int,
    cost_model: CostModel,
    device_prompt_tokens: int | None = None,
    server_cached_tokens: int = 0,
) -> Resolution:
    """What `action` would do for one request on an idle device, knowing its draws: the
    hindsight bounds' per-request options (a cached prefix: the device prefills
    `device_prompt_tokens`, the provider reads `server_cached_tokens` from its cache)."""
    return resolve_action(
        action,
        server_ttft_s=server_ttft_s,
        local_begin_s=0.0,
        prefill_s=prefill_s,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        cost_model=cost_model,
        device_prompt_tokens=device_prompt_tokens,
        server_cached_tokens=server_cached_tokens,
    )


def _cheap_first(
    option: tuple[tuple[float, float], tuple[float, float]],
) -> tuple[tuple[float, float], tuple[float, float]]:
    a, b = option
    return (a, b) if (a[1], a[0]) <= (b[1], b[0]) else (b, a)


def _best_mean(
    options: list[tuple[tuple[float, float], tuple[float, float]]], limit: float
) -> tuple[list[float], float]:
    ttft: list[float] = []
    spent = 0.0
    upgrades: list[tuple[float, int, float, float]] = []
    for i, option in enumerate(options):
        (t0, s0), (t1, s1) = _cheap_first(option)
        ttft.append(t0)
        spent += s0
        if t1 < t0:
            extra = s1 - s0
            rate = math.inf if extra <= 0 else (t0 - t1) / extra
            upgrades.append((rate, i, t1, extra))
    upgrades.sort(key=lambda u: -u[0])
    for _, i, t1, extra in upgrades:
        if spent + extra <= limit * (1 + 1e-12):
            spent += extra
            ttft[i] = t1
    return ttft, spent


def _best_p99(
    options: list[tuple[tuple[float, float], tuple[float, float]]], limit: float
) -> float:
    n = len(options)
    may_miss = n - max(1, math.ceil(0.99 * n - 1e-9))
    cheap = [_cheap_first(o) for o in options]
    base = sum(c[0][1] for c in cheap)

    def cost(tau: float) -> float:
        extras: list[float] = []
        for (t0, _), (t1, s1_minus) in ((c[0], (c[1][0], c[1][1] - c[0][1])) for c in cheap):
            if t0 <= tau:
                continue
            extras.append(s1_minus if t1 <= tau else math.inf)
        if len(extras) <= may_miss:
            return base
        extras.sort()
        return base + sum(extras[: len(extras) - may_miss])

    candidates = sorted({t for c in cheap for t, _ in c})
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(candidates[mid]) <= limit * (1 + 1e-12):
            hi = mid
        else:
            lo = mid + 1
    best = candidates[lo]
    # Sanity: never report a p99 above what the mean-optimal assignment already reaches.
    return min(best, percentile(_best_mean(options, limit)[0], 99))
