"""`disco bench sim` and `disco profile show|reset`: happy paths with small numbers, bad inputs.

Bad inputs must end with a clear message naming the option and a non-zero exit, never a
traceback. The simulator runs for real on the bundled Azure trace (a few hundred requests).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from langchain_disco.bench._plots import plots_available
from langchain_disco.scheduling import Profiles, ProfileStore, Race
from langchain_disco.sim import SimConfig, Simulator, load_trace
from tests._cli import assert_clean_failure, invoke

pytestmark = pytest.mark.timeout(120)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# -- disco bench sim ------------------------------------------------------------------------


def test_bench_help_lists_sim() -> None:
    code, output = invoke("bench", "--help")
    assert code == 0, output
    assert "sim" in output and "overhead" in output


def test_bench_sim_help_names_the_trace_columns() -> None:
    code, output = invoke("bench", "sim", "--help")
    assert code == 0, output
    assert "arrival_s,prompt_tokens,output_tokens" in output


def test_bench_sim_small_run_writes_tables_csv_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    code, output = invoke(
        "bench",
        "sim",
        "--requests",
        "300",
        "--budgets",
        "0.3,0.7",
        "--policies",
        "random,length_threshold,oracle",
        "--seeds",
        "0,1",
        "--out",
        str(out),
    )

    assert code == 0, output
    assert "budget b=0.3" in output and "budget b=0.7" in output
    rows = read_csv(out / "results.csv")
    assert [(r["budget"], r["policy"]) for r in rows] == [
        (b, p) for b in ("0.3", "0.7") for p in ("random", "length_threshold", "oracle")
    ]
    for row in rows:
        assert int(row["n"]) == 600  # two seeds, pooled
        assert float(row["mean_ttft_s"]) > 0 and float(row["p99_ttft_s"]) > 0
    oracle = {r["budget"]: float(r["mean_ttft_s"]) for r in rows if r["policy"] == "oracle"}
    for row in rows:
        if row["policy"] == "oracle":
            assert row["realised_share"] == ""  # the oracle reports TTFT only
            continue
        ttft = [float(row[k]) for k in ("p50_ttft_s", "p90_ttft_s", "p99_ttft_s")]
        assert ttft == sorted(ttft)
        assert 0 <= float(row["realised_share"]) <= 1
        assert float(row["mean_cost_usd"]) > 0 and float(row["max_stall_s"]) >= 0
        assert float(row["mean_vs_oracle"]) == pytest.approx(
            float(row["mean_ttft_s"]) / oracle[row["budget"]]
        )
        assert not math.isnan(float(row["mean_vs_single"]))

    data = json.loads((out / "results.json").read_text())
    assert data["options"]["regime"] == "server-constrained"
    assert data["options"]["budget_resource"] == "server"
    assert data["options"]["seeds"] == [0, 1]
    assert len(data["rows"]) == 6
    assert data["options"]["command"].startswith("disco bench sim --regime server-constrained")

    pngs = {p.name for p in out.glob("*.png")}
    if not plots_available():  # matplotlib comes with the bench extra
        assert not pngs
        assert "plots skipped: matplotlib is not installed" in " ".join(output.split())
        return
    assert pngs == {"ttft-cdf-b0.3.png", "ttft-vs-budget.png"}  # 0.3: closest to 0.5, lowest
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_bench_sim_without_matplotlib_still_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("langchain_disco.bench._plots.plots_available", lambda: False)
    out = tmp_path / "sim"
    args = ["--requests", "200", "--budgets", "0.5", "--policies", "race", "--out", str(out)]
    code, output = invoke("bench", "sim", *args)
    assert code == 0, output
    flat = " ".join(output.split())
    assert "plots skipped: matplotlib is not installed" in flat
    assert "pip install 'langchain-disco[bench]'" in flat  # not eaten as rich markup
    assert (out / "results.csv").exists() and not list(out.glob("*.png"))


def test_bench_sim_in_two_processes_gives_the_same_results(tmp_path: Path) -> None:
    args = ["--requests", "300", "--budgets", "0.2,0.8", "--policies", "all", "--no-plots"]
    for jobs in ("1", "2"):
        code, output = invoke("bench", "sim", *args, "--jobs", jobs, "--out", str(tmp_path / jobs))
        assert code == 0, output
    assert read_csv(tmp_path / "1" / "results.csv") == read_csv(tmp_path / "2" / "results.csv")


def test_bench_sim_replays_a_user_trace_in_another_regime(tmp_path: Path) -> None:
    trace = tmp_path / "mine.csv"
    lines = ["arrival_s,prompt_tokens,output_tokens"]
    lines += [f"{i * 0.5},{100 + 37 * i},{20 + i}" for i in range(120)]
    trace.write_text("\n".join(lines) + "\n")
    out = tmp_path / "sim"

    code, output = invoke(
        "bench",
        "sim",
        "--trace",
        str(trace),
        "--regime",
        "device-constrained",
        "--budgets",
        "0.5",
        "--policies",
        "local,remote,wait_time,generalized",
        "--no-plots",
        "--out",
        str(out),
    )

    assert code == 0, output
    assert "fewer than --requests" in " ".join(output.split())  # 120 < the default 10,000
    rows = read_csv(out / "results.csv")
    assert [r["policy"] for r in rows] == ["local", "remote", "wait_time", "generalized"]
    assert all(r["regime"] == "device-constrained" and r["n"] == "120" for r in rows)
    assert not list(out.glob("*.png"))
    data = json.loads((out / "results.json").read_text())
    assert data["options"]["budget_resource"] == "device"
    assert data["trace"] == {"name": "mine", "requests": 120, "span_s": 59.5}


def test_bench_sim_with_migration_reports_cost_with_and_without(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    code, output = invoke(
        "bench",
        "sim",
        "--requests",
        "300",
        "--budgets",
        "0.5",
        "--policies",
        "race,generalized",
        "--migration",
        "cost",
        "--pace-tok-s",
        "10",
        "--out",
        str(out),
    )

    assert code == 0, output
    assert "token-level migration" in output
    rows = read_csv(out / "results.csv")
    race = next(r for r in rows if r["policy"] == "race")
    # Paced at 10 tok/s, a raced request's buffer soon hides the device's TTFT: the rest of
    # the answer moves off the server, and the cost falls below the same dispatch without.
    assert float(race["migration_rate"]) > 0
    assert float(race["mean_cost_usd"]) < float(race["mean_cost_without_migration_usd"])
    assert json.loads((out / "results.json").read_text())["options"]["pace_tok_s"] == 10
    if plots_available():
        assert (out / "migration-cost-b0.5.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--pace-tok-s", "0"], ["--pace-tok-s must be > 0"]),
        (["--migration", "always"], ["--migration"]),
        (["--policies", "fastest"], ["unknown policy 'fastest'", "length_threshold"]),
        (["--policies", ""], ["--policies is empty"]),
        (["--budgets", "0.5,1.5"], ["--budgets: 1.5 is outside [0, 1]"]),
        (["--budgets", "-0.1"], ["--budgets: -0.1 is outside [0, 1]"]),
        (["--budgets", "half"], ["--budgets: 'half' is not a number"]),
        (["--seeds", "one"], ["--seeds: 'one' is not a whole number"]),
        (["--trace", "/nonexistent/trace.csv"], ["--trace /nonexistent/trace.csv: no such file"]),
        (["--regime", "cheap"], ["--regime"]),
        (["--device", "Pixel 99"], ["--device 'Pixel 99' is not a measured device", "Galaxy S25"]),
        (["--server", "acme-7b"], ["--server 'acme-7b' is not a measured provider-size"]),
        (["--budgets", "0.1,0.9", "--cdf-budget", "0.5"], ["--cdf-budget 0.5 is not one of"]),
        (["--requests", "0"], ["--requests"]),
    ],
)
def test_bench_sim_bad_arguments_fail_clearly(
    args: list[str], fragments: list[str], tmp_path: Path
) -> None:
    assert_clean_failure(*invoke("bench", "sim", *args, "--out", str(tmp_path / "out")), *fragments)
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (
            "time,prompt,output\n0,10,10\n",
            ["trace columns", "arrival_s,prompt_tokens,output_tokens"],
        ),
        ("arrival_s,prompt_tokens,output_tokens\n0,ten,10\n", ["'ten'", "expected a CSV"]),
        ("arrival_s,prompt_tokens,output_tokens\n", ["has no requests"]),
    ],
)
def test_bench_sim_rejects_a_malformed_trace(
    content: str, fragments: list[str], tmp_path: Path
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(content)
    assert_clean_failure(
        *invoke("bench", "sim", "--trace", str(trace), "--out", str(tmp_path / "out")),
        *fragments,
    )


# -- disco profile --------------------------------------------------------------------------


@pytest.fixture
def learned(tmp_path: Path) -> Path:
    """A profile cache that learned from 200 raced requests of a simulated MacBook."""
    profiles = Profiles.prior("Galaxy S25", "together-13b")
    sim = Simulator(load_trace(limit=200), SimConfig(device="MacBook Pro M1 Max"))
    sim.run(Race(), profiles=profiles)
    path = tmp_path / "profiles.json"
    ProfileStore(path).save(profiles)
    return path


def test_bench_sim_starts_the_policies_from_a_learned_profile_cache(
    learned: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sim"
    args = ["bench", "sim", "--requests", "300", "--budgets", "0.5", "--no-plots"]
    code, output = invoke(*args, "--policies", "generalized", "--out", str(out))
    assert code == 0, output
    code, output = invoke(
        *args, "--policies", "generalized", "--profiles", str(learned), "--out", str(out / "l")
    )
    assert code == 0, output
    from_priors = read_csv(out / "results.csv")[0]
    from_learned = read_csv(out / "l" / "results.csv")[0]
    # Same requests, other starting knowledge (a phone prior that saw a laptop): other choices.
    assert from_learned["mean_ttft_s"] != from_priors["mean_ttft_s"]
    options = json.loads((out / "l" / "results.json").read_text())["options"]
    assert options["profiles"] == str(learned)


def test_bench_sim_with_a_missing_profile_cache_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    assert_clean_failure(
        *invoke("bench", "sim", "--profiles", str(missing), "--out", str(tmp_path / "o")),
        f"no profile cache at {missing}",
        "--profiles",
    )


def test_profile_show_prints_what_was_learned(learned: Path) -> None:
    code, output = invoke("profile", "show", "--path", str(learned))
    assert code == 0, output
    for fragment in ("Galaxy S25", "together-13b", "prefill tok/s", "p99", "answer", "prompt"):
        assert fragment in output


def test_profile_show_json_counts_observations(learned: Path) -> None:
    code, output = invoke("profile", "show", "--path", str(learned), "--json")
    assert code == 0, output
    data = json.loads(output)
    assert data["path"] == str(learned)
    assert data["device"]["name"] == "Galaxy S25"
    # The device raced every request and won some; the prior (a phone) moved towards the laptop.
    assert 0 < data["device"]["ttft_observations"] <= 200
    assert data["device"]["prefill_tok_s"] > Profiles.prior("Galaxy S25").device.prefill_tok_s
    server = data["server"]["ttft_s"]
    assert server["p10"] <= server["p50"] <= server["p90"] <= server["p99"]
    # Feedback arrives when a request completes: the last ones were still in flight at the end.
    assert 150 < server["observed"] <= 200
    assert data["output_tokens"]["observed"] == server["observed"]


def test_profile_show_reads_disco_profile_path(
    learned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCO_PROFILE_PATH", str(learned))
    code, output = invoke("profile", "show")
    assert code == 0, output
    assert str(learned) in "".join(output.split())  # rich may wrap the path
    assert "Galaxy S25" in output


def test_profile_show_on_a_missing_file_says_nothing_was_learned(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    assert_clean_failure(
        *invoke("profile", "show", "--path", str(missing)), "no profile cache at", "--path"
    )


def test_profile_show_on_a_corrupt_file_names_the_fix(tmp_path: Path) -> None:
    corrupt = tmp_path / "profiles.json"
    corrupt.write_text("{not json")
    assert_clean_failure(
        *invoke("profile", "show", "--path", str(corrupt)), "is corrupt", "disco profile reset"
    )


def test_profile_reset_yes_deletes_the_file(learned: Path) -> None:
    code, output = invoke("profile", "reset", "--path", str(learned), "--yes")
    assert code == 0, output
    assert "deleted" in output
    assert not learned.exists()


def test_profile_reset_asks_first_and_keeps_the_file_on_no(learned: Path) -> None:
    code, output = invoke("profile", "reset", "--path", str(learned), input="n\n")
    assert code != 0, output
    assert "kept the profile cache" in output
    assert learned.exists()


def test_profile_reset_on_a_missing_file_is_a_no_op(tmp_path: Path) -> None:
    code, output = invoke("profile", "reset", "--path", str(tmp_path / "none.json"), "--yes")
    assert code == 0, output
    assert "nothing to delete" in output


def test_profile_reset_on_a_directory_names_the_fix(tmp_path: Path) -> None:
    code, output = invoke("profile", "reset", "--path", str(tmp_path), "--yes")
    assert code != 0, output
    assert "is not a file" in output and "Traceback" not in output
    assert tmp_path.is_dir()


def test_profile_show_lists_each_probed_continuation_verdict(tmp_path: Path) -> None:
    profiles = Profiles.prior()
    profiles.continuation["http://127.0.0.1:8080/v1|gemma"] = {
        "style": "prefill",
        "echo": True,
        "source": "probed",
        "probed_at": 1_796_000_000.0,
    }
    profiles.continuation["http://vllm:8000/v1|llama"] = {"style": "bogus", "probed_at": 0.0}
    path = tmp_path / "profiles.json"
    ProfileStore(path).save(profiles)

    code, output = invoke("profile", "show", "--path", str(path), "--json")
    assert code == 0, output
    (shown,) = json.loads(output)["continuation"].values()  # the unusable entry is left out
    assert (shown["base_url"], shown["model"], shown["mode"], shown["echo"]) == (
        "http://127.0.0.1:8080/v1",
        "gemma",
        "llamacpp",
        True,
    )
    code, output = invoke("profile", "show", "--path", str(path))
    assert code == 0, output
    assert "remote continuation" in output and "llamacpp" in output
    assert "yes (stripped)" in output


def test_bench_sim_without_references_runs_only_the_named_policies(tmp_path: Path) -> None:
    from langchain_disco.bench.sim import SimOptions, _tasks

    options = SimOptions(policies=("generalized",), budgets=(0.5,), references=False)
    assert [(t.policy, t.budget) for t in _tasks(options)] == [("generalized", 0.5)]
    assert {t.policy for t in _tasks(SimOptions(policies=("generalized",)))} == {
        "generalized",
        "local",
        "remote",
        "oracle",
    }
    out = tmp_path / "one"
    code, output = invoke(
        "bench", "sim", "--requests", "200", "--policies", "generalized", "--budgets", "0.5",
        "--no-references", "--no-plots", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    (row,) = read_csv(out / "results.csv")
    assert row["policy"] == "generalized"
    assert row["mean_vs_oracle"] == row["mean_vs_single"] == ""  # no reference was run


def test_bench_sim_device_utilisation_sizes_the_devices_and_is_checked(tmp_path: Path) -> None:
    from langchain_disco.bench.sim import SimOptions, run_sim
    from langchain_disco.errors import ConfigError

    def devices(utilisation: float) -> int:
        options = SimOptions(
            requests=300,
            policies=("generalized",),
            budgets=(0.5,),
            device_utilisation=utilisation,
        )
        return run_sim(options).n_devices[0]

    assert devices(0.9) < devices(0.3)  # the same arrivals on fewer devices: longer queues
    options = SimOptions(device_utilisation=0.9)
    assert "--device-utilisation 0.9" in options.command()
    assert "--device-utilisation" not in SimOptions().command()
    with pytest.raises(ConfigError, match=r"--device-utilisation must be in \(0, 1\]"):
        SimOptions(device_utilisation=1.5).validate()
    code, output = invoke(
        "bench", "sim", "--requests", "100", "--device-utilisation", "0", "--no-plots",
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert code != 0 and "--device-utilisation must be in (0, 1]" in output


def test_bench_sim_mean_vs_oracle_is_against_the_queue_aware_bound(tmp_path: Path) -> None:
    """Each policy's ratio uses the bound at its own allowance: never below 1 (it is a lower
    bound on any FCFS dispatch within that spend), and the oracle row's mean is that bound,
    above the queue-blind oracle's when the device queue is long."""
    from langchain_disco.bench.sim import SimOptions, run_sim

    options = SimOptions(
        requests=1500, policies=("generalized", "oracle"), budgets=(0.5,), device_utilisation=0.9
    )
    result = run_sim(options)
    row = result.row("generalized", 0.5)
    assert row is not None and row.mean_vs_oracle >= 1.0 - 1e-9
    from langchain_disco.scheduling import Budget
    from langchain_disco.sim import Simulator, load_trace

    blind = Simulator(load_trace(limit=1500), options.sim_config(0)).oracle(
        Budget(share=0.5, resource="server")
    )
    oracle = result.row("oracle", 0.5)
    assert oracle is not None and oracle.mean_ttft_s > 1.05 * blind.mean_ttft_s


def test_profile_show_prints_the_providers_learned_prompt_cache(tmp_path: Path) -> None:
    profiles = Profiles.prior()
    for _ in range(4):
        profiles.server_cache.observe(30.0, 1000, 960)
    path = tmp_path / "profiles.json"
    ProfileStore(path).save(profiles)
    code, output = invoke("profile", "show", "--path", str(path))
    assert code == 0, output
    assert "server prompt cache" in output and "< 5 min ago" in output
    code, output = invoke("profile", "show", "--path", str(path), "--json")
    assert code == 0, output
    fresh, *_, older = json.loads(output)["server_prompt_cache"]
    assert fresh["age_below_s"] == 300.0 and older["age_below_s"] is None
    assert fresh["hit_rate"] == pytest.approx(profiles.server_cache.rate(30.0))
    assert fresh["reports"] > 3 and older["reports"] == 0
