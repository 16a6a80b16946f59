"""The in-process ledger: one window of settled spend shared by the controllers of one process
(several models, or threads, under one budget). No I/O; the embedded default attaches none."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from langchain_disco.scheduling.budget import LedgerTotals
from langchain_disco.state._buckets import BUCKET_S, WINDOW_BUCKETS, Buckets


class InProcessLedger:
    """Thread-safe windowed totals in memory."""

    def __init__(
        self,
        *,
        bucket_s: float = BUCKET_S,
        window_buckets: int = WINDOW_BUCKETS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._buckets = Buckets(bucket_s, window_buckets)
        self._clock = clock
        self._lock = threading.Lock()

    state = "local"

    def add(self, delta: LedgerTotals) -> None:
        with self._lock:
            self._buckets.add(self._clock(), delta)

    def totals(self) -> LedgerTotals | None:
        with self._lock:
            return self._buckets.total(self._clock())

    def peers(self) -> float:
        """1: the controllers sharing this see each other's spend as soon as it settles."""
        return 1.0

    def lag(self) -> float:
        """0: there is no sync, so repaying the shared deficit together does not make the
        loop oscillate."""
        return 0.0
