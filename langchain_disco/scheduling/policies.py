"""Budgeted dispatch policies: the paper's two, a random split, and our generalised one.

Every budgeted policy has one knob, set per request from the `BudgetController`'s target share
through a *calibration table*: the knob's expected spend share over a sample of recent requests
(their prompt lengths and predicted device queue waits), computed from the profiles by
`estimate_action`. Tables are rebuilt every `recalibrate_every` requests, so they follow the
profiles as those learn; the controller's feedback corrects what the expectations get wrong.

- `RandomSplit`: each request goes to one endpoint at random (the costlier with probability p);
  `race=True` races a random subset instead.
- `LengthThreshold` (paper, server-constrained): the device always starts; the server joins at
  t=0 when prompt_tokens >= L_b.
- `WaitTime` (paper, device-constrained): the server always starts; the device joins after a
  wait w (one per prompt-length bucket) if no token came, each bucket spending the same share.
- `Generalized` (ours): per request, the action minimising E[TTFT] + mu * E[spend] over device
  only, server only, race, and both hedged orders; mu is the price of spend at the target share.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling.budget import Budget, BudgetController
from langchain_disco.scheduling.dispatch import (
    ActionEstimate,
    DispatchContext,
    DispatchPolicy,
    LocalOnly,
    Plan,
    Race,
    RemoteOnly,
    RequestFeatures,
    RequestOutcome,
)
from langchain_disco.scheduling.empirical import Reservoir
from langchain_disco.scheduling.estimates import (
    LOCAL,
    RACE,
    REMOTE,
    estimate_action,
    expect_many,
    local_then_remote,
    lower_hull,
    remote_then_local,
    unit_costs,
)

WAIT_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
"""Server-TTFT quantiles at which a device hedge may fire: 'the server is late with p = 1-q'."""
LEAD_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
"""Server-TTFT quantiles that place a delayed server start: it still wins with probability q."""
TAIL_LEVEL = 0.99
"""The tail `Generalized` guards: its objective adds CVaR at this level."""
_MIN_TAIL_SAMPLES = 200


def _expected_output(request: RequestFeatures, ctx: DispatchContext) -> float:
    if request.expected_output_tokens is not None:
        return request.expected_output_tokens
    return ctx.profiles.output_lengths.expected(request.max_tokens)


def _estimate(
    action: Plan,
    ctx: DispatchContext,
    prompt_tokens: int,
    queue_wait_s: float,
    output: float,
    device_tokens: int | None = None,
    server_cached: int = 0,
) -> ActionEstimate:
    """`estimate_action` from the profiles; the device prefills `device_tokens` (what it has
    not cached; default the whole prompt), the provider is expected to read `server_cached`
    tokens from its prompt cache."""
    device = prompt_tokens if device_tokens is None else device_tokens
    return estimate_action(
        action,
        server=ctx.profiles.server.distribution(prompt_tokens, server_cached),
        prefill_s=ctx.profiles.device.predict_ttft_s(device),
        queue_wait_s=queue_wait_s,
        prompt_tokens=prompt_tokens,
        output_tokens=output,
        cost_model=ctx.cost_model,
        device_prompt_tokens=device_tokens,
        server_cached_tokens=server_cached,
    )


class _Budgeted:
    """Shared machinery: budget feedback, the sample the tables are built on, b = 0 and b = 1."""

    name = "budgeted"

    def __init__(
        self,
        budget: Budget,
        *,
        horizon: float = 200.0,
        recalibrate_every: int = 256,
        sample_size: int = 96,
    ) -> None:
        self.budget = budget
        self.controller = BudgetController(budget, horizon=horizon)
        self.recalibrate_every = recalibrate_every
        self.sample_size = sample_size
        self._recent: deque[tuple[int, float]] = deque(maxlen=4 * sample_size)
        self._ctx: DispatchContext | None = None
        self._until_calibration = 0

    # -- the seam ---------------------------------------------------------------------------

    def plan(self, request: RequestFeatures, ctx: DispatchContext) -> Plan:
        self._ctx = ctx
        self._recent.append((request.prompt_tokens, request.local_queue_wait_s))
        if self._until_calibration <= 0:
            self._calibrate(ctx)
            self._until_calibration = self.recalibrate_every
        self._until_calibration -= 1
        share = self.controller.target_share()
        output = _expected_output(request, ctx)
        if self.budget.share == 1.0:
            plan, committed = RACE.because("budget share 1: always race"), None
        else:
            plan, committed = self._decide(request, ctx, output, share)
        prompt, q = request.prompt_tokens, request.local_queue_wait_s
        device, cached = _sizes(request)
        expected = committed or (
            plan.expected[0]
            if plan.expected
            else _estimate(plan, ctx, prompt, q, output, device, cached)
        )
        floor, ceiling = self.budget.bounds(ctx, prompt, q, output, device, cached)
        self.controller.commit(plan, self._spend(expected), floor, ceiling)
        return plan

    def observe(self, outcome: RequestOutcome) -> None:
        """Account the request's spend against its floor and ceiling (as far as revealed)."""
        ctx = self._ctx
        if ctx is None:
            return
        floor, ceiling = self.budget.realised_bounds(ctx, outcome)
        key = outcome.chosen if outcome.chosen is not None else outcome.plan
        self.controller.record(self.budget.spend(outcome.cost), floor, ceiling, key=key)

    # -- calibration --------------------------------------------------------------------------

    def _sample(self, ctx: DispatchContext) -> list[tuple[int, float]]:
        """Recent (prompt tokens, queue wait) pairs, or prior prompt quantiles before any."""
        recent = list(self._recent)
        if len(recent) < self.sample_size // 2:
            lengths = ctx.profiles.prompt_lengths
            n = self.sample_size
            recent += [(int(lengths.quantile((i + 0.5) / n)), 0.0) for i in range(n)]
        if len(recent) > self.sample_size:
            step = len(recent) / self.sample_size
            recent = [recent[int(i * step)] for i in range(self.sample_size)]
        return recent

    def _calibrate(self, ctx: DispatchContext) -> None:
        output = ctx.profiles.output_lengths.expected()
        sample = self._sample(ctx)
        bounds = [self.budget.bounds(ctx, prompt, q, output) for prompt, q in sample]
        self.controller.warm_start(
            sum(f for f, _ in bounds) / len(bounds), sum(c for _, c in bounds) / len(bounds)
        )
        self._build_table(ctx, sample, bounds, output)

    def _build_table(
        self,
        ctx: DispatchContext,
        sample: list[tuple[int, float]],
        bounds: list[tuple[float, float]],
        output: float,
    ) -> None:
        return None

    def _decide(
        self, request: RequestFeatures, ctx: DispatchContext, output: float, share: float
    ) -> tuple[Plan, ActionEstimate | None]:
        """The plan for this request and the estimate whose spend the controller commits
        (`None`: the plan's first estimate)."""
        raise NotImplementedError

    def _spend(self, estimate: ActionEstimate) -> float:
        return self.budget.spend(estimate.cost)


