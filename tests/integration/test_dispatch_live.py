"""Cost-aware dispatch live: DiscoChatModel with the paper's length-threshold policy over the real
local model and the loopback server, and the device profile it learns from real requests."""

from __future__ import annotations

import statistics
from typing import Any

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer

FACT = "The river carries sand and stones down to the sea every spring. "


def prompt(index: int, repeats: int) -> str:
    # A distinct opening for every request, so no request rides on a cached prefix of another.
    return f"Request number {index}. Summarise: " + FACT * repeats


def threshold_model(local: LlamaCppEndpoint, server: LoopbackServer, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "policy": "length_threshold",
        "budget": 0.5,
        "remote_base_url": server.base_url,
        "remote_model": server.model_name,
        "temperature": 0.0,
        "max_tokens": 2,
    }
    return DiscoChatModel(local=local, **{**params, **kw})


async def test_short_prompts_start_on_the_device_alone_and_long_ones_on_both(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = threshold_model(local_endpoint, server)
    short = await model.ainvoke(prompt(1, 1))
    report = short.response_metadata["disco_report"]
    assert report["action"] == "local"
    assert list(report["endpoints"]) == ["local"]
    assert "< L_b" in report["reason"]
    assert server.requests() == []

    long = await model.ainvoke(prompt(2, 80))  # ~1,300 tokens by the policy's estimate
    report = long.response_metadata["disco_report"]
    assert report["action"] == "race"
    assert set(report["endpoints"]) == {"local", "remote"}
    assert ">= L_b" in report["reason"]
    assert len(server.requests()) == 1
    # The report says why: the chosen action's expected TTFT and cost, and the runner-up's.
    chosen, runner_up = report["expected"]
    assert chosen["action"] == "race" and runner_up["action"] != "race"
    assert chosen["ttft_s"] > 0 and chosen["cost"]["unified_usd"] >= 0


async def test_the_learned_device_profile_predicts_measured_ttft(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = threshold_model(local_endpoint, server, policy="local")
    device = model.scheduler.profiles.device
    for index, repeats in enumerate((2, 12, 4, 20, 8, 16)):
        await model.ainvoke(prompt(index, repeats))
    # Same-length prompts (only the request number differs): predict first, then measure.
    sizing = await model.ainvoke(prompt(99, 14))
    tokens = sizing.response_metadata["disco_report"]["endpoints"]["local"]["input_tokens"]
    predicted, measured = [], []
    for index in range(5):
        predicted.append(device.predict_ttft_s(tokens))
        message = await model.ainvoke(prompt(100 + index, 14))
        run = message.response_metadata["disco_report"]["endpoints"]["local"]
        assert abs(run["input_tokens"] - tokens) <= 2
        measured.append(run["first_token_s"] - run["started_s"] - run["queue_wait_s"])
    # Medians of five: one request slowed by the loopback server sharing the 2 cores must not
    # decide the comparison.
    error = abs(statistics.median(predicted) - statistics.median(measured))
    assert error <= 0.25 * statistics.median(measured), (predicted, measured)
