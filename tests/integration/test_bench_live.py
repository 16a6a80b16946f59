"""`disco bench live`: a small live run against the real local model and the loopback remote,
replayed by the simulator; and bad inputs, which end with a clear message, never a traceback."""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from pathlib import Path

import pytest

from tests._cli import assert_clean_failure, invoke

pytestmark = pytest.mark.timeout(120)


def bench_live(*args: str) -> tuple[int, str]:
    return invoke("bench", "live", *args)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def llama_threads() -> int:
    return sum(t.name.startswith("disco-llama") for t in threading.enumerate())


def test_a_small_live_run_writes_live_and_simulated_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "user-cache" / "profiles.json"
    monkeypatch.setenv("DISCO_PROFILE_PATH", str(cache))
    monkeypatch.setenv("DISCO_PERSIST_PROFILES", "true")  # the benchmark must not obey it
    threads_before = llama_threads()
    out = tmp_path / "live"

    code, output = bench_live(
        "--requests",
        "5",
        "--policies",
        "local,race",
        "--max-prompt-tokens",
        "200",
        "--max-tokens",
        "6",
        "--think-s",
        "0.1",
        "--out",
        str(out),
    )

    assert code == 0, output
    assert "simulator vs live" in output and "learned device" in output
    rows = read_csv(out / "results.csv")
    assert [r["policy"] for r in rows] == ["local", "race"]
    for row in rows:
        assert row["n"] == "5"
        for side in ("live", "sim"):
            for metric in ("mean_ttft_s", "p99_ttft_s", "mean_cost_usd"):
                value = float(row[f"{side}_{metric}"])
                assert math.isfinite(value) and value >= 0, (side, metric, row)
            assert float(row[f"{side}_mean_ttft_s"]) > 0
            assert float(row[f"{side}_p99_ttft_s"]) >= float(row[f"{side}_mean_ttft_s"])
        for err in ("mean_ttft_rel_err", "p99_ttft_rel_err"):
            assert math.isfinite(float(row[err]))
        assert float(row["mean_ttft_rel_err"]) == pytest.approx(
            float(row["sim_mean_ttft_s"]) / float(row["live_mean_ttft_s"]) - 1
        )
    local = rows[0]
    assert local["live_local_win_share"] == local["sim_local_win_share"] == "1.0"
    assert float(local["live_mean_cost_usd"]) > 0  # device energy, priced

    requests = read_csv(out / "requests.csv")
    assert len(requests) == 10
    assert all(float(r["ttft_s"]) > 0 and float(r["sim_ttft_s"]) > 0 for r in requests)
    data = json.loads((out / "results.json").read_text())
    assert data["options"]["command"].startswith("disco bench live --requests 5")
    assert data["options"]["policies"] == ["local", "race"]
    assert len(data["rows"]) == 2 and data["learned"]["device_prefill_tok_s"] > 0

    assert not cache.exists()  # the user's profile cache was neither read nor written
    deadline = time.monotonic() + 5
    while llama_threads() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert llama_threads() <= threads_before  # the run's model thread is gone


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--policies", "local,teleport"), "--policies: unknown policy 'teleport'"),
        (("--requests", "0"), "--requests"),
        (("--budget", "1.5"), "--budget 1.5 is outside [0, 1]"),
        (("--latency-profile", "fastest"), "unknown latency profile 'fastest'"),
        (("--max-prompt-tokens", "8"), "--max-prompt-tokens 8 is below --min-prompt-tokens"),
    ],
)
def test_bad_arguments_fail_clearly_before_anything_starts(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    start = time.monotonic()
    code, output = bench_live(*args, "--out", str(tmp_path / "live"))
    assert_clean_failure(code, output, message)
    assert time.monotonic() - start < 5  # no model was loaded, no server started
