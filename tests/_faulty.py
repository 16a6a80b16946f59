"""A fault we cannot cause in a real llama.cpp model: it fails after some tokens, once.

The wrapper delegates to the real endpoint (the thing under test keeps running for real); only
the fault is injected, and only on its first stream, so a later failover back to it works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from langchain_core.messages import BaseMessage

from langchain_disco import Endpoint, EndpointError, GenerationParams, StreamStats


class FailsOnceAfter(Endpoint):
    def __init__(self, inner: Endpoint, after_tokens: int) -> None:
        self.inner = inner
        self.after_tokens = after_tokens
        self.name = inner.name
        self.kind = inner.kind
        self.model_name = inner.model_name
        self.capabilities = inner.capabilities
        self.failed = False

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[str]:
        sent = 0
        async for delta in self.inner.stream(messages, params, stats, prefix=prefix):
            if not self.failed and sent == self.after_tokens:
                self.failed = True
                raise EndpointError(self.name, "injected fault: device out of memory")
            sent += 1
            yield delta


class Recording(Endpoint):
    """A spy around a real endpoint: records each stream's prefix and the text it yielded."""

    def __init__(self, inner: Endpoint) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.model_name = inner.model_name
        self.capabilities = inner.capabilities
        self.streams: list[tuple[str, str]] = []

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[str]:
        index = len(self.streams)
        self.streams.append((prefix, ""))
        async for delta in self.inner.stream(messages, params, stats, prefix=prefix):
            if isinstance(delta, str):
                self.streams[index] = (prefix, self.streams[index][1] + delta)
            yield delta
