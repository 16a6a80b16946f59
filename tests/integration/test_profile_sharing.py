"""Several processes sharing one profile cache keep every observation (issue 13, item 5).

Real processes (multiprocessing's spawn: fresh interpreters, as app workers are), each with its
own `LiveScheduler` on the same file, each learning from requests and saving as it goes. Before
the file was merged under a lock, the last writer won: 4 workers x 50 requests kept ~25% of what
they learned.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from langchain_disco._live_scheduler import SAVE_EVERY, LiveScheduler
from langchain_disco.config import DiscoSettings
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.dispatch import Plan, RequestFeatures, Start, policy_for_mode
from langchain_disco.scheduling.profiles import Profiles
from langchain_disco.scheduling.store import ProfileStore

WORKERS = 4
REQUESTS = 50  # not a multiple of SAVE_EVERY: the last ones reach the file by `save()`


def _learn(scheduler: LiveScheduler, i: int, worker: int) -> None:
    features = RequestFeatures(prompt_tokens=100 + worker, max_tokens=None)
    plan = Plan(action="remote", starts=(Start("remote"),), reason="test")
    run = EndpointRun(
        name="remote",
        kind="openai",
        model="m",
        outcome="won",
        started_s=0.0,
        first_token_s=0.2 + 0.001 * i,
        ended_s=0.5,
        output_tokens=10,
        delivered_chunks=10,
    )
    report = RequestReport(
        action="remote", reason="test", winner="remote", endpoints={"remote": run}
    )
    scheduler.learn(features, plan, report)


def _worker(path: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    settings = DiscoSettings(profile_path=Path(path), persist_profiles=True)
    scheduler = LiveScheduler(settings, policy_for_mode("remote"))
    scheduler.profiles  # noqa: B018 - load now, before the others have written anything
    if not start.wait(60):
        raise SystemExit("start event never set")
    for i in range(REQUESTS):
        _learn(scheduler, i, worker)
    scheduler.save()


def _seen(path: Path) -> dict[str, int]:
    profiles = json.loads(path.read_text())["profiles"]
    return {
        "prompt_lengths": profiles["prompt_lengths"]["n_seen"],
        "output_lengths": profiles["output_lengths"]["n_seen"],
    }


def test_concurrent_workers_lose_no_observation(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    prior = Profiles.prior()
    before = {
        "prompt_lengths": prior.prompt_lengths.tokens.n_seen,
        "output_lengths": prior.output_lengths.tokens.n_seen,
    }
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(str(path), w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"

    seen = _seen(path)
    for name, n in before.items():
        assert seen[name] == n + WORKERS * REQUESTS, name
    # Every worker's prompt size reached the file: none was overwritten by another's save.
    stored = ProfileStore(path).load()
    assert stored.prompt_lengths.tokens.n_seen == before["prompt_lengths"] + WORKERS * REQUESTS


def test_a_save_adopts_what_other_processes_learned(tmp_path: Path) -> None:
    """Worker A saves after B did: A's memory now holds B's observations too, in place (the
    engine's migration predictor holds the very `Profiles` object)."""
    settings = DiscoSettings(profile_path=tmp_path / "profiles.json", persist_profiles=True)
    a = LiveScheduler(settings, policy_for_mode("remote"))
    b = LiveScheduler(settings, policy_for_mode("remote"))
    held = a.profiles
    n0 = held.prompt_lengths.tokens.n_seen
    b.profiles  # noqa: B018
    for i in range(3):
        _learn(b, i, worker=1)
    b.save()
    _learn(a, 0, worker=0)
    a.save()
    assert a.profiles is held
    assert held.prompt_lengths.tokens.n_seen == n0 + 4
    # Saving again replays nothing twice.
    a.save()
    assert ProfileStore(tmp_path / "profiles.json").load().prompt_lengths.tokens.n_seen == n0 + 4


def test_a_corrupt_file_is_replaced_by_everything_this_process_knows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "profiles.json"
    settings = DiscoSettings(profile_path=path, persist_profiles=True)
    a = LiveScheduler(settings, policy_for_mode("remote"))
    for i in range(SAVE_EVERY):  # the periodic save writes the file
        _learn(a, i, worker=0)
    n = a.profiles.prompt_lengths.tokens.n_seen
    path.write_bytes(b"\xff not json")
    _learn(a, 0, worker=0)
    a.save()
    assert "corrupt" in caplog.text
    assert ProfileStore(path).load().prompt_lengths.tokens.n_seen == n + 1


def test_a_held_lock_keeps_the_observations_for_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from filelock import FileLock

    from langchain_disco.scheduling import store

    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.05)
    path = tmp_path / "profiles.json"
    settings = DiscoSettings(profile_path=path, persist_profiles=True)
    a = LiveScheduler(settings, policy_for_mode("remote"))
    n0 = a.profiles.prompt_lengths.tokens.n_seen
    _learn(a, 0, worker=0)
    # Another holder of the lock (a separate descriptor, as another process has).
    with FileLock(ProfileStore(path).lock_path, is_singleton=False):
        a.save()
    assert "was held for more than" in caplog.text
    assert not path.exists()
    a.save()
    assert ProfileStore(path).load().prompt_lengths.tokens.n_seen == n0 + 1
