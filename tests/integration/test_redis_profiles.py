"""The fleet's learned profiles in a real redis-server (issue 18, items 1 and 2).

Workers are `LiveScheduler`s with `DISCO_STATE_URL` set, each with a profile file of its own
(so whatever they share went through Redis); the concurrency test uses real processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from langchain_disco._live_scheduler import LiveScheduler, policy_from_settings
from langchain_disco.config import DiscoSettings, load_settings
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.dispatch import Plan, RequestFeatures, Start
from langchain_disco.scheduling.profiles import Profiles
from langchain_disco.state.redis_profiles import RedisProfileStore
from tests._redis import RedisServer, require_redis_server

pytestmark = pytest.mark.redis

WORKERS = 4
REQUESTS = 60


def _settings(url: str, tmp: Path, name: str, **kw: object) -> DiscoSettings:
    return load_settings(
        state_url=url,
        state_namespace="svc",
        profile_path=tmp / f"{name}.json",
        persist_profiles=True,
        **kw,
    )


def _scheduler(url: str, tmp: Path, name: str, **kw: object) -> LiveScheduler:
    settings = _settings(url, tmp, name, **kw)
    return LiveScheduler(settings, policy_from_settings(settings))


def _learn(scheduler: LiveScheduler, i: int, *, server_ttft_s: float = 0.2) -> None:
    """One race the server won at `server_ttft_s`, the device cancelled before its first."""
    features = RequestFeatures(prompt_tokens=100 + i % 7, max_tokens=None)
    plan = Plan(action="remote", starts=(Start("remote"),), reason="test")
    run = EndpointRun(
        name="remote",
        kind="openai",
        model="m",
        outcome="won",
        started_s=0.0,
        first_token_s=server_ttft_s + 0.0001 * i,
        ended_s=server_ttft_s + 0.5,
        output_tokens=10,
        delivered_chunks=10,
    )
    report = RequestReport(
        action="remote", reason="test", winner="remote", endpoints={"remote": run}
    )
    scheduler.learn(features, plan, report)


def _device_learn(scheduler: LiveScheduler, prompt_tokens: int, ttft_s: float) -> None:
    features = RequestFeatures(prompt_tokens=prompt_tokens, max_tokens=None)
    plan = Plan(action="local", starts=(Start("local"),), reason="test")
    run = EndpointRun(
        name="local",
        kind="llama_cpp",
        model="m",
        outcome="won",
        started_s=0.0,
        first_token_s=ttft_s,
        ended_s=ttft_s + 1.0,
        input_tokens=prompt_tokens,
        output_tokens=20,
        delivered_chunks=20,
    )
    report = RequestReport(action="local", reason="test", winner="local", endpoints={"local": run})
    scheduler.learn(features, plan, report)


def shared_profiles(url: str, namespace: str, device_id: str = "x") -> Profiles | None:
    """What the fleet's store holds now, read by a store of its own."""
    store = RedisProfileStore(
        url, namespace=namespace, device_id=device_id, prior=Profiles.prior, fallback=Profiles.prior
    )
    try:
        return store.pull()
    finally:
        store.close()


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_what_one_worker_learned_a_new_worker_decides_from_at_its_first_request(
    redis_server: RedisServer, tmp: Path
) -> None:
    """A long-running worker learned a device 35x faster than its prior and a server slower
    than the prior; a worker started afterwards on the same machine, with no profile file of
    its own, plans its first request as the old one does, not as one learning alone."""
    kw: dict[str, object] = {"policy": "generalized", "budget": 0.5, "device_id": "box"}
    old = _scheduler(redis_server.url, tmp, "old", **kw)
    try:
        for i in range(200):
            prompt = 200 + 20 * i
            _device_learn(old, prompt, ttft_s=0.02 + prompt / 20_000)
            _learn(old, i, server_ttft_s=6.0)
        old.save()
        features = RequestFeatures(prompt_tokens=2_000, max_tokens=64)
        settings = load_settings(profile_path=tmp / "alone.json", policy="generalized", budget=0.5)
        alone = LiveScheduler(settings, policy_from_settings(settings))
        new = _scheduler(redis_server.url, tmp, "new", **kw)
        try:
            assert new.state["profiles"] == "fleet"
            seen = new.profiles.server.ttft.n_seen
            assert (
                seen == old.profiles.server.ttft.n_seen == alone.profiles.server.ttft.n_seen + 200
            )
            assert new.profiles.server.quantile(0.5) == old.profiles.server.quantile(0.5)
            assert new.profiles.device.prefill_tok_s == pytest.approx(
                old.profiles.device.prefill_tok_s
            )
            assert old.plan(features).action == "local"  # the fast device alone
            assert alone.plan(features).action == "race"  # the prior's device needs the server
            assert new.plan(features).action == "local"
        finally:
            new.close()
    finally:
        old.close()


