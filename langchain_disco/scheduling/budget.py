"""Budgets, and the controller that keeps realised spend on budget over a long run.

A `Budget` constrains one resource: `"server"` (USD), `"device"` (joules) or `"unified"` (USD,
device energy converted by the cost model's exchange rate). It is either an absolute average per
request (`per_request`), or a `share` b in [0, 1] of the spend between two reference plans,
computed per request on that resource:

- the *floor*: the cheapest dispatch, sending the request to the cheaper endpoint only (0 for
  the server and device resources: the device alone spends no server money, and vice versa);
- the *ceiling*: starting the constrained resource on every request too, i.e. always-race.

So b = 0 never spends the constrained resource, b = 1 is always-race, and every b in between
is reachable whatever the endpoints. (The cost of sending *everything* to the constrained
endpoint would be a poor yardstick: a slow phone hedging a fast server spends a few percent of
its all-device energy even when racing every request, so most shares of it could not be spent.)

`BudgetController` turns the budget into a *target share* for the next request: a feed-forward
term (the budget itself, or the per-request amount converted with the profiles' expected floor
and ceiling) plus integral feedback on the cumulative deficit, repaid over `horizon` requests.

Requests in flight count at their expectation, but the ones still in flight are not a random
sample: the slow ones (a server stuck in its tail, where racing would have let the device win
and spend) stay longest, so their eventual bounds and spend differ from what was committed in a
way that persists. By Little's law that standing difference is the mean over settled requests
of (settled - committed) x (requests committed while it was in flight); the deficit adds it.
Policies map the target share to their own knob (a length threshold, a wait, a price of cost)
through the profiles' expectations; the feedback corrects whatever those expectations get wrong.

A fleet of workers shares one budget through a `Ledger` (`langchain_disco.state`): each settled
request is also added to it, and the controller reads its settled totals (count, spend,
allowance, floor, ceiling) from the ledger's snapshot of the whole fleet instead of its own.
What is still in flight stays local. Without a ledger, or while it has no fleet view, the
controller is exactly the in-process one.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import DispatchContext, RequestOutcome
from langchain_disco.scheduling.estimates import (
    RACE,
    estimate_action,
    expect,
    race_spent,
    unit_costs,
)

Resource = Literal["server", "device", "unified"]
RESOURCES: tuple[Resource, ...] = ("server", "device", "unified")
_FLOOR_POINTS = 16


@dataclass(frozen=True)
class Budget:
    """What a user allows on the constrained resource: a `share` in [0, 1] or a `per_request`
    average (USD for `"server"` and `"unified"`, joules for `"device"`)."""

    share: float | None = None
    per_request: float | None = None
    resource: Resource = "server"

    def __post_init__(self) -> None:
        if (self.share is None) == (self.per_request is None):
            raise ValueError("a budget is either a share or a per-request amount, not both")
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise ValueError(f"budget share must be in [0, 1], got {self.share}")
        if self.per_request is not None and not self.per_request >= 0.0:
            raise ValueError(f"per-request budget must be >= 0, got {self.per_request}")
        if self.resource not in RESOURCES:
            raise ValueError(f"budget resource must be one of {RESOURCES}, got {self.resource!r}")

    @property
    def unit(self) -> str:
        return "J" if self.resource == "device" else "USD"

    def spend(self, cost: Cost) -> float:
        """The part of a request's cost this budget counts."""
        if self.resource == "server":
            return cost.server_usd
        if self.resource == "device":
            return cost.device_j
        return cost.unified_usd

    def floor(
        self,
        prompt_tokens: float,
        output_tokens: float,
        cost_model: CostModel,
        device_prompt_tokens: float | None = None,
        server_cached_tokens: float = 0,
    ) -> float:
        """Spend of the cheapest dispatch: the cheaper endpoint alone (the device prefilling
        `device_prompt_tokens`, default the whole prompt; the provider billing
        `server_cached_tokens` at its cached-input price)."""
        if self.resource != "unified":
            return 0.0
        device = prompt_tokens if device_prompt_tokens is None else device_prompt_tokens
        server = cost_model.server_usd(prompt_tokens, output_tokens, server_cached_tokens)
        device_j = cost_model.device_j(device, output_tokens)
        return min(server, device_j * cost_model.usd_per_j)

    def bounds(
        self,
        ctx: DispatchContext,
        prompt_tokens: int,
        queue_wait_s: float,
        output_tokens: float,
        device_prompt_tokens: int | None = None,
        server_cached_tokens: int = 0,
    ) -> tuple[float, float]:
        """(floor, expected ceiling) for one request: the range a share interpolates.
        `device_prompt_tokens`: what the device would prefill (default: the whole prompt);
        `server_cached_tokens`: what the provider is expected to read from its cache."""
        device = prompt_tokens if device_prompt_tokens is None else device_prompt_tokens
        race = estimate_action(
            RACE,
            server=ctx.profiles.server.distribution(prompt_tokens, server_cached_tokens),
            prefill_s=ctx.profiles.device.predict_ttft_s(device),
            queue_wait_s=queue_wait_s,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            cost_model=ctx.cost_model,
            device_prompt_tokens=device_prompt_tokens,
            server_cached_tokens=server_cached_tokens,
        )
        floor = self.expected_floor(
            ctx, prompt_tokens, output_tokens, device_prompt_tokens, server_cached_tokens
        )
        return floor, max(self.spend(race.cost), floor)

    def expected_floor(
        self,
        ctx: DispatchContext,
        prompt_tokens: int,
        output_tokens: float,
        device_prompt_tokens: int | None = None,
        server_cached_tokens: int = 0,
    ) -> float:
        """E[floor] over answer lengths of mean `output_tokens` (the output-length profile's
        shape, rescaled). On the unified resource the floor is the cheaper side's cost, a
        minimum of two lines in the answer length, so its mean is below its value at the mean
        length: using that would overstate the floor and understate the headroom above it."""
        if self.resource != "unified":
            return 0.0
        lengths = ctx.profiles.output_lengths
        points = [lengths.quantile((i + 0.5) / _FLOOR_POINTS) for i in range(_FLOOR_POINTS)]
        mean = sum(points) / len(points)
        sizes = (device_prompt_tokens, server_cached_tokens)
        if mean <= 0:
            return self.floor(prompt_tokens, output_tokens, ctx.cost_model, *sizes)
        scale = output_tokens / mean
        total = sum(self.floor(prompt_tokens, x * scale, ctx.cost_model, *sizes) for x in points)
        return total / len(points)

    def realised_bounds(self, ctx: DispatchContext, outcome: RequestOutcome) -> tuple[float, float]:
        """(floor, ceiling) of a finished request, using everything its outcome revealed.

        The ceiling (what always-race would have spent) is counterfactual, but the outcome often
        pins it down: a server that answered gives its TTFT, a cancelled one a lower bound, a
        device that answered its prefill time. What stays unknown is averaged over the profiles.
        """
        request = outcome.request
        prompt = request.prompt_tokens
        device = request.device_prompt_tokens
        device_in = None if device == prompt else device
        profiles = ctx.profiles
        if outcome.winner is not None:
            output = float(outcome.output_tokens)
        elif request.expected_output_tokens is not None:
            output = request.expected_output_tokens
        else:
            output = profiles.output_lengths.expected(request.max_tokens)
        server_cached = _server_cached(outcome)
        floor = self.floor(prompt, output, ctx.cost_model, device_in, server_cached)
        server_ttft: float | None = None
        server_at_least = 0.0
        prefill: float | None = None
        prefill_at_least = 0.0
        queue = request.local_queue_wait_s
        for run in outcome.endpoints:
            if run.failed:
                continue
            if run.endpoint == "remote":
                if run.first_token_s is not None:
                    server_ttft = run.first_token_s - run.started_s
                elif run.ended_s is not None:
                    server_at_least = max(run.ended_s - run.started_s, 0.0)
                continue
            if run.started_s == 0.0:
                queue = run.queue_wait_s
            if run.first_token_s is not None:
                prefill = run.first_token_s - run.started_s - run.queue_wait_s
            elif run.ended_s is not None:  # cancelled while prefilling: at least this long
                prefill_at_least = max(run.ended_s - run.started_s - run.queue_wait_s, 0.0)
        if prefill is not None:
            prefills = [prefill]
        else:  # unknown: average over the device's learned spread, above what was seen (the
            # spend is not linear in its TTFT: a device that wins a race decodes the answer)
            spread = [profiles.device.predict_ttft_s(device) * r for r in profiles.device.spread()]
            prefills = [p for p in spread if p > prefill_at_least] or [
                max(max(spread), prefill_at_least)
            ]
        xs, prefix = profiles.server.distribution(prompt, server_cached).view()
        if server_ttft is None and server_at_least > 0:
            # The server's distribution above what it was seen to take (sorted already).
            xs = xs[bisect.bisect_left(xs, server_at_least) :]
            if xs:
                prefix = list(itertools.accumulate(xs, initial=0.0))
            else:
                server_ttft = server_at_least
        if server_ttft is None and not xs:
            raise ValueError("the server TTFT distribution has no samples")
        # The race's spend per prefill (`resolve_action` / `estimate_action` of RACE, without
        # building their results: this runs once per finished request).
        cm = ctx.cost_model
        units = unit_costs(cm, prompt, output, device_in, server_cached)
        resource = self.resource
        spends = []
        for prefill_s in prefills:
            if server_ttft is not None:
                usd, joules = race_spent(server_ttft, queue, prefill_s, units)
            else:
                _, usd, joules, _ = expect(0.0, 0.0, xs, prefix, prefill_s, queue, units)
            if resource == "server":
                spends.append(usd)
            elif resource == "device":
                spends.append(joules)
            else:
                spends.append(usd + joules * cm.usd_per_j)
        return floor, max(sum(spends) / len(spends), floor)

    def allowance(self, floor: float, ceiling: float) -> float:
        """What one request may spend, given its floor and ceiling."""
        if self.share is not None:
            return floor + self.share * (ceiling - floor)
        assert self.per_request is not None
        return self.per_request


