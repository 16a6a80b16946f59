"""How fast a new worker's profiles converge: learning from the fleet's vs learning alone.

A long-running worker has served `warm_requests` requests of the bundled trace's prompt sizes
on a device and a server that are both unlike the priors (a device 36x faster than the default
prior's prefill, a server whose median TTFT is 3 s, six times the 'all' prior's), saving them
to a redis-server as `DISCO_STATE_URL` makes it. Then two workers start: one on the same Redis
and device id (shared), one with a profile file of its own (alone). Both serve the same next
`new_requests` requests, learning from each, and before each one their predictions are scored
against the truth: the device's TTFT for that prompt, and the server's median TTFT.

The requests are fed to `LiveScheduler.learn` as the engine reports them (one endpoint per
request, alternately the device and the server), so what is measured is the profiles and their
sharing, not the dispatch engine or a network.
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from langchain_disco._live_scheduler import LiveScheduler, policy_from_settings
from langchain_disco.bench._redis_process import RedisProcess
from langchain_disco.config import load_settings
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.dispatch import Plan, RequestFeatures, Start
from langchain_disco.scheduling.roles import Role
from langchain_disco.sim import load_trace

DEVICE_OVERHEAD_S = 0.02
DEVICE_PREFILL_TOK_S = 20_000.0
SERVER_TTFT_MEDIAN_S = 3.0
SERVER_TTFT_SIGMA = 0.4
NOISE_SIGMA = 0.1
CHECKPOINTS = (1, 10, 50, 200)


@dataclass(frozen=True)
class ConvergenceRow:
    worker: str
    """"shared" (the fleet's profiles through Redis) or "alone" (its own file)."""
    device_error: tuple[float, ...]
    """Median |predicted / true - 1| of the device TTFT over the requests up to each checkpoint."""
    server_error: tuple[float, ...]
    """|learned median / true median - 1| of the server TTFT at each checkpoint."""


def _device_truth_s(prompt: int) -> float:
    return DEVICE_OVERHEAD_S + prompt / DEVICE_PREFILL_TOK_S


def run_convergence(
    warm_requests: int = 2_000,
    new_requests: int = CHECKPOINTS[-1],
    *,
    seed: int = 0,
    redis_server_binary: str | None = None,
) -> list[ConvergenceRow]:
    """Score a shared and a lone new worker's predictions over their first `new_requests`."""
    prompts = list(load_trace().repeat_to(warm_requests + new_requests).prompt_tokens)
    rng = random.Random(seed)
    with RedisProcess(redis_server_binary) as redis_server, tempfile.TemporaryDirectory() as tmp:

        def worker(name: str, shared: bool) -> LiveScheduler:
            settings = load_settings(
                mode="race",
                profile_path=Path(tmp) / f"{name}.json",
                persist_profiles=True,
                state_url=redis_server.url if shared else None,
                state_namespace="bench-convergence",
                device_id="bench-device",
            )
            return LiveScheduler(settings, policy_from_settings(settings))

        old = worker("old", shared=True)
        try:
            for i, prompt in enumerate(prompts[:warm_requests]):
                _learn(old, i, prompt, rng)
            old.save()
        finally:
            old.close()
        workers = {"shared": worker("shared", shared=True), "alone": worker("alone", shared=False)}
        device_errors: dict[str, list[float]] = {name: [] for name in workers}
        server_errors: dict[str, list[float]] = {name: [] for name in workers}
        try:
            for j, prompt in enumerate(prompts[warm_requests:]):
                draw = random.Random(rng.random())  # the same request for both workers
                for name, scheduler in workers.items():
                    profiles = scheduler.profiles
                    predicted = profiles.device.predict_ttft_s(prompt)
                    device_errors[name].append(abs(predicted / _device_truth_s(prompt) - 1.0))
                    if j + 1 in CHECKPOINTS:
                        median = profiles.server.quantile(0.5)
                        server_errors[name].append(abs(median / SERVER_TTFT_MEDIAN_S - 1.0))
                    _learn(scheduler, warm_requests + j, prompt, random.Random(draw.random()))
        finally:
            for scheduler in workers.values():
                scheduler.close()
    checkpoints = [k for k in CHECKPOINTS if k <= new_requests]
    return [
        ConvergenceRow(
            worker=name,
            device_error=tuple(statistics.median(device_errors[name][:k]) for k in checkpoints),
            server_error=tuple(server_errors[name]),
        )
        for name in workers
    ]


def _learn(scheduler: LiveScheduler, i: int, prompt: int, rng: random.Random) -> None:
    """One finished request as the engine reports it: the device's answer on even `i`, the
    server's on odd, with lognormal noise around the truth."""
    role: Role = "local" if i % 2 == 0 else "remote"
    if role == "local":
        ttft = _device_truth_s(prompt) * rng.lognormvariate(0.0, NOISE_SIGMA)
    else:
        ttft = rng.lognormvariate(math.log(SERVER_TTFT_MEDIAN_S), SERVER_TTFT_SIGMA)
    run = EndpointRun(
        name=role,
        kind="llama_cpp" if role == "local" else "openai",
        model="m",
        outcome="won",
        started_s=0.0,
        first_token_s=ttft,
        ended_s=ttft + 1.0,
        input_tokens=prompt,
        output_tokens=32,
        delivered_chunks=32,
    )
    report = RequestReport(action=role, reason="bench", winner=role, endpoints={role: run})
    plan = Plan(action=role, starts=(Start(role),), reason="bench")
    scheduler.learn(RequestFeatures(prompt_tokens=prompt, max_tokens=None), plan, report)
