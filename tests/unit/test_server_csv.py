"""Your own server measurements in `disco bench sim`: the llmperf columns or ttft_s[,gap_s]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_disco.bench._sim_options import SimOptions
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import _data
from langchain_disco.sim import Simulator, load_trace
from langchain_disco.sim.server_csv import bundled_median_gap_s, read_server_measurements
from tests._cli import assert_clean_failure, invoke


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_llmperf_csv_is_read_as_is(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "my-api.csv",
        "provider,model,input_tokens,output_tokens,ttft_s,inter_token_latency_s\n"
        "me,m,550,151,0.5,0.01\nme,m,550,151,2.5,0.02\n",
    )
    measured = read_server_measurements(path)
    assert measured.name == "my-api" and measured.gap_from_file
    assert measured.pool == ((0.5, 0.01), (2.5, 0.02))


def test_a_minimal_csv_without_gaps_decodes_at_the_bundled_median(tmp_path: Path) -> None:
    measured = read_server_measurements(write(tmp_path, "t.csv", "ttft_s\n0.3\n0.0\n1.2\n"))
    assert not measured.gap_from_file
    gap = bundled_median_gap_s()
    assert measured.pool == ((0.3, gap), (0.0, gap), (1.2, gap))
    gaps = [s.inter_token_s for rows in _data.server_samples().values() for s in rows]
    assert min(gaps) < gap < max(gaps)


def test_a_minimal_csv_with_gaps(tmp_path: Path) -> None:
    measured = read_server_measurements(write(tmp_path, "t.csv", "ttft_s,gap_s\n0.3,0.02\n"))
    assert measured.pool == ((0.3, 0.02),) and measured.gap_from_file


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("latency\n0.3\n", ["no ttft_s column", "found: latency"]),
        ("ttft_s,gap_s\n0.3,0.01\nslow,0.01\n", ["row 3", "ttft_s = 'slow'", "fix or remove"]),
        ("ttft_s,gap_s\n0.3,0\n", ["row 2", "gap_s = '0'", "> 0"]),
        ("ttft_s\n-1\n", ["row 2", ">= 0"]),
        ("ttft_s\nnan\n", ["row 2", "ttft_s = 'nan'"]),
        ("ttft_s\n", ["no rows"]),
    ],
)
def test_a_bad_file_names_the_row_column_and_fix(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(ConfigError) as caught:
        read_server_measurements(path, option="--server-prior")
    message = str(caught.value)
    assert "--server-prior" in message and "bad.csv" in message
    for fragment in fragments:
        assert fragment in message


def test_the_simulator_draws_the_server_from_the_file_and_starts_from_it(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.csv", "ttft_s,gap_s\n0.25,0.01\n0.75,0.02\n9.0,0.03\n")
    options = SimOptions(server=str(path), requests=200, policies=("generalized",)).validate()
    config = options.sim_config(seed=0)
    assert options.server_name == "mine"
    assert config.server_pool == ((0.25, 0.01), (0.75, 0.02), (9.0, 0.03))
    assert config.prior_server_pool == config.server_pool  # its own prior by default
    sim = Simulator(load_trace(limit=200), config)
    assert set(sim.server_ttft_s) <= {0.25, 0.75, 9.0}
    assert set(sim.server_gap_s) <= {0.01, 0.02, 0.03}


def test_a_file_prior_beside_a_bundled_server(tmp_path: Path) -> None:
    path = write(tmp_path, "prior.csv", "ttft_s\n0.4\n")
    config = SimOptions(server="together-13b", server_prior=str(path)).validate().sim_config(0)
    assert config.server_pool is None and config.server == "together-13b"
    assert config.prior_server == "prior (bundled median gap)"
    assert config.prior_server_pool == ((0.4, bundled_median_gap_s()),)


def test_bench_sim_accepts_a_measurements_file_and_labels_results_with_it(tmp_path: Path) -> None:
    path = write(tmp_path, "our-gateway.csv", "ttft_s,gap_s\n0.3,0.01\n0.6,0.012\n2.0,0.02\n")
    out = tmp_path / "out"
    args = ["--requests", "200", "--policies", "generalized", "--budgets", "0.5"]
    code, output = invoke("bench", "sim", "--server", str(path), *args, "--out", str(out))
    assert code == 0, output
    assert "our-gateway" in output
    config = json.loads((out / "results.json").read_text())
    assert "our-gateway" in json.dumps(config)


def test_bench_sim_refuses_a_missing_measurements_file(tmp_path: Path) -> None:
    code, output = invoke("bench", "sim", "--server", str(tmp_path / "nope.csv"))
    assert_clean_failure(code, output, "--server", "no such file")
