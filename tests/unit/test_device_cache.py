"""What the device has cached: dispatch estimates on the uncached part of a prompt, and the
device line learns from the tokens a run evaluated, never from a cached turn's whole prompt."""

from __future__ import annotations

import random

import pytest

from langchain_disco._live_scheduler import LiveScheduler
from langchain_disco.config import DiscoSettings
from langchain_disco.endpoints.base import PromptCacheView
from langchain_disco.scheduling import Budget, policy_from_name
from langchain_disco.scheduling.cost import Cost
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    EndpointOutcome,
    Plan,
    RequestFeatures,
    RequestOutcome,
    Start,
)
from langchain_disco.scheduling.profiles import Profiles

OVERHEAD_S, S_PER_TOKEN = 0.05, 0.0015  # the true device line


def _turns(seed: int, n: int) -> list[tuple[int, int]]:
    """(prompt tokens, cached tokens) of chat turns: conversations of 1-8 turns, each turn
    resending the conversation so far (all of it cached) plus a new part."""
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    while len(out) < n:
        prompt, cached = rng.randint(200, 1500), 0
        for _ in range(rng.randint(1, 8)):
            out.append((prompt, cached))
            cached = prompt + rng.randint(5, 60)  # the answer is cached too
            prompt = cached + rng.randint(10, 120)
    return out[:n]


def _learn(profiles: Profiles, prompt: int, cached: int, *, reported: bool) -> None:
    ttft = OVERHEAD_S + S_PER_TOKEN * max(prompt - cached, 1)
    run = EndpointOutcome(
        "local",
        0.0,
        ttft,
        ttft + 1.0,
        input_tokens=prompt,
        output_tokens=20,
        cached_input_tokens=cached if reported else 0,
    )
    profiles.observe(
        RequestOutcome(
            request=RequestFeatures(prompt_tokens=prompt),
            plan=Plan((Start("local"),), action="local"),
            endpoints=(run,),
            winner="local",
            ttft_s=ttft,
            output_tokens=20,
            cost=Cost(),
        )
    )


def test_cached_turns_teach_the_line_the_prefill_they_were_not_a_fast_device() -> None:
    aware, blind = Profiles.prior(), Profiles.prior()
    for prompt, cached in _turns(seed=3, n=3000):
        _learn(aware, prompt, cached, reported=True)
        _learn(blind, prompt, cached, reported=False)
    truth = OVERHEAD_S + S_PER_TOKEN * 900
    # Blind to the cache, the line takes follow-ups for fast prefills of whole prompts and
    # badly under-predicts a fresh one; told what each run evaluated, it stays on the truth.
    assert blind.device.predict_ttft_s(900) < 0.5 * truth
    assert aware.device.predict_ttft_s(900) == pytest.approx(truth, rel=0.05)


def test_the_evaluated_share_carries_to_an_estimated_prompt_size() -> None:
    """The request's prompt size may be an estimate on another scale (characters / 4) than
    the device's own token counts: the cached share is what carries over."""
    profiles = Profiles.prior()
    for _ in range(2000):
        # The device counted 1000 tokens, 900 cached; the request estimated 800 tokens.
        ttft = OVERHEAD_S + S_PER_TOKEN * 100 * 800 / 1000
        run = EndpointOutcome(
            "local", 0.0, ttft, ttft + 1, input_tokens=1000, cached_input_tokens=900
        )
        profiles.observe(
            RequestOutcome(
                request=RequestFeatures(prompt_tokens=800, local_cached_tokens=720),
                plan=Plan((Start("local"),), action="local"),
                endpoints=(run,),
                winner="local",
                ttft_s=ttft,
                output_tokens=1,
                cost=Cost(),
            )
        )
    # Learned at 80 evaluated tokens (of the request's scale), on the line through them.
    assert profiles.device.predict_ttft_s(80) == pytest.approx(
        OVERHEAD_S + S_PER_TOKEN * 80, rel=0.1
    )


def test_device_prompt_tokens_is_the_uncached_part_at_least_one() -> None:
    assert RequestFeatures(prompt_tokens=900).device_prompt_tokens == 900
    assert RequestFeatures(prompt_tokens=900, local_cached_tokens=850).device_prompt_tokens == 50
    assert RequestFeatures(prompt_tokens=900, local_cached_tokens=900).device_prompt_tokens == 1


def test_the_scheduler_scales_the_devices_cached_share_onto_the_request() -> None:
    scheduler = LiveScheduler(
        DiscoSettings(persist_profiles=False), policy_from_name("generalized")
    )
    features = scheduler.features(800, None, None, PromptCacheView(1000, 900))
    assert (features.prompt_tokens, features.local_cached_tokens) == (800, 720)
    whole = scheduler.features(800, None, None, PromptCacheView(1000, 1000))
    assert whole.local_cached_tokens == 799  # the last token is always evaluated
    assert scheduler.features(800, None, None, None).local_cached_tokens == 0


@pytest.mark.parametrize("name", ["length_threshold", "wait_time", "generalized"])
def test_a_cached_follow_up_is_estimated_on_the_device_as_its_new_part(name: str) -> None:
    ctx = DispatchContext(profiles=Profiles.prior())
    policy = policy_from_name(name, Budget(share=0.5, resource="server"))
    fresh = policy.plan(RequestFeatures(prompt_tokens=1500), ctx)
    cached = policy.plan(RequestFeatures(prompt_tokens=1500, local_cached_tokens=1450), ctx)

    def local_ttft(plan: Plan) -> float:
        estimates = {e.action: e.ttft_s for e in plan.expected}
        return min(estimates.values()) if "local" not in estimates else estimates["local"]

    device_alone = ctx.profiles.device.predict_ttft_s(50)
    assert local_ttft(cached) <= device_alone + 1e-9
    assert local_ttft(cached) < local_ttft(fresh)
