"""LangChainEndpoint: any chat model behind the endpoint interface.

The model is LangChain's GenericFakeChatModel (plus a small subclass that reports usage): the
thing under test is the wrapper, not a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from langchain_disco.endpoints.base import Capabilities, GenerationParams, StreamStats
from langchain_disco.endpoints.langchain import LangChainEndpoint
from langchain_disco.errors import ContinuationUnsupportedError, EndpointError

MESSAGES: list[BaseMessage] = [HumanMessage(content="Say hello to the world.")]


class UsageFakeChatModel(GenericFakeChatModel):
    """Streams like GenericFakeChatModel, then a usage chunk; records what it was asked."""

    seen_messages: list[list[BaseMessage]] = Field(default_factory=list)
    seen_kwargs: list[dict[str, Any]] = Field(default_factory=list)
    usage: tuple[int, int] = (17, 5)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.seen_messages.append(list(messages))
        self.seen_kwargs.append({"stop": stop, **kwargs})
        for chunk in self._stream(messages, stop=stop, **kwargs):
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={
                    "input_tokens": self.usage[0],
                    "output_tokens": self.usage[1],
                    "total_tokens": sum(self.usage),
                },
                response_metadata={"finish_reason": "stop"},
            )
        )


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(answers))


async def collect(
    endpoint: LangChainEndpoint,
    stats: StreamStats,
    *,
    params: GenerationParams | None = None,
    prefix: str = "",
) -> list[str]:
    return [
        d
        async for d in endpoint.stream(MESSAGES, params or GenerationParams(), stats, prefix=prefix)
    ]


async def test_yields_the_models_deltas_and_counts_them() -> None:
    endpoint = LangChainEndpoint(fake("Hello brave world"))
    stats = StreamStats()
    deltas = await collect(endpoint, stats)
    assert deltas == ["Hello", " ", "brave", " ", "world"]
    assert stats.output_tokens == 5
    assert stats.usage_reported is False
    assert stats.input_tokens == endpoint.estimate_input_tokens(MESSAGES)
    assert stats.attempts == 1


async def test_usage_metadata_replaces_the_estimate() -> None:
    model = UsageFakeChatModel(messages=iter(["Hi there"]))
    endpoint = LangChainEndpoint(model)
    stats = StreamStats()
    assert "".join(await collect(endpoint, stats)) == "Hi there"
    assert (stats.input_tokens, stats.output_tokens, stats.usage_reported) == (17, 5, True)
    assert stats.finish_reason == "stop"


async def test_set_parameters_and_stop_are_passed_to_the_model() -> None:
    model = UsageFakeChatModel(messages=iter(["ok"]))
    endpoint = LangChainEndpoint(model)
    params = GenerationParams(max_tokens=8, temperature=0.0, stop=("\n",))
    await collect(endpoint, StreamStats(), params=params)
    assert model.seen_kwargs == [{"stop": ["\n"], "max_tokens": 8, "temperature": 0.0}]


async def test_continuation_needs_a_declared_capability() -> None:
    endpoint = LangChainEndpoint(fake("never used"))
    with pytest.raises(ContinuationUnsupportedError):
        await collect(endpoint, StreamStats(), prefix="Hel")


async def test_declared_continuation_sends_the_prefix_as_a_trailing_ai_message() -> None:
    model = UsageFakeChatModel(messages=iter(["lo world"]))
    endpoint = LangChainEndpoint(model, capabilities=Capabilities(exact_continuation=True))
    deltas = await collect(endpoint, StreamStats(), prefix="Hel")
    assert "".join(deltas) == "lo world"
    sent = model.seen_messages[0]
    assert sent[:-1] == MESSAGES
    assert isinstance(sent[-1], AIMessage)
    assert sent[-1].content == "Hel"


async def test_model_failure_becomes_endpoint_error() -> None:
    endpoint = LangChainEndpoint(fake(), name="wrapped")  # no answers left: the model raises
    with pytest.raises(EndpointError, match="wrapped") as info:
        await collect(endpoint, StreamStats())
    assert isinstance(info.value.__cause__, StopIteration | RuntimeError)


async def test_cancelling_the_consumer_stops_the_model_stream() -> None:
    stopped = asyncio.Event()
    release = asyncio.Event()

    class HangingModel(GenericFakeChatModel):
        async def _astream(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: AsyncCallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> AsyncIterator[ChatGenerationChunk]:
            try:
                for token in ("a", "b"):
                    yield ChatGenerationChunk(message=AIMessageChunk(content=token))
                await release.wait()  # never set: the model "hangs" mid-answer
            finally:
                stopped.set()

    endpoint = LangChainEndpoint(HangingModel(messages=iter([])))
    deltas: list[str] = []
    got_two = asyncio.Event()

    async def consume() -> None:
        async for d in endpoint.stream(MESSAGES, GenerationParams(), StreamStats()):
            deltas.append(d)
            if len(deltas) == 2:
                got_two.set()

    task = asyncio.create_task(consume())
    await got_two.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()
    assert deltas == ["a", "b"]


def test_identity_and_defaults() -> None:
    endpoint = LangChainEndpoint(fake("x"), name="cloud", kind="local")
    assert (endpoint.name, endpoint.kind) == ("cloud", "local")
    assert endpoint.model_name == "generic-fake-chat-model"
    assert endpoint.capabilities == Capabilities()
    assert "cloud" in repr(endpoint)
