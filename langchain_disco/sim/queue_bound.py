"""The queue-aware hindsight bound on mean TTFT: no first-come-first-served dispatch does better.

The plain oracle (`sim.oracle`) takes every device TTFT without queueing, so on traffic where
the device queue is a large part of device-only TTFT its mean is far below anything reachable,
and "x vs oracle" says little about what is left. This bound keeps the simulator's device
discipline: each device serves the requests sent to it one at a time, in arrival order, busy
for a request's prefill and decode.

In hindsight every request has two options, the device alone or the server alone (any plan that
starts both is dominated by its winner alone, which answers as fast and spends no more; with a
queue, a device run that loses also delays later requests). The problem is then

    minimise  sum of TTFTs   subject to   sum of spend <= spend_limit,

coupled across requests by the budget and, on one device, by its queue. Relaxing the budget with
a price `lam` per unit of spend separates the devices; on one device, a dynamic programme over
its requests in arrival order is exact: its state is when the device next becomes free, and a
state is dropped only when another is free no later at no higher cost (a Pareto front of
(free at, cost so far), which collapses whenever the device would be idle). For every `lam`,

    D(lam) = sum over devices of min(TTFT + lam * spend) - lam * spend_limit  <=  optimum,

(weak duality), so `mean_ttft_s` = max over the prices tried of D / n is a *lower bound* on the
mean TTFT of any FCFS dispatch within the spend, however clever. The schedule chosen at the
lowest price whose spend fits is a real dispatch, so `feasible_mean_ttft_s` is an *upper
bound* on that optimum; `gap` is how far apart the two are (the duality gap of a knapsack of
thousands of items: a fraction of a percent). A front larger than `max_front` is relaxed by
merging its latest-free states into an optimistic one (the earliest free time among them, the
lowest cost): D stays a lower bound, no real dispatch is known (NaN), and `exact` says whether
that ever happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langchain_disco.scheduling.budget import Budget
from langchain_disco.scheduling.estimates import LOCAL, REMOTE
from langchain_disco.sim.oracle import resolve_idle
from langchain_disco.sim.prefix_cache import CachedTokens

if TYPE_CHECKING:
    from langchain_disco.sim.simulator import Simulator

_BISECTION_STEPS = 40
_MAX_FRONT = 4096


@dataclass(frozen=True)
class QueueBound:
    """The queue-aware bound on mean TTFT at a total spend (see the module docstring)."""

    mean_ttft_s: float
    """Lower bound: no FCFS dispatch within `spend_limit` has a lower mean TTFT."""
    feasible_mean_ttft_s: float
    """Mean TTFT of a real hindsight dispatch within `spend_limit` (an upper bound on the best);
    NaN when a front was relaxed (`exact` False), since a relaxed state is no real schedule."""
    spend_limit: float
    mean_spend: float
    """Per request, of that feasible dispatch (NaN with it)."""
    exact: bool
    """No device's front was relaxed: each price's programme was solved exactly."""

    @property
    def gap(self) -> float:
        """How much higher the feasible dispatch's mean is than the bound (relative)."""
        if not self.mean_ttft_s > 0:
            return math.nan
        return self.feasible_mean_ttft_s / self.mean_ttft_s - 1.0


@dataclass(frozen=True)
class _Request:
    arrival_s: float
    device_ttft_s: float
    """Prefill (or TTFT) on an idle device."""
    device_busy_s: float
    """How long the device is busy with the answer: prefill and decode."""
    server_ttft_s: float
    device_spend: float
    server_spend: float


def solve_queue_bound(
    *,
    arrival_s: Sequence[float],
    device: Sequence[int],
    device_ttft_s: Sequence[float],
    device_busy_s: Sequence[float],
    server_ttft_s: Sequence[float],
    device_spend: Sequence[float],
    server_spend: Sequence[float],
    spend_limit: float,
    max_front: int = _MAX_FRONT,
) -> QueueBound:
    """The bound for requests in arrival order; `device[i]` is the device request i queues on,
    the spends are what each option would spend on the budgeted resource."""
    n = len(arrival_s)
    if n == 0:
        raise ValueError("no requests")
    columns = (device, device_ttft_s, device_busy_s, server_ttft_s, device_spend, server_spend)
    if any(len(c) != n for c in columns):
        raise ValueError("every per-request sequence must have one entry per request")
    queues: dict[int, list[_Request]] = {}
    for i in range(n):
        queues.setdefault(device[i], []).append(
            _Request(
                arrival_s[i],
                device_ttft_s[i],
                device_busy_s[i],
                server_ttft_s[i],
                device_spend[i],
                server_spend[i],
            )
        )
    solver = _Lagrangian(list(queues.values()), max_front)
    return solver.solve(spend_limit, n)


