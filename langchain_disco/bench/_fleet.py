"""The fleet benchmark: N worker processes share one budget through one Redis (issue 18).

One arrival stream (the bundled Azure 2023 conversation trace, tiled to `requests`) is dealt
round-robin to N worker processes (spawned: fresh interpreters, like an app server's workers)
and replayed on the real clock at `rate_per_s` requests per second in total. Every worker owns a
`BudgetController` at share b attached to a `RedisLedger` on the same Redis and key, exactly as
`DISCO_STATE_URL` wires one in an app, and decides every request from it.

The decision is a race rule, not the full dispatch engine: a request either goes to the device
alone (the floor: server spend 0) or races the server too (the ceiling: server spend = the
request's output tokens, one unit per token), and it races with probability
`controller.target_share()` (the `random_race` policy's rule, on a seeded generator per
worker). What is measured is the ledger and the controller: whether N processes deciding from a
shared, half-second-old view of the fleet's spend keep the fleet on budget. Mean TTFT is a
stated toy model, for comparison between runs only: the device's TTFT is its prefill
(`DEVICE_PREFILL_TOK_S`), the server's a lognormal draw per request (drawn once for the stream,
so every run sees the same draws), and a race takes the earlier of the two.

With `restart=True` the benchmark stops its redis-server at 40% of the run and starts it again
at 60%. The server persists to an append-only file (`_redis_process.py`), so Redis's count of
settled requests after the run proves none was lost or counted twice through the outage.

With `serve="model"` each worker is instead a real `DiscoChatModel` over echo endpoints, at a
lower rate (`_fleet_model`: the whole engine, the `generalized` policy, shared profiles too).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from typing import TYPE_CHECKING, Any, Literal

from langchain_disco.bench._redis_process import RedisProcess

if TYPE_CHECKING:
    from langchain_disco.scheduling.budget import BudgetController

SHARE = 0.3
RATE_PER_S = 1_000.0
DEVICE_PREFILL_TOK_S = 500.0
SERVER_TTFT_MEDIAN_S = 0.6
SERVER_TTFT_SIGMA = 0.5
STOP_AT = 0.4
RESTART_AT = 0.6
START_DELAY_S = 0.5
"""Between every worker being ready and the first arrival."""
READY_TIMEOUT_S = 120.0
"""Spawning N interpreters that import the package, on a small machine."""


@dataclass(frozen=True)
class WorkerReport:
    """One worker's figures at the end of its share of the stream (its own totals)."""

    worker: int
    n: int
    spent: float
    floor: float
    ceiling: float
    ttft_sum_s: float
    round_trips: int
    """Syncs that reached Redis (one Lua push-and-read each)."""
    failed_syncs: int
    state: str
    """The ledger's state after a last sync at the end: "fleet" or "local"."""
    behind_s: float
    """The most this worker ran behind the arrival schedule (the machine keeping pace)."""
    failed: int = 0
    """Requests that raised or ended without a report (model workers; the rule never fails)."""
    server_won: int = 0
    """Requests whose first token came from the server (model workers)."""

    @classmethod
    def settled(cls, worker: int, controller: BudgetController, **rest: Any) -> WorkerReport:
        """The report of `worker`, whose own totals are `controller`'s."""
        return cls(
            worker=worker,
            n=controller.n,
            spent=controller.spent,
            floor=controller.floor_total,
            ceiling=controller.ceiling_total,
            **rest,
        )