class LedgerTotals(NamedTuple):
    """Settled requests' sums: what a ledger adds and reports (`spent` and `allowed` in the
    budget's unit; `floor` and `ceiling` the reference spends a share interpolates)."""

    n: float = 0.0
    spent: float = 0.0
    allowed: float = 0.0
    floor: float = 0.0
    ceiling: float = 0.0

    def plus(self, other: LedgerTotals) -> LedgerTotals:
        return LedgerTotals(*(a + b for a, b in zip(self, other, strict=True)))


class Ledger(Protocol):
    """Where settled spend is shared. Both calls are in-memory and never block: a ledger
    syncs with its store in the background."""

    def add(self, delta: LedgerTotals) -> None:
        """Account settled spend (this worker's)."""

    def totals(self) -> LedgerTotals | None:
        """The fleet's settled totals over the ledger's window, this worker's unsynced adds
        included; None while there is no fleet view (the controller then uses its own)."""

    def peers(self) -> float:
        """How many workers' worth of traffic the fleet view holds: the fleet's settled count
        over this worker's own, over the window (>= 1; 1 without a fleet view)."""

    def lag(self) -> float:
        """The fleet view's delay in requests: how many of the other workers' settled
        requests arrive between two snapshots (0 without a fleet view, or with no delay)."""


