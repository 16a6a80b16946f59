"""The loopback OpenAI-compatible server, driven by the real OpenAI SDK over real HTTP.

One server process (real Gemma 3 270M, no added latency) serves the module; each test clears its
faults and request log first. Answers are kept short so the whole module runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from langchain_disco.errors import ConfigError
from langchain_disco.testing import LatencyProfile, LoopbackServer, LoopbackServerError
from langchain_disco.testing.latency import profile_names

pytestmark = [pytest.mark.llama, pytest.mark.timeout(120)]

PROMPT = "Write one sentence about the sea."
COUNTING_PROMPT = "Count from 1 to 500, separated by commas."


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(latency_profile="none", seed=0) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_server(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        loopback: LoopbackServer = request.getfixturevalue("server")
        loopback.clear_faults()
        loopback.clear_requests()


@pytest.fixture
async def client(server: LoopbackServer) -> AsyncIterator[openai.AsyncOpenAI]:
    # No retries: a test that injects a 503 wants to see it, not have the SDK hide it.
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as c:
        yield c


@dataclass
class Received:
    """What a streaming client saw: content deltas with arrival times, and the raw chunks."""

    started_s: float
    chunks: list[ChatCompletionChunk] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    arrivals_s: list[float] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals_s[:-1], self.arrivals_s[1:], strict=True)]


async def stream_chat(
    client: openai.AsyncOpenAI,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int = 8,
    catch: tuple[type[BaseException], ...] = (),
    **kwargs: Any,
) -> Received:
    """Stream one chat completion, recording every content delta and when it arrived."""
    received = Received(started_s=time.monotonic())
    stream = await client.chat.completions.create(
        model="loopback",
        messages=cast("list[ChatCompletionMessageParam]", messages),
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        **kwargs,
    )
    try:
        async for chunk in stream:
            received.chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                received.deltas.append(chunk.choices[0].delta.content)
                received.arrivals_s.append(time.monotonic())
    except catch as exc:
        received.error = exc
    return received


def user(text: str = PROMPT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- protocol ----------------------------------------------------------------------------


async def test_models_route_lists_the_served_model(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["loopback"]


async def test_stream_sends_role_content_finish_then_usage_chunk(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    got = await stream_chat(client, user(), stream_options={"include_usage": True})

    first, finish, usage = got.chunks[0], got.chunks[-2], got.chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert got.text.strip()
    assert finish.choices[0].finish_reason in ("length", "stop")
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 8
    assert usage.usage.prompt_tokens > 0
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + 8
    assert all(c.id == first.id for c in got.chunks)

    entry = server.wait_for_request_status(first.id, "completed")
    assert entry["prompt"] == PROMPT and entry["stream"] is True
    assert entry["tokens_sent"] == len(got.deltas) and entry["text_sent"] == got.text
    assert entry["started_s"] < entry["first_token_s"] < entry["ended_s"]


async def test_stream_without_include_usage_has_no_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    got = await stream_chat(client, user(), max_tokens=4)
    assert all(c.usage is None and c.choices for c in got.chunks)


async def test_non_streamed_completion_has_text_and_usage(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="loopback",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
    )
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 8


async def test_invalid_request_is_an_openai_style_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="loopback",
            messages=[{"role": "user", "content": PROMPT}],
            extra_body={"continue_final_message": True, "add_generation_prompt": False},
        )
    assert "assistant" in str(caught.value)


# -- continuation dialects ---------------------------------------------------------------


def continuation_request(mode: str, partial: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and extra body with which each server dialect continues `partial`."""
    if mode == "vllm":
        return [*user(), {"role": "assistant", "content": partial}], {
            "extra_body": {"continue_final_message": True, "add_generation_prompt": False}
        }
    if mode == "deepseek":
        return [*user(), {"role": "assistant", "content": partial, "prefix": True}], {}
    return [*user(), {"role": "assistant", "content": partial}], {}  # llama.cpp prefill


