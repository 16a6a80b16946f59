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