class BudgetController:
    """Target share for the next request: feed-forward plus integral feedback on the deficit."""

    def __init__(self, budget: Budget, *, horizon: float = 200.0, prior_weight: float = 20.0):
        if horizon <= 0:
            raise ValueError("horizon must be > 0")
        self.budget = budget
        self.horizon = horizon
        self._prior_weight = prior_weight
        self._warm: tuple[float, float] | None = None
        self.n = 0
        self.spent = 0.0
        self.allowed = 0.0
        self.floor_total = 0.0
        self.ceiling_total = 0.0
        self.max_in_flight = 10_000
        self._in_flight: OrderedDict[int, tuple[object, float, float, int]] = OrderedDict()
        self._pending_spent = 0.0
        self._pending_allowed = 0.0
        self._commits = 0
        self._lagged = [0.0, 0.0, 0.0]  # decayed sums: n, allowance surprise x lag, spend x lag
        self.ledger: Ledger | None = None
        """Shares settled spend with a fleet (`langchain_disco.state`); None: this process."""

    def _settled(self) -> LedgerTotals:
        """Settled totals: the fleet's (from the ledger's snapshot) or this controller's."""
        fleet = self.ledger.totals() if self.ledger is not None else None
        if fleet is not None:
            return fleet
        return LedgerTotals(self.n, self.spent, self.allowed, self.floor_total, self.ceiling_total)

    def fleet_horizon(self) -> float:
        """The feedback's horizon in fleet requests: `horizon`, or longer when the fleet view
        is late by more than the loop can take.

        Every worker reads the same fleet deficit and repays it over `horizon` requests, so
        the fleet repays it over `horizon` fleet requests, as one process serving all the
        traffic does. But a worker sees the others' spend only once they have settled and the
        next sync has read it: a delay of d fleet requests (the other workers' requests per
        sync, `Ledger.lag()`, plus the ones they have in flight, about `peers() - 1` times this
        worker's own). An integrator of gain 1/T behind a delay of d steps is free of
        overshoot while T >= e x d; past that it swings between the clamps (seen: 8 workers at
        b = 0.3 and 1,000 requests/s, 0.5 s syncs, overspent 4%). So the horizon is the larger
        of the two. Lengthening it more than that only slows the repayment, which leaves a
        standing deficit of T x the policy's bias on every run (seen: dividing the gain by the
        worker count, 8 `generalized` workers at 100 requests/s under-spent 3.5%).
        """
        if self.ledger is None:
            return self.horizon
        others_in_flight = (self.ledger.peers() - 1.0) * len(self._in_flight)
        return max(self.horizon, math.e * (self.ledger.lag() + others_in_flight))

    def warm_start(self, mean_floor: float, mean_ceiling: float) -> None:
        """Expected per-request floor and ceiling (from the profiles) before any feedback."""
        self._warm = (mean_floor, mean_ceiling)

    def _means(self) -> tuple[float, float]:
        settled = self._settled()
        if self._warm is None:
            if not settled.n:
                return 0.0, 1.0
            return settled.floor / settled.n, settled.ceiling / settled.n
        w = self._prior_weight
        f0, c0 = self._warm
        return (
            (settled.floor + w * f0) / (settled.n + w),
            (settled.ceiling + w * c0) / (settled.n + w),
        )

    @property
    def deficit(self) -> float:
        """Allowed minus spent so far, in-flight requests at their expectation corrected for
        which ones are still in flight (> 0: under budget)."""
        n, allowance_lag, spend_lag = self._lagged
        standing = (allowance_lag - spend_lag) / n if n > 0 else 0.0
        settled = self._settled()
        return (
            settled.allowed + self._pending_allowed - settled.spent - self._pending_spent + standing
        )

    def target_share(self) -> float:
        """The share of the floor-to-ceiling range the next request should aim to spend."""
        b = self.budget.share
        if b is not None and b in (0.0, 1.0):
            return b
        mean_floor, mean_ceiling = self._means()
        headroom = mean_ceiling - mean_floor
        if headroom <= 0:
            return 1.0
        if b is None:
            assert self.budget.per_request is not None
            b = (self.budget.per_request - mean_floor) / headroom
        window = self.fleet_horizon() * headroom
        correction = min(max(self.deficit, -window), window) / window
        return min(max(b + correction, 0.0), 1.0)

    def commit(self, key: object, spend: float, floor: float, ceiling: float) -> None:
        """Account a request as soon as it is planned, with its *expected* spend and bounds.

        Feedback arrives only when a request completes, and the slow, expensive ones complete
        last; counting in-flight requests at their expectation keeps the controller from
        overspending meanwhile. `record(..., key=key)` later replaces the expectation.
        """
        if not all(math.isfinite(v) for v in (spend, floor, ceiling)):
            return
        allowance = self.budget.allowance(floor, ceiling)
        self._commits += 1
        self._in_flight[id(key)] = (key, spend, allowance, self._commits)
        self._pending_spent += spend
        self._pending_allowed += allowance
        while len(self._in_flight) > self.max_in_flight:  # never settled: keep the estimate
            _, (_, old_spend, old_allowance, _) = self._in_flight.popitem(last=False)
            self._pending_spent -= old_spend
            self._pending_allowed -= old_allowance
            self.spent += old_spend
            self.allowed += old_allowance
            if self.ledger is not None:
                self.ledger.add(LedgerTotals(spent=old_spend, allowed=old_allowance))

    def record(self, spend: float, floor: float, ceiling: float, *, key: object = None) -> None:
        """Account one finished request (settling its commitment, if `key` was committed)."""
        committed = None
        if key is not None and id(key) in self._in_flight:
            _, old_spend, old_allowance, at = self._in_flight.pop(id(key))
            self._pending_spent -= old_spend
            self._pending_allowed -= old_allowance
            committed = (old_spend, old_allowance, self._commits - at)
        if not all(math.isfinite(v) for v in (spend, floor, ceiling)):
            return
        if committed is not None:
            old_spend, old_allowance, lag = committed
            keep = 1.0 - 1.0 / (10.0 * self.horizon)  # forget over ~10 horizons
            surprise = self.budget.allowance(floor, ceiling) - old_allowance
            n, allowance_lag, spend_lag = self._lagged
            self._lagged = [
                keep * n + 1.0,
                keep * allowance_lag + surprise * lag,
                keep * spend_lag + (spend - old_spend) * lag,
            ]
        allowance = self.budget.allowance(floor, ceiling)
        self.n += 1
        self.spent += spend
        self.floor_total += floor
        self.ceiling_total += ceiling
        self.allowed += allowance
        if self.ledger is not None:
            self.ledger.add(LedgerTotals(1.0, spend, allowance, floor, ceiling))

    @property
    def realised_share(self) -> float:
        """Spend so far as a share of the floor-to-ceiling range (NaN before any headroom);
        the fleet's over the ledger's window when a ledger has a fleet view."""
        settled = self._settled()
        headroom = settled.ceiling - settled.floor
        return (settled.spent - settled.floor) / headroom if headroom > 0 else math.nan


def _server_cached(outcome: RequestOutcome) -> int:
    """The prompt tokens the provider read from its cache for this request, as far as the
    outcome tells (the usage a remote run reported, on the request's scale), else as expected."""
    request = outcome.request
    for run in outcome.endpoints:
        answered = run.first_token_s is not None and not run.failed
        if run.endpoint == "remote" and answered and run.input_tokens > 0:
            share = min(max(run.cached_input_tokens, 0), run.input_tokens) / run.input_tokens
            return round(request.prompt_tokens * share)
    return request.remote_cached_tokens