def _smallest_knob(knobs: Sequence[float], shares: Sequence[float], target: float) -> float:
    """The smallest knob whose share is <= target; `shares` falls as the knob grows (it is
    made monotone with a running minimum, which keeps that answer). Linear in between. A
    target of 0 (or one no knob reaches) gets the knob that spends least, the last of equals:
    the extreme that never starts the budgeted resource, where the policy has one."""
    return _KnobTable(knobs, shares).smallest(target)


class _KnobTable:
    """A calibration table (knob -> expected share) read by `_smallest_knob`'s rule, with what
    that rule derives from the table alone (the running minimum, the extremes) worked out once
    per calibration instead of once per request."""

    __slots__ = ("_cheapest", "_desc", "_knobs", "_least", "_running")

    def __init__(self, knobs: Sequence[float], shares: Sequence[float]) -> None:
        running: list[float] = []
        for s in shares:
            running.append(min(s, running[-1]) if running else s)
        self._knobs = list(knobs)
        self._running = running
        self._desc = [-s for s in running]  # ascending, for bisect
        least = min(shares)
        self._least = knobs[max(i for i, s in enumerate(shares) if s <= least)]
        self._cheapest = knobs[min(range(len(shares)), key=shares.__getitem__)]

    def smallest(self, target: float) -> float:
        """`_smallest_knob(knobs, shares, target)` of the table's knobs and shares."""
        if target <= 0.0:
            return self._least
        knobs, running = self._knobs, self._running
        j = bisect.bisect_left(self._desc, -target)
        if j >= len(knobs):  # unreachable: the knob that spends least
            return self._cheapest
        if j == 0 or math.isinf(knobs[j]) or running[j - 1] == running[j]:
            return knobs[j]
        lo, hi = knobs[j - 1], knobs[j]
        frac = (running[j - 1] - target) / (running[j - 1] - running[j])
        return lo + frac * (hi - lo)