def test_each_machine_keeps_its_own_device_line_and_shares_the_server(
    redis_server: RedisServer, tmp: Path
) -> None:
    fast = _scheduler(redis_server.url, tmp, "fast", device_id="gpu-box")
    try:
        for i in range(40):
            _device_learn(fast, 200 + 10 * i, ttft_s=0.01 + 0.0001 * (200 + 10 * i))
            _learn(fast, i, server_ttft_s=4.0)
        fast.save()
        same_box = _scheduler(redis_server.url, tmp, "same", device_id="gpu-box")
        phone = _scheduler(redis_server.url, tmp, "phone", device_id="phone")
        try:
            prior = Profiles.prior()
            assert same_box.profiles.device.to_dict() == fast.profiles.device.to_dict()
            assert phone.profiles.device.to_dict() == prior.device.to_dict()  # its own prior
            assert phone.profiles.server.ttft.n_seen == fast.profiles.server.ttft.n_seen
        finally:
            same_box.close()
            phone.close()
    finally:
        fast.close()


def _worker(url: str, tmp: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    scheduler = _scheduler(url, Path(tmp), f"w{worker}")
    if not start.wait(60):
        raise SystemExit("start event never set")
    for i in range(REQUESTS):
        _learn(scheduler, i)
        if i % 10 == 9:
            scheduler.save()  # saves that race the other workers' (the thread saves too)
    scheduler.close()  # the last push


def test_concurrent_worker_processes_lose_no_observation(
    redis_server: RedisServer, tmp: Path
) -> None:
    before = Profiles.prior().prompt_lengths.tokens.n_seen
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_worker, args=(redis_server.url, str(tmp), w, start))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    shared = shared_profiles(redis_server.url, "svc", "x")
    assert shared is not None
    assert shared.prompt_lengths.tokens.n_seen == before + WORKERS * REQUESTS


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[_Records]:
    logger = logging.getLogger("langchain_disco.state")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_redis_down_at_start_then_back_saves_what_was_learned_meanwhile(
    tmp: Path, records: _Records
) -> None:
    server = RedisServer(require_redis_server())  # its port, not yet listening
    url = server.url
    scheduler = _scheduler(url, tmp, "w")
    try:
        assert scheduler.state["profiles"] == "local"
        n0 = scheduler.profiles.prompt_lengths.tokens.n_seen
        for i in range(5):
            _learn(scheduler, i)
        scheduler.save()
        scheduler.save()
        warnings = [r for r in records.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # one per outage, not one per save
        assert scheduler.profiles.prompt_lengths.tokens.n_seen == n0 + 5
        with server:
            scheduler.save()
            assert scheduler.state["profiles"] == "fleet"
            shared = shared_profiles(url, "svc", "x")
            assert shared is not None
            assert shared.prompt_lengths.tokens.n_seen == n0 + 5  # reconciled, counted once
            assert any("reachable again" in r.getMessage() for r in records.records)
    finally:
        scheduler.close()


def test_garbage_in_the_shared_key_is_replaced_with_what_this_worker_knows(
    redis_server: RedisServer, tmp: Path, records: _Records
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("svc:profiles", b"\xff not a payload")
    client.set("svc:profiles:device:box", b'{"a": NaN}')
    scheduler = _scheduler(redis_server.url, tmp, "w", device_id="box")
    try:
        prior = Profiles.prior()
        assert scheduler.profiles.device.to_dict() == prior.device.to_dict()  # priors, not garbage
        _learn(scheduler, 0)
        scheduler.save()
        assert any("writing this worker's over them" in r.getMessage() for r in records.records)
        shared = shared_profiles(redis_server.url, "svc", "box")
        assert shared is not None
        assert (
            shared.prompt_lengths.tokens.n_seen == scheduler.profiles.prompt_lengths.tokens.n_seen
        )
    finally:
        scheduler.close()


def test_a_slow_redis_is_a_fault_deciding_never_waits_for_and_the_batch_is_kept(
    tmp: Path, records: _Records
) -> None:
    args = ("--enable-debug-command", "yes")
    with RedisServer(require_redis_server(), extra_args=args) as server:
        scheduler = _scheduler(server.url, tmp, "w")
        try:
            n0 = scheduler.profiles.prompt_lengths.tokens.n_seen
            scheduler.save()  # the store now holds the priors
            blocker = redis.Redis.from_url(server.url)
            sleeper = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", "2"))
            sleeper.start()  # Redis is single-threaded: every command now waits 2 s
            assert _wait(lambda: _sleeping(server.url) or not sleeper.is_alive())
            for i in range(3):
                _learn(scheduler, i)
            began = time.monotonic()
            scheduler.plan(RequestFeatures(prompt_tokens=100, max_tokens=None))
            assert time.monotonic() - began < 0.5  # deciding never waits on the stuck store
            scheduler.save()  # times out after 1 s: its batch stays unacknowledged
            assert scheduler.state["profiles"] == "local"
            sleeper.join()
            blocker.close()
            scheduler.save()  # the same batch again, under its id
            assert scheduler.state["profiles"] == "fleet"
            shared = shared_profiles(server.url, "svc", "x")
            assert shared is not None
            assert shared.prompt_lengths.tokens.n_seen == n0 + 3
            assert scheduler.profiles.prompt_lengths.tokens.n_seen == n0 + 3
        finally:
            scheduler.close()


def test_a_save_whose_reply_was_lost_is_sent_again_and_counted_once(
    redis_server: RedisServer, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis applied the transaction but its reply never came (a fault a live server cannot be
    made to produce on cue: the client's `execute` is wrapped to lose one reply)."""
    scheduler = _scheduler(redis_server.url, tmp, "w")
    try:
        n0 = scheduler.profiles.prompt_lengths.tokens.n_seen
        real = redis.client.Pipeline.execute
        lost: list[bool] = []

        def execute_and_lose_the_reply(self: Any, raise_on_error: bool = True) -> Any:
            result = real(self, raise_on_error)
            if not lost:
                lost.append(True)
                raise redis.TimeoutError("Timeout reading from socket")
            return result

        monkeypatch.setattr(redis.client.Pipeline, "execute", execute_and_lose_the_reply)
        for i in range(3):
            _learn(scheduler, i)
        scheduler.save()
        assert lost and scheduler.state["profiles"] == "local"
        scheduler.save()  # the same batch, under its id: Redis has it already
        assert scheduler.state["profiles"] == "fleet"
        shared = shared_profiles(redis_server.url, "svc", "x")
        assert shared is not None
        assert shared.prompt_lengths.tokens.n_seen == n0 + 3  # not n0 + 6
    finally:
        scheduler.close()


def _sleeping(url: str) -> bool:
    """Whether Redis is stuck in DEBUG SLEEP: a PING does not answer within 0.2 s."""
    client = redis.Redis.from_url(url, socket_timeout=0.2)
    try:
        client.ping()
        return False
    except redis.TimeoutError:
        return True
    finally:
        client.close()


def _wait(predicate: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)  # polling another thread's progress: a bounded wait
    return False
