"""OpenAIEndpoint against the loopback server: real HTTP, real SSE, a real llama.cpp model.

Runs with whichever openai line is installed (2.x on httpx, 3.x on httpx2), so it also covers
what the respx unit tests cannot reach on openai 3.x. Faults are armed on the server; its request
log says what really happened on the wire (how many requests, how each one ended).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

for _module in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the llama and demo extras")

from langchain_core.messages import HumanMessage  # noqa: E402

from langchain_disco.endpoints.base import GenerationParams, StreamStats  # noqa: E402
from langchain_disco.endpoints.openai import ContinuationMode, OpenAIEndpoint  # noqa: E402
from langchain_disco.errors import EndpointError, EndpointTimeoutError  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402

pytestmark = pytest.mark.llama

MESSAGES = [HumanMessage(content="Name three colors.")]
MAX_TOKENS = 12
GREEDY = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, seed=1)


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(latency_profile="none") as loopback:
        yield loopback


@pytest.fixture(autouse=True)
def _clean_server(server: LoopbackServer) -> None:
    server.clear_faults()
    server.clear_requests()


@pytest.fixture
async def make_endpoint(server: LoopbackServer) -> AsyncIterator[Any]:
    made: list[OpenAIEndpoint] = []

    def make(**kwargs: Any) -> OpenAIEndpoint:
        settings: dict[str, Any] = {
            "base_url": server.base_url,
            "model": "loopback",
            "retry_backoff_s": 0.0,
            "first_token_timeout_s": 20.0,
            "idle_timeout_s": 20.0,
        }
        made.append(OpenAIEndpoint(**{**settings, **kwargs}))
        return made[-1]

    yield make
    for endpoint in made:
        await endpoint.aclose()


async def collect(
    endpoint: OpenAIEndpoint,
    stats: StreamStats,
    *,
    params: GenerationParams = GREEDY,
    prefix: str = "",
    deltas: list[str] | None = None,
) -> list[str]:
    out = deltas if deltas is not None else []
    async for delta in endpoint.stream(MESSAGES, params, stats, prefix=prefix):
        out.append(delta)
    return out


async def wait_status(server: LoopbackServer, index: int, status: str) -> dict[str, Any]:
    return await asyncio.to_thread(server.wait_for_request_status, index, status, 10.0)


async def test_streams_a_real_answer_with_usage(server: LoopbackServer, make_endpoint: Any) -> None:
    stats = StreamStats()
    deltas = await collect(make_endpoint(), stats)

    log = server.requests()
    assert len(log) == 1 and log[0]["status"] == "completed"
    assert "".join(deltas) == log[0]["text_sent"]
    assert deltas and all(deltas)
    assert stats.usage_reported
    assert (stats.input_tokens, stats.output_tokens) == (
        log[0]["prompt_tokens"],
        log[0]["completion_tokens"],
    )
    assert stats.finish_reason in ("stop", "length")
    assert stats.attempts == 1


async def test_retries_a_503_before_the_first_token(
    server: LoopbackServer, make_endpoint: Any
) -> None:
    server.set_fault("error_status", status=503, count=1)
    stats = StreamStats()
    deltas = await collect(make_endpoint(max_retries=2), stats)

    log = server.requests()
    assert [entry["status"] for entry in log] == ["fault", "completed"]
    assert stats.attempts == 2
    assert "".join(deltas) == log[1]["text_sent"] != ""


async def test_a_400_class_status_is_not_retried(
    server: LoopbackServer, make_endpoint: Any
) -> None:
    server.set_fault("error_status", status=404, count=3)
    stats = StreamStats()
    with pytest.raises(EndpointError, match="HTTP 404"):
        await collect(make_endpoint(max_retries=2), stats)
    assert len(server.requests()) == 1
    assert stats.attempts == 1


@pytest.mark.parametrize("kind", ["inband_error", "malformed", "disconnect"])
async def test_mid_stream_fault_raises_after_the_delivered_tokens_without_retry(
    server: LoopbackServer, make_endpoint: Any, kind: str
) -> None:
    server.set_fault(kind, after_tokens=3)
    deltas: list[str] = []
    with pytest.raises(EndpointError, match="already delivered") as info:
        await collect(make_endpoint(max_retries=2), StreamStats(), deltas=deltas)

    assert not isinstance(info.value, EndpointTimeoutError)
    assert len(deltas) == 3
    log = server.requests()
    assert len(log) == 1  # delivered text is never requested (and repeated) again
    assert log[0]["status"] == "fault"
    assert "".join(deltas) == log[0]["text_sent"]


async def test_inband_error_before_any_token_is_an_endpoint_error(
    server: LoopbackServer, make_endpoint: Any
) -> None:
    server.set_fault("inband_error", after_tokens=0)
    with pytest.raises(EndpointError, match="error event in the stream"):
        await collect(make_endpoint(), StreamStats())
    assert len(server.requests()) == 1


async def test_idle_timeout_on_a_stall(server: LoopbackServer, make_endpoint: Any) -> None:
    server.set_fault("stall", after_tokens=2, seconds=30.0)
    deltas: list[str] = []
    with pytest.raises(EndpointTimeoutError, match="idle timeout"):
        await collect(make_endpoint(idle_timeout_s=0.5), StreamStats(), deltas=deltas)
    assert len(deltas) == 2
    # We hung up instead of waiting out the stall: the server saw the client go.
    entry = await wait_status(server, 0, "disconnected")
    assert entry["tokens_sent"] == 2
    assert len(server.requests()) == 1


async def test_first_token_timeout_then_retry_succeeds(
    server: LoopbackServer, make_endpoint: Any
) -> None:
    server.set_fault("delay", seconds=30.0, count=1)
    stats = StreamStats()
    deltas = await collect(make_endpoint(first_token_timeout_s=1.0, max_retries=1), stats)
    assert deltas
    assert stats.attempts == 2
    log = server.requests()
    assert [entry["status"] for entry in log][1] == "completed"
    await wait_status(server, 0, "disconnected")


async def test_first_token_timeout_exhausted(server: LoopbackServer, make_endpoint: Any) -> None:
    server.set_fault("delay", seconds=30.0, count=2)
    stats = StreamStats()
    with pytest.raises(EndpointTimeoutError, match=r"no first token within 0.5s after 2 attempt"):
        await collect(make_endpoint(first_token_timeout_s=0.5, max_retries=1), stats)
    assert stats.attempts == 2
    assert len(server.requests()) == 2


async def test_cancelling_the_consumer_disconnects_from_the_server(
    server: LoopbackServer, make_endpoint: Any
) -> None:
    # A long stall after two tokens keeps the stream open for as long as the test needs.
    server.set_fault("stall", after_tokens=2, seconds=30.0)
    endpoint = make_endpoint()
    deltas: list[str] = []
    got_two = asyncio.Event()

    async def consume() -> None:
        async for delta in endpoint.stream(MESSAGES, GREEDY, StreamStats()):
            deltas.append(delta)
            if len(deltas) == 2:
                got_two.set()

    task = asyncio.create_task(consume())
    await got_two.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    entry = await wait_status(server, 0, "disconnected")
    assert entry["tokens_sent"] == 2
    assert len(deltas) == 2


@pytest.mark.parametrize("mode", ["vllm", "deepseek", "llamacpp"])
async def test_continuation_is_text_exact(
    server: LoopbackServer, make_endpoint: Any, mode: ContinuationMode
) -> None:
    straight = await collect(make_endpoint(), StreamStats())
    assert len(straight) >= 4, straight
    cut = len(straight) // 2
    if mode == "llamacpp":
        # llama-server's echo is build-dependent, so its output is filtered: a continuation
        # that repeats the whole prefix verbatim (the base model loops) would read as an echo.
        # That ambiguity is pinned in tests/unit/test_continuation_filter.py; here, a cut the
        # loop does not repeat at once.
        while cut > 1 and "".join(straight[cut:]).startswith("".join(straight[:cut])):
            cut -= 1
    prefix = "".join(straight[:cut])

    endpoint = make_endpoint(continuation=mode)
    params = GenerationParams(max_tokens=MAX_TOKENS - cut, temperature=0.0, seed=1)
    continuation = await collect(endpoint, StreamStats(), params=params, prefix=prefix)

    assert prefix + "".join(continuation) == "".join(straight)
    log = server.requests()
    assert log[1]["prefix"] == prefix
    assert log[1]["continuation"] == {"llamacpp": "prefill"}.get(mode, mode)


# The first loop's keep-alive connection cannot be closed once `asyncio.run` closed that loop;
# the endpoint drops that client, and the socket is reported when collected.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_one_endpoint_serves_several_event_loops(server: LoopbackServer) -> None:
    """Code that calls `asyncio.run` per request: each loop gets its own HTTP client."""
    endpoint = OpenAIEndpoint(base_url=server.base_url, model="loopback")

    async def once() -> str:
        return "".join(await collect(endpoint, StreamStats()))

    first = asyncio.run(once())
    second = asyncio.run(once())
    asyncio.run(endpoint.aclose())
    assert first == second != ""
    assert [entry["status"] for entry in server.requests()] == ["completed", "completed"]
