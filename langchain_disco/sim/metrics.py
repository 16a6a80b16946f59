"""Run metrics (docs/concepts.md, Metrics), and ratios between runs on the same requests."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]): the smallest value with >= q% at or below it."""
    if not values:
        return math.nan
    return _nearest_rank(sorted(values), q)


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    """`percentile` of values already sorted (not empty)."""
    rank = max(1, math.ceil(q / 100.0 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def weighted_percentile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """Nearest-rank percentile where each value counts `weight` times (e.g. TBT gaps)."""
    return _weighted_percentile(lambda: zip(values, weights, strict=True), q)


_EXACT_TOTAL = 2**53
"""Below this, a float adds integer weights exactly, in any grouping."""


def _weighted_percentile(pairs: Callable[[], Iterable[tuple[float, float]]], q: float) -> float:
    """`weighted_percentile` of the (value, weight) pairs `pairs()` iterates (afresh per call).

    Integer weights of nonzero float values (gap counts) are summed per distinct value first:
    the same answer as sorting every pair (the running total is exact at each value's end, and
    the value crossing the target is the same), in memory for the distinct values only.
    """
    totals = _weight_totals(pairs())
    if totals is None:
        ordered = sorted((v, w) for v, w in pairs() if w > 0)
        total = sum(w for _, w in ordered)
        if not total:
            return math.nan
        target = q / 100.0 * total - 1e-9
        seen = 0.0
        for v, w in ordered:
            seen += w
            if seen >= target:
                return v
        return ordered[-1][0]
    total = sum(totals.values())
    if not total:
        return math.nan
    target = q / 100.0 * total - 1e-9
    seen = 0.0
    for v in sorted(totals):
        seen += totals[v]
        if seen >= target:
            return v
    return max(totals)


def _weight_totals(pairs: Iterable[tuple[float, float]]) -> dict[float, int] | None:
    """The positive integer weight of each distinct value; None unless every weighted value is
    a nonzero, non-NaN float (0.0 and -0.0 are equal keys but distinct answers) with an
    integer weight, and the total is exact as a float."""
    totals: dict[float, int] = {}
    get = totals.get
    for v, w in pairs:
        if w > 0:
            if type(w) is not int or type(v) is not float or not v or v != v:
                return None
            totals[v] = get(v, 0) + w
    if sum(totals.values()) >= _EXACT_TOTAL:
        return None
    return totals


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
    migration_rate: float = 0.0
    """Share of requests whose generation moved to the other endpoint."""
    mean_cost_without_migration_usd: float = math.nan
    """Unified cost per request had each winner generated its whole answer (same dispatch)."""
    mean_stall_added_s: float = 0.0
    """Per request, how much longer the consumer waited at a migration's seam than usual."""
    max_stall_added_s: float = 0.0

    @property
    def migration_saving(self) -> float:
        """1 - cost with migration / cost without (same dispatch outcomes); NaN if unknown."""
        base = self.mean_cost_without_migration_usd
        return 1.0 - self.mean_cost_usd / base if base and base == base else math.nan

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
    tbt_runs: Sequence[Sequence[tuple[float, int]]] | None = None,
    migrated: Sequence[bool] | None = None,
    stall_added_s: Sequence[float] | None = None,
    cost_without_migration_usd: Sequence[float] | None = None,
) -> RunMetrics:
    """Run metrics. Each request's TBT is one gap repeated (`tbt_s`, for output_tokens - 1
    gaps) unless `tbt_runs` gives its gaps as (gap, count) runs (paced delivery, migration)."""
    n = len(ttft_s)
    headroom = sum(ceiling) - sum(floor)
    if tbt_runs is None:
        # Each request's gaps, counted afresh per pass rather than kept (a list per request).
        def gap_counts() -> Iterator[int]:
            return (max(o - 1, 0) for o in output_tokens)

        values: Sequence[float] = tbt_s
    else:
        values = [gap for runs in tbt_runs for gap, _ in runs]
        counts = [count for runs in tbt_runs for _, count in runs]

        def gap_counts() -> Iterator[int]:
            return iter(counts)

    n_gaps = sum(gap_counts())
    base = unified_usd if cost_without_migration_usd is None else cost_without_migration_usd
    stalls = stall_added_s or [0.0]
    ordered_ttft = sorted(ttft_s) if ttft_s else ()
    return RunMetrics(
        n=n,
        mean_ttft_s=sum(ttft_s) / n if n else math.nan,
        p50_ttft_s=_nearest_rank(ordered_ttft, 50) if ordered_ttft else math.nan,
        p90_ttft_s=_nearest_rank(ordered_ttft, 90) if ordered_ttft else math.nan,
        p99_ttft_s=_nearest_rank(ordered_ttft, 99) if ordered_ttft else math.nan,
        mean_tbt_s=sum(t * g for t, g in zip(values, gap_counts(), strict=True)) / n_gaps
        if n_gaps
        else math.nan,
        p99_tbt_s=_weighted_percentile(lambda: zip(values, gap_counts(), strict=True), 99),
        max_stall_s=max((t for t, g in zip(values, gap_counts(), strict=True) if g), default=0.0),
        mean_cost_usd=sum(unified_usd) / n if n else math.nan,
        mean_server_usd=sum(server_usd) / n if n else math.nan,
        mean_device_j=sum(device_j) / n if n else math.nan,
        spend_per_request=sum(spend) / n if n else math.nan,
        realised_share=(sum(spend) - sum(floor)) / headroom if headroom > 0 else math.nan,
        device_utilisation=device_utilisation,
        migration_rate=sum(migrated) / n if migrated and n else 0.0,
        mean_cost_without_migration_usd=sum(base) / n if n else math.nan,
        mean_stall_added_s=sum(stalls) / n if n and stall_added_s else 0.0,
        max_stall_added_s=max(stalls),
    )


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs (NaN when theirs is 0): below 1 means ours is lower (better, for TTFT)."""
    return ours / theirs if theirs else math.nan