class RandomSplit(_Budgeted):
    """Baseline: each request goes to one endpoint, the costlier one with probability p, p set
    so that the expected spend meets the budget (the paper's random split).

    With `race=True` the cheaper endpoint always starts and the costlier one *joins* it at t=0
    with probability p instead: a random subset of requests is raced (a stronger baseline).
    """

    name = "random"

    def __init__(
        self,
        budget: Budget,
        seed: int = 0,
        *,
        race: bool = False,
        horizon: float = 200.0,
        recalibrate_every: int = 256,
        sample_size: int = 96,
    ) -> None:
        super().__init__(
            budget, horizon=horizon, recalibrate_every=recalibrate_every, sample_size=sample_size
        )
        self.race = race
        if race:
            self.name = "random_race"
        self._rng = random.Random(seed)
        self._per_share = 1.0

    def _pair(
        self, request: RequestFeatures, ctx: DispatchContext, output: float
    ) -> tuple[Plan, Plan]:
        """(cheap, costly) single-endpoint actions on the budget's resource."""
        if self.budget.resource == "server":
            return LOCAL, REMOTE
        if self.budget.resource == "device":
            return REMOTE, LOCAL
        q, (device, cached) = request.local_queue_wait_s, _sizes(request)
        local = _estimate(LOCAL, ctx, request.prompt_tokens, q, output, device, cached)
        remote = _estimate(REMOTE, ctx, request.prompt_tokens, q, output, device, cached)
        return (LOCAL, REMOTE) if self._spend(local) <= self._spend(remote) else (REMOTE, LOCAL)

    def _build_table(
        self,
        ctx: DispatchContext,
        sample: list[tuple[int, float]],
        bounds: list[tuple[float, float]],
        output: float,
    ) -> None:
        if self.race:
            return  # racing a share p of requests spends share p by definition
        # Sending a request to the costly endpoint alone spends its full cost, not the race
        # ceiling: p = share * (sum of ceiling - floor) / (sum of full - floor).
        room = sum(c - f for f, c in bounds)
        full = 0.0
        for (prompt, q), (floor, _) in zip(sample, bounds, strict=True):
            features = RequestFeatures(prompt_tokens=prompt, local_queue_wait_s=q)
            costly = self._pair(features, ctx, output)[1]
            full += self._spend(_estimate(costly, ctx, prompt, q, output)) - floor
        self._per_share = room / full if full > 0 else 1.0

    def _decide(
        self, request: RequestFeatures, ctx: DispatchContext, output: float, share: float
    ) -> tuple[Plan, ActionEstimate | None]:
        draw = self._rng.random()
        cheap, costly = self._pair(request, ctx, output)
        if self.race:
            chosen, p = (RACE if draw < share else cheap), share
        else:
            p = min(share * self._per_share, 1.0)
            chosen = costly if draw < p else cheap
        return chosen.because(f"random draw {draw:.3f} vs p={p:.3f}"), None


