"""Several real worker processes sharing one budget ledger in a real redis-server: no increment
is lost, and each worker's controller decides from the whole fleet's spend."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier

import pytest
import redis

from langchain_disco.scheduling.budget import Budget, BudgetController, LedgerTotals
from langchain_disco.state import RedisLedger
from tests._redis import RedisServer

pytestmark = pytest.mark.redis

KEY = "fleet:budget:server"
PER_WORKER = 500


def _spend_worker(url: str, worker: int, start: Barrier) -> None:
    """One worker: PER_WORKER settled requests of spend 0.25 (exact in binary), pushed in
    small batches that race the other workers' increments on the same bucket fields."""
    ledger = RedisLedger(url, key=KEY, refresh_s=0.01, timeout_s=2.0)
    controller = BudgetController(Budget(share=0.5))
    controller.ledger = ledger
    start.wait()
    for i in range(PER_WORKER):
        controller.record(0.25, 0.0, 1.0)  # allowance 0.5 each
        if i % 10 == 0:
            ledger.sync_now()
    ledger.close()  # pushes what is still pending


def _see_worker(url: str, worker: int, start: Barrier, out: multiprocessing.Queue[object]) -> None:
    """One of two workers: spend on its own, sync, wait for the other, sync, and report what
    its controller now sees."""
    ledger = RedisLedger(url, key=KEY, refresh_s=60.0, timeout_s=2.0)
    controller = BudgetController(Budget(share=0.5))
    controller.ledger = ledger
    start.wait()
    spend = 1.0 if worker == 0 else 0.0  # worker 0 overspends, worker 1 underspends
    for _ in range(10):
        controller.record(spend, 0.0, 1.0)
    ok = ledger.sync_now()
    start.wait()
    ok = ledger.sync_now() and ok
    out.put((worker, ok, controller.deficit, controller.realised_share, controller.n))
    ledger.close()


def test_four_processes_incrementing_one_ledger_lose_no_increment(
    redis_server: RedisServer,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    workers = [
        ctx.Process(target=_spend_worker, args=(redis_server.url, i, start)) for i in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    totals = {"n": 0.0, "spent": 0.0, "allowed": 0.0}
    for key in client.keys(f"{KEY}:[0-9]*"):
        for field in totals:
            totals[field] += float(client.hget(key, field) or 0)  # type: ignore[arg-type]
    assert totals == {"n": 4 * PER_WORKER, "spent": PER_WORKER, "allowed": 2 * PER_WORKER}


def test_two_budgets_in_two_processes_see_each_others_spend(redis_server: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    out: multiprocessing.Queue[object] = ctx.Queue()
    workers = [
        ctx.Process(target=_see_worker, args=(redis_server.url, i, start, out)) for i in range(2)
    ]
    for w in workers:
        w.start()
    seen = sorted(out.get(timeout=60) for _ in workers)  # type: ignore[type-var]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    # Alone, worker 0 would see a deficit of -5 and worker 1 of +5; together the fleet is on
    # budget, and both see it: 20 requests, spend 10 against an allowance of 10.
    assert seen == [(0, True, 0.0, 0.5, 10), (1, True, 0.0, 0.5, 10)]


def _forked_worker(ledger: RedisLedger) -> None:
    ledger.add(LedgerTotals(n=1.0, spent=2.0))
    assert ledger.sync_now()
    assert ledger.totals() == LedgerTotals(n=1.0, spent=2.0)  # the parent's pending is not its
    ledger.close()


def test_a_worker_forked_after_the_ledger_was_built_syncs_on_its_own_thread(
    redis_server: RedisServer,
) -> None:
    """gunicorn --preload: the model (and its ledger) is built before the fork. The child's
    ledger runs its own thread and does not push the parent's pending spend a second time."""
    ledger = RedisLedger(redis_server.url, key=KEY, refresh_s=60.0, timeout_s=2.0)
    try:
        assert ledger.sync_now()  # the next background sync is a minute away
        ledger.add(LedgerTotals(n=1.0, spent=1.0))  # pending in the parent at the fork
        child = multiprocessing.get_context("fork").Process(target=_forked_worker, args=(ledger,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert ledger.sync_now()
        assert ledger.totals() == LedgerTotals(n=2.0, spent=3.0)
    finally:
        ledger.close()
