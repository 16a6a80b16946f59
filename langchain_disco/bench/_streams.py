"""The two paths `disco bench overhead` compares, over identical endpoints and requests.

- ``direct``: `OpenAIEndpoint.stream`, the remote adapter alone;
- ``disco``: `DiscoChatModel.astream` (mode remote, failover off) over its own, identical
  endpoint (its own HTTP pool), so the difference is the LangChain surface, dispatch, engine
  and report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_disco.chat_models import DiscoChatModel
from langchain_disco.endpoints.base import Endpoint, GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint

PATHS = ("direct", "disco")

_FACT = "Rivers carry water from the hills to the sea, shaping valleys on the way. "
PROMPTS = (
    "Name a colour.",
    "Summarise in one sentence: " + _FACT * 4,
    "Summarise in one sentence: " + _FACT * 16,
)
"""Prompts of different lengths, used in turn; the echo answer depends on the prompt."""


def messages_for(request: int) -> list[BaseMessage]:
    """The conversation of request number `request` (the prompts are used in turn)."""
    return [HumanMessage(PROMPTS[request % len(PROMPTS)])]


class Stamped(Endpoint):
    """Passes another endpoint's stream through, noting when each text delta left it."""

    def __init__(self, inner: Endpoint) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.model_name = inner.model_name
        self.capabilities = inner.capabilities
        self.stamps: list[float] | None = None
        """Set to a list to record `perf_counter()` at each text delta; None records nothing."""

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[Any]:  # whatever the wrapped endpoint yields
        items = self.inner.stream(messages, params, stats, prefix=prefix)
        async with contextlib.aclosing(items):  # type: ignore[type-var]
            async for item in items:
                if self.stamps is not None and isinstance(item, str):
                    self.stamps.append(time.perf_counter())
                yield item

    def estimate_input_tokens(self, messages: Sequence[BaseMessage]) -> int:
        return self.inner.estimate_input_tokens(messages)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Paths:
    """Both paths, each over its own endpoint; `texts` streams one request's content deltas."""

    direct: Stamped
    disco: Stamped
    model: DiscoChatModel
    params: GenerationParams

    @classmethod
    def build(cls, base_url: str, model_name: str, max_tokens: int, connections: int) -> Paths:
        def endpoint() -> Stamped:
            return Stamped(
                OpenAIEndpoint(
                    base_url=base_url,
                    model=model_name,
                    max_retries=0,  # a failure is a result here, not something to hide
                    max_connections=connections,
                )
            )

        direct, disco = endpoint(), endpoint()
        model = DiscoChatModel(
            mode="remote",
            remote=disco,
            failover=False,
            migration="off",
            pace_tok_s=None,
            max_tokens=max_tokens,
        )
        return cls(direct, disco, model, GenerationParams(max_tokens=max_tokens))

    def endpoint(self, path: str) -> Stamped:
        return self.direct if path == "direct" else self.disco

    def texts(self, path: str, messages: list[BaseMessage]) -> AsyncGenerator[str, None]:
        if path == "direct":
            return _direct_texts(self.direct, messages, self.params)
        return _disco_texts(self.model, messages)

    async def aclose(self) -> None:
        await self.direct.aclose()
        await self.disco.aclose()


async def _direct_texts(
    endpoint: Endpoint, messages: list[BaseMessage], params: GenerationParams
) -> AsyncGenerator[str, None]:
    items = endpoint.stream(messages, params, StreamStats())
    async with contextlib.aclosing(items):  # type: ignore[type-var]
        async for item in items:
            if isinstance(item, str) and item:
                yield item


async def _disco_texts(
    model: DiscoChatModel, messages: list[BaseMessage]
) -> AsyncGenerator[str, None]:
    chunks = model.astream(messages)
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            if isinstance(chunk.content, str) and chunk.content:
                yield chunk.content
