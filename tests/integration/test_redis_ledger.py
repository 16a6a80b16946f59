"""The fleet ledger against a real redis-server: pushes, reads, the window, and faults."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from langchain_disco._live_scheduler import LiveScheduler, policy_from_settings
from langchain_disco.config import load_settings
from langchain_disco.scheduling.budget import Budget, BudgetController, LedgerTotals
from langchain_disco.state import RedisLedger
from tests._redis import RedisServer, free_port, require_redis_server

pytestmark = pytest.mark.redis


def _ledger(url: str, **kw: object) -> RedisLedger:
    kw = {"refresh_s": 0.05, **kw}
    return RedisLedger(url, key="test:budget:server", timeout_s=0.5, **kw)  # type: ignore[arg-type]


def _wait(predicate: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)  # polling a background thread's progress: a bounded wait
    return False


def test_added_spend_reaches_redis_and_comes_back_as_the_fleet_total(
    redis_server: RedisServer,
) -> None:
    ledger = _ledger(redis_server.url)
    try:
        ledger.add(LedgerTotals(1.0, 0.25, 0.5, 0.0, 1.0))
        assert ledger.sync_now()
        assert ledger.state == "fleet"
        assert ledger.totals() == LedgerTotals(1.0, 0.25, 0.5, 0.0, 1.0)
        client = redis.Redis.from_url(redis_server.url)
        (key,) = client.keys("test:budget:server:[0-9]*")
        assert float(client.hget(key, "spent")) == 0.25  # type: ignore[arg-type]
        assert 0 < client.ttl(key) <= 61 * 60  # expires one bucket after leaving the window
    finally:
        ledger.close()


def test_two_ledgers_on_one_redis_see_each_others_spend(redis_server: RedisServer) -> None:
    a, b = _ledger(redis_server.url), _ledger(redis_server.url)
    try:
        ca, cb = BudgetController(Budget(share=0.5)), BudgetController(Budget(share=0.5))
        ca.ledger, cb.ledger = a, b
        ca.record(4.0, 0.0, 4.0)
        assert a.sync_now() and b.sync_now()
        assert cb.deficit == -2.0
        assert cb.target_share() < 0.5
    finally:
        a.close()
        b.close()


def test_peers_is_the_fleets_count_over_this_workers_own(redis_server: RedisServer) -> None:
    a, b = _ledger(redis_server.url), _ledger(redis_server.url)
    try:
        assert a.peers() == 1.0  # no fleet view yet
        for _ in range(3):
            a.add(LedgerTotals(n=1.0))
        b.add(LedgerTotals(n=1.0))
        assert b.sync_now() and a.sync_now() and b.sync_now()
        assert a.peers() == pytest.approx(4 / 3)
        assert b.peers() == pytest.approx(4.0)
    finally:
        a.close()
        b.close()


def test_lag_is_the_other_workers_settled_requests_per_sync(redis_server: RedisServer) -> None:
    # Syncs only when told (the threads' first one aside), so each read spans known adds.
    a = _ledger(redis_server.url, refresh_s=3_600.0)
    b = _ledger(redis_server.url, refresh_s=3_600.0)
    try:
        assert _wait(lambda: a.syncs >= 1 and b.syncs >= 1)
        assert a.lag() == 0.0  # one read: no interval measured yet
        for _ in range(5):
            b.add(LedgerTotals(n=1.0))
        assert b.sync_now() and a.sync_now()
        assert a.lag() == pytest.approx(5.0)  # b's five since a's last read
        for _ in range(3):
            a.add(LedgerTotals(n=1.0))  # a's own: not a delay
        b.add(LedgerTotals(n=1.0))
        b.add(LedgerTotals(n=1.0))
        assert b.sync_now() and a.sync_now()
        assert a.lag() == pytest.approx(5.0 + 0.2 * (2.0 - 5.0))  # a moving mean
        assert b.lag() == 0.0  # a pushed nothing between b's reads
    finally:
        a.close()
        b.close()


def test_spend_outside_the_window_is_not_counted(redis_server: RedisServer) -> None:
    now = [1_000.0]
    ledger = _ledger(redis_server.url, bucket_s=10.0, window_buckets=2, clock=lambda: now[0])
    try:
        ledger.add(LedgerTotals(n=1.0, spent=1.0))
        assert ledger.sync_now()
        now[0] += 25.0  # two buckets later: the first bucket has left the window
        ledger.add(LedgerTotals(n=1.0, spent=2.0))
        assert ledger.sync_now()
        assert ledger.totals() == LedgerTotals(n=1.0, spent=2.0)
    finally:
        ledger.close()


# -- faults ---------------------------------------------------------------------------------


class _Records(logging.Handler):
    """Every record of the ledger's logger, from whichever thread logged it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)


@pytest.fixture
def caplog() -> Iterator[_Records]:  # type: ignore[override]
    """The ledger's own log records (a handler on its logger, so no other test's logging
    configuration decides what is seen)."""
    logger = logging.getLogger("langchain_disco.state")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _warnings(caplog: _Records) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_redis_down_at_start_falls_back_to_local_totals_with_one_warning(
    caplog: _Records,
) -> None:
    ledger = _ledger(f"redis://127.0.0.1:{free_port()}/0")
    try:
        controller = BudgetController(Budget(share=0.5))
        controller.ledger = ledger
        for _ in range(3):
            assert not ledger.sync_now()
        controller.record(4.0, 0.0, 4.0)  # nothing raises on the request path
        assert ledger.state == "local"
        assert ledger.totals() is None
        assert controller.deficit == -2.0  # its own totals
        assert len(_warnings(caplog)) == 1
    finally:
        ledger.close()


