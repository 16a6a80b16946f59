"""What a dispatch action does: resolved for one request, and in expectation over the server TTFT.

A `Plan` says when each endpoint starts, relative to the request's arrival (None: never).
The rules are the engine's: a start with a positive offset is a hedge that only happens if no
content token arrived before it; the first content token wins and the other endpoint is
cancelled at once; the winner generates the whole answer. Billing follows docs/concepts.md
("What is billed"): a server request bills its input once started, and its output only if it
wins (a loser is cancelled before its first token); the device spends prefill energy for the
part of the prefill it actually ran (prorated by time; nothing while it waited in the device
queue), plus the whole answer's decode energy if it wins.

`resolve_action` is the realised outcome for a known server TTFT (the simulator and the oracle
use it); `estimate_action` is its exact expectation over the server's empirical TTFT
distribution, computed in O(log n) with prefix sums (the policies use it). The two are tested to
agree, so the simulator and the policies cannot drift apart.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import ActionEstimate, Plan
from langchain_disco.scheduling.empirical import Reservoir
from langchain_disco.scheduling.roles import Role

if TYPE_CHECKING:
    from langchain_disco.scheduling.profiles import DeviceProfile, LengthProfile

_MIN_PREFILL_S = 1e-6


LOCAL = Plan.at("local", 0.0, None)
REMOTE = Plan.at("remote", None, 0.0)
RACE = Plan.at("race", 0.0, 0.0)


def remote_then_local(wait_s: float) -> Plan:
    """The server starts now; the device too if no token came within `wait_s` (inf: never)."""
    if math.isinf(wait_s):
        return REMOTE
    return RACE if wait_s <= 0 else Plan.at("remote-then-local", wait_s, 0.0)


def local_then_remote(wait_s: float) -> Plan:
    """The device starts now; the server too if no token came within `wait_s` (inf: never)."""
    if math.isinf(wait_s):
        return LOCAL
    return RACE if wait_s <= 0 else Plan.at("local-then-remote", 0.0, wait_s)


@dataclass(frozen=True)
class Resolution:
    """The realised outcome of an action for one request (times since arrival)."""

    ttft_s: float
    winner: Role
    local_started: bool
    remote_started: bool
    local_begin_s: float
    """When the device began its prefill (after any queue wait), if it started."""
    local_end_s: float
    """The device's first token (it won) or its cancellation (it lost), if it started."""
    remote_end_s: float
    """The server's first token (it won) or its cancellation (it lost), if it started."""
    cost: Cost


def _unit_costs(
    cost_model: CostModel,
    prompt_tokens: float,
    output_tokens: float,
    device_prompt_tokens: float | None = None,
    server_cached_tokens: float = 0,
) -> tuple[float, float, float, float]:
    """(server input USD, server output USD, device prefill J, device decode J); the device
    prefills `device_prompt_tokens` (what it has not cached; default all of the prompt), the
    provider bills `server_cached_tokens` of the prompt at its cached-input price."""
    device_in = prompt_tokens if device_prompt_tokens is None else device_prompt_tokens
    return (
        cost_model.server_usd(prompt_tokens, 0, server_cached_tokens),
        cost_model.server_usd(0, output_tokens),
        cost_model.device_j(device_in, 0),
        cost_model.device_j(0, output_tokens),
    )


def _cost(cost_model: CostModel, server_usd: float, device_j: float) -> Cost:
    return cost_model.total(server_usd, device_j)


def resolve_action(
    action: Plan,
    *,
    server_ttft_s: float,
    local_begin_s: float,
    prefill_s: float,
    prompt_tokens: float,
    output_tokens: float,
    cost_model: CostModel,
    prefill_interruptible: bool = True,
    device_prompt_tokens: float | None = None,
    server_cached_tokens: float = 0,
) -> Resolution:
    """Play one request out given the server's TTFT and when the device could begin prefill.

    `local_begin_s` is when the device's prefill begins if it is started (its start offset, or
    later if it first waits for the device); `prefill_s` is the device's TTFT from there.
    `prefill_interruptible=False`: a device cancelled after its prefill began still runs (and
    bills) the whole prefill, as llama.cpp does (it evaluates a prompt in one call).
    `server_cached_tokens` of the prompt are read from the provider's prompt cache (billed at
    the cached-input price, if the server is started).
    """
    t_d, t_s = action.local_at_s, action.remote_at_s
    prefill_s = max(prefill_s, _MIN_PREFILL_S)
    inf = math.inf
    device_token = local_begin_s + prefill_s if t_d is not None else inf
    server_token = t_s + server_ttft_s if t_s is not None else inf
    remote_started = t_s is not None and (t_s == 0.0 or device_token > t_s)
    local_started = t_d is not None and (t_d == 0.0 or server_token >= t_d)
    if not remote_started:
        server_token = inf
    if not local_started:
        device_token = inf
    remote_wins = server_token < device_token
    ttft = min(server_token, device_token)
    s_in, s_out, e_pre, e_dec = _unit_costs(
        cost_model, prompt_tokens, output_tokens, device_prompt_tokens, server_cached_tokens
    )
    server_usd = (s_in + (s_out if remote_wins else 0.0)) if remote_started else 0.0
    device_j = 0.0
    if local_started:
        if remote_wins:
            ran = min(max((server_token - local_begin_s) / prefill_s, 0.0), 1.0)
            if ran > 0 and not prefill_interruptible:
                ran = 1.0
            device_j = e_pre * ran
        else:
            device_j = e_pre + e_dec
    return Resolution(
        ttft_s=ttft,
        winner="remote" if remote_wins else "local",
        local_started=local_started,
        remote_started=remote_started,
        local_begin_s=local_begin_s if local_started else inf,
        local_end_s=ttft if local_started else inf,
        remote_end_s=ttft if remote_started else inf,
        cost=_cost(cost_model, server_usd, device_j),
    )