@dataclass(frozen=True)
class FleetResult:
    workers: int
    requests: int
    share: float
    rate_per_s: float
    restart: bool
    reports: tuple[WorkerReport, ...]
    ledger_n: float
    """Settled requests Redis counts for the run after every worker closed its ledger."""
    wall_s: float
    serve: Literal["rule", "model"] = "rule"

    @property
    def served(self) -> int:
        return sum(r.n for r in self.reports)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.reports)

    @property
    def server_won(self) -> int:
        return sum(r.server_won for r in self.reports)

    @property
    def realised_share(self) -> float:
        """The fleet's spend as a share of its floor-to-ceiling range (every worker's totals)."""
        floor = sum(r.floor for r in self.reports)
        headroom = sum(r.ceiling for r in self.reports) - floor
        return (sum(r.spent for r in self.reports) - floor) / headroom if headroom else math.nan

    @property
    def error(self) -> float:
        """Relative error of the realised share against the budget."""
        return self.realised_share / self.share - 1.0

    @property
    def round_trips_per_request(self) -> float:
        return sum(r.round_trips for r in self.reports) / max(self.served, 1)

    @property
    def mean_ttft_s(self) -> float:
        return sum(r.ttft_sum_s for r in self.reports) / max(self.served, 1)

    @property
    def states(self) -> str:
        """The workers' end states, e.g. "fleet" or "fleet x3, local x1"."""
        counts: dict[str, int] = {}
        for r in self.reports:
            counts[r.state] = counts.get(r.state, 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{state} x{n}" for state, n in sorted(counts.items()))

    @property
    def behind_s(self) -> float:
        return max(r.behind_s for r in self.reports)


def run_fleet(
    workers: int,
    requests: int,
    *,
    share: float = SHARE,
    rate_per_s: float = RATE_PER_S,
    restart: bool = False,
    seed: int = 0,
    redis_server_binary: str | None = None,
    serve: Literal["rule", "model"] = "rule",
) -> FleetResult:
    """Serve `requests` with `workers` processes sharing one budget through a redis-server of
    its own; with `restart`, that server is down from 40% to 60% of the run. `serve` picks the
    workers: the race rule on a bare controller, or a DiscoChatModel each (`_fleet_model`)."""
    from langchain_disco.bench import _fleet_model
    from langchain_disco.sim import load_trace

    if workers < 1 or requests < workers:
        raise ValueError("a fleet needs at least one worker and one request per worker")
    trace = load_trace().repeat_to(requests)
    if serve == "model":
        server_ttft_s = _fleet_model.server_draws(requests, seed)
    else:
        draws = random.Random(seed)
        server_ttft_s = [
            draws.lognormvariate(math.log(SERVER_TTFT_MEDIAN_S), SERVER_TTFT_SIGMA)
            for _ in range(requests)
        ]
    ctx = get_context("spawn")
    namespace = f"bench-fleet-{uuid.uuid4().hex[:8]}"
    duration_s = requests / rate_per_s
    with RedisProcess(redis_server_binary) as redis_server:
        ready = ctx.Barrier(workers + 1)
        start_at = ctx.Value("d", 0.0)
        out: Queue[WorkerReport] = ctx.Queue()
        processes = []
        target = _fleet_model.serve_model if serve == "model" else _serve
        for w in range(workers):
            job = Job(
                url=redis_server.url,
                namespace=namespace,
                worker=w,
                workers=workers,
                share=share,
                rate_per_s=rate_per_s,
                seed=seed,
                prompt_tokens=trace.prompt_tokens[w::workers],
                output_tokens=trace.output_tokens[w::workers],
                server_ttft_s=tuple(server_ttft_s[w::workers]),
            )
            process = ctx.Process(target=target, args=(job, ready, start_at, out))
            process.start()
            processes.append(process)
        try:
            ready.wait(timeout=READY_TIMEOUT_S)  # every worker has built its ledger
            t0 = time.time() + START_DELAY_S
            start_at.value = t0
            ready.wait(timeout=READY_TIMEOUT_S)  # ... and now knows when the stream starts
            if restart:
                _sleep_until(t0 + STOP_AT * duration_s)
                redis_server.stop()
                _sleep_until(t0 + RESTART_AT * duration_s)
                redis_server.start()
            reports = [out.get(timeout=duration_s + 120.0) for _ in processes]
        finally:
            for process in processes:
                process.join(timeout=30.0)
                if process.is_alive():  # a worker that hung: ours to stop, by its handle
                    process.kill()
                    process.join()
        wall_s = time.time() - t0
        ledger_n = _ledger_count(redis_server.url, f"{namespace}:budget:server")
    return FleetResult(
        workers=workers,
        requests=requests,
        share=share,
        rate_per_s=rate_per_s,
        restart=restart,
        reports=tuple(sorted(reports, key=lambda r: r.worker)),
        ledger_n=ledger_n,
        wall_s=wall_s,
        serve=serve,
    )


@dataclass(frozen=True)
class Job:
    """What one worker process is given (picklable, for the spawn context); its budget key is
    `{namespace}:budget:server`, as `DISCO_STATE_NAMESPACE` names a model's."""

    url: str
    namespace: str
    worker: int
    workers: int
    share: float
    rate_per_s: float
    seed: int
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    server_ttft_s: tuple[float, ...]


def _serve(
    job: Job, ready: Barrier, start_at: Synchronized[float], out: Queue[WorkerReport]
) -> None:
    """One worker: its controller and ledger, then its requests at their arrival times."""
    from langchain_disco.scheduling.budget import Budget, BudgetController
    from langchain_disco.state import RedisLedger

    ledger = RedisLedger(job.url, key=f"{job.namespace}:budget:server")
    controller = BudgetController(Budget(share=job.share))
    controller.ledger = ledger
    rng = random.Random(job.seed * 1_000 + job.worker + 1)
    ready.wait(timeout=READY_TIMEOUT_S)
    ready.wait(timeout=READY_TIMEOUT_S)
    t0 = start_at.value
    ttft_sum_s = 0.0
    behind_s = 0.0
    requests = zip(job.prompt_tokens, job.output_tokens, job.server_ttft_s, strict=True)
    for j, (prompt, output, server_s) in enumerate(requests):
        due = t0 + (job.worker + j * job.workers) / job.rate_per_s
        wait_s = due - time.time()
        if wait_s > 0:
            time.sleep(wait_s)  # the arrival schedule: this request is not due yet
        else:
            behind_s = max(behind_s, -wait_s)
        ceiling = float(output)
        race = rng.random() < controller.target_share()
        device_s = prompt / DEVICE_PREFILL_TOK_S
        ttft_sum_s += min(device_s, server_s) if race else device_s
        controller.record(ceiling if race else 0.0, 0.0, ceiling)
    ledger.sync_now()  # push what is pending now: the state reported is the end's
    state = ledger.state
    ledger.close()
    out.put(
        WorkerReport.settled(
            job.worker,
            controller,
            ttft_sum_s=ttft_sum_s,
            round_trips=ledger.syncs,
            failed_syncs=ledger.failures,
            state=state,
            behind_s=behind_s,
        )
    )


def _sleep_until(when_s: float) -> None:
    wait_s = when_s - time.time()
    if wait_s > 0:
        time.sleep(wait_s)  # the outage's schedule, on the same clock as the arrivals


def _ledger_count(url: str, key: str) -> float:
    """Settled requests summed over the run's buckets in Redis."""
    import redis

    client: Any = redis.Redis.from_url(url, socket_timeout=5.0)
    try:
        return sum(float(client.hget(k, "n") or 0.0) for k in client.keys(f"{key}:[0-9]*"))
    finally:
        client.close()
