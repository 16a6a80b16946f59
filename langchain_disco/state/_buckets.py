"""The ledger's time window: fixed-length buckets of wall-clock time, summed over the last N.

A bucket is `floor(unix_time / bucket_s)`, the same for every worker of a fleet whatever its
start time (wall clock, not monotonic: workers on one host or synced hosts agree on it). The
window is the current bucket and the N - 1 before it, so it spans between (N - 1) and N bucket
lengths; spend older than that is forgotten, which is what lets a long-running service recover
from an old overspend instead of repaying it forever.
"""

from __future__ import annotations

import math

from langchain_disco.scheduling.budget import LedgerTotals

BUCKET_S = 60.0
"""Default bucket length: one minute."""
WINDOW_BUCKETS = 60
"""Default window: the last 60 buckets, i.e. the last hour."""


def bucket_of(now_s: float, bucket_s: float) -> int:
    return math.floor(now_s / bucket_s)


class Buckets:
    """Totals per bucket, pruned to the window on every add."""

    def __init__(self, bucket_s: float = BUCKET_S, window_buckets: int = WINDOW_BUCKETS) -> None:
        if bucket_s <= 0 or window_buckets < 1:
            raise ValueError("a window needs bucket_s > 0 and at least one bucket")
        self.bucket_s = bucket_s
        self.window_buckets = window_buckets
        self.by_bucket: dict[int, LedgerTotals] = {}

    def first_bucket(self, now_s: float) -> int:
        """The oldest bucket still in the window at `now_s`."""
        return bucket_of(now_s, self.bucket_s) - self.window_buckets + 1

    def add(self, now_s: float, delta: LedgerTotals) -> None:
        bucket = bucket_of(now_s, self.bucket_s)
        self.by_bucket[bucket] = self.by_bucket.get(bucket, LedgerTotals()).plus(delta)
        self.prune(now_s)

    def prune(self, now_s: float) -> None:
        first = self.first_bucket(now_s)
        for bucket in [b for b in self.by_bucket if b < first]:
            del self.by_bucket[bucket]

    def total(self, now_s: float) -> LedgerTotals:
        first = self.first_bucket(now_s)
        total = LedgerTotals()
        for bucket, totals in self.by_bucket.items():
            if bucket >= first:
                total = total.plus(totals)
        return total

    def take(self) -> dict[int, LedgerTotals]:
        """Everything, emptying this (what a sync pushes)."""
        taken, self.by_bucket = self.by_bucket, {}
        return taken

    def merge(self, by_bucket: dict[int, LedgerTotals], now_s: float) -> None:
        """Put back what a failed sync took (within the window)."""
        for bucket, totals in by_bucket.items():
            self.by_bucket[bucket] = self.by_bucket.get(bucket, LedgerTotals()).plus(totals)
        self.prune(now_s)