class LengthThreshold(_Budgeted):
    """Paper, server-constrained: the device always starts; the server too if prompt >= L_b."""

    name = "length_threshold"

    def _build_table(
        self,
        ctx: DispatchContext,
        sample: list[tuple[int, float]],
        bounds: list[tuple[float, float]],
        output: float,
    ) -> None:
        rows = []
        for (prompt, q), (floor, ceiling) in zip(sample, bounds, strict=True):
            local = self._spend(_estimate(LOCAL, ctx, prompt, q, output))
            rows.append((prompt, ceiling - floor, local - floor))
        rows.sort()
        total = sum(r[1] for r in rows) or 1.0
        # share(L): requests with prompt >= L race (ceiling), the others run locally.
        knobs: list[float] = []
        shares: list[float] = []
        race_above = sum(r[1] for r in rows)
        local_below = 0.0
        for i, (prompt, race, local) in enumerate(rows):
            if i == 0 or prompt != rows[i - 1][0]:
                knobs.append(float(prompt))
                shares.append((race_above + local_below) / total)
            race_above -= race
            local_below += local
        knobs.append(math.inf)
        shares.append(local_below / total)
        self._knobs, self._shares = knobs, shares
        self._table = _KnobTable(knobs, shares)

    def threshold(self, share: float) -> float:
        """L_b for a target share (inf: the server never joins). A share no knob reaches gets
        the knob that spends least: on a server budget the server never joining, on a device
        budget every request raced (the device always starts, so it cannot spend less)."""
        return self._table.smallest(share)

    def _decide(
        self, request: RequestFeatures, ctx: DispatchContext, output: float, share: float
    ) -> tuple[Plan, ActionEstimate | None]:
        threshold = self.threshold(share)
        prompt, q = request.prompt_tokens, request.local_queue_wait_s
        device, cached = _sizes(request)
        race = _estimate(RACE, ctx, prompt, q, output, device, cached)
        local = _estimate(LOCAL, ctx, prompt, q, output, device, cached)
        # The length the device would prefill: a follow-up turn whose prefix it has cached is
        # as short for it as its new part.
        length = prompt if device is None else device
        what = f"prompt {prompt}" if device is None else f"uncached prompt {device}"
        if length >= threshold:
            why = f"{what} >= L_b={threshold:.0f} (share {share:.3f})"
            return RACE.because(why, (race, local)), None
        why = f"{what} < L_b={threshold:.0f} (share {share:.3f})"
        return LOCAL.because(why, (local, race)), None


