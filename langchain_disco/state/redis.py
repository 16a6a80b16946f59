"""The fleet ledger: settled budget spend shared by every worker through Redis.

Layout: one hash per bucket of the window (`_buckets.py`), key
`{namespace}:budget:{resource}:{bucket}`, fields `n spent allowed floor ceiling`, each bumped
with HINCRBYFLOAT (atomic on the server, so concurrent workers never lose an increment) and
expiring one bucket after it leaves the window. One Lua script per sync pushes a batch and
reads the window atomically; each batch carries an id, applied at most once, so a push whose
reply was lost (a timeout, a dropped connection) is retried without counting twice.

Nothing on the token path waits on Redis: `add` appends to an in-memory pending window and
`totals` reads the last snapshot. A background thread syncs every `refresh_s`: the script
pushes the pending deltas and reads the window's buckets, so the snapshot includes this
worker's pushes and `totals` = snapshot + what is still pending.

Faults (Redis down at start, lost mid-run, slow past `timeout_s`, or holding a value that is
not a finite number): the ledger logs one warning, `totals` returns None so the controller
decides from its own totals, and the deltas stay pending (within the window). When a sync
succeeds again they are pushed (reconciliation) and the fleet view returns, with one info line.

The thread uses redis-py's blocking client, not `redis.asyncio`: the blocking client is
fork-safe (a connection knows its process and is never shut down from a forked child), while
an event loop's epoll set is shared with a forked child, which could then unregister the
parent's socket (seen: the parent's next sync timed out). A worker forked from a process that
built the ledger (gunicorn --preload) starts its own thread with fresh state.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from langchain_disco.scheduling.budget import LedgerTotals
from langchain_disco.state._buckets import BUCKET_S, WINDOW_BUCKETS, Buckets, bucket_of
from langchain_disco.state._urls import redact_url

logger = logging.getLogger(__name__)

FIELDS = LedgerTotals._fields
REFRESH_S = 0.5
TIMEOUT_S = 1.0
_LAG_WEIGHT = 0.2
"""Weight of the newest sync in `lag()`'s moving mean (about the last five syncs)."""


_PUSH_AND_READ = """
-- KEYS[1]: this push's id marker; KEYS[2 .. 1+k]: the buckets pushed to; the rest: the
-- window's buckets to read. ARGV: ttl_s, k, then five values per pushed bucket.
-- Applied at most once per push id (a retried push whose reply was lost is not counted
-- twice); a field that is not a number refuses its increment, counted in the first reply.
local ttl, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local fields = {'n', 'spent', 'allowed', 'floor', 'ceiling'}
local errors = 0
if k > 0 and redis.call('SET', KEYS[1], '1', 'NX', 'EX', ttl) then
  for i = 1, k do
    local key = KEYS[1 + i]
    for j = 1, 5 do
      local value = ARGV[2 + (i - 1) * 5 + j]
      if tonumber(value) ~= 0 then
        local ok = redis.pcall('HINCRBYFLOAT', key, fields[j], value)
        if type(ok) == 'table' and ok.err then errors = errors + 1 end
      end
    end
    redis.pcall('EXPIRE', key, ttl)
  end
end
local out = {errors}
for i = 2 + k, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind == 'hash' or kind == 'none' then
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
  else
    out[#out + 1] = kind
  end
end
return out
"""


class LedgerDataError(ValueError):
    """A bucket in Redis holds something that is not a ledger total."""


