"""The loopback server's echo backend: deterministic words over real HTTP, no model.

One echo server (fast decode) serves the module through the real OpenAI SDK; a few tests drive
`EchoEndpoint` in-process, where timing and argument checks need no server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import openai
import pytest
from langchain_core.messages import HumanMessage
from openai.types.chat import ChatCompletionMessageParam

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco.endpoints.base import GenerationParams, StreamStats  # noqa: E402
from langchain_disco.endpoints.openai import OpenAIEndpoint  # noqa: E402
from langchain_disco.errors import ConfigError  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402
from langchain_disco.testing.echo import EchoEndpoint  # noqa: E402
from langchain_disco.testing.server import main  # noqa: E402

pytestmark = pytest.mark.timeout(60)

PROMPT = "Tell me about rivers."
MESSAGES = [HumanMessage(PROMPT)]
USER = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(backend="echo", echo_tok_s=2000.0) as server:
        yield server


@pytest.fixture
async def client(echo_server: LoopbackServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=echo_server.base_url, api_key="test", max_retries=0
    ) as c:
        yield c


@pytest.fixture
async def endpoint(echo_server: LoopbackServer) -> AsyncIterator[OpenAIEndpoint]:
    ep = OpenAIEndpoint(
        base_url=echo_server.base_url, model="loopback", continuation="vllm", max_retries=0
    )
    yield ep
    await ep.aclose()


async def stream_text(endpoint: OpenAIEndpoint, max_tokens: int, prefix: str = "") -> list[str]:
    stats = StreamStats()
    deltas = [
        str(d)
        async for d in endpoint.stream(
            MESSAGES, GenerationParams(max_tokens=max_tokens), stats, prefix=prefix
        )
    ]
    assert stats.output_tokens == len(deltas)
    return deltas


async def test_echo_streams_the_same_words_for_the_same_prompt_with_usage(
    client: openai.AsyncOpenAI,
) -> None:
    async def once() -> tuple[list[str], Any]:
        stream = await client.chat.completions.create(
            model="loopback",
            messages=cast("list[ChatCompletionMessageParam]", USER),
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        deltas: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        return deltas, usage

    (first, usage), (second, _) = await once(), await once()

    assert first == second
    assert len(first) == 12
    assert first[0] == first[0].strip() and all(d.startswith(" ") for d in first[1:])
    assert all(len(d.split()) == 1 for d in first)  # one word per delta
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens == len(PROMPT) // 4


async def test_different_prompts_get_different_answers(endpoint: OpenAIEndpoint) -> None:
    other = [HumanMessage("Something else entirely.")]
    mine = await stream_text(endpoint, 16)
    theirs = [
        str(d) async for d in endpoint.stream(other, GenerationParams(max_tokens=16), StreamStats())
    ]
    assert mine != theirs


@pytest.mark.parametrize("cut", [1, 5, 19])
async def test_continuation_after_any_token_is_exactly_the_rest(
    endpoint: OpenAIEndpoint, cut: int
) -> None:
    full = await stream_text(endpoint, 20)
    prefix = "".join(full[:cut])

    rest = await stream_text(endpoint, 20 - cut, prefix=prefix)

    assert prefix + "".join(rest) == "".join(full)
    assert rest == full[cut:]


async def test_continuation_after_a_trailing_space_glues_the_next_word(
    endpoint: OpenAIEndpoint,
) -> None:
    full = await stream_text(endpoint, 6)
    prefix = "".join(full[:3]) + " "

    rest = await stream_text(endpoint, 3, prefix=prefix)

    assert prefix + "".join(rest) == "".join(full[:3]) + " " + "".join(full[3:]).lstrip()


async def test_fifty_concurrent_streams_all_complete(echo_server: LoopbackServer) -> None:
    endpoint = OpenAIEndpoint(base_url=echo_server.base_url, model="loopback", max_retries=0)
    try:
        results = await asyncio.gather(*(stream_text(endpoint, 16) for _ in range(50)))
    finally:
        await endpoint.aclose()
    assert len(results) == 50
    assert all(r == results[0] and len(r) == 16 for r in results)


async def test_echo_endpoint_keeps_its_decode_rate() -> None:
    echo = EchoEndpoint(tok_s=200.0)
    started = time.monotonic()
    params = GenerationParams(max_tokens=21)
    deltas = [d async for d in echo.stream(MESSAGES, params, StreamStats())]
    elapsed = time.monotonic() - started
    assert len(deltas) == 21
    assert 0.095 <= elapsed < 0.5  # 20 gaps of 5 ms


async def test_echo_endpoint_reports_stop_without_max_tokens_and_honours_stop() -> None:
    echo = EchoEndpoint(tok_s=0.0, default_max_tokens=7)
    stats = StreamStats()
    deltas = [d async for d in echo.stream(MESSAGES, GenerationParams(), stats)]
    assert len(deltas) == 7 and stats.finish_reason == "stop"

    cut = deltas[3].strip()
    stats = StreamStats()
    stopped = [d async for d in echo.stream(MESSAGES, GenerationParams(stop=(cut,)), stats)]
    assert stopped == deltas[: deltas.index(next(d for d in deltas if cut in d))]
    assert stats.finish_reason == "stop"


def test_negative_echo_rate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--echo-tok-s"):
        EchoEndpoint(tok_s=-1.0)


def test_unknown_backend_is_rejected_by_the_server_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--backend", "gpt"])
    assert exited.value.code == 2
    assert "invalid choice: 'gpt'" in capsys.readouterr().err