class WaitTime(_Budgeted):
    """Paper, device-constrained: the server always starts; the device after w if no token."""

    name = "wait_time"

    def __init__(
        self,
        budget: Budget,
        *,
        n_buckets: int = 4,
        horizon: float = 200.0,
        recalibrate_every: int = 256,
        sample_size: int = 96,
    ) -> None:
        super().__init__(
            budget, horizon=horizon, recalibrate_every=recalibrate_every, sample_size=sample_size
        )
        if n_buckets < 1:
            raise ValueError("n_buckets must be >= 1")
        self.n_buckets = n_buckets
        self._edges: list[int] = []
        self._waits: list[float] = []
        self._tables: list[list[float]] = []
        self._knob_tables: list[_KnobTable] = []

    def _build_table(
        self,
        ctx: DispatchContext,
        sample: list[tuple[int, float]],
        bounds: list[tuple[float, float]],
        output: float,
    ) -> None:
        lengths = sorted(prompt for prompt, _ in sample)
        k = self.n_buckets
        self._edges = sorted({lengths[len(lengths) * i // k] for i in range(1, k)})
        server = ctx.profiles.server.ttft
        waits = sorted({0.0, *(server.quantile(p) for p in WAIT_LEVELS)})
        self._waits = [*waits, math.inf]
        spent = [[0.0] * len(self._waits) for _ in range(len(self._edges) + 1)]
        room = [0.0] * (len(self._edges) + 1)
        for (prompt, q), (floor, ceiling) in zip(sample, bounds, strict=True):
            b = bisect.bisect_right(self._edges, prompt)
            room[b] += ceiling - floor
            for i, w in enumerate(self._waits):
                spent[b][i] += self._spend(_estimate(remote_then_local(w), ctx, prompt, q, output))
                spent[b][i] -= floor
        self._tables = [
            [s / r if r > 0 else 0.0 for s in row] for row, r in zip(spent, room, strict=True)
        ]
        self._knob_tables = [_KnobTable(self._waits, shares) for shares in self._tables]

    def wait(self, prompt_tokens: int, share: float) -> float:
        """The device's wait for a prompt of this length at a target share (inf: never). A
        share no wait reaches gets the wait that spends least: on a device budget the device
        never joining, on a server budget joining at once (the server always starts)."""
        bucket = bisect.bisect_right(self._edges, prompt_tokens)
        return self._knob_tables[bucket].smallest(share)

    def _decide(
        self, request: RequestFeatures, ctx: DispatchContext, output: float, share: float
    ) -> tuple[Plan, ActionEstimate | None]:
        prompt, q = request.prompt_tokens, request.local_queue_wait_s
        device, cached = _sizes(request)
        w = self.wait(prompt if device is None else device, share)
        action = remote_then_local(w)
        chosen = _estimate(action, ctx, prompt, q, output, device, cached)
        other = REMOTE if action is not REMOTE else RACE
        other_estimate = _estimate(other, ctx, prompt, q, output, device, cached)
        why = f"device waits {w:.2f}s (share {share:.3f})"
        return action.because(why, (chosen, other_estimate)), None


_Offsets = tuple[float | None, float | None]
_Candidate = tuple[_Offsets, float, float, float, tuple[float, float, float]]


def _action_for(offsets: _Offsets) -> Plan:
    local_at, remote_at = offsets
    if remote_at is None:
        return LOCAL
    if local_at is None:
        return REMOTE
    if local_at > 0:
        return remote_then_local(local_at)
    return local_then_remote(remote_at)


_RANKS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _level_ranks(n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The sorted-sample indices of the nearest-rank `WAIT_LEVELS` and `LEAD_LEVELS`
    quantiles of `n` samples (as `Reservoir.quantile`), worked out once per sample size."""
    ranks = _RANKS.get(n)
    if ranks is None:
        waits = tuple(max(1, math.ceil(p * n - 1e-9)) - 1 for p in WAIT_LEVELS)
        leads = tuple(max(1, math.ceil(p * n - 1e-9)) - 1 for p in LEAD_LEVELS)
        ranks = _RANKS[n] = (waits, leads)
    return ranks


class Generalized(_Budgeted):
    """Ours: per request, the action minimising

        E[TTFT] + tail_weight / (1 - 0.99) * E[(TTFT - tau)+] + mu * E[spend] / mean headroom

    where tau is the p99 of the TTFTs realised so far. Summed over requests the first two terms
    are mean TTFT + tail_weight * CVaR99 (Rockafellar-Uryasev): with the default weight 1 the
    policy values the mean and the worst 1% equally, so buying a lower mean never sacrifices the
    tail. `tail_weight=0` is the plain mean-TTFT Lagrangian.
    """

    name = "generalized"

    def __init__(
        self,
        budget: Budget,
        *,
        tail_weight: float = 1.0,
        horizon: float = 200.0,
        recalibrate_every: int = 256,
        sample_size: int = 96,
    ) -> None:
        super().__init__(
            budget, horizon=horizon, recalibrate_every=recalibrate_every, sample_size=sample_size
        )
        if tail_weight < 0:
            raise ValueError("tail_weight must be >= 0")
        self.tail_weight = tail_weight
        self._mus: list[float] = [math.inf]
        self._mu_shares: list[float] = [0.0]
        self._scale = 1.0
        self._ttfts = Reservoir(capacity=2048, seed=11)
        self._tau_s = math.inf
        self._fill = 0.0

    def _candidates(
        self,
        ctx: DispatchContext,
        prompt: int,
        q: float,
        output: float,
        device_tokens: int | None = None,
        server_cached: int = 0,
    ) -> list[_Candidate]:
        """Every candidate action's offsets, objective TTFT (E[TTFT] plus the tail term), E[spend]
        and E[unified USD], and its plain (E[TTFT], E[server USD], E[device J]); the device
        prefills `device_tokens` (default: the whole prompt), the provider is expected to read
        `server_cached` tokens from its prompt cache."""
        xs, prefix = ctx.profiles.server.distribution(prompt, server_cached).view()
        device = prompt if device_tokens is None else device_tokens
        prefill = ctx.profiles.device.predict_ttft_s(device)
        units = unit_costs(ctx.cost_model, prompt, output, device_tokens, server_cached)
        wait_ranks, lead_ranks = _level_ranks(len(xs))
        offsets: list[_Offsets] = [(0.0, None), (None, 0.0), (0.0, 0.0)]
        for rank in wait_ranks:
            wait = xs[rank]
            if wait > 0:
                offsets.append((wait, 0.0))
        device_ttft = max(q, 0.0) + prefill
        for rank in lead_ranks:
            lead = device_ttft - xs[rank]
            if lead > 0:
                offsets.append((0.0, lead))
        usd_per_j = ctx.cost_model.usd_per_j
        resource = self.budget.resource
        tau = self._tau()
        kappa = self.tail_weight / (1.0 - TAIL_LEVEL)
        out = []
        if not kappa:
            tau = math.inf
        tailed = tau != math.inf
        expected = expect_many(offsets, xs, prefix, prefill, q, units, tau)
        for offset, (ttft, usd, joules, excess) in zip(offsets, expected, strict=True):
            plain = (ttft, usd, joules)
            if tailed:
                ttft += kappa * excess
            unified = usd + joules * usd_per_j  # CostModel.total, inlined: the hot loop
            spend = usd if resource == "server" else joules if resource == "device" else unified
            out.append((offset, ttft, spend, unified, plain))
        return out

    def _tau(self) -> float:
        """The tail target: the p99 of realised TTFTs, refreshed at each calibration."""
        return self._tau_s

    def _calibrate(self, ctx: DispatchContext) -> None:
        if len(self._ttfts) >= _MIN_TAIL_SAMPLES:
            self._tau_s = self._ttfts.quantile(TAIL_LEVEL)
        super()._calibrate(ctx)

    def observe(self, outcome: RequestOutcome) -> None:
        super().observe(outcome)
        if outcome.ttft_s is not None:
            self._ttfts.add(outcome.ttft_s)

    def _build_table(
        self,
        ctx: DispatchContext,
        sample: list[tuple[int, float]],
        bounds: list[tuple[float, float]],
        output: float,
    ) -> None:
        total = sum(c - f for f, c in bounds)
        self._scale = max(total / len(bounds), 1e-300)
        # Per sample, the lower convex hull of (spend, TTFT): as mu falls past each hull
        # breakpoint the chosen action moves to the next, costlier one. Summing the steps
        # gives the expected share as an exact step function of mu.
        steps: list[tuple[float, float]] = []
        base = 0.0
        for (prompt, q), (floor, _) in zip(sample, bounds, strict=True):
            candidates = self._candidates(ctx, prompt, q, output)
            hull = lower_hull((c[2], c[1]) for c in candidates)
            base += hull[0][0] - floor
            for (s0, t0), (s1, t1) in itertools.pairwise(hull):
                if s1 > s0:
                    steps.append(((t0 - t1) / (s1 - s0) * self._scale, s1 - s0))
        steps.sort(reverse=True)
        mus, shares = [math.inf], [base / total if total > 0 else 0.0]
        running = base
        for mu, extra in steps:
            running += extra
            mus.append(mu)
            shares.append(running / total if total > 0 else 1.0)
        mus.append(0.0)
        shares.append(shares[-1])
        self._mus, self._mu_shares = mus, shares

    def price(self, share: float) -> float:
        """mu for a target share: log-linear between the breakpoints whose expected shares
        bracket it, so that the price moves continuously with the target (the table is a
        step function of a sample; the requests it prices form a continuum between steps)."""
        if share <= 0.0:
            return math.inf
        mus, shares = self._mus, self._mu_shares
        j = bisect.bisect_left(shares, share)
        if j == 0:
            return mus[0]
        if j >= len(mus):
            return mus[-1]
        lo_share, hi_share = shares[j - 1], shares[j]
        f = (share - lo_share) / (hi_share - lo_share) if hi_share > lo_share else 1.0
        hi_mu, lo_mu = mus[j - 1], mus[j]  # the price falls as the share rises
        if math.isinf(hi_mu):
            return lo_mu / max(f, 1e-9) if lo_mu > 0 else math.inf
        if lo_mu <= 0.0:
            return hi_mu * (1.0 - f)
        return math.exp((1.0 - f) * math.log(hi_mu) + f * math.log(lo_mu))

    def _decide(
        self, request: RequestFeatures, ctx: DispatchContext, output: float, share: float
    ) -> tuple[Plan, ActionEstimate | None]:
        mu = self.price(share)
        prompt, q = request.prompt_tokens, request.local_queue_wait_s
        device, cached = _sizes(request)
        candidates = self._candidates(ctx, prompt, q, output, device, cached)
        device_ttft = max(q, 0.0) + ctx.profiles.device.predict_ttft_s(
            prompt if device is None else device
        )

        def bound(offsets: _Offsets) -> float:
            """A sure upper bound on the TTFT: the device's, if it is started at all. Among
            actions the profiles rate equal, the bounded one is insurance against a server
            tail the learned distribution has not (or no longer) seen."""
            return math.inf if offsets[0] is None else offsets[0] + device_ttft

        ranked: Iterable[tuple[_Candidate, float]]
        if math.isinf(mu):
            # Nothing may be spent: no insurance the profiles say cannot pay.
            ranked = ((c, math.inf) for c in sorted(candidates, key=lambda c: (c[2], c[1])))
        else:
            ranked = _by_score(candidates, mu / self._scale, bound)
        cm = ctx.cost_model
        expected: list[ActionEstimate] = []
        first: _Offsets | None = None
        for (offsets, _, _, _, (ttft, usd, joules)), score in ranked:
            if first is None:
                first = offsets
            action = _action_for(offsets)
            if expected and action.action == expected[0].action:
                continue
            cost = cm.total(usd, joules)
            expected.append(ActionEstimate(action.action, ttft, cost, action.starts, score))
            if len(expected) == 2:
                break
        assert first is not None
        best = _action_for(first)
        committed = None
        reason = f"min E[TTFT] + mu*spend, mu={mu:.3g}s (share {share:.3f})"
        if self._fills(share):
            # The plan's estimates lead with the race it now is; the controller still commits
            # the displaced plan's expected spend (as measured and tuned; the race's real spend
            # settles it when the request ends).
            committed = expected[0]
            race = next(c for c in candidates if c[0] == (0.0, 0.0))
            ttft, usd, joules = race[4]
            estimate = ActionEstimate(RACE.action, ttft, cm.total(usd, joules), RACE.starts)
            expected = [estimate, *(e for e in expected if e.action != RACE.action)][:2]
            best = RACE
            reason = f"spend above what buys expected TTFT goes to racing (share {share:.3f})"
        return best.because(reason, tuple(expected)), committed

    def _fills(self, share: float) -> bool:
        """Whether this request races to spend what no price buys.

        When racing is nearly free of TTFT value (a server much faster than the device, which
        almost never wins), even mu = 0 spends only `s_max`, the table's largest share, and the
        budget would be under-spent however the controller raised its target. The rest is
        bought with the ceiling's own plan, racing, which is never slower than any other: a
        fraction p = (share - s_max) / (1 - s_max) of requests race, spread evenly (error
        diffusion, no randomness), which makes the expected share the target.
        """
        s_max = self._mu_shares[-1]
        if share <= s_max or s_max >= 1.0:
            return False
        self._fill += (share - s_max) / (1.0 - s_max)
        if self._fill >= 1.0:
            self._fill -= 1.0
            return True
        return False


def _by_score(
    candidates: list[_Candidate], price: float, bound: Callable[[_Offsets], float]
) -> Iterator[tuple[_Candidate, float]]:
    """The candidates in the order of `(_tie(ttft + price * spend), _tie(spend), bound, index)`,
    each with its tied score, lazily: `_tie` is monotone, so candidates with equal tied scores
    are neighbours in the order of their raw scores, and only the groups the caller reads are
    tie-broken (it reads two or three of about 17)."""
    raw = [c[1] + price * c[2] for c in candidates]
    order = sorted(range(len(raw)), key=raw.__getitem__)
    n, j = len(order), 0
    while j < n:
        score = _tie(raw[order[j]])
        group = [order[j]]
        j += 1
        while j < n and _tie(raw[order[j]]) == score:
            group.append(order[j])
            j += 1
        if len(group) > 1:
            group.sort(key=lambda i: (_tie(candidates[i][2]), bound(candidates[i][0]), i))
        for i in group:
            yield candidates[i], score


def _sizes(request: RequestFeatures) -> tuple[int | None, int]:
    """(what the device would prefill, when it has part of the prompt cached (None: all of
    it, the common case, which keeps every estimate as it was without a cache); what the
    provider is expected to read from its prompt cache)."""
    device = request.device_prompt_tokens if request.local_cached_tokens > 0 else None
    return device, request.remote_cached_tokens


def _tie(x: float) -> float:
    """`x` rounded to 9 significant digits, so that expectations equal up to floating-point
    noise compare equal and the next key decides."""
    return float(f"{x:.9g}")


POLICY_NAMES = (
    "local",
    "remote",
    "race",
    "random",
    "random_race",
    "length_threshold",
    "wait_time",
    "generalized",
)
_DEFAULT_RESOURCE = {"length_threshold": "server", "wait_time": "device"}


def policy_from_name(name: str, budget: Budget | None = None, seed: int = 0) -> DispatchPolicy:
    """The policy behind a `DISCO_POLICY` value; budgeted ones default to half their resource."""
    if name == "local":
        return LocalOnly()
    if name == "remote":
        return RemoteOnly()
    if name == "race":
        return Race()
    if name not in POLICY_NAMES:
        raise ConfigError(
            f"unknown dispatch policy {name!r}: set DISCO_POLICY to one of "
            f"{', '.join(POLICY_NAMES)}."
        )
    if budget is None:
        budget = Budget(share=0.5, resource=_DEFAULT_RESOURCE.get(name, "unified"))  # type: ignore[arg-type]
    if name == "random":
        return RandomSplit(budget, seed=seed)
    if name == "random_race":
        return RandomSplit(budget, seed=seed, race=True)
    if name == "length_threshold":
        return LengthThreshold(budget)
    if name == "wait_time":
        return WaitTime(budget)
    return Generalized(budget)
