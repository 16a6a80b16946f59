"""The paths `disco bench overhead` compares, over identical endpoints and requests.

- ``direct``: `OpenAIEndpoint.stream`, the remote adapter alone;
- ``disco``: `DiscoChatModel.astream` (mode remote, failover off) over its own, identical
  endpoint (its own HTTP pool), so the difference is the LangChain surface, dispatch, engine
  and report;
- ``disco-race``: the same in mode race, against an in-process local echo that has not sent a
  first token when the remote's arrives (so the remote always wins and the local stream is
  cancelled): what starting, racing and cancelling a second stream costs;
- ``chatopenai``, ``litellm``: the alternatives (`_alternatives`).

The single-stream phase compares ``direct`` and ``disco`` (`PATHS`); the concurrency phase runs
any of `ALL_PATHS`, each in its own process (`open_source` builds one there).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_disco.bench._alternatives import ALTERNATIVES, ChatOpenAISource, LiteLLMSource
from langchain_disco.chat_models import DiscoChatModel
from langchain_disco.endpoints.base import Endpoint, GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint
from langchain_disco.errors import ConfigError, DiscoError
from langchain_disco.testing.echo import EchoEndpoint

PATHS = ("direct", "disco")
"""The single-stream pair: the bare endpoint and DiscoChatModel in mode remote."""
ALL_PATHS = ("direct", *ALTERNATIVES, "disco", "disco-race")
"""Every concurrency path, in report order."""
BASELINE = "chatopenai"
"""The path every ratio is taken against: what a LangChain user would use instead."""

RACE_LOCAL_TTFT_S = 30.0
"""The race's local echo waits this long for its first token, so the remote wins and the local
is cancelled. Bounded: if a remote stream fails (failover is off) the local answers, late,
and `DiscoSource` counts that stream as an error rather than the run hanging."""

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


class Source(Protocol):
    """One path, built once per process: `texts` streams one request's content deltas."""

    def texts(self, messages: list[BaseMessage]) -> AsyncGenerator[str, None]: ...

    async def aclose(self) -> None: ...


def _endpoint(base_url: str, model_name: str, connections: int) -> Stamped:
    return Stamped(
        OpenAIEndpoint(
            base_url=base_url,
            model=model_name,
            max_retries=0,  # a failure is a result here, not something to hide
            max_connections=connections,
        )
    )


class DirectSource:
    """`OpenAIEndpoint.stream` alone."""

    def __init__(self, endpoint: Stamped, max_tokens: int) -> None:
        self.endpoint = endpoint
        self.params = GenerationParams(max_tokens=max_tokens)

    async def texts(self, messages: list[BaseMessage]) -> AsyncGenerator[str, None]:
        items = self.endpoint.stream(messages, self.params, StreamStats())
        async with contextlib.aclosing(items):  # type: ignore[type-var]
            async for item in items:
                if isinstance(item, str) and item:
                    yield item

    async def aclose(self) -> None:
        await self.endpoint.aclose()


class DiscoSource:
    """`DiscoChatModel.astream` in mode remote, or race against a local that never wins."""

    def __init__(self, endpoint: Stamped, max_tokens: int, *, race: bool = False) -> None:
        self.endpoint = endpoint
        local = EchoEndpoint(ttft_s=RACE_LOCAL_TTFT_S, name="local-echo") if race else None
        self.model = DiscoChatModel(
            mode="race" if race else "remote",
            local=local,
            remote=endpoint,
            failover=False,
            migration="off",
            pace_tok_s=None,
            max_tokens=max_tokens,
        )

    async def texts(self, messages: list[BaseMessage]) -> AsyncGenerator[str, None]:
        winner = None
        chunks = self.model.astream(messages)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                if isinstance(chunk.content, str) and chunk.content:
                    yield chunk.content
                report = chunk.response_metadata.get("disco_report")
                if isinstance(report, dict):
                    winner = report.get("winner")
        if self.model.mode == "race" and winner != "remote":
            raise DiscoError(f"the race was won by {winner!r}, not the remote being measured")

    async def aclose(self) -> None:
        await self.endpoint.aclose()


def open_source(
    path: str, base_url: str, model_name: str, max_tokens: int, connections: int
) -> Source:
    """Build `path` (one of `ALL_PATHS`) against the server at `base_url`."""
    if path == "direct":
        return DirectSource(_endpoint(base_url, model_name, connections), max_tokens)
    if path in ("disco", "disco-race"):
        endpoint = _endpoint(base_url, model_name, connections)
        return DiscoSource(endpoint, max_tokens, race=path == "disco-race")
    if path == "chatopenai":
        return ChatOpenAISource(base_url, model_name, max_tokens)
    if path == "litellm":
        return LiteLLMSource(base_url, model_name, max_tokens)
    raise ConfigError(f"--paths: unknown path {path!r}; choose from {', '.join(ALL_PATHS)}")


@dataclass
class Paths:
    """The single-stream pair, each over its own stamped endpoint."""

    direct: DirectSource
    disco: DiscoSource

    @classmethod
    def build(cls, base_url: str, model_name: str, max_tokens: int, connections: int) -> Paths:
        return cls(
            DirectSource(_endpoint(base_url, model_name, connections), max_tokens),
            DiscoSource(_endpoint(base_url, model_name, connections), max_tokens),
        )

    def endpoint(self, path: str) -> Stamped:
        return self.direct.endpoint if path == "direct" else self.disco.endpoint

    def texts(self, path: str, messages: list[BaseMessage]) -> AsyncGenerator[str, None]:
        return (self.direct if path == "direct" else self.disco).texts(messages)

    async def aclose(self) -> None:
        await self.direct.aclose()
        await self.disco.aclose()
