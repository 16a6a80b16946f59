"""Dispatch policies: valid plans, budget limits, monotone spend, and the paper special cases."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import (
    POLICY_NAMES,
    Budget,
    CostModel,
    DispatchContext,
    Generalized,
    LengthThreshold,
    LocalOnly,
    Plan,
    Profiles,
    Race,
    RandomSplit,
    RemoteOnly,
    RequestFeatures,
    WaitTime,
    policy_from_name,
)
from langchain_disco.scheduling.estimates import (
    LOCAL,
    RACE,
    REMOTE,
    estimate_action,
    expect,
    local_then_remote,
    race_spent,
    remote_then_local,
    resolve_action,
    unit_costs,
)

SERVER_CTX = (("MacBook Pro M1 Max", "together-13b"), CostModel())
DEVICE_CTX = (("Galaxy S25", "replicate-70b"), CostModel(usd_per_j=1e-4))
MIXED_CTX = (("2-core x86 cloud VM", "together-13b"), CostModel(usd_per_j=1e-5))
REGIMES = {"server": SERVER_CTX, "device": DEVICE_CTX, "unified": MIXED_CTX}
_PROFILES = {k: Profiles.prior(*names) for k, (names, _) in REGIMES.items()}


def _ctx(resource: str) -> DispatchContext:
    # Priors are never mutated by planning alone, so one instance per regime is shared.
    return DispatchContext(_PROFILES[resource], REGIMES[resource][1])


def _policy(kind: str, budget: Budget) -> RandomSplit | LengthThreshold | WaitTime | Generalized:
    if kind == "random":
        return RandomSplit(budget, seed=7)
    if kind == "random_race":
        return RandomSplit(budget, seed=7, race=True)
    if kind == "length_threshold":
        return LengthThreshold(budget)
    if kind == "wait_time":
        return WaitTime(budget)
    return Generalized(budget)


KINDS = ["random", "random_race", "length_threshold", "wait_time", "generalized"]
features = st.builds(
    RequestFeatures,
    prompt_tokens=st.integers(1, 16_000),
    local_queue_wait_s=st.floats(0, 60),
)


def _spend(plan: Plan, budget: Budget, ctx: DispatchContext, request: RequestFeatures) -> float:
    action = plan
    estimate = estimate_action(
        action,
        server=ctx.profiles.server.ttft,
        prefill_s=ctx.profiles.device.predict_ttft_s(request.prompt_tokens),
        queue_wait_s=request.local_queue_wait_s,
        prompt_tokens=request.prompt_tokens,
        output_tokens=ctx.profiles.output_lengths.expected(),
        cost_model=ctx.cost_model,
    )
    return budget.spend(estimate.cost)


# -- the estimates the policies stand on ---------------------------------------------------

actions = st.one_of(
    st.just(LOCAL),
    st.just(REMOTE),
    st.just(RACE),
    st.floats(0.01, 30).map(remote_then_local),
    st.floats(0.01, 30).map(local_then_remote),
)


@settings(max_examples=150, deadline=None)
@given(actions, st.integers(1, 8000), st.floats(0, 20), st.floats(0.1, 60), st.floats(0, 80))
def test_estimates_are_the_exact_mean_of_resolved_outcomes(
    action: Plan, prompt: int, queue: float, prefill: float, tau: float
) -> None:
    """The policies' expectation and the simulator's resolution are the same logic."""
    ctx = _ctx("device")
    server = ctx.profiles.server.ttft
    estimate = estimate_action(
        action,
        server=server,
        prefill_s=prefill,
        queue_wait_s=queue,
        prompt_tokens=prompt,
        output_tokens=150,
        cost_model=ctx.cost_model,
    )
    begin = max(action.local_at_s or 0.0, queue)
    outcomes = [
        resolve_action(
            action,
            server_ttft_s=s,
            local_begin_s=begin,
            prefill_s=prefill,
            prompt_tokens=prompt,
            output_tokens=150,
            cost_model=ctx.cost_model,
        )
        for s in server.samples
    ]
    n = len(outcomes)
    assert estimate.ttft_s == pytest.approx(sum(o.ttft_s for o in outcomes) / n)
    assert estimate.cost.server_usd == pytest.approx(sum(o.cost.server_usd for o in outcomes) / n)
    assert estimate.cost.device_j == pytest.approx(sum(o.cost.device_j for o in outcomes) / n)
    xs, prefix = server.view()
    units = (0.0, 0.0, 0.0, 0.0)
    *_, excess = expect(
        action.local_at_s, action.remote_at_s, xs, prefix, prefill, queue, units, tau
    )
    assert excess == pytest.approx(sum(max(o.ttft_s - tau, 0) for o in outcomes) / n, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0, 60),
    st.floats(0, 30),
    st.floats(0, 60),
    st.integers(1, 8000),
    st.integers(0, 2000),
    st.sampled_from([None, 0, 17, 4000]),
    st.integers(0, 8000),
)
def test_race_spent_is_resolve_action_of_a_race_bit_for_bit(
    server: float,
    begin: float,
    prefill: float,
    prompt: int,
    output: int,
    device_in: int | None,
    cached: int,
) -> None:
    """The budget's realised ceiling uses `race_spent`, a shortcut of `resolve_action(RACE)`:
    the same floats, or the replay would change."""
    cm = CostModel(usd_per_j=1e-4)
    resolved = resolve_action(
        RACE,
        server_ttft_s=server,
        local_begin_s=begin,
        prefill_s=prefill,
        prompt_tokens=prompt,
        output_tokens=output,
        cost_model=cm,
        device_prompt_tokens=device_in,
        server_cached_tokens=cached,
    ).cost
    units = unit_costs(cm, prompt, output, device_in, cached)
    usd, joules = race_spent(server, begin, prefill, units)
    assert (usd, joules) == (resolved.server_usd, resolved.device_j)
    assert usd + joules * cm.usd_per_j == resolved.unified_usd


# -- every plan is valid; budget 0 and 1 ---------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(KINDS),
    st.sampled_from(list(REGIMES)),
    st.floats(0, 1),
    st.lists(features, min_size=1, max_size=4),
)
# A plan that races to spend what no price buys (Generalized._fills) once kept the displaced
# plan's estimates first.
@example("generalized", "device", 0.984375, [RequestFeatures(prompt_tokens=1)] * 2)
def test_plans_are_valid(kind: str, resource: str, b: float, requests: list) -> None:  # type: ignore[type-arg]
    budget = Budget(share=b, resource=resource)  # type: ignore[arg-type]
    policy = _policy(kind, budget)
    for request in requests:
        plan = policy.plan(request, _ctx(resource))
        assert plan.starts and min(s.at_s for s in plan.starts) == 0.0
        assert all(math.isfinite(s.at_s) for s in plan.starts)
        assert len(set(plan.endpoints)) == len(plan.endpoints)
        if plan.expected:
            assert plan.expected[0].action == plan.action


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(KINDS), features)
def test_budget_zero_never_starts_the_constrained_resource(
    kind: str, request: RequestFeatures
) -> None:
    """Each policy in its regime (length threshold: server; wait time: device; others: both)."""
    if kind != "wait_time":
        server_budget = Budget(share=0.0, resource="server")
        assert "remote" not in _policy(kind, server_budget).plan(request, _ctx("server")).endpoints
    if kind != "length_threshold":
        device_budget = Budget(share=0.0, resource="device")
        assert "local" not in _policy(kind, device_budget).plan(request, _ctx("device")).endpoints


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(list(REGIMES)), features)
def test_budget_one_is_always_race(kind: str, resource: str, request: RequestFeatures) -> None:
    budget = Budget(share=1.0, resource=resource)  # type: ignore[arg-type]
    plan = _policy(kind, budget).plan(request, _ctx(resource))
    assert plan.starts == Race().plan(request).starts


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(KINDS),
    st.sampled_from(list(REGIMES)),
    features,
    st.lists(st.floats(0, 0.99), min_size=2, max_size=5),
)
def test_spend_is_monotone_in_the_budget(
    kind: str, resource: str, request: RequestFeatures, shares: list[float]
) -> None:
    """Fresh policies (same seed) plan one request: a bigger budget never plans less spend.
    (b = 1 is always-race, tested above; a random *split* may send a request to the server
    alone below that, which costs more than racing it.) Each paper policy in its own regime:
    a wait time under a server budget pays the server anyway, and hedging lowers that bill; on
    the unified resource a race can cost less than the device alone (a fast server cancels a
    queued device), so a paper policy's first step there may spend less."""
    assume(kind != "wait_time" or resource == "device")
    assume(kind != "length_threshold" or resource == "server")
    spends = []
    for b in sorted(shares):
        budget = Budget(share=b, resource=resource)  # type: ignore[arg-type]
        plan = _policy(kind, budget).plan(request, _ctx(resource))
        spends.append(_spend(plan, budget, _ctx(resource), request))
    assert all(a <= b * (1 + 1e-9) + 1e-12 for a, b in itertools.pairwise(spends))


