"""The pure scheduling pieces: cost model and the baseline dispatch plans."""

from __future__ import annotations

import pytest

from langchain_disco import CostModel, LocalOnly, Plan, Race, RemoteOnly, RequestFeatures, Start
from langchain_disco.scheduling.dispatch import policy_for_mode


def test_server_cost_bills_input_and_output_per_million_tokens() -> None:
    model = CostModel(price_in_per_mtok=2.0, price_out_per_mtok=8.0)
    assert model.server_usd(1_000_000, 0) == pytest.approx(2.0)
    assert model.server_usd(500, 250) == pytest.approx((2.0 * 500 + 8.0 * 250) / 1e6)


def test_unified_cost_converts_device_energy_with_the_exchange_rate() -> None:
    model = CostModel(
        price_in_per_mtok=1.0,
        price_out_per_mtok=1.0,
        energy_prefill_j_per_token=0.5,
        energy_decode_j_per_token=2.0,
        usd_per_j=0.01,
    )
    cost = model.cost(server_in=1_000_000, server_out=0, device_in=10, device_out=5)
    assert cost.server_usd == pytest.approx(1.0)
    assert cost.device_j == pytest.approx(10 * 0.5 + 5 * 2.0)
    assert cost.unified_usd == pytest.approx(1.0 + 15.0 * 0.01)


@pytest.mark.parametrize(
    ("mode", "roles"),
    [("local", ("local",)), ("remote", ("remote",)), ("race", ("local", "remote"))],
)
def test_each_mode_maps_to_its_baseline_plan(mode: str, roles: tuple[str, ...]) -> None:
    plan = policy_for_mode(mode).plan(RequestFeatures(prompt_tokens=100))  # type: ignore[arg-type]
    assert plan.endpoints == roles
    assert all(s.at_s == 0 for s in plan.starts)


def test_baselines_ignore_the_request() -> None:
    short, long = RequestFeatures(prompt_tokens=1), RequestFeatures(prompt_tokens=10_000)
    for policy in (LocalOnly(), RemoteOnly(), Race()):
        assert policy.plan(short) == policy.plan(long)


def test_invalid_plans_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Plan((), action="none")
    with pytest.raises(ValueError, match="at most once"):
        Plan((Start("local"), Start("local", 1.0)), action="dup")
    with pytest.raises(ValueError, match=">= 0"):
        Plan((Start("remote", -1.0),), action="neg")


def test_cached_input_is_billed_at_the_cached_price() -> None:
    model = CostModel(price_in_per_mtok=2.0, price_cached_in_per_mtok=0.5, price_out_per_mtok=8.0)
    assert model.server_usd(1000, 100, cached_input=768) == pytest.approx(
        (2.0 * 232 + 0.5 * 768 + 8.0 * 100) / 1e6
    )
    cost = model.cost(server_in=1000, server_out=100, server_cached_in=768)
    assert cost.server_usd == pytest.approx(model.server_usd(1000, 100, 768))


def test_the_default_cached_price_is_half_the_default_input_price() -> None:
    model = CostModel()
    assert model.price_cached_in_per_mtok == pytest.approx(model.price_in_per_mtok / 2)
    assert model.server_usd(1_000_000, 0, cached_input=1_000_000) == pytest.approx(0.075)


def test_nothing_cached_bills_exactly_as_before() -> None:
    model = CostModel()
    assert model.server_usd(1234, 56) == model.server_usd(1234, 56, cached_input=0)
    assert model.server_usd(1234, 56) == (0.15 * 1234 + 0.60 * 56) / 1e6


def test_cached_input_is_clamped_to_the_prompt_it_is_part_of() -> None:
    model = CostModel(price_in_per_mtok=2.0, price_cached_in_per_mtok=0.5, price_out_per_mtok=8.0)
    assert model.server_usd(100, 0, cached_input=500) == model.server_usd(100, 0, cached_input=100)
    assert model.server_usd(100, 0, cached_input=-5) == model.server_usd(100, 0)
    # Tokens taken off a bill (negative input) have nothing cached in them.
    assert model.server_usd(-100, 0, cached_input=50) == pytest.approx(-2.0 * 100 / 1e6)
