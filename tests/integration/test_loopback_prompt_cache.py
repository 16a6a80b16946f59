"""The loopback server's emulated prompt cache, through the official SDK, our endpoint and model.

A provider's prompt cache, as OpenAI documents it (a prefix of at least 1,024 tokens, in
128-token increments, reported as ``usage.prompt_tokens_details.cached_tokens``) or as DeepSeek
reports it (``prompt_cache_hit_tokens``), played by the echo backend over real HTTP. What the
server reported is read from its request log, outside the code under test; the client side must
show the same count in `StreamStats`, in ``usage_metadata`` and in the cost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco import DiscoChatModel, GenerationParams, StreamStats  # noqa: E402
from langchain_disco.endpoints.openai import OpenAIEndpoint  # noqa: E402
from langchain_disco.scheduling.cost import CostModel  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402
from langchain_disco.testing.echo import EchoEndpoint  # noqa: E402

pytestmark = pytest.mark.timeout(90)

# About 2,000 tokens at 4 characters per token: well above OpenAI's 1,024-token minimum.
CONTEXT = " ".join(f"Fact {i}: river {i} flows north into the cold sea." for i in range(160))
PREFILL_TOK_S = 2000.0  # a cold 2,000-token prompt: 1 s of modelled prefill
PARAMS = GenerationParams(max_tokens=8, temperature=0.0)


def conversation(question: str, context: str = CONTEXT) -> list[dict[str, str]]:
    return [{"role": "system", "content": context}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def cached_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(
        backend="echo", echo_tok_s=0.0, prompt_cache=True, prefill_tok_s=PREFILL_TOK_S
    ) as server:
        yield server


@pytest.fixture
def server(cached_server: LoopbackServer) -> Iterator[LoopbackServer]:
    cached_server.clear_prompt_cache()
    cached_server.clear_requests()
    yield cached_server


@pytest.fixture
def client(server: LoopbackServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def remote(server: LoopbackServer) -> AsyncIterator[OpenAIEndpoint]:
    endpoint = OpenAIEndpoint(
        base_url=server.base_url, model=server.model_name, max_retries=0, retry_backoff_s=0.0
    )
    yield endpoint
    await endpoint.aclose()


def streamed_usage(client: openai.OpenAI, messages: list[dict[str, str]]) -> tuple[Any, float]:
    """The usage of one streamed completion, and the client-side time to its first content."""
    started = time.monotonic()
    first: float | None = None
    usage = None
    stream = client.chat.completions.create(
        model="loopback",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - started
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None and first is not None
    return usage, first


def test_a_second_request_sharing_a_long_prefix_is_reported_cached_and_served_faster(
    server: LoopbackServer, client: openai.OpenAI
) -> None:
    cold, cold_ttft_s = streamed_usage(client, conversation("Which river is first?"))
    warm, warm_ttft_s = streamed_usage(client, conversation("Which river is last?"))
    assert cold.prompt_tokens_details is not None and warm.prompt_tokens_details is not None
    assert cold.prompt_tokens_details.cached_tokens == 0
    cached = warm.prompt_tokens_details.cached_tokens
    assert cached is not None
    assert cached >= 1024 and cached % 128 == 0 and cached <= warm.prompt_tokens
    assert warm.prompt_tokens - cached < 128 + 16  # all but the last partial block and question
    log = server.requests()
    assert [r["cached_tokens"] for r in log] == [0, cached]
    # TTFT model: the prefill of the uncached part, at PREFILL_TOK_S.
    assert log[0]["prefill_delay_s"] == pytest.approx(log[0]["prompt_tokens"] / PREFILL_TOK_S, 0.1)
    assert log[1]["prefill_delay_s"] < 0.1 * log[0]["prefill_delay_s"]
    assert cold_ttft_s >= log[0]["prefill_delay_s"]
    assert warm_ttft_s < cold_ttft_s - 0.5


def test_a_different_prefix_reports_nothing_cached(
    server: LoopbackServer, client: openai.OpenAI
) -> None:
    streamed_usage(client, conversation("Which river is first?"))
    other, _ = streamed_usage(client, conversation("Which river?", "Preface. " + CONTEXT))
    assert other.prompt_tokens_details is not None
    assert other.prompt_tokens_details.cached_tokens == 0
    # A non-streamed answer reports the same way.
    again = client.chat.completions.create(
        model="loopback",
        messages=conversation("Which river is second?"),  # type: ignore[arg-type]
        max_tokens=4,
    )
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert (again.usage.prompt_tokens_details.cached_tokens or 0) >= 1024


def test_eviction_keeps_the_cache_bounded_and_forgets_the_oldest_prefix() -> None:
    with (
        LoopbackServer(
            backend="echo", echo_tok_s=0.0, prompt_cache=True, prompt_cache_max_blocks=20
        ) as small,
        openai.OpenAI(base_url=small.base_url, api_key="test", max_retries=0) as sdk,
    ):
        a, b = conversation("Q?", "A. " + CONTEXT), conversation("Q?", "B. " + CONTEXT)
        streamed_usage(sdk, a)  # about 15 blocks
        hit, _ = streamed_usage(sdk, a)
        assert hit.prompt_tokens_details.cached_tokens >= 1024  # type: ignore[union-attr]
        streamed_usage(sdk, b)  # 30 blocks > 20: a's oldest are evicted
        state = small.prompt_cache_state()
        assert state["blocks"] <= state["max_blocks"] == 20 and state["evictions"] > 0
        gone, _ = streamed_usage(sdk, a)
        assert gone.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]


async def test_our_endpoint_reads_the_cached_tokens_the_server_reported(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    messages = [SystemMessage(CONTEXT), HumanMessage("Which river is first?")]
    cold, warm = StreamStats(), StreamStats()
    _ = [d async for d in remote.stream(messages, PARAMS, cold)]
    messages[-1] = HumanMessage("Which river is last?")
    _ = [d async for d in remote.stream(messages, PARAMS, warm)]
    reported = [r["cached_tokens"] for r in server.requests()]
    assert reported[0] == 0 and reported[1] >= 1024
    assert (cold.cached_input_tokens, warm.cached_input_tokens) == (0, reported[1])
    assert warm.billed_cached_input_tokens == reported[1]


async def test_the_chat_model_reports_cache_reads_and_bills_them_at_the_discount(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    model = DiscoChatModel(
        mode="remote", local=EchoEndpoint(name="local"), remote=remote, max_tokens=8
    )
    messages = [SystemMessage(CONTEXT), HumanMessage("Which river is first?")]
    await model.ainvoke(messages)
    messages[-1] = HumanMessage("Which river is last?")
    chunks = [c async for c in model.astream(messages)]
    last = chunks[-1]
    report = last.response_metadata["disco_report"]
    entry = server.requests()[-1]
    cached = entry["cached_tokens"]
    assert cached >= 1024
    assert last.usage_metadata is not None
    assert last.usage_metadata["input_token_details"]["cache_read"] == cached
    assert last.usage_metadata["input_tokens"] == entry["prompt_tokens"]
    cm = CostModel()
    assert report["cost"]["server_usd"] == pytest.approx(
        cm.server_usd(entry["prompt_tokens"], entry["completion_tokens"], cached)
    )
    full_price = cm.server_usd(entry["prompt_tokens"], entry["completion_tokens"])
    assert report["cost"]["server_usd"] < full_price - 0.4 * cm.price_in_per_mtok * cached / 1e6


def test_the_deepseek_shape_reports_hits_and_misses() -> None:
    with (
        LoopbackServer(
            backend="echo", echo_tok_s=0.0, prompt_cache=True, usage_shape="deepseek"
        ) as deepseek,
        openai.OpenAI(base_url=deepseek.base_url, api_key="test", max_retries=0) as sdk,
    ):
        streamed_usage(sdk, conversation("Which river is first?"))
        usage, _ = streamed_usage(sdk, conversation("Which river is last?"))
        extra = usage.model_extra or {}
        assert usage.prompt_tokens_details is None
        assert extra["prompt_cache_hit_tokens"] >= 1024
        assert extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"] == (
            usage.prompt_tokens
        )
        assert deepseek.requests()[-1]["cached_tokens"] == extra["prompt_cache_hit_tokens"]


async def test_dispatch_learns_what_the_provider_caches_of_a_growing_conversation(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    # Every turn resends the conversation so far. The scheduler remembers what it sent, learns
    # from the cached tokens the server reported how much of a shared prefix it really reads
    # from its cache (this server: whole 128-token blocks), and expects that of the next turn.
    from langchain_core.messages import AIMessage

    from langchain_disco.scheduling import Budget, policy_from_name

    model = DiscoChatModel(
        policy=policy_from_name("generalized", Budget(share=1.0)),  # the server always runs
        local=EchoEndpoint(name="local", ttft_s=3.0),  # the server wins every race
        remote=remote,
        max_tokens=8,
    )
    messages: list[Any] = [SystemMessage(CONTEXT)]
    turns = []
    for i in range(8):
        messages.append(HumanMessage(f"Which river is number {i}?"))
        message = await model.ainvoke(messages)
        report = message.response_metadata["disco_report"]
        entry = server.requests()[-1]
        ratio = entry["cached_tokens"] / entry["prompt_tokens"]
        turns.append((report["expected_cached_tokens"]["remote"] / report["prompt_tokens"], ratio))
        messages.append(AIMessage(str(message.content)))
    assert turns[0] == (0.0, 0.0)  # nothing was sent before
    assert turns[1][0] == 0.0 < turns[1][1]  # shared and cached, but caching not yet shown
    # Learned: the last turns are expected cached close to what the server reported, as a
    # share of the prompt (each side counts tokens its own way).
    assert model.scheduler.server_cache.rate(0.0) > 0.6
    for expected, reported in turns[-3:]:
        assert 0.6 * reported < expected < 1.1 * reported, turns
