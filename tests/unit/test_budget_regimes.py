"""Budget tracking outside the regimes the policies were written for."""

from __future__ import annotations

from langchain_disco.scheduling import Budget, policy_from_name
from langchain_disco.sim import SimConfig, Simulator, load_trace

FAST_SERVER = SimConfig(device="MacBook Pro M1 Max", server="anyscale-13b")
"""A server about 10x faster than the device, with a short tail: the device almost never wins
a race, so racing costs the device almost nothing."""


def _share(config: SimConfig, name: str, budget: Budget, n: int = 3000) -> float:
    sim = Simulator(load_trace(limit=n), config)
    return sim.run(policy_from_name(name, budget), budget).metrics.realised_share


def test_generalized_tracks_a_device_budget_when_racing_is_nearly_free():
    """Before: 0.28 at b = 0.5 and 0.9 (what no price bought was never spent)."""
    for b in (0.3, 0.5, 0.9):
        share = _share(FAST_SERVER, "generalized", Budget(share=b, resource="device"))
        assert abs(share / b - 1) < 0.03, (b, share)


def test_a_paper_policy_out_of_its_regime_stays_at_its_floor():
    """The length threshold always starts the device, so on a device budget it cannot spend
    less than always-race (share 1); before, a target of 0 sent every request to the device
    alone (share 27)."""
    share = _share(FAST_SERVER, "length_threshold", Budget(share=0.3, resource="device"))
    assert 0.97 < share < 1.03
    # And the wait time, which always starts the server, on a server budget.
    share = _share(SimConfig(), "wait_time", Budget(share=0.3, resource="server"))
    assert 0.97 < share < 1.03
