"""The continuation contract against every server dialect the loopback server plays.

Each dialect emulates a real server's observed or documented behaviour (docs/servers.md;
`langchain_disco.testing._wire.Dialect`); the echo backend makes every answer deterministic, so
"straight" and "cut, then continued" can be compared exactly. The real llama-server is in
tests/integration/test_llama_server.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_core.messages import HumanMessage  # noqa: E402

from langchain_disco.endpoints.base import GenerationParams, StreamStats  # noqa: E402
from langchain_disco.endpoints.openai import OpenAIEndpoint  # noqa: E402
from langchain_disco.errors import ContinuationUnsupportedError  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402

MESSAGES = [HumanMessage(content="Tell me about the moon.")]
MAX_TOKENS = 16
PARAMS = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0)


@pytest.fixture(scope="module", params=["lenient", "llamacpp", "vllm", "deepseek", "restart"])
def dialect_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, LoopbackServer]]:
    with LoopbackServer(backend="echo", echo_tok_s=0, dialect=request.param) as server:
        yield request.param, server


@pytest.fixture
async def endpoints(dialect_server: tuple[str, LoopbackServer]) -> AsyncIterator[Any]:
    made: list[OpenAIEndpoint] = []
    _, server = dialect_server

    def make(continuation: Any) -> OpenAIEndpoint:
        made.append(
            OpenAIEndpoint(base_url=server.base_url, model="loopback", continuation=continuation)
        )
        return made[-1]

    yield make
    for endpoint in made:
        await endpoint.aclose()


async def _collect(endpoint: OpenAIEndpoint, prefix: str = "", cut: int = 0) -> str:
    # The echo backend writes one word per token: the continuation has the tokens left.
    params = GenerationParams(max_tokens=MAX_TOKENS - cut, temperature=0.0)
    parts = [
        item
        async for item in endpoint.stream(MESSAGES, params, StreamStats(), prefix=prefix)
        if isinstance(item, str)
    ]
    return "".join(parts)


# Which continuation mode each dialect honours (and how the SDK asks for it).
HONOURS = {
    "lenient": ("llamacpp", "vllm", "deepseek"),
    "llamacpp": ("llamacpp",),
    "vllm": ("vllm",),
    "deepseek": ("deepseek",),
    "restart": (),
}


async def test_the_llamacpp_dialect_streams_the_prefill_back_in_its_first_delta(
    dialect_server: tuple[str, LoopbackServer],
) -> None:
    dialect, server = dialect_server
    if dialect != "llamacpp":
        pytest.skip("the echo is llama-server's")
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test")
    stream = await client.chat.completions.create(
        model="loopback",
        messages=[
            {"role": "user", "content": "Tell me about the moon."},
            {"role": "assistant", "content": "The moon is a"},
        ],
        stream=True,
        max_tokens=4,
    )
    deltas = [c.choices[0].delta.content async for c in stream if c.choices]
    await client.close()
    first = next(d for d in deltas if d)
    assert first.startswith("The moon is a") and len(first) > len("The moon is a")


@pytest.mark.parametrize("cut", [1, 3, 7])
async def test_a_honoured_continuation_yields_exactly_the_rest_of_the_straight_answer(
    dialect_server: tuple[str, LoopbackServer], endpoints: Any, cut: int
) -> None:
    dialect, server = dialect_server
    for mode in HONOURS[dialect]:
        endpoint = endpoints(mode)
        straight = await _collect(endpoint)
        words = straight.split(" ")
        prefix = " ".join(words[:cut])
        continued = await _collect(endpoint, prefix, cut)
        assert prefix + continued == straight, (dialect, mode)
        entry = server.requests()[-1]
        assert entry["text_sent"].endswith(continued)
        if dialect == "llamacpp":  # the server really echoed; the endpoint stripped it
            assert entry["text_sent"] == prefix + continued


async def test_auto_finds_the_echo_of_the_llamacpp_dialect_and_strips_it(
    dialect_server: tuple[str, LoopbackServer], endpoints: Any
) -> None:
    dialect, _ = dialect_server
    if dialect != "llamacpp":
        pytest.skip("the echo backend completes no word: only an echo proves a prefill")
    endpoint = endpoints("auto")
    verdict = await endpoint.aprobe_continuation()
    assert (verdict.style, verdict.echo, verdict.source) == ("prefill", True, "probed")
    assert endpoint.capabilities.exact_continuation
    straight = await _collect(endpoint)
    prefix = straight.split(" ", 2)[0]
    assert prefix + await _collect(endpoint, prefix, 1) == straight


async def test_auto_without_a_verdict_refuses_to_continue_rather_than_guess(
    dialect_server: tuple[str, LoopbackServer], endpoints: Any
) -> None:
    endpoint = endpoints("auto")
    assert endpoint.verdict is None and not endpoint.capabilities.exact_continuation
    with pytest.raises(ContinuationUnsupportedError, match="not been probed"):
        await _collect(endpoint, "The")


async def test_the_official_openai_host_is_none_without_any_request() -> None:
    endpoint = OpenAIEndpoint(
        base_url="https://api.openai.com/v1", model="gpt-4o-mini", continuation="auto"
    )
    assert endpoint.verdict is not None and endpoint.verdict.source == "host"
    assert not endpoint.capabilities.exact_continuation
    azure = OpenAIEndpoint(
        base_url="https://my-res.openai.azure.com/openai/v1", model="m", continuation="auto"
    )
    assert azure.verdict is not None and azure.verdict.style is None
