"""The live half of `disco bench live`: every policy through `DiscoChatModel`, request by request.

One local endpoint (our own, not the process-wide shared one, so closing it is ours to do) and
one remote endpoint serve every policy in turn; each policy gets a fresh `DiscoChatModel` that
starts from the same priors and never persists what it learns. A policy is wrapped so that every
outcome the live model teaches it is kept: the replay learns the device from exactly those.

Requests go one at a time: the next is sent `think_s` after the previous answer ended (a user
reading it; the slack also keeps the replay, which takes these send times as given, from piling
up a queue whenever it predicts one request a little slower than it was). The device can
still be busy then: llama.cpp evaluates a prompt in one call and looks for a cancellation only
between tokens, so a device that lost a race during its prefill finishes that prefill after the
engine has moved on (the replay models this, `SimConfig.device_prefill_interruptible`). Between
policies, and before closing, the run waits until the device is idle, so each policy starts on
an idle device and no worker thread outlives the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage

from langchain_disco._live_scheduler import _default_resource
from langchain_disco.errors import DiscoError
from langchain_disco.scheduling import Budget, CostModel, policy_from_name
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    DispatchPolicy,
    Plan,
    RequestFeatures,
    RequestOutcome,
)

if TYPE_CHECKING:
    from langchain_disco.bench.live import LiveOptions, LiveRequest
    from langchain_disco.chat_models import DiscoChatModel
    from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint

N_CTX = 4096
"""Context of the local model: the longest scaled prompt plus its answer must fit."""

IDLE_TIMEOUT_S = 60.0
"""At most this long for the device to finish its last prefill between policies."""

Progress = Callable[[int, int], None]
"""Called with (live requests done, live requests in total)."""


@dataclass
class LiveSample:
    """One request as the live run measured it (times in seconds since its own start, unless
    said otherwise)."""

    policy: str
    index: int
    arrival_s: float
    """When it was sent, since the policy's first request."""
    prompt_tokens: int
    """What the policy saw (the model's estimate)."""
    local_input_tokens: int
    """What the local model really prefilled (its tokenizer, chat template included)."""
    output_tokens: int
    """Delivered answer tokens."""
    ttft_s: float
    """From the call to the first content chunk, as the consumer measured it."""
    total_s: float
    action: str
    winner: str
    device_busy: bool
    """The device was still generating (a lost race's prefill) when this request was sent."""
    local_ttft_s: float | None
    """The device's own TTFT (first token - start - queue wait) if it produced one."""
    remote_ttft_s: float | None
    """The server's TTFT (first token - start) if it produced one."""
    remote_started: bool
    server_delay_s: float | None
    """The TTFT delay the loopback drew for this request (None: the server was not asked)."""
    server_gap_s: float | None
    """The token gap the loopback kept for this request."""
    server_usd: float
    device_j: float
    unified_usd: float
    remote_offset_s: float | None = None
    """When the plan started the server (None: never), for the device's unselected TTFTs."""


class _Recorded:
    """Wraps a policy to keep every outcome the live model fed it (features, plan, result)."""

    def __init__(self, inner: DispatchPolicy) -> None:
        self.inner = inner
        self.outcomes: list[RequestOutcome] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def plan(self, request: RequestFeatures, ctx: DispatchContext) -> Plan:
        return self.inner.plan(request, ctx)

    def observe(self, outcome: RequestOutcome) -> None:
        self.outcomes.append(outcome)
        self.inner.observe(outcome)


def policy_budget(name: str, share: float) -> Budget:
    """The budget `DISCO_POLICY=name DISCO_BUDGET=share` gives: the policy's own resource."""
    return Budget(share=share, resource=_default_resource(name))


@dataclass
class LiveRun:
    """What the live half hands to the replay."""

    samples: list[LiveSample]
    outcomes: list[RequestOutcome]
    cost_model: CostModel
    wall_s: dict[str, float]


