"""Request traces: arrival time, prompt tokens and output tokens of every request.

`load_trace()` reads the bundled Azure LLM inference trace 2023 (conversation service); any CSV
with the same columns (`TIMESTAMP,ContextTokens,GeneratedTokens`) or with
`arrival_s,prompt_tokens,output_tokens` loads the same way.

A JSON Lines file of the Mooncake format (`timestamp` ms, `input_length`, `output_length`,
`hash_ids`: the ids of the prompt's 512-token blocks; the FAST 2025 Mooncake trace release)
loads with its prefix structure: two prompts whose `hash_ids` start alike share that many
blocks of prompt, which a prefix cache can reuse (`Trace.hash_ids`, `Trace.block_tokens`).
Its prompts are a hosted long-context chatbot's (mean 12k tokens); `scale_lengths=F` replays
them at `F` times their length, prefix structure kept: a prompt of `input_length * F` tokens
whose blocks hold `512 * F` tokens each (docs/own-trace.md).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from itertools import chain, islice, repeat
from pathlib import Path

BUNDLED_TRACE = "azure_llm_2023_conv.csv"
MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per `hash_ids` block in the Mooncake trace release."""

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
    hash_ids: tuple[tuple[int, ...], ...] | None = None
    """Per request, the ids of its prompt's blocks of `block_tokens` tokens (equal leading ids:
    a shared prefix); None: a trace without prefix structure (every prompt fresh)."""
    block_tokens: float = MOONCAKE_BLOCK_TOKENS
    """Prompt tokens per block of `hash_ids` (fractional once lengths are scaled)."""

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("trace columns differ in length")
        if self.hash_ids is not None and len(self.hash_ids) != n:
            raise ValueError("trace hash_ids differ in length from its other columns")
        if not self.block_tokens > 0:
            raise ValueError(f"block_tokens must be > 0, got {self.block_tokens}")

    @property
    def has_prefixes(self) -> bool:
        """Whether the requests carry prefix structure (a multi-turn trace)."""
        return self.hash_ids is not None

    def shared_tokens(self, i: int, blocks: int) -> int:
        """Prompt tokens of request `i` covered by its first `blocks` blocks (at most all but
        the last token of its prompt, which a model always evaluates)."""
        if blocks <= 0:
            return 0
        return max(min(round(blocks * self.block_tokens), self.prompt_tokens[i] - 1), 0)

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        return self.arrival_s[-1] - self.arrival_s[0] if self.arrival_s else 0.0

    def head(self, n: int) -> Trace:
        """The first `n` requests."""
        hashes = self.hash_ids[:n] if self.hash_ids is not None else None
        return Trace(
            self.arrival_s[:n],
            self.prompt_tokens[:n],
            self.output_tokens[:n],
            self.name,
            hashes,
            self.block_tokens,
        )

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
        hashes = None
        if self.hash_ids is not None:
            # Each tile is new conversations: its block ids are shifted past every id before.
            top = 1 + max((h for ids in self.hash_ids for h in ids), default=0)
            tiled = (tuple(h + k * top for h in ids) for k in range(tiles) for ids in self.hash_ids)
            hashes = tuple(islice(tiled, n))
        return Trace(
            tuple(islice(arrivals, n)),
            tuple(islice(prompts, n)),
            tuple(islice(outputs, n)),
            self.name,
            hashes,
            self.block_tokens,
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


def trace_from_jsonl(
    lines: Iterable[str], name: str = "trace", *, scale_lengths: float = 1.0
) -> Trace:
    """Build a trace from Mooncake JSON lines (`timestamp` ms, `input_length`,
    `output_length`, `hash_ids`); prompts scaled by `scale_lengths`, and their blocks with them
    (a block holds `512 * scale_lengths` tokens), so the shared prefixes keep their share of
    each prompt. Answers are not scaled: they are what a device decodes either way."""
    if not scale_lengths > 0:
        raise ValueError(f"scale_lengths must be > 0, got {scale_lengths}")
    items: list[tuple[float, int, int, tuple[int, ...]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            arrival_s = float(row["timestamp"]) / 1000.0
            prompt = max(round(int(row["input_length"]) * scale_lengths), 1)
            output = max(int(row["output_length"]), 1)
            hashes = tuple(int(h) for h in row["hash_ids"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"line {number}: not a Mooncake trace record (timestamp, input_length, "
                f"output_length, hash_ids): {exc}"
            ) from exc
        items.append((arrival_s, prompt, output, hashes))
    items.sort(key=lambda item: item[0])  # stable: equal timestamps keep the file's order
    t0 = items[0][0] if items else 0.0
    return Trace(
        tuple(a - t0 for a, _, _, _ in items),
        tuple(p for _, p, _, _ in items),
        tuple(o for _, _, o, _ in items),
        name,
        tuple(h for _, _, _, h in items),
        MOONCAKE_BLOCK_TOKENS * scale_lengths,
    )


def is_jsonl(path: str | os.PathLike[str], text: str) -> bool:
    """A JSON Lines trace: a `.jsonl` name, or a first non-blank line that is a JSON object."""
    if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
        return True
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.lstrip().startswith("{")


def load_trace(
    path: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    scale_lengths: float = 1.0,
) -> Trace:
    """Load a CSV trace (default: the bundled Azure 2023 conversation trace) or a Mooncake
    JSONL trace (told by its extension or content); `scale_lengths` scales a JSONL trace's
    prompts (see `trace_from_jsonl`; a CSV trace has no blocks to keep and is not scaled)."""
    if path is None:
        text = resources.files("langchain_disco").joinpath("data", BUNDLED_TRACE).read_text("utf-8")
        name = "azure-2023-conv"
    else:
        text = Path(path).read_text("utf-8")
        name = Path(path).stem
    if path is not None and is_jsonl(path, text):
        trace = trace_from_jsonl(text.splitlines(), name, scale_lengths=scale_lengths)
    else:
        if scale_lengths != 1.0:
            raise ValueError("scale_lengths applies to a JSONL (Mooncake) trace only")
        trace = trace_from_rows(csv.DictReader(text.splitlines()), name)
    return trace.head(limit) if limit is not None else trace