def test_redis_lost_mid_run_then_back_reconciles_what_was_spent_meanwhile(
    redis_server: RedisServer, caplog: _Records
) -> None:
    ledger = _ledger(redis_server.url)
    try:
        ledger.add(LedgerTotals(n=1.0, spent=1.0))
        assert ledger.sync_now()
        redis_server.stop()  # the real process, terminated
        assert _wait(lambda: ledger.state == "local")
        ledger.add(LedgerTotals(n=1.0, spent=2.0))
        ledger.add(LedgerTotals(n=1.0, spent=3.0))
        assert ledger.totals() is None
        redis_server.start()  # same port, empty (no persistence): a restarted Redis
        assert _wait(lambda: ledger.state == "fleet")
        assert ledger.totals() == LedgerTotals(n=2.0, spent=5.0)  # the outage's spend, pushed
        assert len(_warnings(caplog)) == 1
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        ledger.close()


def test_garbage_in_redis_is_a_fault_not_a_number(
    redis_server: RedisServer, caplog: _Records
) -> None:
    ledger = _ledger(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    try:
        ledger.add(LedgerTotals(n=1.0, spent=1.0))
        assert ledger.sync_now()
        (key,) = client.keys("test:budget:server:[0-9]*")
        client.hset(key, "spent", "banana")
        assert not ledger.sync_now()
        assert ledger.state == "local" and ledger.totals() is None
        client.hset(key, "ceiling", "inf")
        client.hset(key, "spent", "1")
        assert not ledger.sync_now()
        client.delete(key)
        client.set(key, "not a hash")  # WRONGTYPE for every read
        assert not ledger.sync_now()
        client.delete(key)
        assert ledger.sync_now()
        assert ledger.state == "fleet"
        assert len(_warnings(caplog)) == 1
    finally:
        ledger.close()
        client.close()


def test_a_slow_redis_is_a_fault_and_the_request_path_never_waits_for_it(
    caplog: _Records,
) -> None:
    args = ("--enable-debug-command", "yes")
    with RedisServer(require_redis_server(), extra_args=args) as server:
        ledger = _ledger(server.url)
        try:
            assert ledger.sync_now()
            blocker = redis.Redis.from_url(server.url)
            sleeper = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", "2"))
            sleeper.start()  # Redis is single-threaded: every command now waits 2 s
            assert _wait(lambda: ledger.state == "local")  # past the 0.5 s socket timeout
            began = time.monotonic()
            ledger.add(LedgerTotals(n=1.0, spent=1.0))
            assert ledger.totals() is None
            assert time.monotonic() - began < 0.1  # in memory, not behind the slow sync
            assert _wait(lambda: ledger.failures >= 2)  # the push sent again, timed out again
            sleeper.join()
            blocker.close()
            assert _wait(lambda: ledger.state == "fleet")
            # Redis ran every timed-out push once it woke; the push id made them count once.
            assert ledger.totals() == LedgerTotals(n=1.0, spent=1.0)
            client = redis.Redis.from_url(server.url)
            (key,) = client.keys("test:budget:server:[0-9]*")
            assert float(client.hget(key, "n")) == 1.0  # type: ignore[arg-type]
            client.close()
            assert len(_warnings(caplog)) == 1
        finally:
            ledger.close()


def test_the_urls_password_is_never_logged_nor_shown(
    caplog: _Records,
) -> None:
    with RedisServer(require_redis_server(), password="hunter2-right") as server:
        wrong = server.url.replace("hunter2-right", "hunter2-wrong")
        ledger = _ledger(wrong)
        try:
            assert not ledger.sync_now()
            assert "hunter2" not in repr(ledger)
        finally:
            ledger.close()
        right = _ledger(server.url)
        try:
            assert right.sync_now()
        finally:
            right.close()
    down = _ledger(wrong)  # the server is gone: connection refused, with the URL
    try:
        assert not down.sync_now()
    finally:
        down.close()
    assert len(_warnings(caplog)) == 2
    assert "***" in caplog.text
    assert "hunter2" not in caplog.text


def test_disco_state_url_attaches_the_fleet_ledger_to_the_policys_budget(
    redis_server: RedisServer,
) -> None:
    settings = load_settings(
        policy="length_threshold", budget=0.3, state_url=redis_server.url, state_namespace="svc"
    )
    scheduler = LiveScheduler(settings, policy_from_settings(settings))
    ledger = scheduler.ledger
    assert isinstance(ledger, RedisLedger)
    try:
        assert ledger.key == "svc:budget:server"
        assert scheduler.policy.controller.ledger is ledger  # type: ignore[attr-defined]
    finally:
        ledger.close()


def test_without_disco_state_url_no_ledger_is_attached() -> None:
    settings = load_settings(policy="length_threshold", budget=0.3)
    scheduler = LiveScheduler(settings, policy_from_settings(settings))
    assert scheduler.ledger is None
    assert scheduler.policy.controller.ledger is None  # type: ignore[attr-defined]