class _Lagrangian:
    """Prices spend, solves every device's programme at that price, and searches the price."""

    def __init__(self, queues: list[list[_Request]], max_front: int) -> None:
        self.queues = queues
        self.max_front = max_front
        self.exact = True

    def at(self, lam: float, *, cheapest: bool = False) -> tuple[float, float]:
        """(sum of TTFTs, sum of spend) of the dispatch minimising TTFT + lam * spend; with
        `cheapest`, of the fastest dispatch among those spending least (each request on its
        cheaper option, both where they spend the same)."""
        ttft = spend = 0.0
        for queue in self.queues:
            if cheapest:
                queue = [_cheaper_only(r) for r in queue]
            t, s = self._device(queue, lam)
            ttft += t
            spend += s
        return ttft, spend

    def _device(self, queue: list[_Request], lam: float) -> tuple[float, float]:
        # Front: (free at, cost so far, TTFT so far, spend so far), free-at ascending with cost
        # strictly descending: each state is the cheapest way to leave the device free by then.
        front: list[tuple[float, float, float, float]] = [(-math.inf, 0.0, 0.0, 0.0)]
        for r in queue:
            front = self._step(front, r, lam)
        best = min(front, key=lambda s: (s[1], s[3]))
        return best[2], best[3]

    def _step(
        self,
        front: list[tuple[float, float, float, float]],
        r: _Request,
        lam: float,
    ) -> list[tuple[float, float, float, float]]:
        a = r.arrival_s
        # Every state free by the arrival is the same state: keep the cheapest (the last one).
        idle = [s for s in front if s[0] <= a]
        busy = [s for s in front if s[0] > a]
        if idle:
            _, cost, ttft, spend = idle[-1]
            busy.insert(0, (a, cost, ttft, spend))
        server_price = r.server_ttft_s + lam * r.server_spend
        to_server = [
            (f, cost + server_price, ttft + r.server_ttft_s, spend + r.server_spend)
            for f, cost, ttft, spend in busy
        ]
        to_device = []
        for f, cost, ttft, spend in busy:
            ttft_i = f - a + r.device_ttft_s
            to_device.append(
                (
                    f + r.device_busy_s,
                    cost + ttft_i + lam * r.device_spend,
                    ttft + ttft_i,
                    spend + r.device_spend,
                )
            )
        merged = _pareto(to_server, to_device)
        if len(merged) > self.max_front:
            merged = self._relax(merged)
        return merged

    def _relax(
        self, front: list[tuple[float, float, float, float]]
    ) -> list[tuple[float, float, float, float]]:
        """Keep the first `max_front - 1` states and merge the rest into an optimistic one:
        free as early as the first of them, as cheap as the last (the front is sorted so)."""
        self.exact = False
        keep = front[: self.max_front - 1]
        first, last = front[self.max_front - 1], front[-1]
        return [*keep, (first[0], *last[1:])]

    def solve(self, spend_limit: float, n: int) -> QueueBound:
        ttft0, spend0 = self.at(0.0)
        if spend0 <= spend_limit * (1 + 1e-12):  # the fastest dispatch fits: exact
            feasible = (ttft0, spend0) if self.exact else (math.nan, math.nan)
            return QueueBound(ttft0 / n, feasible[0] / n, spend_limit, feasible[1] / n, self.exact)
        lo, hi = 1e-12, 1.0
        ttft_hi, spend_hi = self.at(hi)
        dual = max(ttft0, self._dual(ttft_hi, spend_hi, hi, spend_limit))  # D(0) and D(1)
        while spend_hi > spend_limit * (1 + 1e-12) and hi < 1e290:
            lo, hi = hi, hi * 16.0
            ttft_hi, spend_hi = self.at(hi)
            dual = max(dual, self._dual(ttft_hi, spend_hi, hi, spend_limit))
        feasible = (ttft_hi, spend_hi)
        if spend_hi > spend_limit * (1 + 1e-12):
            # Spend differences too small for any finite price to tell apart: the least
            # spending dispatch is the only candidate (and fits if anything does).
            feasible = self.at(0.0, cheapest=True)
        for _ in range(_BISECTION_STEPS):
            mid = math.sqrt(lo) * math.sqrt(hi)  # lo * hi may overflow
            ttft_mid, spend_mid = self.at(mid)
            dual = max(dual, self._dual(ttft_mid, spend_mid, mid, spend_limit))
            if spend_mid > spend_limit * (1 + 1e-12):
                lo = mid
            else:
                hi = mid
                feasible = (ttft_mid, spend_mid)
        if not self.exact:  # a relaxed state is no real schedule
            feasible = (math.nan, math.nan)
        return QueueBound(dual / n, feasible[0] / n, spend_limit, feasible[1] / n, self.exact)

    def _dual(self, ttft: float, spend: float, lam: float, spend_limit: float) -> float:
        """D(lam) from the minimising dispatch's TTFT and spend, less what rounding can add.

        The minimiser is chosen by sums of TTFT + lam * spend; at a large price those sums'
        rounding (a unit in the last place of lam * spend) can pick a state that is not the
        true minimum, whose value then exceeds D(lam) by up to twice the accumulated error (a
        bound 9e-6 s above the optimum was found so, at lam ~ 1e11). Each of the n steps adds
        at most three roundings of a partial sum no larger than the total."""
        n = sum(len(q) for q in self.queues)
        total = ttft + lam * (spend + spend_limit)
        slack = 8.0 * (n + 1) * _UNIT_ROUNDOFF * total
        return ttft + lam * (spend - spend_limit) - slack