# -- the paper policies as special cases of ours -------------------------------------------

PROMPTS = [16, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12000]


@pytest.mark.parametrize("b", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_generalized_is_a_length_threshold_when_the_server_is_constrained(b: float) -> None:
    """Device (nearly free) always starts at 0; the server joins exactly above a length."""
    ctx = _ctx("server")
    policy = Generalized(Budget(share=b, resource="server"))
    plans = [policy.plan(RequestFeatures(prompt_tokens=p), ctx) for p in PROMPTS]
    assert all(plan.offset("local") == 0.0 for plan in plans)
    with_server = [plan.offset("remote") is not None for plan in plans]
    first = with_server.index(True) if True in with_server else len(plans)
    assert with_server == [False] * first + [True] * (len(plans) - first)


@pytest.mark.parametrize("b", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_generalized_is_a_wait_time_when_the_device_is_constrained(b: float) -> None:
    """The server (free) always starts at 0 and the device only joins as a hedge, except where
    the device is sure to answer first (a server started then is cancelled unused)."""
    ctx = _ctx("device")
    policy = Generalized(Budget(share=b, resource="device"))
    fastest_server = ctx.profiles.server.quantile(0.0)
    for prompt in PROMPTS:
        for queue in (0.0, 5.0):
            plan = policy.plan(RequestFeatures(prompt_tokens=prompt, local_queue_wait_s=queue), ctx)
            if plan.action == "local":
                assert ctx.profiles.device.predict_ttft_s(prompt, queue) <= fastest_server
                continue
            assert plan.offset("remote") == 0.0
            assert plan.action in ("remote", "race", "remote-then-local")


def test_length_threshold_starts_the_server_on_long_prompts_only() -> None:
    policy = LengthThreshold(Budget(share=0.3, resource="server"))
    ctx = _ctx("server")
    short = policy.plan(RequestFeatures(prompt_tokens=50), ctx)
    long = policy.plan(RequestFeatures(prompt_tokens=6000), ctx)
    assert short.endpoints == ("local",)
    assert long.starts == Race().plan(RequestFeatures(prompt_tokens=1)).starts
    assert "L_b=" in long.reason
    assert {e.action for e in long.expected} == {"race", "local"}


def test_wait_time_hedges_after_a_wait() -> None:
    policy = WaitTime(Budget(share=0.3, resource="device"))
    plan = policy.plan(RequestFeatures(prompt_tokens=500), _ctx("device"))
    assert plan.offset("remote") == 0.0
    local = plan.offset("local")
    assert local is None or local > 0


def test_plan_reports_the_chosen_and_the_runner_up_action() -> None:
    plan = Generalized(Budget(share=0.5, resource="unified")).plan(
        RequestFeatures(prompt_tokens=1500), _ctx("unified")
    )
    assert len(plan.expected) == 2
    chosen, runner_up = plan.expected
    assert chosen.action == plan.action != runner_up.action
    assert chosen.score is not None and runner_up.score is not None
    assert chosen.score <= runner_up.score


# -- factory and baselines -----------------------------------------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_from_name_knows_every_disco_policy(name: str) -> None:
    policy = policy_from_name(name, Budget(share=0.4, resource="server"), seed=3)
    assert policy.name == name
    plan = policy.plan(RequestFeatures(prompt_tokens=800), _ctx("server"))
    assert plan.starts


def test_policy_from_name_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="DISCO_POLICY"):
        policy_from_name("fastest")


def test_baselines_ignore_the_context() -> None:
    request = RequestFeatures(prompt_tokens=123)
    for policy in (LocalOnly(), RemoteOnly(), Race()):
        assert policy.plan(request, _ctx("server")) == policy.plan(request)
        policy.observe(None)  # type: ignore[arg-type]  # feedback is ignored


def test_generalized_price_moves_continuously_with_the_target_share() -> None:
    budget = Budget(share=0.5, resource="device")
    policy = Generalized(budget)
    ctx = DispatchContext(Profiles.prior("Galaxy S25", "replicate-70b"), CostModel(usd_per_j=1e-4))
    policy.plan(RequestFeatures(prompt_tokens=800), ctx)  # builds the price table
    shares = [i / 200 for i in range(1, 200)]
    prices = [policy.price(s) for s in shares]
    finite = [p for p in prices if math.isfinite(p)]
    assert all(a >= b for a, b in itertools.pairwise(prices))  # less spend costs more
    # No jump: a step of 0.005 in the target never moves the price by more than 10x
    # (a step function of the table would jump between its breakpoints).
    assert all(a / b < 10 for a, b in itertools.pairwise(finite) if b > 0)
