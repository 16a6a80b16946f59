"""What the engine core waits for besides events: the paced delivery buffer and the stall watch.

Both compare the time they are given with a deadline they keep; a deadline within `TIME_EPS_S`
counts as reached.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from langchain_disco.engine.commands import Command, Delivery, Purpose
from langchain_disco.scheduling.migration import StallDetector
from langchain_disco.scheduling.roles import Role

STALL_CONFIRM_S = 0.1
"""A stall is declared only once the driver has come back this long after it first saw the
silence. Live, the silence may be the loop's, not the endpoint's: a consumer that blocks the
loop between chunks leaves what the endpoint sent meanwhile in the HTTP client's buffers, a few
loop iterations away from the engine."""

TIME_EPS_S = 1e-6
"""A deadline this close counts as reached: clocks are quantised (an event loop's, a virtual
one's), and a driver woken a hair early must not spin on a deadline it cannot quite reach."""


@dataclass
class Stream:
    """One endpoint stream inside one request."""

    id: int
    role: Role
    purpose: Purpose
    prefix: str
    started_at: float
    live: bool = True
    first_at: float | None = None
    last_at: float | None = None
    first_by: float | None = None
    """A migration target's predicted first token: its silence is watched from there, as a
    streaming run's is from its last token."""
    failed: bool = False


class Pacer:
    """The delivery buffer: eager (hand each piece out at once) or released at `pace_tok_s`."""

    def __init__(self, pace_tok_s: float | None, gaps_s: list[float]) -> None:
        self.pace_tok_s = pace_tok_s
        self.buffer: deque[Delivery] = deque()
        self.next_release = 0.0
        self.last_at: float | None = None
        self._gaps_s = gaps_s
        self.delivered: dict[str, int] = {}
        """Pieces delivered per endpoint."""
        self.count = 0
        """Pieces delivered in all."""

    def push(self, delivery: Delivery, at: float, out: list[Command]) -> None:
        if self.pace_tok_s is None:
            self._deliver(delivery, at, out)
            return
        if not self.buffer and self.last_at is None:
            self.next_release = at  # the first token goes out at once
        self.buffer.append(delivery)

    def release(self, now: float, out: list[Command]) -> None:
        """Release the next buffered piece if it is due (one per call, as the pace allows)."""
        if self.buffer and now + TIME_EPS_S >= self.next_release:
            self._deliver(self.buffer.popleft(), now, out)
            assert self.pace_tok_s is not None
            self.next_release = max(now, self.next_release) + 1.0 / self.pace_tok_s

    @property
    def deadline(self) -> float | None:
        return self.next_release if self.buffer else None

    def _deliver(self, delivery: Delivery, at: float, out: list[Command]) -> None:
        if self.last_at is not None:
            self._gaps_s.append(at - self.last_at)
        self.last_at = at
        self.count += 1
        self.delivered[delivery.endpoint] = self.delivered.get(delivery.endpoint, 0) + 1
        out.append(delivery)


class StallWatch:
    """Declares the active stream stalled once its silence limit has passed, confirmed."""

    def __init__(self, detector: StallDetector) -> None:
        self.detector = detector
        self.confirm_at: float | None = None

    def limit(self, stream: Stream | None) -> float | None:
        """When `stream` counts as stalled: the threshold after its last token or, for a
        migration target with none yet, after its predicted first token (the buffer was sized
        for that). None: a dispatch or failover stream's first token is bounded by the
        endpoint's own timeout."""
        if stream is None or not stream.live:
            return None
        since = stream.last_at if stream.last_at is not None else stream.first_by
        if since is None:
            return None
        return since + self.detector.threshold_s(stream.role)

    def deadline(self, stream: Stream | None) -> float | None:
        limit = self.limit(stream)
        if limit is None:
            return None
        return limit if self.confirm_at is None else max(limit, self.confirm_at)

    def stalled(self, stream: Stream | None, now: float) -> bool:
        """True once `stream` is past its limit and was already past it `STALL_CONFIRM_S` ago."""
        limit = self.limit(stream)
        if limit is None or now + TIME_EPS_S < limit:
            self.confirm_at = None
            return False
        if self.confirm_at is None:
            self.confirm_at = now + STALL_CONFIRM_S  # first sight: let the driver come back
            return False
        if now + TIME_EPS_S < self.confirm_at:
            return False
        self.confirm_at = None
        return True