def race_spent(
    server_ttft_s: float,
    local_begin_s: float,
    prefill_s: float,
    units: tuple[float, float, float, float],
) -> tuple[float, float]:
    """(server USD, device J) of `resolve_action(RACE, ...)` on an interruptible device, from
    the request's `unit_costs`: the same arithmetic, without building a `Resolution`, for the
    one plan the budget's realised ceiling needs after every request."""
    prefill_s = max(prefill_s, _MIN_PREFILL_S)
    s_in, s_out, e_pre, e_dec = units
    if server_ttft_s < local_begin_s + prefill_s:  # the server's first token wins
        ran = min(max((server_ttft_s - local_begin_s) / prefill_s, 0.0), 1.0)
        return s_in + s_out, e_pre * ran
    return s_in, e_pre + e_dec


def estimate_action(
    action: Plan,
    *,
    server: Reservoir,
    prefill_s: float,
    queue_wait_s: float,
    prompt_tokens: float,
    output_tokens: float,
    cost_model: CostModel,
    device_prompt_tokens: float | None = None,
    server_cached_tokens: float = 0,
) -> ActionEstimate:
    """E[`resolve_action`] over the server TTFT distribution; the device begins at
    max(its offset, `queue_wait_s`). `output_tokens` is the expected answer length;
    `device_prompt_tokens` what the device prefills (default: the whole prompt),
    `server_cached_tokens` what the provider bills at its cached-input price."""
    xs, prefix = server.view()
    if not xs:
        raise ValueError("the server TTFT distribution has no samples")
    units = _unit_costs(
        cost_model, prompt_tokens, output_tokens, device_prompt_tokens, server_cached_tokens
    )
    ttft, server_usd, device_j, _ = expect(
        action.local_at_s, action.remote_at_s, xs, prefix, prefill_s, queue_wait_s, units
    )
    return ActionEstimate(
        action.action, ttft, _cost(cost_model, server_usd, device_j), action.starts
    )


def unit_costs(
    cost_model: CostModel,
    prompt_tokens: float,
    output_tokens: float,
    device_prompt_tokens: float | None = None,
    server_cached_tokens: float = 0,
) -> tuple[float, float, float, float]:
    """(server input USD, server output USD, device prefill J, device decode J) of a request."""
    return _unit_costs(
        cost_model, prompt_tokens, output_tokens, device_prompt_tokens, server_cached_tokens
    )


def expect(
    local_at_s: float | None,
    remote_at_s: float | None,
    xs: list[float],
    prefix: list[float],
    prefill_s: float,
    queue_wait_s: float,
    units: tuple[float, float, float, float],
    tau_s: float = math.inf,
) -> tuple[float, float, float, float]:
    """The core of `estimate_action` on a sorted sample `xs` and its prefix sums:
    (E[TTFT], E[server USD], E[device J], E[(TTFT - tau)+]), the last how far the action is
    expected to land beyond `tau_s` (a tail target; 0 when it is infinite). One action of
    `expect_many`.
    """
    return expect_many(
        ((local_at_s, remote_at_s),), xs, prefix, prefill_s, queue_wait_s, units, tau_s
    )[0]


