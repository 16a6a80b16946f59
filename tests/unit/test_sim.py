"""Trace replay: traces, determinism, race semantics and the hindsight oracle (fast checks).

The 10k-request acceptance runs (budget tracking, paper policies vs baselines, ours vs the
paper's) are in `test_sim_acceptance.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_disco.scheduling import (
    Budget,
    CostModel,
    Generalized,
    LengthThreshold,
    LocalOnly,
    Race,
    RandomSplit,
    RemoteOnly,
    WaitTime,
)
from langchain_disco.sim import SimConfig, Simulator, load_trace, percentile
from langchain_disco.sim.trace import Trace

SERVER = SimConfig(device="MacBook Pro M1 Max", server="together-13b")


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_trace(limit=2000)


def test_bundled_trace_is_the_azure_conversation_trace() -> None:
    full = load_trace()
    assert len(full) == 19_366
    assert full.arrival_s[0] == 0.0
    assert list(full.arrival_s) == sorted(full.arrival_s)
    assert 3400 < full.span_s < 3600  # about one hour
    assert sum(full.prompt_tokens) / len(full) == pytest.approx(1155, rel=0.01)
    assert sum(full.output_tokens) / len(full) == pytest.approx(211, rel=0.01)


def test_any_csv_with_arrival_prompt_output_columns_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n2.5,10,3\n0.5,20,0\n")
    t = load_trace(path)
    assert t.arrival_s == (0.0, 2.0)
    assert t.prompt_tokens == (20, 10)
    assert t.output_tokens == (1, 3)  # at least one token, so every request has a TTFT
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        load_trace(bad)


def test_repeat_keeps_the_rate(trace: Trace) -> None:
    longer = trace.repeat_to(5000)
    assert len(longer) == 5000
    assert list(longer.arrival_s) == sorted(longer.arrival_s)
    assert longer.span_s / 5000 == pytest.approx(trace.span_s / len(trace), rel=0.01)


def test_replay_is_deterministic_for_a_seed(trace: Trace) -> None:
    budget = Budget(share=0.4, resource="server")
    first = Simulator(trace, SERVER).run(Generalized(budget), budget)
    again = Simulator(trace, SERVER).run(Generalized(budget), budget)
    other = Simulator(trace, SimConfig(device=SERVER.device, server=SERVER.server, seed=1))
    assert first.ttft_s == again.ttft_s
    assert first.metrics == again.metrics
    assert other.run(Generalized(budget), budget).ttft_s != first.ttft_s


def test_race_is_never_slower_than_the_server_alone(trace: Trace) -> None:
    sim = Simulator(trace, SERVER)
    race, remote = sim.run(Race()), sim.run(RemoteOnly())
    assert all(r <= s + 1e-12 for r, s in zip(race.ttft_s, remote.ttft_s, strict=True))
    assert set(race.winner) == {"local", "remote"}


def test_run_metrics_follow_design_section_5(trace: Trace) -> None:
    budget = Budget(share=0.5, resource="server")
    result = Simulator(trace, SERVER).run(LengthThreshold(budget), budget)
    m = result.metrics
    assert m.n == len(trace)
    assert m.p50_ttft_s <= m.p90_ttft_s <= m.p99_ttft_s
    assert m.p99_ttft_s == percentile(result.ttft_s, 99)
    assert 0 < m.mean_tbt_s <= m.p99_tbt_s <= m.max_stall_s
    assert m.mean_cost_usd == pytest.approx(sum(result.unified_usd) / len(trace))
    assert 0 < m.device_utilisation < 1
    assert 0 < m.realised_share < 1


def test_device_only_bills_energy_and_server_only_bills_money(trace: Trace) -> None:
    sim = Simulator(trace, SERVER)
    local, remote = sim.run(LocalOnly()), sim.run(RemoteOnly())
    assert local.metrics.mean_server_usd == 0 < local.metrics.mean_device_j
    assert remote.metrics.mean_device_j == 0 < remote.metrics.mean_server_usd


def test_default_device_count_gives_moderate_load(trace: Trace) -> None:
    sim = Simulator(trace, SERVER)
    util = sim.run(LocalOnly()).metrics.device_utilisation
    assert 0.2 < util < 0.4  # sized for 30% when every request runs on the device


@pytest.mark.parametrize(
    ("config", "resource", "policies"),
    [
        (SERVER, "server", (RandomSplit, LengthThreshold, Generalized)),
        (
            SimConfig(device="Galaxy S25", server="replicate-70b", cost_model=CostModel(1e-4)),
            "device",
            (RandomSplit, WaitTime, Generalized),
        ),
    ],
)
def test_the_oracle_is_never_worse_than_a_policy(
    trace: Trace, config: SimConfig, resource: str, policies: tuple[type, ...]
) -> None:
    sim = Simulator(trace, config)
    budget = Budget(share=0.3, resource=resource)  # type: ignore[arg-type]
    for cls in policies:
        result = sim.run(cls(budget), budget)
        oracle = sim.oracle(budget, spend_limit=sum(result.spend))
        assert oracle.mean_ttft_s <= result.metrics.mean_ttft_s
        assert oracle.p99_ttft_s <= result.metrics.p99_ttft_s
        assert oracle.mean_spend * len(trace) <= sum(result.spend) * (1 + 1e-9)


def test_oracle_at_zero_and_full_budget(trace: Trace) -> None:
    sim = Simulator(trace, SERVER)
    none = sim.oracle(Budget(share=0.0, resource="server"))
    full = sim.oracle(Budget(share=1.0, resource="server"))
    local = sim.run(LocalOnly(), Budget(share=0.0, resource="server"))
    assert none.mean_spend == 0.0
    # Without queueing the oracle's device-only TTFT is at most the simulated one.
    assert none.mean_ttft_s <= local.metrics.mean_ttft_s
    assert full.mean_ttft_s <= sim.run(Race()).metrics.mean_ttft_s
