"""Run metrics as DESIGN section 5 defines them, and ratios between runs on the same requests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]): the smallest value with >= q% at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def weighted_percentile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """Nearest-rank percentile where each value counts `weight` times (e.g. TBT gaps)."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return math.nan
    target = q / 100.0 * total - 1e-9
    seen = 0.0
    for v, w in pairs:
        seen += w
        if seen >= target:
            return v
    return pairs[-1][0]


@dataclass(frozen=True)
class RunMetrics:
    """Per-run summary: TTFT distribution, TBT, stalls, cost, and budget tracking."""

    n: int
    mean_ttft_s: float
    p50_ttft_s: float
    p90_ttft_s: float
    p99_ttft_s: float
    mean_tbt_s: float
    p99_tbt_s: float
    max_stall_s: float
    mean_cost_usd: float
    """Unified cost per request."""
    mean_server_usd: float
    mean_device_j: float
    spend_per_request: float
    """On the budget's resource (0 without a budget)."""
    realised_share: float
    """Spend between floor (0) and ceiling (1, always-race); NaN without a budget."""
    device_utilisation: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    *,
    ttft_s: Sequence[float],
    tbt_s: Sequence[float],
    output_tokens: Sequence[int],
    unified_usd: Sequence[float],
    server_usd: Sequence[float],
    device_j: Sequence[float],
    spend: Sequence[float],
    floor: Sequence[float],
    ceiling: Sequence[float],
    device_utilisation: float = math.nan,
) -> RunMetrics:
    n = len(ttft_s)
    gaps = [max(o - 1, 0) for o in output_tokens]
    n_gaps = sum(gaps)
    headroom = sum(ceiling) - sum(floor)
    return RunMetrics(
        n=n,
        mean_ttft_s=sum(ttft_s) / n if n else math.nan,
        p50_ttft_s=percentile(ttft_s, 50),
        p90_ttft_s=percentile(ttft_s, 90),
        p99_ttft_s=percentile(ttft_s, 99),
        mean_tbt_s=sum(t * g for t, g in zip(tbt_s, gaps, strict=True)) / n_gaps
        if n_gaps
        else math.nan,
        p99_tbt_s=weighted_percentile(tbt_s, gaps, 99),
        max_stall_s=max((t for t, g in zip(tbt_s, gaps, strict=True) if g), default=0.0),
        mean_cost_usd=sum(unified_usd) / n if n else math.nan,
        mean_server_usd=sum(server_usd) / n if n else math.nan,
        mean_device_j=sum(device_j) / n if n else math.nan,
        spend_per_request=sum(spend) / n if n else math.nan,
        realised_share=(sum(spend) - sum(floor)) / headroom if headroom > 0 else math.nan,
        device_utilisation=device_utilisation,
    )


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs (NaN when theirs is 0): below 1 means ours is lower (better, for TTFT)."""
    return ours / theirs if theirs else math.nan
