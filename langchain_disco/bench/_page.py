"""Writing one benchmark's section of a shared Markdown page (`docs/benchmarks.md`)."""

from __future__ import annotations

from pathlib import Path


def replace_section(page: Path, heading: str, section: str) -> None:
    """Replace the `## ` section of `page` that starts with `heading` by `section` (or append
    it), keeping every other section where it is; each benchmark script owns its own."""
    text = page.read_text("utf-8") if page.exists() else ""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        out = text.rstrip() + ("\n\n" if text.strip() else "") + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before = "\n".join(lines[:start]).rstrip()
        after = "\n".join(lines[end:]).strip()
        out = (before + "\n\n" if before else "") + section
        if after:
            out += "\n" + after + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(out, encoding="utf-8")