def expect_many(
    offsets: Iterable[tuple[float | None, float | None]],
    xs: list[float],
    prefix: list[float],
    prefill_s: float,
    queue_wait_s: float,
    units: tuple[float, float, float, float],
    tau_s: float = math.inf,
) -> list[tuple[float, float, float, float]]:
    """`expect` of each action (local_at_s, remote_at_s) of `offsets` for one request, in
    order: a policy weighing many actions (`Generalized`, about 17 a request) works out what
    they share once. Hot path of the policies: no allocation beyond the results, and the tail
    term reuses the bisections of the mean, by (min(X, d) - tau)+ = min(X, d) - min(X, d, tau).
    (`c if x < c else x` is `max(x, c)`, without the call, NaN and signed zeros included.)
    """
    n = len(xs)
    prefill_s = _MIN_PREFILL_S if prefill_s < _MIN_PREFILL_S else prefill_s
    q = 0.0 if queue_wait_s < 0.0 else queue_wait_s
    s_in, s_out, e_pre, e_dec = units
    tail = tau_s != math.inf
    out: list[tuple[float, float, float, float]] = []
    append = out.append
    for t_d, t_s in offsets:
        if t_s is None:  # the device alone
            ttft = q + prefill_s
            late = ttft - tau_s
            append((ttft, 0.0, e_pre + e_dec, (0.0 if late < 0.0 else late) if tail else 0.0))
            continue
        if t_d is None:  # the server alone
            mean = prefix[-1] / n
            if not tail:
                append((mean, s_in + s_out, 0.0, 0.0))
                continue
            k = bisect_left(xs, tau_s)
            append((mean, s_in + s_out, 0.0, mean - (prefix[k] + tau_s * (n - k)) / n))
            continue
        if t_s == 0.0:  # server now, device at t_d (a race when t_d == 0)
            begin = t_d if t_d > q else q
            d = begin + prefill_s
            k = bisect_left(xs, d)
            p_server = k / n
            ttft = (prefix[k] + d * (n - k)) / n
            # The device starts only if S >= t_d; it burns prefill energy for S in [begin, d).
            i = bisect_left(xs, begin, 0, k)
            burnt = (prefix[k] - prefix[i] - begin * (k - i)) / n
            device_j = e_pre * burnt / prefill_s + (1.0 - p_server) * (e_pre + e_dec)
            excess = 0.0
            if tail and tau_s < d:
                j = bisect_left(xs, tau_s)
                excess = ttft - (prefix[j] + tau_s * (n - j)) / n
            append((ttft, s_in + s_out * p_server, device_j, excess))
            continue
        # Device now, server at t_s if the device has not answered by then.
        d = q + prefill_s
        if d <= t_s:
            late = d - tau_s
            append((d, 0.0, e_pre + e_dec, (0.0 if late < 0.0 else late) if tail else 0.0))
            continue
        horizon = d - t_s
        k = bisect_left(xs, horizon)
        p_server = k / n
        e_min = (prefix[k] + horizon * (n - k)) / n
        ttft = t_s + e_min
        # The server wins at t_s + S; the device ran from q until then (if S > q - t_s).
        lo = q - t_s
        i = bisect_left(xs, lo, 0, k) if lo > 0 else 0
        burnt = (prefix[k] - prefix[i] - lo * (k - i)) / n
        device_j = e_pre * burnt / prefill_s + (1.0 - p_server) * (e_pre + e_dec)
        excess = 0.0
        if tail:
            if tau_s <= t_s:
                excess = t_s - tau_s + e_min
            elif tau_s - t_s < horizon:
                cut = tau_s - t_s
                j = bisect_left(xs, cut)
                excess = e_min - (prefix[j] + cut * (n - j)) / n
        append((ttft, s_in + s_out * p_server, device_j, excess))
    return out


@dataclass(frozen=True)
class DeviceJob:
    """A generation ahead of a new request on the (serialised) device, as the scheduler sees it."""

    prompt_tokens: int
    prefill_started: bool = False
    elapsed_s: float = 0.0
    """Seconds since its prefill began (0 while it waits)."""
    produced_tokens: int = 0
    """Output tokens generated so far (0 until its first token)."""
    max_tokens: int | None = None


def lower_hull(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower convex hull of (spend, TTFT) points, cheapest first: the actions worth taking
    at some price of spend, each faster than the one before at a falling price per second."""
    hull: list[tuple[float, float]] = []
    for spend, ttft in sorted(points):
        if hull and ttft >= hull[-1][1]:
            continue  # costs more, no faster
        while len(hull) >= 2 and _above(hull[-2], hull[-1], (spend, ttft)):
            hull.pop()
        hull.append((spend, ttft))
    return hull


def _above(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
    """Whether b lies on or above the segment a-c (so it is not on the lower hull)."""
    return (b[1] - a[1]) * (c[0] - a[0]) >= (c[1] - a[1]) * (b[0] - a[0])


def predict_queue_wait_s(
    jobs: Iterable[DeviceJob], device: DeviceProfile, output_lengths: LengthProfile
) -> float:
    """Predicted wait before the device could begin a new request: the predicted remaining
    prefill and decode of every job ahead of it (the device runs one generation at a time)."""
    wait = 0.0
    s_per_token = 1.0 / device.decode_tok_s
    for job in jobs:
        if job.produced_tokens > 0:
            remaining = output_lengths.expected_remaining(job.produced_tokens, job.max_tokens)
            wait += remaining * s_per_token
            continue
        prefill = device.predict_ttft_s(job.prompt_tokens)
        if job.prefill_started:
            prefill = max(prefill - job.elapsed_s, 0.0)
        wait += prefill + output_lengths.expected(job.max_tokens) * s_per_token
    return wait
