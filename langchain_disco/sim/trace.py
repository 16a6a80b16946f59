"""Request traces: arrival time, prompt tokens and output tokens of every request.

`load_trace()` reads the bundled Azure LLM inference trace 2023 (conversation service); any CSV
with the same columns (`TIMESTAMP,ContextTokens,GeneratedTokens`) or with
`arrival_s,prompt_tokens,output_tokens` loads the same way.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from itertools import chain, islice, repeat
from pathlib import Path

BUNDLED_TRACE = "azure_llm_2023_conv.csv"

_COLUMNS = (
    ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    ("arrival_s", "prompt_tokens", "output_tokens"),
)


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival; `arrival_s` starts at 0."""

    arrival_s: tuple[float, ...]
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    name: str = "trace"

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("trace columns differ in length")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        return self.arrival_s[-1] - self.arrival_s[0] if self.arrival_s else 0.0

    def head(self, n: int) -> Trace:
        """The first `n` requests."""
        return Trace(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n], self.name)

    def repeat_to(self, n: int) -> Trace:
        """`n` requests: the trace replayed back to back (same rate), cut at `n`."""
        if not len(self):
            raise ValueError("cannot repeat an empty trace")
        gap = self.span_s / max(len(self) - 1, 1)
        period = self.span_s + gap
        n = max(n, 0)
        tiles = -(-n // len(self))
        # Built straight into the tuples, without whole-tile lists to cut at `n`.
        offsets = [k * period for k in range(tiles)]
        arrivals = (a + offset for offset in offsets for a in self.arrival_s)
        prompts = chain.from_iterable(repeat(self.prompt_tokens, tiles))
        outputs = chain.from_iterable(repeat(self.output_tokens, tiles))
        return Trace(
            tuple(islice(arrivals, n)),
            tuple(islice(prompts, n)),
            tuple(islice(outputs, n)),
            self.name,
        )


def _seconds(value: str) -> float:
    """A float of seconds, or a `YYYY-MM-DD HH:MM:SS[.fraction]` timestamp (any digits)."""
    try:
        return float(value)
    except ValueError:
        pass
    whole, _, frac = value.strip().partition(".")
    stamp = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def trace_from_rows(rows: Iterable[dict[str, str]], name: str = "trace") -> Trace:
    """Build a trace from CSV rows of either column convention."""
    items: list[tuple[float, int, int]] = []
    columns: tuple[str, str, str] | None = None
    for row in rows:
        if columns is None:
            columns = next((c for c in _COLUMNS if all(k in row for k in c)), None)
            if columns is None:
                raise ValueError(
                    f"trace columns {sorted(row)} match neither "
                    f"{' / '.join(','.join(c) for c in _COLUMNS)}"
                )
        t, p, o = columns
        # A request needs at least one prompt token and one output token to have a TTFT.
        items.append((_seconds(row[t]), max(int(row[p]), 1), max(int(row[o]), 1)))
    items.sort(key=lambda item: item[0])
    t0 = items[0][0] if items else 0.0
    return Trace(
        tuple(a - t0 for a, _, _ in items),
        tuple(p for _, p, _ in items),
        tuple(o for _, _, o in items),
        name,
    )


def load_trace(path: str | os.PathLike[str] | None = None, *, limit: int | None = None) -> Trace:
    """Load a CSV trace (default: the bundled Azure 2023 conversation trace)."""
    if path is None:
        text = resources.files("langchain_disco").joinpath("data", BUNDLED_TRACE).read_text("utf-8")
        name = "azure-2023-conv"
    else:
        text = Path(path).read_text("utf-8")
        name = Path(path).stem
    trace = trace_from_rows(csv.DictReader(text.splitlines()), name)
    return trace.head(limit) if limit is not None else trace
