"""OpenAIEndpoint against hand-written HTTP responses (respx), for the openai 2.x line.

respx patches httpx; openai 3.x talks through httpx2, which respx cannot intercept. With openai
3.x installed these tests skip, and tests/integration/test_openai_endpoint_loopback.py covers
the same behaviour against a real server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

if int(openai.__version__.split(".")[0]) >= 3:
    pytest.skip(
        f"openai {openai.__version__} sends HTTP through httpx2, which respx does not intercept; "
        "run these with openai 2.x (the loopback integration tests cover openai 3.x)",
        allow_module_level=True,
    )

import httpx
import respx
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import SecretStr

from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint
from langchain_disco.errors import (
    ContinuationUnsupportedError,
    EndpointError,
    EndpointTimeoutError,
)

BASE_URL = "http://api.test/v1"
URL = f"{BASE_URL}/chat/completions"
SECRET = "sk-test-SECRET-0123456789"
MESSAGES = [SystemMessage(content="Be brief."), HumanMessage(content="Say hello.")]


# ------------------------------------------------------------------------------------- helpers


def chunk(
    content: str | None = None, *, finish: str | None = None, role: str | None = None
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test-model",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def sse_event(event: dict[str, Any] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


def sse(*events: dict[str, Any] | str) -> bytes:
    return b"".join(sse_event(e) for e in events)


def answer_events(parts: tuple[str, ...] = ("Hel", "lo", "!")) -> list[dict[str, Any] | str]:
    return [
        chunk("", role="assistant"),
        *(chunk(p) for p in parts),
        chunk(finish="stop"),
        usage_chunk(11, len(parts)),
        "[DONE]",
    ]


def sse_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def ok_response(parts: tuple[str, ...] = ("Hel", "lo", "!")) -> httpx.Response:
    return sse_response(sse(*answer_events(parts)))


def status_response(status: int, message: str = "try again") -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "server_error"}})


class ScriptedStream(httpx.AsyncByteStream):
    """A response body sent event by event, which can then break, or hang until closed."""

    def __init__(
        self,
        events: list[dict[str, Any] | str],
        *,
        then: BaseException | None = None,
        hang: bool = False,
    ) -> None:
        self.events = events
        self.then = then
        self.hang = hang
        self.closed = asyncio.Event()
        self.reading = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.reading.set()
        for event in self.events:
            yield sse_event(event)
        if self.then is not None:
            raise self.then
        if self.hang:
            await self.closed.wait()  # the connection stays silent until the client closes it

    async def aclose(self) -> None:
        self.closed.set()


def scripted_response(stream: ScriptedStream) -> httpx.Response:
    return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})


def endpoint(**kwargs: Any) -> OpenAIEndpoint:
    defaults: dict[str, Any] = {
        "base_url": BASE_URL,
        "model": "test-model",
        "api_key": SecretStr(SECRET),
        "retry_backoff_s": 0.0,
        "first_token_timeout_s": 5.0,
        "idle_timeout_s": 5.0,
    }
    return OpenAIEndpoint(**{**defaults, **kwargs})


async def collect(
    ep: OpenAIEndpoint,
    stats: StreamStats,
    *,
    params: GenerationParams | None = None,
    prefix: str = "",
    deltas: list[str] | None = None,
) -> list[str]:
    out = deltas if deltas is not None else []
    async for delta in ep.stream(MESSAGES, params or GenerationParams(), stats, prefix=prefix):
        out.append(delta)
    return out


def request_json(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


@pytest.fixture
async def ep() -> AsyncIterator[OpenAIEndpoint]:
    endpoint_ = endpoint()
    yield endpoint_
    await endpoint_.aclose()


# ------------------------------------------------------------------------------------- streaming


@respx.mock
async def test_streams_deltas_and_sends_sampling_parameters(ep: OpenAIEndpoint) -> None:
    route = respx.post(URL).mock(return_value=ok_response())
    stats = StreamStats()
    params = GenerationParams(max_tokens=16, temperature=0.0, top_p=0.9, seed=7, stop=("\n",))

    deltas = await collect(ep, stats, params=params)

    assert deltas == ["Hel", "lo", "!"]
    body = request_json(route)
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        16,
        0.0,
        0.9,
        7,
    )
    assert body["stop"] == ["\n"]
    assert route.calls[0].request.headers["authorization"] == f"Bearer {SECRET}"


@respx.mock
async def test_unset_parameters_are_not_sent(ep: OpenAIEndpoint) -> None:
    route = respx.post(URL).mock(return_value=ok_response())
    await collect(ep, StreamStats())
    body = request_json(route)
    for absent in ("max_tokens", "temperature", "top_p", "seed", "stop"):
        assert absent not in body


@respx.mock
async def test_usage_chunk_replaces_the_estimate() -> None:
    ep = endpoint()
    events: list[dict[str, Any] | str] = [
        chunk("", role="assistant"),
        chunk("a"),
        chunk("b"),
        chunk(finish="length"),
        usage_chunk(42, 9),
        "[DONE]",
    ]
    respx.post(URL).mock(return_value=sse_response(sse(*events)))
    stats = StreamStats()
    seen: list[tuple[int, bool]] = []
    async for _ in ep.stream(MESSAGES, GenerationParams(), stats):
        seen.append((stats.output_tokens, stats.usage_reported))
    await ep.aclose()

    assert seen == [(1, False), (2, False)]  # counted per delta while streaming
    assert (stats.input_tokens, stats.output_tokens, stats.usage_reported) == (42, 9, True)
    assert stats.finish_reason == "length"
    assert stats.attempts == 1


@respx.mock
async def test_input_tokens_are_estimated_before_the_first_byte(ep: OpenAIEndpoint) -> None:
    stream = ScriptedStream([chunk("", role="assistant")], hang=True)
    respx.post(URL).mock(return_value=scripted_response(stream))
    stats = StreamStats()
    task = asyncio.create_task(collect(ep, stats))
    await stream.reading.wait()  # the request was sent; no content has come back yet
    assert stats.output_tokens == 0
    assert stats.input_tokens == ep.estimate_input_tokens(MESSAGES) > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------------- retries


@respx.mock
async def test_retries_503_then_429_before_the_first_token(ep: OpenAIEndpoint) -> None:
    route = respx.post(URL).mock(
        side_effect=[status_response(503), status_response(429), ok_response()]
    )
    stats = StreamStats()
    assert "".join(await collect(ep, stats)) == "Hello!"
    assert route.call_count == 3
    assert stats.attempts == 3


@respx.mock
async def test_connect_error_is_retried(ep: OpenAIEndpoint) -> None:
    route = respx.post(URL).mock(
        side_effect=[httpx.ConnectError("connection refused"), ok_response()]
    )
    stats = StreamStats()
    assert "".join(await collect(ep, stats)) == "Hello!"
    assert route.call_count == 2
    assert stats.attempts == 2


@respx.mock
async def test_bad_request_is_not_retried(ep: OpenAIEndpoint) -> None:
    route = respx.post(URL).mock(return_value=status_response(400, "max_tokens is too large"))
    stats = StreamStats()
    with pytest.raises(EndpointError) as info:
        await collect(ep, stats)
    assert not isinstance(info.value, EndpointTimeoutError)
    assert route.call_count == 1
    assert stats.attempts == 1
    assert "HTTP 400" in str(info.value)
    assert "max_tokens is too large" in str(info.value)
    # The SDK error (raw body, the request and its headers) never rides along: issue 13.
    assert info.value.__cause__ is None and info.value.__context__ is None


@respx.mock
async def test_exhausted_retries_name_status_and_attempts() -> None:
    ep = endpoint(max_retries=1)
    route = respx.post(URL).mock(return_value=status_response(502, "bad gateway"))
    stats = StreamStats()
    with pytest.raises(EndpointError, match=r"HTTP 502.*after 2 attempt\(s\)"):
        await collect(ep, stats)
    assert route.call_count == 2
    assert stats.attempts == 2
    await ep.aclose()


@respx.mock
async def test_failure_after_the_first_token_is_not_retried(ep: OpenAIEndpoint) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        events: list[dict[str, Any] | str] = [chunk("", role="assistant"), chunk("Hel")]
        return scripted_response(
            ScriptedStream(events, then=httpx.RemoteProtocolError("peer closed connection"))
        )

    route = respx.post(URL).mock(side_effect=broken)
    deltas: list[str] = []
    with pytest.raises(EndpointError, match="already delivered") as info:
        await collect(ep, StreamStats(), deltas=deltas)
    assert deltas == ["Hel"]
    assert route.call_count == 1
    assert "RemoteProtocolError" in str(info.value)  # what broke is said, in our words
    # The SDK error (raw body, the request and its headers) never rides along: issue 13.
    assert info.value.__cause__ is None and info.value.__context__ is None


@respx.mock
async def test_stream_broken_before_the_first_token_is_retried(ep: OpenAIEndpoint) -> None:
    broken = scripted_response(
        ScriptedStream(
            [chunk("", role="assistant")], then=httpx.RemoteProtocolError("peer closed connection")
        )
    )
    route = respx.post(URL).mock(side_effect=[broken, ok_response()])
    stats = StreamStats()
    assert "".join(await collect(ep, stats)) == "Hello!"
    assert route.call_count == 2


# ------------------------------------------------------------------------------------- in-band


@respx.mock
async def test_inband_error_event_after_tokens_raises(ep: OpenAIEndpoint) -> None:
    events: list[dict[str, Any] | str] = [
        chunk("", role="assistant"),
        chunk("Hel"),
        chunk("lo"),
        {"error": {"message": "model overloaded", "type": "server_error", "code": 500}},
    ]
    route = respx.post(URL).mock(return_value=sse_response(sse(*events)))
    deltas: list[str] = []
    with pytest.raises(EndpointError, match="model overloaded") as info:
        await collect(ep, StreamStats(), deltas=deltas)
    assert deltas == ["Hel", "lo"]
    assert route.call_count == 1
    # The SDK error (raw body, the request and its headers) never rides along: issue 13.
    assert info.value.__cause__ is None and info.value.__context__ is None


@respx.mock
async def test_malformed_event_raises(ep: OpenAIEndpoint) -> None:
    events: list[dict[str, Any] | str] = [
        chunk("", role="assistant"),
        chunk("Hel"),
        "{not json",
        "[DONE]",
    ]
    route = respx.post(URL).mock(return_value=sse_response(sse(*events)))
    deltas: list[str] = []
    with pytest.raises(EndpointError, match="malformed"):
        await collect(ep, StreamStats(), deltas=deltas)
    assert deltas == ["Hel"]
    assert route.call_count == 1


@respx.mock
async def test_wrongly_shaped_chunk_raises(ep: OpenAIEndpoint) -> None:
    events: list[dict[str, Any] | str] = [chunk("Hel"), {"choices": "oops"}, "[DONE]"]
    respx.post(URL).mock(return_value=sse_response(sse(*events)))
    with pytest.raises(EndpointError, match="malformed"):
        await collect(ep, StreamStats())


@respx.mock
async def test_stream_without_finish_reason_is_a_truncation(ep: OpenAIEndpoint) -> None:
    events: list[dict[str, Any] | str] = [chunk("", role="assistant"), chunk("Hel"), "[DONE]"]
    respx.post(URL).mock(return_value=sse_response(sse(*events)))
    deltas: list[str] = []
    with pytest.raises(EndpointError, match="truncated"):
        await collect(ep, StreamStats(), deltas=deltas)
    assert deltas == ["Hel"]


@respx.mock
async def test_empty_answer_is_not_an_error(ep: OpenAIEndpoint) -> None:
    events: list[dict[str, Any] | str] = [
        chunk("", role="assistant"),
        chunk(finish="stop"),
        usage_chunk(5, 0),
        "[DONE]",
    ]
    route = respx.post(URL).mock(return_value=sse_response(sse(*events)))
    stats = StreamStats()
    assert await collect(ep, stats) == []
    assert (stats.finish_reason, stats.output_tokens, route.call_count) == ("stop", 0, 1)


# ------------------------------------------------------------------------------------- timeouts


@respx.mock
async def test_idle_timeout_after_the_first_token() -> None:
    ep = endpoint(idle_timeout_s=0.2)
    stream = ScriptedStream([chunk("", role="assistant"), chunk("Hel")], hang=True)
    route = respx.post(URL).mock(return_value=scripted_response(stream))
    deltas: list[str] = []
    with pytest.raises(EndpointTimeoutError, match="idle timeout"):
        await collect(ep, StreamStats(), deltas=deltas)
    assert deltas == ["Hel"]
    assert route.call_count == 1
    assert stream.closed.is_set()  # the response was closed, not left hanging
    await ep.aclose()


@respx.mock
async def test_first_token_timeout_is_retried_then_raised() -> None:
    ep = endpoint(first_token_timeout_s=0.2, max_retries=1)
    streams: list[ScriptedStream] = []

    def silent(request: httpx.Request) -> httpx.Response:
        streams.append(ScriptedStream([chunk("", role="assistant")], hang=True))
        return scripted_response(streams[-1])

    route = respx.post(URL).mock(side_effect=silent)
    stats = StreamStats()
    with pytest.raises(EndpointTimeoutError, match=r"no first token within 0.2s after 2 attempt"):
        await collect(ep, stats)
    assert route.call_count == 2
    assert stats.attempts == 2
    assert all(s.closed.is_set() for s in streams)
    await ep.aclose()


@respx.mock
async def test_first_token_timeout_then_success() -> None:
    ep = endpoint(first_token_timeout_s=0.2, max_retries=1)
    silent = scripted_response(ScriptedStream([chunk("", role="assistant")], hang=True))
    route = respx.post(URL).mock(side_effect=[silent, ok_response()])
    stats = StreamStats()
    assert "".join(await collect(ep, stats)) == "Hello!"
    assert (route.call_count, stats.attempts) == (2, 2)
    await ep.aclose()


# ------------------------------------------------------------------------------------- cancel


@respx.mock
async def test_cancelling_the_consumer_closes_the_response(ep: OpenAIEndpoint) -> None:
    stream = ScriptedStream([chunk("", role="assistant"), chunk("Hel"), chunk("lo")], hang=True)
    respx.post(URL).mock(return_value=scripted_response(stream))
    got_two = asyncio.Event()
    deltas: list[str] = []

    async def consume() -> None:
        async for delta in ep.stream(MESSAGES, GenerationParams(), StreamStats()):
            deltas.append(delta)
            if len(deltas) == 2:
                got_two.set()

    task = asyncio.create_task(consume())
    await got_two.wait()
    assert not stream.closed.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.closed.is_set()
    assert deltas == ["Hel", "lo"]


@pytest.mark.parametrize("ticks", range(12))
@respx.mock
async def test_a_cancellation_is_never_lost_whatever_it_races(ticks: int) -> None:
    # Cancel after `ticks` loop iterations: before the request, mid-first-token, between
    # chunks, or just as a chunk completes (where asyncio.wait_for < 3.12 drops cancellations).
    ep = endpoint(idle_timeout_s=60.0, first_token_timeout_s=60.0)
    stream = ScriptedStream([chunk("", role="assistant"), chunk("a"), chunk("b")], hang=True)
    route = respx.post(URL).mock(return_value=scripted_response(stream))
    task = asyncio.create_task(collect(ep, StreamStats()))
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5.0)
    assert task in done
    assert task.cancelled()
    assert route.call_count <= 1  # and never retried
    await ep.aclose()


@respx.mock
async def test_stopping_iteration_early_closes_the_response(ep: OpenAIEndpoint) -> None:
    stream = ScriptedStream([chunk("Hel"), chunk("lo")], hang=True)
    respx.post(URL).mock(return_value=scripted_response(stream))
    gen = ep.stream(MESSAGES, GenerationParams(), StreamStats())
    assert await gen.__anext__() == "Hel"
    await gen.aclose()  # type: ignore[attr-defined]
    assert stream.closed.is_set()


# ------------------------------------------------------------------------------------- continuation


async def test_continuation_none_is_unsupported(ep: OpenAIEndpoint) -> None:
    assert ep.capabilities.exact_continuation is False
    with respx.mock(assert_all_called=False) as router:
        route = router.post(URL).mock(return_value=ok_response())
        with pytest.raises(ContinuationUnsupportedError):
            await collect(ep, StreamStats(), prefix="Hel")
        assert route.call_count == 0


@pytest.mark.parametrize(
    ("mode", "last_message", "extra"),
    [
        (
            "vllm",
            {"role": "assistant", "content": "Hel"},
            {"continue_final_message": True, "add_generation_prompt": False},
        ),
        ("deepseek", {"role": "assistant", "content": "Hel", "prefix": True}, {}),
        ("llamacpp", {"role": "assistant", "content": "Hel"}, {}),
    ],
)
@respx.mock
async def test_continuation_request_bodies(
    mode: str, last_message: dict[str, Any], extra: dict[str, Any]
) -> None:
    ep = endpoint(continuation=mode)
    assert ep.capabilities.exact_continuation is True
    route = respx.post(URL).mock(return_value=ok_response(("lo", "!")))
    stats = StreamStats()

    deltas = await collect(ep, stats, prefix="Hel")

    assert deltas == ["lo", "!"]  # only the continuation
    body = request_json(route)
    assert body["messages"][:2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert body["messages"][2] == last_message
    assert len(body["messages"]) == 3
    for key in ("continue_final_message", "add_generation_prompt"):
        assert body.get(key) == extra.get(key)
    await ep.aclose()


@respx.mock
async def test_extra_body_is_sent_and_merged_with_continuation() -> None:
    ep = endpoint(continuation="vllm", extra_body={"top_k": 1})
    route = respx.post(URL).mock(return_value=ok_response())
    await collect(ep, StreamStats(), prefix="x")
    body = request_json(route)
    assert body["top_k"] == 1
    assert body["continue_final_message"] is True
    await collect(ep, StreamStats())
    assert "continue_final_message" not in request_json(route)
    await ep.aclose()


# ------------------------------------------------------------------------------------- secrets


@respx.mock
async def test_api_key_never_appears_in_repr_or_errors(ep: OpenAIEndpoint) -> None:
    assert SECRET not in repr(ep)
    assert SECRET not in str(ep)
    route = respx.post(URL).mock(
        return_value=status_response(401, f"Incorrect API key provided: {SECRET}")
    )
    with pytest.raises(EndpointError) as info:
        await collect(ep, StreamStats())
    assert route.call_count == 1  # 401 is not retried
    assert "HTTP 401" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


@respx.mock
async def test_without_a_key_a_placeholder_is_sent() -> None:
    ep = endpoint(api_key=None)
    route = respx.post(URL).mock(return_value=ok_response())
    await collect(ep, StreamStats())
    assert route.calls[0].request.headers["authorization"].startswith("Bearer ")
    await ep.aclose()


# ------------------------------------------------------------------------------------- config


def test_capabilities_and_kind() -> None:
    ep = endpoint(continuation="deepseek", name="ds")
    assert (ep.kind, ep.name, ep.model_name) == ("remote", "ds", "test-model")
    assert ep.capabilities.tools and ep.capabilities.structured_output


@pytest.mark.parametrize(
    "kwargs",
    [
        {"continuation": "sglang-ish"},
        {"idle_timeout_s": 0},
        {"first_token_timeout_s": -1},
        {"max_retries": -1},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, Any]) -> None:
    from langchain_disco.errors import ConfigError

    with pytest.raises(ConfigError):
        endpoint(**kwargs)
