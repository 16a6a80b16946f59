"""A bounded, seeded sample of a quantity (TTFT, token counts) and the statistics policies need.

The sample is a *random-replacement reservoir*: until it is full every observation is kept;
afterwards each observation overwrites a uniformly chosen slot. Old values (and the prior the
sample starts with) therefore fade out geometrically (half-life about 0.7 x capacity
observations), which tracks drift, while the memory stays bounded. Randomness comes from a
seeded `random.Random`, so a replay is reproducible.

Queries work on a sorted copy with prefix sums, rebuilt lazily after a change, so every
statistic below costs O(log n).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable
from typing import Any

from langchain_disco.scheduling._validate import MAX_ITEMS, MAX_SAMPLE, MAX_SEED, Fields

DEFAULT_CAPACITY = 512


class Reservoir:
    """An empirical distribution over at most `capacity` recent observations."""

    def __init__(
        self,
        samples: Iterable[float] = (),
        *,
        capacity: int = DEFAULT_CAPACITY,
        seed: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.seed = seed
        self._rng = random.Random(seed)
        self._items: list[float] = []
        self.n_seen = 0
        self._sorted: list[float] = []
        self._prefix: list[float] = [0.0]
        self._dirty = True
        self._prefix_dirty = True
        self._prefix_from = 0
        """The first prefix sum a change since the last rebuild can have moved."""
        # Until the reservoir is full, `add` only appends (no draw): the same state, in bulk.
        items = [float(x) for x in samples]
        self._items = items[:capacity]
        self.n_seen = len(self._items)
        for x in items[capacity:]:
            self.add(x)

    def add(self, x: float) -> None:
        """Record one observation."""
        x = float(x)
        if len(self._items) < self.capacity:
            self._items.append(x)
        else:
            slot = self._rng.randrange(self.capacity)
            old, self._items[slot] = self._items[slot], x
            if not self._dirty:
                i = bisect.bisect_left(self._sorted, old)
                del self._sorted[i]
                self._prefix_from = min(self._prefix_from, i)
        if not self._dirty:
            j = bisect.bisect_right(self._sorted, x)  # bisect.insort's place
            self._sorted.insert(j, x)
            self._prefix_from = min(self._prefix_from, j)
            self._prefix_dirty = True
        self.n_seen += 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def samples(self) -> list[float]:
        """The held observations, sorted ascending (a copy)."""
        return list(self._view()[0])

    def view(self) -> tuple[list[float], list[float]]:
        """(sorted samples, prefix sums with a leading 0): read-only, for hot loops."""
        return self._view()

    def _view(self) -> tuple[list[float], list[float]]:
        # The sorted copy is kept up to date incrementally; prefix sums are rebuilt lazily.
        if self._dirty:
            self._sorted = sorted(self._items)
            self._dirty = False
            self._prefix_dirty = True
            self._prefix_from = 0
        if self._prefix_dirty:
            # Sums below the first moved sample are unchanged; the rest are re-added in the
            # same order as a full rebuild, so every sum is bit-for-bit what it would be.
            start = self._prefix_from
            if start <= 0 or start >= len(self._prefix):
                self._prefix = list(itertools.accumulate(self._sorted, initial=0.0))
            else:
                sums = itertools.accumulate(
                    itertools.islice(self._sorted, start, None), initial=self._prefix[start]
                )
                next(sums)  # the unchanged prefix[start] itself
                del self._prefix[start + 1 :]
                self._prefix.extend(sums)
            self._prefix_from = len(self._sorted) + 1
            self._prefix_dirty = False
        return self._sorted, self._prefix

    def _require(self) -> tuple[list[float], list[float]]:
        xs, prefix = self._view()
        if not xs:
            raise ValueError("the distribution has no samples yet")
        return xs, prefix

    def mean(self) -> float:
        xs, prefix = self._require()
        return prefix[-1] / len(xs)

    def cdf(self, x: float) -> float:
        """P(X < x)."""
        xs, _ = self._require()
        return bisect.bisect_left(xs, x) / len(xs)

    def quantile(self, q: float) -> float:
        """The nearest-rank q-quantile (q in [0, 1])."""
        xs, _ = self._require()
        q = min(max(q, 0.0), 1.0)
        rank = max(1, math.ceil(q * len(xs) - 1e-9))
        return xs[min(rank, len(xs)) - 1]

    def expected_min(self, d: float) -> float:
        """E[min(X, d)]."""
        xs, prefix = self._require()
        k = bisect.bisect_left(xs, d)
        return (prefix[k] + d * (len(xs) - k)) / len(xs)

    def partial(self, lo: float, hi: float) -> tuple[float, float]:
        """(P(lo <= X < hi), E[X; lo <= X < hi]): mass and first moment over an interval."""
        xs, prefix = self._require()
        if hi <= lo:
            return 0.0, 0.0
        i = bisect.bisect_left(xs, lo)
        j = bisect.bisect_left(xs, hi)
        n = len(xs)
        return (j - i) / n, (prefix[j] - prefix[i]) / n

    def expected_excess(self, k: float) -> float:
        """E[X - k | X > k] (0 when no sample exceeds k): the mean residual beyond `k`."""
        xs, prefix = self._require()
        i = bisect.bisect_right(xs, k)
        above = len(xs) - i
        if above == 0:
            return 0.0
        return (prefix[-1] - prefix[i]) / above - k

    def draw_at_least(self, x: float, rng: random.Random) -> float:
        """A uniform draw among the samples >= x (x itself when none is that large)."""
        xs, _ = self._require()
        i = bisect.bisect_left(xs, x)
        return xs[rng.randrange(i, len(xs))] if i < len(xs) else x

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "seed": self.seed,
            "n_seen": self.n_seen,
            "samples": list(self._items),
        }

    @classmethod
    def from_dict(
        cls, data: object, *, path: str = "reservoir", max_value: float = MAX_SAMPLE
    ) -> Reservoir:
        """A reservoir saved by `to_dict`, its samples checked to lie in [0, `max_value`].

        Raises `ProfileFormatError` (a `ValueError`) naming the field under `path` that is
        missing, of the wrong type or out of range.
        """
        fields = Fields(data, path)
        capacity = fields.integer("capacity", lo=1, hi=MAX_ITEMS)
        seed = fields.integer("seed", lo=-MAX_SEED, hi=MAX_SEED)
        n_seen = fields.integer("n_seen")
        samples = fields.numbers("samples", lo=0.0, hi=max_value, max_length=capacity)
        # Re-seed from the count so a reloaded reservoir does not replay the same slots.
        out = cls(capacity=capacity, seed=seed + n_seen)
        out._items = samples
        out._dirty = True
        out.n_seen = n_seen
        out.seed = seed
        return out
