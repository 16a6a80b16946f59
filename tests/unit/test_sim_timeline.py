"""One migrated answer token by token (`sim.timeline`), and its plot in `disco bench sim`.

The timeline is expanded from the same `Playout` the run's metrics come from, so it is checked
against those metrics (delivered gaps, tokens per endpoint, the buffer the policy was shown).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from langchain_disco.bench._plots import plot_token_timeline, plots_available, write_plots
from langchain_disco.bench.sim import SimOptions, run_sim
from langchain_disco.scheduling import CostModel, Race
from langchain_disco.scheduling.migration import CostAwareMigration
from langchain_disco.sim import SimConfig, SimResult, Simulator, load_trace
from langchain_disco.sim.delivery import Segment, buffered_tokens, unmoved
from langchain_disco.sim.timeline import MigratedStream, token_timeline

pytestmark = pytest.mark.timeout(60)

SERVER_EXPENSIVE = SimConfig(device="MacBook Pro M1 Max", server="together-13b")
DEVICE_EXPENSIVE = SimConfig(
    device="Galaxy S25", server="together-13b", cost_model=CostModel(usd_per_j=1e-4)
)
PACE = 10.0
N = 400
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(not plots_available(), reason="matplotlib not installed")


@functools.cache
def _run(config: SimConfig, pace: float | None) -> SimResult:
    sim = Simulator(load_trace(limit=N), config)
    return sim.run(Race(), migration=CostAwareMigration(), pace_tok_s=pace)


def _stream(config: SimConfig, pace: float | None) -> tuple[SimResult, MigratedStream]:
    result = _run(config, pace)
    assert result.first_migration is not None, "no request migrated"
    return result, result.first_migration


@pytest.mark.parametrize(
    ("config", "pace"),
    [(SERVER_EXPENSIVE, PACE), (SERVER_EXPENSIVE, None), (DEVICE_EXPENSIVE, PACE)],
    ids=["server-to-device-paced", "server-to-device-eager-probe", "device-to-server-paced"],
)
def test_a_migrated_streams_timeline_is_consistent_with_its_run(
    config: SimConfig, pace: float | None
) -> None:
    result, stream = _stream(config, pace)
    i = stream.index
    assert i == result.migrated.index(True)  # the first migrated request in trace order
    line = stream.timeline()
    o = load_trace(limit=N).output_tokens[i]

    assert line.tokens == o
    assert list(line.delivered_s) == sorted(line.delivered_s)  # in order
    assert all(d >= g for g, d in zip(line.generated_s, line.delivered_s, strict=True))
    # The endpoint switches exactly once, right after the migration token.
    k = line.handover_token
    assert k is not None and k == result.migration_token[i] and 1 <= k < o
    assert line.endpoint == (stream.source,) * k + (stream.target,) * (o - k)
    assert stream.source == result.winner[i] != stream.target
    moved = result.local_tokens if stream.target == "local" else result.remote_tokens
    assert moved[i] == o - k
    assert line.decided_s is not None and line.source_stop_s is not None
    assert line.decided_s <= line.source_stop_s
    # A hedged hand-over stops the source when the target's first token comes (at
    # generated_s[k]); a plain one stops it at the decision, before.
    assert line.generated_s[k - 1] <= line.source_stop_s <= line.generated_s[k]
    assert line.generated_s[k] == pytest.approx(line.target_first_token_s)
    # The delivered gaps are the run's own metrics, token by token.
    gaps = [b - a for a, b in itertools.pairwise(line.delivered_s)]
    expanded = [gap for gap, count in result.tbt_runs[i] for _ in range(count)]
    assert gaps == pytest.approx(expanded, abs=1e-9)
    assert line.delivered_s[-1] == pytest.approx(stream.playout.delivered.last_s)
    assert line.delivered_s[0] == pytest.approx(result.ttft_s[i])
    # The buffer: never negative, empty at the end, and before the hand-over what the policy saw.
    levels = [n for _, n in line.buffer_steps()]
    assert min(levels) >= 0 and levels[-1] == 0
    if pace is None:
        assert max(levels) == 0
    else:
        source_gap_s = stream.playout.segments[0].gap_s
        for j in range(1, k + 1):
            seen = buffered_tokens(j, source_gap_s, pace)
            assert line.buffered(line.generated_s[j - 1]) == seen


def test_paced_buffer_grows_while_the_source_outruns_the_pace() -> None:
    line = token_timeline(
        [Segment(0.5, 0.01, 20), Segment(2.0, 0.05, 10)], ("remote", "local"), PACE
    )
    assert line.endpoint == ("remote",) * 20 + ("local",) * 10
    assert line.delivered_s[:3] == pytest.approx((0.5, 0.6, 0.7))
    assert line.buffered(0.5 + 19 * 0.01) == 18  # 20 generated, 2 delivered (0.5, 0.6 s)
    assert line.delivered_s[20] == pytest.approx(max(2.0, 0.5 + 20 / PACE))
    end_s, level = line.buffer_steps()[-1]
    assert end_s == pytest.approx(line.delivered_s[-1]) and level == 0


def test_an_unmigrated_answer_is_one_endpoint_with_no_hand_over() -> None:
    play = unmoved(
        first_token_s=0.4,
        source_gap_s=0.02,
        output_tokens=12,
        pace_tok_s=None,
        cost=CostModel().cost(server_in=10, server_out=12),
    )
    line = MigratedStream(0, 10, "remote", "local", None, play).timeline()
    assert line.endpoint == ("remote",) * 12
    assert line.delivered_s == line.generated_s
    assert line.handover_token is None and line.decided_s is None


@needs_matplotlib
def test_the_token_timeline_is_drawn_as_png(tmp_path: Path) -> None:
    _, stream = _stream(DEVICE_EXPENSIVE, PACE)
    path = plot_token_timeline(stream, tmp_path / "timeline.png", title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_bench_sim_with_migration_plots_the_first_migrated_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = SimOptions(
        requests=120, budgets=(0.5,), policies=("race",), migration=True, pace_tok_s=PACE
    )
    result = run_sim(options)
    example = result.migrated_example
    assert example is not None and (example.policy, example.seed, example.budget) == (
        "race",
        0,
        0.5,
    )
    assert example.stream.playout.migrated
    if not plots_available():
        return
    names = {p.name for p in write_plots(result, tmp_path / "with")}
    assert "migration-timeline-b0.5.png" in names
    assert (tmp_path / "with" / "migration-timeline-b0.5.png").read_bytes()[:8] == PNG_MAGIC
    # A run in which nothing migrated still writes its other plots (not redrawn here: slow).
    for name in ("plot_ttft_cdf", "plot_ttft_vs_budget", "plot_migration_cost"):
        monkeypatch.setattr(f"langchain_disco.bench._plots.{name}", lambda _, path: path)
    names = {p.name for p in write_plots(replace(result, migrated_example=None), tmp_path / "w")}
    assert "migration-cost-b0.5.png" in names and "migration-timeline-b0.5.png" not in names


def test_bench_sim_notes_when_no_answer_migrated() -> None:
    # Device-only answers in the server-constrained regime: moving them to the server never pays.
    options = SimOptions(requests=100, budgets=(0.5,), policies=("local",), migration=True)
    result = run_sim(options)
    assert result.migrated_example is None
    assert any("no token timeline plot" in note for note in result.notes)