@pytest.mark.parametrize("mode", ["vllm", "deepseek", "prefill"])
async def test_greedy_continuation_completes_the_straight_answer_exactly(
    client: openai.AsyncOpenAI, server: LoopbackServer, mode: str
) -> None:
    straight = await stream_chat(client, user(), max_tokens=30)
    partial = "".join(straight.deltas[:10])

    messages, extra = continuation_request(mode, partial)
    continued = await stream_chat(client, messages, max_tokens=20, **extra)

    assert partial + continued.text == straight.text
    entry = server.wait_for_request_status(continued.chunks[0].id, "completed")
    assert entry["continuation"] == mode
    assert entry["prefix"] == partial
    assert [m["role"] for m in entry["messages"]] == ["user"]


# -- faults ------------------------------------------------------------------------------


async def test_error_status_fault_is_an_api_status_error_before_any_token(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    server.set_fault("error_status", status=503)
    with pytest.raises(openai.APIStatusError) as caught:
        await stream_chat(client, user())
    assert caught.value.status_code == 503
    assert server.wait_for_request_status(0, "fault")["tokens_sent"] == 0

    # The fault applied to one request only.
    assert (await stream_chat(client, user(), max_tokens=2)).text


async def test_fault_count_applies_to_that_many_requests(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    server.set_fault("error_status", status=429, count=2)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await stream_chat(client, user())
    assert (await stream_chat(client, user(), max_tokens=2)).text
    assert [e["status"] for e in server.requests()] == ["fault", "fault", "completed"]


async def test_inband_error_ends_the_stream_after_k_tokens(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    server.set_fault("inband_error", after_tokens=3)
    got = await stream_chat(client, user(), max_tokens=20, catch=(openai.APIError,))

    assert isinstance(got.error, openai.APIError)
    assert len(got.deltas) == 3
    entry = server.wait_for_request_status(0, "fault")
    assert entry["text_sent"] == got.text


async def test_malformed_event_fails_the_stream_after_k_tokens(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    server.set_fault("malformed", after_tokens=2)
    got = await stream_chat(client, user(), max_tokens=20, catch=(ValueError, openai.APIError))

    assert isinstance(got.error, json.JSONDecodeError)
    assert len(got.deltas) == 2
    server.wait_for_request_status(0, "fault")


async def test_disconnect_fault_drops_the_connection_after_k_tokens(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    server.set_fault("disconnect", after_tokens=2)
    got = await stream_chat(client, user(), max_tokens=20, catch=(httpx.HTTPError, openai.APIError))

    # openai wraps the broken chunked body (httpx.RemoteProtocolError) as a connection error.
    assert isinstance(got.error, openai.APIConnectionError), "the stream ended as if complete"
    assert len(got.deltas) == 2
    assert server.wait_for_request_status(0, "fault")["generation_stopped"] is True


async def test_stall_fault_pauses_the_stream_then_finishes_it(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    stall_s = 0.8
    server.set_fault("stall", after_tokens=2, seconds=stall_s)
    got = await stream_chat(client, user(), max_tokens=6)

    assert len(got.deltas) >= 4
    assert got.gaps_s[1] >= stall_s - 0.01  # between token 2 and token 3
    assert max(got.gaps_s[:1] + got.gaps_s[2:]) < stall_s
    server.wait_for_request_status(0, "completed")


async def test_delay_fault_postpones_the_first_token(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    server.set_fault("delay", seconds=0.7)
    got = await stream_chat(client, user(), max_tokens=2)

    assert got.arrivals_s[0] - got.started_s >= 0.7
    assert server.wait_for_request_status(0, "completed")["ttft_delay_s"] == pytest.approx(0.7)


def test_invalid_fault_is_rejected(server: LoopbackServer) -> None:
    with pytest.raises(LoopbackServerError, match="400"):
        server.set_fault("meteor_strike")
    with pytest.raises(LoopbackServerError, match="400"):
        server.set_fault("stall", after_tokens=1)  # `seconds` is required
    assert server.set_fault("stall", after_tokens=1, seconds=0.1, count=3)[0]["count"] == 3


# -- disconnects -------------------------------------------------------------------------


async def test_client_closing_the_stream_early_is_logged_and_stops_generation(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    max_tokens = 300
    stream = await client.chat.completions.create(
        model="loopback",
        messages=[{"role": "user", "content": COUNTING_PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    request_id = None
    content_chunks = 0
    async for chunk in stream:
        request_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            content_chunks += 1
            if content_chunks == 3:
                break
    await stream.close()
    assert request_id is not None

    entry = server.wait_for_request_status(request_id, "disconnected", timeout=10)
    assert entry["generation_stopped"] is True
    assert entry["completion_tokens"] < max_tokens
    # The single llama worker is free again: a new request is served at once.
    assert (await stream_chat(client, user(), max_tokens=2)).text


async def test_client_abandoning_a_non_streamed_request_is_logged_disconnected(
    client: openai.AsyncOpenAI, server: LoopbackServer
) -> None:
    max_tokens = 300
    request = asyncio.create_task(
        client.chat.completions.create(
            model="loopback",
            messages=[{"role": "user", "content": COUNTING_PROMPT}],
            max_tokens=max_tokens,
            temperature=0,
        )
    )
    # Off the event loop: the request task must keep running while we poll the log.
    await asyncio.to_thread(server.wait_for_request_status, 0, "running")
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    entry = await asyncio.to_thread(server.wait_for_request_status, 0, "disconnected")
    assert entry["generation_stopped"] is True
    assert entry["completion_tokens"] < max_tokens


# -- latency -----------------------------------------------------------------------------


def test_unknown_latency_profile_error_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        LatencyProfile("together-405b")
    for name in ("none", "together-7b", "anyscale-70b", "replicate-13b"):
        assert name in str(caught.value)


def test_profile_names_are_provider_and_size() -> None:
    names = profile_names()
    assert names[0] == "none"
    assert {"anyscale-7b", "bedrock-70b", "perplexity-70b", "together-13b"} <= set(names)
    assert "bedrock-7b" not in names  # not measured: no invented profiles


def test_seeded_samples_are_reproducible_real_rows() -> None:
    profile = LatencyProfile("together-7b")
    first = [profile.sample(random.Random(42)) for _ in range(3)]
    run_a = [profile.sample(rng) for rng in [random.Random(7)] for _ in range(50)]
    run_b = [profile.sample(rng) for rng in [random.Random(7)] for _ in range(50)]

    assert run_a == run_b
    assert len(set(first)) == 1
    rows = {(s.ttft_s, s.inter_token_s) for s in profile.samples}
    assert set(run_a) <= rows  # each sample is one measured row, TTFT and pace together
    assert len(set(run_a)) > 10


def test_scale_multiplies_both_delays() -> None:
    plain = LatencyProfile("anyscale-70b").sample(random.Random(3))
    scaled = LatencyProfile("anyscale-70b", scale=0.5).sample(random.Random(3))
    assert scaled == pytest.approx((plain[0] * 0.5, plain[1] * 0.5))


def test_none_profile_never_delays() -> None:
    rng = random.Random(0)
    assert {LatencyProfile("none").sample(rng) for _ in range(10)} == {(0.0, 0.0)}


def test_negative_scale_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scale"):
        LatencyProfile("together-7b", scale=-1)


async def test_server_delays_and_paces_tokens_by_its_seeded_profile() -> None:
    seed, scale = 11, 2.0
    profile = LatencyProfile("together-7b", scale=scale)
    rng = random.Random(seed)
    expected = [profile.sample(rng) for _ in range(3)]

    with LoopbackServer(latency_profile="together-7b", latency_scale=scale, seed=seed) as slow:
        async with openai.AsyncOpenAI(base_url=slow.base_url, api_key="test") as c:
            received = [await stream_chat(c, user(), max_tokens=4) for _ in expected]
        log = slow.requests()

    for (ttft_s, itl_s), got, entry in zip(expected, received, log, strict=True):
        assert entry["ttft_delay_s"] == pytest.approx(ttft_s)
        assert entry["inter_token_s"] == pytest.approx(itl_s)
        assert got.arrivals_s[0] - got.started_s >= ttft_s
        assert min(got.gaps_s) >= itl_s - 0.005