class RedisLedger:
    """A `Ledger` in Redis; start with the constructor, stop with `close()`."""

    def __init__(
        self,
        url: str,
        *,
        key: str = "disco:budget:server",
        bucket_s: float = BUCKET_S,
        window_buckets: int = WINDOW_BUCKETS,
        refresh_s: float = REFRESH_S,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import redis  # the `fleet` extra; imported here so the default never needs it

        self._redis = redis
        self._url = url
        self.shown_url = redact_url(url)
        self.key = key
        self._window = Buckets(bucket_s, window_buckets)  # geometry only
        self._snapshot: LedgerTotals | None = None
        self._clock = clock
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self.state: Literal["fleet", "local"] = "local"
        """Which totals the controller uses now: the fleet's, or its own (Redis unavailable)."""
        self.syncs = 0
        self.failures = 0
        self._closed = False
        self._start()
        # A worker forked from a process that built this (gunicorn --preload) gets no thread
        # and a copy of the parent's pending spend: it starts afresh, its own thread included.
        ref = weakref.ref(self)

        def restart_in_child() -> None:
            ledger = ref()
            if ledger is not None and not ledger._closed:
                ledger._start()

        os.register_at_fork(after_in_child=restart_in_child)

    def _start(self) -> None:
        """Fresh per-process state and the background thread (at construction, and in a
        forked child, where the parent's thread, locks and pending spend are not its own)."""
        self._lock = threading.Lock()
        self._pending = Buckets(self._window.bucket_s, self._window.window_buckets)
        self._own = Buckets(self._window.bucket_s, self._window.window_buckets)
        """Everything this worker added, over the window (its share of the fleet's count)."""
        self._unacked: tuple[str, dict[int, LedgerTotals]] | None = None
        self._snapshot = None
        self._counts: dict[int, float] | None = None  # the last snapshot's count per bucket
        self._lag: float | None = None
        self.state = "local"
        self._warned = False
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()  # one sync at a time: the thread's, or sync_now's
        self._client = self._redis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry_on_timeout=False,
        )
        self._script = self._client.register_script(_PUSH_AND_READ)
        self._thread = threading.Thread(target=self._run, name="disco-ledger", daemon=True)
        self._thread.start()

    # -- the Ledger protocol (in memory, never blocks on Redis) ------------------------------

    def add(self, delta: LedgerTotals) -> None:
        if not all(math.isfinite(v) for v in delta):
            return
        with self._lock:
            now = self._clock()
            self._pending.add(now, delta)
            self._own.add(now, delta)

    def totals(self) -> LedgerTotals | None:
        with self._lock:
            if self._snapshot is None or self.state != "fleet":
                return None
            now = self._clock()
            totals = self._snapshot.plus(self._pending.total(now))
            if self._unacked is not None:  # taken by a sync that has not been confirmed
                first = self._window.first_bucket(now)
                for bucket, delta in self._unacked[1].items():
                    if bucket >= first:
                        totals = totals.plus(delta)
            return totals

    def peers(self) -> float:
        fleet = self.totals()
        with self._lock:
            own = self._own.total(self._clock()).n
        if fleet is None or own <= 0:
            return 1.0
        return max(fleet.n / own, 1.0)

    def lag(self) -> float:
        """The other workers' settled requests per sync (a moving mean over the recent ones):
        what a snapshot misses by the time the next one is read. 0 without a fleet view."""
        with self._lock:
            return self._lag if self._lag is not None and self.state == "fleet" else 0.0

    # -- control -----------------------------------------------------------------------------

    def sync_now(self) -> bool:
        """Sync once, now, on the caller's thread (tests, shutdown); True when it reached
        Redis. Bounded by the socket timeouts."""
        return self._sync_guarded()

    def close(self) -> None:
        """Stop the background thread, after one last bounded push of what is pending."""
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=4 * self._timeout_s + 1.0)

    def __repr__(self) -> str:
        return f"RedisLedger({self.shown_url!r}, key={self.key!r}, state={self.state!r})"

    # -- the background thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._sync_guarded()
                self._stop.wait(self._refresh_s)
            self._sync_guarded()  # the last pending deltas, on close
        finally:
            self._client.close()

    def _sync_guarded(self) -> bool:
        """One sync; any failure is a fault of the store, never the caller's: it degrades the
        ledger to local totals (the reason is logged once per outage)."""
        try:
            with self._sync_lock:
                self._sync()
        except Exception as exc:  # a store fault of any kind must not reach the request path
            self._degrade(exc)
            return False
        return True

    def _sync(self) -> None:
        with self._lock:
            now = self._clock()
            if self._unacked is None and self._pending.by_bucket:
                self._unacked = (uuid.uuid4().hex, self._pending.take())
            batch = self._unacked
        first = self._window.first_bucket(now)
        last = bucket_of(now, self._window.bucket_s)
        ttl_s = math.ceil((self._window.window_buckets + 1) * self._window.bucket_s)
        push_id, deltas = batch if batch is not None else ("", {})
        pushed = {b: d for b, d in deltas.items() if b >= first}
        keys = [f"{self.key}:push:{push_id}"]
        keys += [f"{self.key}:{b}" for b in pushed]
        keys += [f"{self.key}:{b}" for b in range(first, last + 1)]
        args: list[str | int] = [ttl_s, len(pushed)]
        args += [repr(v) for d in pushed.values() for v in d]
        # A failure here leaves the batch unacknowledged: the next sync sends it again under
        # the same push id, which the script applies at most once.
        errors, *reads = self._script(keys=keys, args=args)
        with self._lock:
            self._unacked = None
        snapshot = LedgerTotals()
        counts: dict[int, float] = {}
        for bucket, read in zip(range(first, last + 1), reads, strict=True):
            if not isinstance(read, list):
                raise LedgerDataError("a bucket is not a hash")
            totals = _parse(dict(zip(read[::2], read[1::2], strict=True)))
            snapshot = snapshot.plus(totals)
            counts[bucket] = totals.n
        if errors:  # an increment on a garbage field: the data is bad, and that delta lost
            raise LedgerDataError(f"{errors} increments refused (a field is not a number)")
        with self._lock:
            if self._counts is not None:
                # The others' requests since the last read: the window's growth per bucket
                # (a bucket that left the window is not a decrease), less this push.
                grown = sum(n - self._counts.get(b, 0.0) for b, n in counts.items())
                others = max(grown - sum(d.n for d in pushed.values()), 0.0)
                previous = others if self._lag is None else self._lag
                self._lag = previous + _LAG_WEIGHT * (others - previous)
            self._counts = counts
            self._snapshot = snapshot
            recovered = self.state != "fleet"
            self.state = "fleet"
            self.syncs += 1
        if recovered and self._warned:
            logger.info("budget ledger at %s reachable again: fleet totals back", self.shown_url)
        self._warned = False

    def _degrade(self, exc: BaseException) -> None:
        with self._lock:
            self._counts = None  # the next read spans the outage: not one sync's worth
            self.state = "local"
            self.failures += 1
        if not self._warned:
            self._warned = True
            # The exception's text, not the URL it was given: redis-py names host and port,
            # never the password; the URL is shown redacted.
            logger.warning(
                "budget ledger at %s unavailable (%s: %s): deciding from this worker's own "
                "totals until it returns",
                self.shown_url,
                type(exc).__name__,
                _redacted(str(exc), self._url),
            )


def _parse(raw: Any) -> LedgerTotals:
    """A bucket's hash as totals; anything but finite numbers (n, floor, ceiling >= 0) is
    garbage, and so the whole snapshot is."""
    if not isinstance(raw, dict):
        raise LedgerDataError("a bucket is not a hash")
    values = []
    for field in FIELDS:
        value = raw.get(field.encode(), b"0")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise LedgerDataError(f"field {field!r} is not a number") from None
        if not math.isfinite(number):
            raise LedgerDataError(f"field {field!r} is not finite")
        values.append(number)
    totals = LedgerTotals(*values)
    if totals.n < 0 or totals.floor < 0 or totals.ceiling < 0:
        raise LedgerDataError("a count or reference spend is negative")
    return totals


def _redacted(text: str, url: str) -> str:
    """An exception's text with the URL (and its password) taken out, should it echo them."""
    shown = text.replace(url, redact_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return shown.replace(password, "***") if password else shown
