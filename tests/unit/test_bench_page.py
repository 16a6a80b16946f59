"""Each benchmark script rewrites only its own section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from langchain_disco.bench._page import replace_section


def test_a_section_is_replaced_in_place_and_the_others_kept(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "benchmarks.md"
    replace_section(page, "## B", "## B\n\nfirst\n")  # a missing page: created
    assert page.read_text() == "## B\n\nfirst\n"
    page.write_text("# Title\n\n## A\n\nkeep a\n\n## B\n\nold\n\n## C\n\nkeep c\n")
    replace_section(page, "## B", "## B (issue 5)\n\nnew\n")
    expected = "# Title\n\n## A\n\nkeep a\n\n## B (issue 5)\n\nnew\n\n## C\n\nkeep c\n"
    assert page.read_text() == expected
    replace_section(page, "## D", "## D\n\nappended\n")
    assert page.read_text().endswith("keep c\n\n## D\n\nappended\n")


def test_the_single_endpoint_reference_is_one_endpoint_for_mean_and_p99() -> None:
    """The better mean and the better p99 of two endpoints describe no real run."""
    import math
    from dataclasses import replace as _replace

    from langchain_disco.bench.sim import _single_reference
    from langchain_disco.sim.metrics import summarize

    base = summarize(
        ttft_s=[1.0, 1.0],
        tbt_s=[0.01, 0.01],
        output_tokens=[10, 10],
        unified_usd=[0.0, 0.0],
        server_usd=[0.0, 0.0],
        device_j=[0.0, 0.0],
        spend=[0.0, 0.0],
        floor=[0.0, 0.0],
        ceiling=[1.0, 1.0],
    )
    steady = _replace(base, mean_ttft_s=1.0, p99_ttft_s=1.2)  # slower mean, tight tail
    tailed = _replace(base, mean_ttft_s=0.6, p99_ttft_s=9.0)  # faster mean, long tail
    assert _single_reference([steady, tailed], 0.5) == (0.6, 9.0)
    nothing = _replace(base, realised_share=0.99)
    mean, p99 = _single_reference([nothing], 0.1)
    assert math.isnan(mean) and math.isnan(p99)