_UNIT_ROUNDOFF = 2.0**-53


def _cheaper_only(r: _Request) -> _Request:
    """`r` with its costlier option made unusable (both kept when they spend the same)."""
    if r.device_spend < r.server_spend:
        return _Request(
            r.arrival_s, r.device_ttft_s, r.device_busy_s, math.inf, r.device_spend, math.inf
        )
    if r.server_spend < r.device_spend:
        return _Request(
            r.arrival_s, math.inf, r.device_busy_s, r.server_ttft_s, math.inf, r.server_spend
        )
    return r


def _pareto(
    a: list[tuple[float, float, float, float]], b: list[tuple[float, float, float, float]]
) -> list[tuple[float, float, float, float]]:
    """Merge two fronts sorted by free time; keep each state cheaper than every earlier one."""
    out: list[tuple[float, float, float, float]] = []
    i = j = 0
    best = math.inf
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and (a[i][0], a[i][1]) <= (b[j][0], b[j][1])):
            s = a[i]
            i += 1
        else:
            s = b[j]
            j += 1
        if s[1] < best:  # a later state with the same free time costs more: dropped
            out.append(s)
            best = s[1]
    return out


def hindsight_queue_bound(
    sim: Simulator,
    budget: Budget,
    spend_limit: float,
    *,
    cached: CachedTokens | None = None,
) -> QueueBound:
    """The bound for a simulator's draws: its requests, devices, prefills and server TTFTs,
    each option's spend on `budget`'s resource, within a total of `spend_limit`.

    A multi-turn replay's prefills, server TTFTs and bills depend on what each side had cached:
    `cached` gives it per request (e.g. the cache states of one run, `CachedTokens.of(result)`);
    by default `sim.warm_cache()`, each side holding every earlier prefix it could ever have
    held (which makes the bound hold for every cache trajectory, not only one run's)."""
    trace = sim.trace
    cm = sim.config.cost_model
    caches = sim.caches
    if caches is not None and cached is None:
        cached = sim.warm_cache()
    device_spend: list[float] = []
    server_spend: list[float] = []
    busy: list[float] = []
    device_ttft: list[float] = sim.prefill_s
    server_ttft: list[float] = sim.server_ttft_s
    if cached is not None and caches is not None:
        device_ttft = [sim.device_prefill_s(i, c) for i, c in enumerate(cached.device)]
        server_ttft = [
            caches.server_ttft_s(sim.server_ttft_s[i], c, trace.prompt_tokens[i])
            for i, c in enumerate(cached.server)
        ]
    for i, prompt in enumerate(trace.prompt_tokens):
        output = trace.output_tokens[i]
        device_in = None if cached is None else prompt - cached.device[i]
        server_cached = 0 if cached is None else cached.server[i]
        for plan, out in ((LOCAL, device_spend), (REMOTE, server_spend)):
            res = resolve_idle(
                plan,
                server_ttft_s=server_ttft[i],
                prefill_s=device_ttft[i],
                prompt_tokens=prompt,
                output_tokens=output,
                cost_model=cm,
                device_prompt_tokens=device_in,
                server_cached_tokens=server_cached,
            )
            out.append(budget.spend(res.cost))
        # A device answer holds the device from its prefill to its last token.
        busy.append(device_ttft[i] + max(output - 1, 0) / sim.device_decode_tok_s[i])
    return solve_queue_bound(
        arrival_s=trace.arrival_s,
        device=sim.assignment,
        device_ttft_s=device_ttft,
        device_busy_s=busy,
        server_ttft_s=server_ttft,
        device_spend=device_spend,
        server_spend=server_spend,
        spend_limit=spend_limit,
    )