async def run_policies(
    options: LiveOptions,
    requests: list[LiveRequest],
    base_url: str,
    model_name: str,
    server_log: Callable[[], list[dict[str, Any]]],
    clear_log: Callable[[], None],
    progress: Progress,
    profile_path: Path,
) -> LiveRun:
    from langchain_disco.chat_models import DiscoChatModel
    from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint
    from langchain_disco.endpoints.openai import OpenAIEndpoint

    # Our own endpoint (not the process-wide shared one), so that closing it is ours to do.
    local = LlamaCppEndpoint(None, n_ctx=N_CTX, n_threads=options.local_threads)
    remote = OpenAIEndpoint(base_url=base_url, model=model_name, max_retries=0)
    samples: list[LiveSample] = []
    outcomes: list[RequestOutcome] = []
    walls: dict[str, float] = {}
    cost_model = CostModel()
    total = len(requests) * len(options.policies)
    try:
        await local.load()
        private = {"persist_profiles": False, "profile_path": profile_path}
        # Unrecorded: the longest prompt on the device (its first large prefill allocates
        # buffers) and one request to the server (the HTTP connection), so that no policy
        # pays for either.
        longest = max(requests, key=lambda r: r.prompt_tokens)
        for where, text in (("local", longest.text), ("remote", "Hello.")):
            warm = DiscoChatModel(local=local, remote=remote, policy=where, **private)
            await warm.ainvoke(text, max_tokens=2)
        for name in options.policies:
            await _idle(local)
            policy = policy_from_name(name, policy_budget(name, options.budget), options.seed)
            recorded = _Recorded(policy)
            model = DiscoChatModel(
                local=local,
                remote=remote,
                policy=recorded,
                **private,  # the user's profile cache is neither read nor written
                device_profile=options.device_prior,
                server_profile=options.latency_profile,
                migration="off",
                pace_tok_s=None,
                failover=False,
                temperature=0.0,
                seed=options.seed,
                max_tokens=options.max_tokens,
            )
            cost_model = model.scheduler.cost_model
            await asyncio.to_thread(clear_log)
            start = time.perf_counter()
            policy_samples: list[LiveSample] = []
            for request in requests:
                if policy_samples:
                    await asyncio.sleep(options.think_s)
                policy_samples.append(await _one(name, request, model, start))
                progress(len(samples) + len(policy_samples), total)
            walls[name] = time.perf_counter() - start
            _attach_server_log(policy_samples, requests, await asyncio.to_thread(server_log))
            for sample, outcome in zip(policy_samples, recorded.outcomes, strict=True):
                sample.remote_offset_s = outcome.plan.offset("remote")
            samples += policy_samples
            outcomes += recorded.outcomes
    finally:
        await remote.aclose()
        await _idle(local)
        await local.aclose()
    return LiveRun(samples, outcomes, cost_model, walls)


async def _idle(local: LlamaCppEndpoint) -> None:
    if not await local.wait_idle(IDLE_TIMEOUT_S):
        raise DiscoError(f"the local model was still busy after {IDLE_TIMEOUT_S:g} s")


async def _one(
    policy: str, request: LiveRequest, model: DiscoChatModel, start: float
) -> LiveSample:
    sent = time.perf_counter()
    first: float | None = None
    report: dict[str, Any] | None = None
    async for chunk in model.astream([HumanMessage(request.text)]):
        if first is None and chunk.content:
            first = time.perf_counter()
        report = chunk.response_metadata.get("disco_report", report)
    if report is None or first is None or report["winner"] is None:
        raise DiscoError(f"{policy}: request {request.index} ended without an answer")
    runs = report["endpoints"]
    local, remote = runs.get("local"), runs.get("remote")

    def ttft(run: dict[str, Any] | None, wait: bool) -> float | None:
        if run is None or run["first_token_s"] is None or run["started_s"] is None:
            return None
        return float(
            run["first_token_s"] - run["started_s"] - (run["queue_wait_s"] if wait else 0.0)
        )

    cost = report["cost"]
    return LiveSample(
        policy=policy,
        index=request.index,
        arrival_s=sent - start,
        prompt_tokens=request.prompt_tokens,
        local_input_tokens=int(local["input_tokens"]) if local else 0,
        output_tokens=sum(int(r["delivered_chunks"]) for r in runs.values()),
        ttft_s=first - sent,
        total_s=time.perf_counter() - sent,
        action=str(report["action"]),
        winner=str(report["winner"]),
        device_busy=int(report["local_queue"]) > 0,
        local_ttft_s=ttft(local, wait=True),
        remote_ttft_s=ttft(remote, wait=False),
        remote_started=remote is not None and remote["started_s"] is not None,
        server_delay_s=None,
        server_gap_s=None,
        server_usd=float(cost["server_usd"]),
        device_j=float(cost["device_j"]),
        unified_usd=float(cost["unified_usd"]),
    )


def _attach_server_log(
    samples: list[LiveSample], requests: list[LiveRequest], log: list[dict[str, Any]]
) -> None:
    """What the loopback drew for each request it received (matched by the prompt text)."""
    by_prompt = {entry["prompt"]: entry for entry in log}
    for sample, request in zip(samples, requests, strict=True):
        entry = by_prompt.get(request.text)
        if entry is not None:
            sample.server_delay_s = float(entry["ttft_delay_s"])
            sample.server_gap_s = float(entry["inter_token_s"])
