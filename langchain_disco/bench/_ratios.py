"""Each path's concurrency figures as ratios to one baseline path at the same level.

A ratio of 1.25 reads "25% more than ChatOpenAI": TTFT, per-token latency, latency per stream,
CPU per token, memory per stream. A ratio is None when either side is missing or the
baseline's figure is not positive (memory growth at one stream is often zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_disco.bench._concurrency import LevelResult

RATIO_METRICS: tuple[tuple[str, str], ...] = (
    ("TTFT", "ttft_mean_s"),
    ("per token", "gap_mean_s"),
    ("latency per stream", "latency_mean_s"),
    ("CPU per token", "cpu_per_token_s"),
    ("memory per stream", "memory_per_stream_bytes"),
)
"""(label, `LevelResult` attribute) of every ratio, in report order."""


def ratios_to(rows: Sequence[LevelResult], baseline: str) -> list[dict[str, Any]]:
    """One dict per row whose level the baseline also ran: level, path, one ratio per metric."""
    base = {r.level: r for r in rows if r.path == baseline}
    out: list[dict[str, Any]] = []
    for row in rows:
        ref = base.get(row.level)
        if ref is None:
            continue
        ratios: dict[str, Any] = {"level": row.level, "path": row.path}
        for _label, attr in RATIO_METRICS:
            ratios[attr] = _ratio(getattr(row, attr), getattr(ref, attr))
        out.append(ratios)
    return out


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or not baseline > 0:
        return None
    return value / baseline
