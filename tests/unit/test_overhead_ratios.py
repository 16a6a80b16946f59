"""Ratios to ChatOpenAI and the Results section of docs/overhead.md, from made-up rows (no
server): the arithmetic and the page's shape are checked where a run's noise cannot hide them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from langchain_disco.bench._concurrency import LevelResult, rounds_for
from langchain_disco.bench._overhead_page import write_page
from langchain_disco.bench._ratios import ratios_to
from langchain_disco.bench.overhead import OverheadOptions, OverheadResult, parse_paths
from langchain_disco.errors import ConfigError


def _row(path: str, level: int, *, cpu_us: float, ttft_ms: float, growth_kb: int) -> LevelResult:
    return LevelResult(
        level=level,
        path=path,
        completed=level,
        errors=0,
        wall_s=1.0,
        ttft_mean_s=ttft_ms / 1e3,
        latency_mean_s=0.1,
        latency_p50_s=0.1,
        latency_p99_s=0.2,
        cpu_per_token_s=cpu_us / 1e6,
        gap_mean_s=1e-3,
        rss_before_bytes=100 * 2**20,
        rss_peak_bytes=100 * 2**20 + growth_kb * 1024,
    )


ROWS = [
    _row("chatopenai", 1, cpu_us=400, ttft_ms=4, growth_kb=0),
    _row("disco", 1, cpu_us=500, ttft_ms=6, growth_kb=64),
    _row("chatopenai", 10, cpu_us=300, ttft_ms=20, growth_kb=1000),
    _row("disco", 10, cpu_us=450, ttft_ms=25, growth_kb=2000),
    _row("direct", 100, cpu_us=250, ttft_ms=200, growth_kb=7000),  # no baseline at 100
]


def test_ratios_divide_each_figure_by_the_baselines_at_the_same_level() -> None:
    ratios = {(r["level"], r["path"]): r for r in ratios_to(ROWS, "chatopenai")}

    assert set(ratios) == {(1, "chatopenai"), (1, "disco"), (10, "chatopenai"), (10, "disco")}
    assert ratios[(1, "disco")]["cpu_per_token_s"] == pytest.approx(1.25)
    assert ratios[(10, "disco")]["cpu_per_token_s"] == pytest.approx(1.5)
    assert ratios[(10, "disco")]["ttft_mean_s"] == pytest.approx(1.25)
    assert ratios[(10, "disco")]["memory_per_stream_bytes"] == pytest.approx(2.0)
    # The baseline grew no memory at one stream: no ratio rather than a division by zero.
    assert ratios[(1, "disco")]["memory_per_stream_bytes"] is None


def test_memory_per_stream_is_the_growth_over_the_streams_in_flight() -> None:
    assert ROWS[3].memory_per_stream_bytes == pytest.approx(2000 * 1024 / 10)


def test_a_level_runs_in_rounds_until_it_has_the_minimum_streams() -> None:
    assert [rounds_for(level, 20) for level in (1, 3, 10, 20, 500)] == [20, 7, 2, 1, 1]


def test_parse_paths_keeps_report_order_and_names_the_valid_paths() -> None:
    assert parse_paths("disco, chatopenai") == ("chatopenai", "disco")
    with pytest.raises(ConfigError, match=r"curl is not a path.*disco-race"):
        parse_paths("disco,curl")


def test_the_results_section_is_replaced_and_the_rest_of_the_page_kept(tmp_path: Path) -> None:
    page = tmp_path / "overhead.md"
    page.write_text("# Overhead\n\nintro\n\n## Results\n\nold\n\n## Reading\n\nmine\n")
    options = OverheadOptions(levels=(1, 10), paths=("chatopenai", "disco"), min_streams=20)
    machine = {"cores": 2, "load_average_before": [1.5, 1.0, 0.5], "packages": {}}
    result = OverheadResult(options, machine, [], ROWS[:4], skipped={"litellm": "not here"})

    write_page(result, page, today=dt.date(2026, 12, 3))

    text = page.read_text()
    assert text.startswith("# Overhead\n\nintro\n\n## Results\n\nMeasured 2026-12-03")
    assert text.endswith("## Reading\n\nmine\n") and "old" not in text
    assert "1.50, 1.00, 0.50 before the run" in text
    assert "--paths chatopenai,disco" in text and "--min-streams 20" in text
    assert "- skipped **litellm**: not here" in text
    assert "| 10 | disco | 1.25 | 1.00 | 1.00 | 1.50 | 2.00 |" in text
