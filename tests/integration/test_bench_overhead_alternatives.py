"""`disco bench overhead` beside the alternatives: ChatOpenAI, LiteLLM, DiscoChatModel in mode
race, on the same echo loopback, at tiny scale.

What must hold: every path streams the same answer to the same request (so the paths measure
the same work), the concurrency rows carry ratios to ChatOpenAI computed from their own
figures, and a path whose optional package is missing is reported as skipped with the fix
rather than crashing the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco.bench import _alternatives  # noqa: E402
from langchain_disco.bench._overhead_report import write_results  # noqa: E402
from langchain_disco.bench._ratios import RATIO_METRICS  # noqa: E402
from langchain_disco.bench._streams import ALL_PATHS, messages_for, open_source  # noqa: E402
from langchain_disco.bench.overhead import OverheadOptions, measure_overhead  # noqa: E402
from langchain_disco.testing.loopback import LoopbackServer  # noqa: E402
from tests._cli import invoke  # noqa: E402

pytestmark = pytest.mark.timeout(180)

MAX_TOKENS = 8


def _installed(path: str) -> bool:
    return _alternatives.unavailable(path) is None


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(backend="echo", echo_tok_s=0.0, latency_profile="none") as server:
        yield server


async def _answer(server: LoopbackServer, path: str, request: int) -> str:
    source = open_source(path, server.base_url, server.model_name, MAX_TOKENS, connections=2)
    try:
        return "".join([text async for text in source.texts(messages_for(request))])
    finally:
        await source.aclose()


@pytest.mark.skipif(not _installed("chatopenai"), reason="needs langchain-openai (bench extra)")
async def test_every_installed_path_streams_the_same_answer_as_chatopenai(
    echo_server: LoopbackServer,
) -> None:
    # One test, one event loop: langchain-openai keeps one HTTP client per process, bound to
    # the loop that first used it (as in the benchmark's child, which runs one loop).
    paths = [p for p in ALL_PATHS if _installed(p)]
    for request in (0, 1):
        answers = {p: await _answer(echo_server, p, request) for p in paths}

        expected = answers["chatopenai"]
        assert len(expected.split()) == MAX_TOKENS
        assert answers == {p: expected for p in paths}
    assert answers["chatopenai"] != await _answer(echo_server, "direct", 0)


@pytest.mark.skipif(not _installed("chatopenai"), reason="needs langchain-openai (bench extra)")
def test_measure_overhead_gives_ratios_to_chatopenai_from_each_rows_own_figures(
    tmp_path: Path,
) -> None:
    options = OverheadOptions(
        requests=2,
        max_tokens=MAX_TOKENS,
        levels=(1, 2),
        warmup=0,
        paths=("chatopenai", "disco", "disco-race"),
        min_streams=2,
    )
    result = measure_overhead(options)

    assert result.concurrency_ok()
    assert result.skipped == {}
    rows = {(r.level, r.path): r for r in result.levels}
    assert set(rows) == {(level, p) for level in (1, 2) for p in options.paths}
    assert rows[(1, "disco")].rounds == 2 and rows[(1, "disco")].completed == 2
    ratios = {(r["level"], r["path"]): r for r in result.ratios()}
    assert set(ratios) == set(rows)
    for (level, path), ratio in ratios.items():
        row, base = rows[(level, path)], rows[(level, "chatopenai")]
        for _label, attr in RATIO_METRICS:
            value, reference = getattr(row, attr), getattr(base, attr)
            if reference:
                assert ratio[attr] == pytest.approx(value / reference)
            else:
                assert ratio[attr] is None
    assert ratios[(2, "chatopenai")]["cpu_per_token_s"] == pytest.approx(1.0)

    write_results(result, tmp_path)
    data = json.loads((tmp_path / "overhead.json").read_text())
    assert data["baseline"] == "chatopenai"
    assert len(data["ratios"]) == len(ratios)
    assert (tmp_path / "ratios.csv").read_text().startswith("level,path,ttft_mean_s")


def test_a_path_whose_package_is_missing_is_skipped_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_alternatives, "find_spec", lambda _name: None)
    options = OverheadOptions(
        requests=1,
        max_tokens=4,
        levels=(1,),
        warmup=0,
        paths=("direct", "chatopenai", "litellm"),
    )
    result = measure_overhead(options)

    assert [r.path for r in result.levels] == ["direct"]
    assert result.concurrency_ok()
    assert "langchain-disco[bench]" in result.skipped["chatopenai"]
    assert "pip install litellm" in result.skipped["litellm"]
    assert result.ratios() == []  # no baseline ran, so no ratio is made up


def test_the_cli_reports_a_skipped_path_and_still_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_alternatives, "find_spec", lambda _name: None)
    page = tmp_path / "overhead.md"
    page.write_text("# Overhead\n\n## Results\n\nold numbers\n\n## Reading\n\nkept\n")
    code, output = invoke(
        "bench",
        "overhead",
        "--requests",
        "1",
        "--levels",
        "1",
        "--max-tokens",
        "4",
        "--warmup",
        "0",
        "--paths",
        "direct,chatopenai",
        "--out",
        str(tmp_path / "out"),
        "--doc",
        str(page),
    )

    assert code == 0, output
    flat = " ".join(output.split())
    assert "skipped chatopenai: langchain_openai is not installed" in flat
    assert "ratio to ChatOpenAI" not in flat
    text = page.read_text()
    assert "old numbers" not in text and "## Reading\n\nkept" in text
    assert "skipped **chatopenai**" in text
    assert "--paths direct,chatopenai" in text
