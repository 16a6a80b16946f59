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
