"""Budgets and the controller that keeps realised spend on budget."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_disco.scheduling import (
    Budget,
    BudgetController,
    Cost,
    CostModel,
    DispatchContext,
    EndpointOutcome,
    Plan,
    Profiles,
    RequestFeatures,
    RequestOutcome,
    Start,
)
from langchain_disco.scheduling.estimates import RACE, resolve_action


def test_a_budget_is_a_share_or_a_per_request_amount() -> None:
    with pytest.raises(ValueError, match="either"):
        Budget()
    with pytest.raises(ValueError, match="either"):
        Budget(share=0.5, per_request=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Budget(share=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        Budget(per_request=-1.0)
    with pytest.raises(ValueError, match="resource"):
        Budget(share=0.5, resource="battery")  # type: ignore[arg-type]
    assert Budget(per_request=2.0, resource="device").unit == "J"


def test_spend_counts_the_constrained_resource() -> None:
    cost = Cost(server_usd=1.0, device_j=2.0, unified_usd=3.0)
    assert Budget(share=0.5, resource="server").spend(cost) == 1.0
    assert Budget(share=0.5, resource="device").spend(cost) == 2.0
    assert Budget(share=0.5, resource="unified").spend(cost) == 3.0


def test_floor_is_the_cheaper_endpoint_alone() -> None:
    model = CostModel(usd_per_j=1e-5)
    assert Budget(share=0.5, resource="server").floor(1000, 200, model) == 0.0
    assert Budget(share=0.5, resource="device").floor(1000, 200, model) == 0.0
    server = model.server_usd(1000, 200)
    device = model.device_j(1000, 200) * model.usd_per_j
    assert Budget(share=0.5, resource="unified").floor(1000, 200, model) == pytest.approx(
        min(server, device)
    )


@given(st.floats(0, 1), st.floats(0, 10), st.floats(0, 10))
def test_allowance_interpolates_floor_and_ceiling(b: float, floor: float, extra: float) -> None:
    allowance = Budget(share=b).allowance(floor, floor + extra)
    assert floor - 1e-9 <= allowance <= floor + extra + 1e-9
    assert Budget(per_request=0.7).allowance(floor, floor + extra) == 0.7


def test_controller_holds_zero_and_one_exactly() -> None:
    for b in (0.0, 1.0):
        controller = BudgetController(Budget(share=b))
        controller.record(spend=5.0, floor=0.0, ceiling=1.0)
        assert controller.target_share() == b


def test_controller_steers_against_the_deficit() -> None:
    controller = BudgetController(Budget(share=0.3))
    controller.record(spend=0.0, floor=0.0, ceiling=1.0)
    under = controller.target_share()
    controller.record(spend=5.0, floor=0.0, ceiling=1.0)
    assert under > 0.3 > controller.target_share()


@pytest.mark.parametrize("b", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("bias", [0.95, 1.0, 1.4])
def test_controller_tracks_the_budget_despite_a_biased_model(b: float, bias: float) -> None:
    """A 'policy' whose real spend is `bias` x what it aims for still lands on budget."""
    rng = random.Random(0)
    controller = BudgetController(Budget(share=b))
    spent = allowed = 0.0
    for _ in range(10_000):
        ceiling = rng.uniform(0.5, 2.0)
        start = rng.random() < min(controller.target_share() * bias, 1.0)
        spend = ceiling if start else 0.0
        controller.record(spend, 0.0, ceiling)
        spent += spend
        allowed += b * ceiling
    assert spent / allowed == pytest.approx(1.0, rel=0.03)


def test_in_flight_commitments_count_until_settled() -> None:
    controller = BudgetController(Budget(share=0.5))
    controller.record(0.5, 0.0, 1.0)
    before = controller.target_share()
    key = object()
    controller.commit(key, spend=3.0, floor=0.0, ceiling=1.0)
    assert controller.target_share() < before
    controller.record(0.5, 0.0, 1.0, key=key)  # it spent only its share in the end
    assert controller.target_share() == pytest.approx(before)


def test_per_request_budgets_convert_with_the_expected_range() -> None:
    controller = BudgetController(Budget(per_request=2.0))
    controller.warm_start(mean_floor=1.0, mean_ceiling=5.0)
    assert controller.target_share() == pytest.approx(0.25)


def test_realised_bounds_use_the_observed_server_ttft() -> None:
    """A race the server won reveals the counterfactual ceiling exactly."""
    profiles = Profiles.prior("MacBook Pro M1 Max", "together-13b")
    ctx = DispatchContext(profiles, CostModel())
    budget = Budget(share=0.5, resource="server")
    outcome = RequestOutcome(
        request=RequestFeatures(prompt_tokens=2000),
        plan=Plan((Start("remote"),), action="remote"),
        endpoints=(EndpointOutcome("remote", 0.0, 0.7, 5.0, input_tokens=2000, output_tokens=90),),
        winner="remote",
        ttft_s=0.7,
        output_tokens=90,
        cost=ctx.cost_model.cost(server_in=2000, server_out=90),
    )
    floor, ceiling = budget.realised_bounds(ctx, outcome)
    expected = resolve_action(
        RACE,
        server_ttft_s=0.7,
        local_begin_s=0.0,
        prefill_s=profiles.device.predict_ttft_s(2000),
        prompt_tokens=2000,
        output_tokens=90,
        cost_model=ctx.cost_model,
    )
    assert floor == 0.0
    assert ceiling == pytest.approx(budget.spend(expected.cost))
    # The device (4 s for 2000 tokens) loses to a 0.7 s server: racing bills the whole answer.
    assert ceiling == pytest.approx(ctx.cost_model.server_usd(2000, 90))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8000), st.floats(0, 20), st.sampled_from(["server", "device", "unified"]))
def test_expected_bounds_are_ordered(prompt: int, queue: float, resource: str) -> None:
    ctx = DispatchContext(Profiles.prior("Galaxy S25", "replicate-70b"), CostModel(usd_per_j=1e-5))
    floor, ceiling = Budget(share=0.5, resource=resource).bounds(ctx, prompt, queue, 200.0)  # type: ignore[arg-type]
    assert 0.0 <= floor <= ceiling


def test_the_slow_in_flight_requests_bias_is_corrected_by_littles_law() -> None:
    """Requests whose settled allowance beats what was committed stay in flight longest; the
    controller must not mistake their standing surprise for overspending."""
    rng = random.Random(1)

    def run(correct: bool) -> float:
        controller = BudgetController(Budget(share=0.5))
        in_flight: list[tuple[int, object, float, float]] = []
        spent = allowed = 0.0  # the truth, in flight or not (as a replay measures it)
        for now in range(3_000):
            start = rng.random() < controller.target_share()
            key = object()
            slow = rng.random() < 0.1  # a slow request: its true ceiling is 5x the others'
            ceiling = 5.0 if slow else 1.0
            spend = 1.4 if start else 0.0  # known when planned; the ceiling is not
            controller.commit(key, spend=spend, floor=0.0, ceiling=1.4)
            in_flight.append((now + (500 if slow else 1), key, spend, ceiling))
            spent += spend
            allowed += 0.5 * ceiling
            for item in [i for i in in_flight if i[0] <= now]:
                in_flight.remove(item)
                controller.record(item[2], 0.0, item[3], key=item[1])
            if not correct:
                controller._lagged = [0.0, 0.0, 0.0]
        return spent / allowed

    assert run(correct=True) == pytest.approx(1.0, abs=0.01)
    assert run(correct=False) < 0.97  # without it, the slow ones' surprise reads as overspend


def test_realised_bounds_average_an_unseen_device_over_its_spread() -> None:
    """A server-only request's ceiling: a device that might have won decodes the whole answer,
    so the mean over the device's spread exceeds the ceiling at its mean TTFT."""
    ctx = DispatchContext(Profiles.prior("Galaxy S25", "replicate-70b"), CostModel(usd_per_j=1e-4))
    budget = Budget(share=0.5, resource="device")
    prompt = 1000
    mean_ttft = ctx.profiles.device.predict_ttft_s(prompt)
    server_ttft = 0.9 * mean_ttft  # at its mean the device loses; at times it would win
    outcome = RequestOutcome(
        request=RequestFeatures(prompt_tokens=prompt),
        plan=Plan((Start("remote"),), "remote"),
        endpoints=(EndpointOutcome("remote", 0.0, server_ttft, server_ttft + 5.0),),
        winner="remote",
        ttft_s=server_ttft,
        output_tokens=100,
        cost=Cost(),
    )
    _, ceiling = budget.realised_bounds(ctx, outcome)
    at_mean = resolve_action(
        RACE,
        server_ttft_s=server_ttft,
        local_begin_s=0.0,
        prefill_s=mean_ttft,
        prompt_tokens=prompt,
        output_tokens=100,
        cost_model=ctx.cost_model,
    ).cost.device_j
    assert len(set(ctx.profiles.device.spread())) > 1
    assert ceiling > at_mean


def test_the_expected_unified_floor_averages_over_answer_lengths() -> None:
    """min(server cost, device cost) is concave in the answer length: its mean lies below its
    value at the mean length, which would overstate the floor and shrink the headroom."""
    ctx = DispatchContext(
        Profiles.prior("2-core x86 cloud VM", "together-13b"), CostModel(usd_per_j=1e-5)
    )
    unified = Budget(share=0.5, resource="unified")
    output = ctx.profiles.output_lengths.expected()
    at_mean = unified.floor(1000, output, ctx.cost_model)
    expected = unified.expected_floor(ctx, 1000, output)
    assert 0.5 * at_mean < expected < at_mean
    assert Budget(share=0.5, resource="server").expected_floor(ctx, 1000, output) == 0.0
