"""The per-token path, one layer at a time, in one process and without HTTP.

Each layer streams the same answer (the echo endpoint's, as fast as the event loop allows) through
one more piece of our stack than the layer below it:

- ``endpoint``: `EchoEndpoint.stream` alone, the floor every layer stands on;
- ``engine``: `Engine.run` on a remote-only plan (the driver's tasks, its inbox, the core's
  bookkeeping, the report);
- ``chunks``: `DiscoChatModel._chunks` (dispatch, the engine, a `ChatGenerationChunk` per token,
  the learning at the end);
- ``astream_private``: `DiscoChatModel._astream` (event dispatch, the token callback hook);
- ``astream``: the public `DiscoChatModel.astream` (LangChain's run manager, its callbacks, its
  aggregation of every chunk for ``on_llm_end``).

The difference between two adjacent layers is what that layer costs per token. The
pytest-benchmark microbenchmarks (``benchmarks/test_layers.py``), the profile
(``benchmarks/profile_overhead.py``) and the memory measurement below all run these functions,
so they measure the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_disco.chat_models import DiscoChatModel
from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.engine import Engine
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan, Start
from langchain_disco.testing.echo import EchoEndpoint

__all__ = ["LAYERS", "Layers", "cpu_per_token", "held_per_chunk", "memory_per_stream", "profile"]

LAYERS = ("endpoint", "engine", "chunks", "astream_private", "astream")
"""The layers, bottom up."""

_REMOTE_ONLY = Plan((Start("remote", 0.0),), "remote", "layers benchmark")


@dataclass
class Layers:
    """One echo endpoint and one model over it; `stream(layer)` drains one answer through
    `layer` and returns its text."""

    tokens: int = 64

    def __post_init__(self) -> None:
        self.endpoint = EchoEndpoint(tok_s=0.0, name="echo-remote", kind="remote")
        self.params = GenerationParams(max_tokens=self.tokens)
        self.model = DiscoChatModel(
            mode="remote",
            remote=self.endpoint,
            failover=False,
            migration="off",
            pace_tok_s=None,
            max_tokens=self.tokens,
            persist_profiles=False,  # the per-token path, not the profile file's writes
        )
        self.engine = Engine({"remote": self.endpoint}, CostModel())
        self.messages: list[BaseMessage] = [HumanMessage("measure the per-token path")]
        self._streams: dict[str, Callable[[], AsyncIterator[str]]] = {
            "endpoint": self._endpoint,
            "engine": self._engine,
            "chunks": self._chunks,
            "astream_private": self._astream_private,
            "astream": self._astream,
        }

    def stream(self, layer: str) -> Awaitable[str]:
        """Drain one answer through `layer` (one of `LAYERS`); its text."""
        if layer not in self._streams:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(LAYERS)}")
        return _join(self._streams[layer]())

    async def _endpoint(self) -> AsyncIterator[str]:
        items = self.endpoint.stream(self.messages, self.params, StreamStats())
        async with contextlib.aclosing(items):  # type: ignore[type-var]
            async for item in items:
                yield item

    async def _engine(self) -> AsyncIterator[str]:
        run = self.engine.run(_REMOTE_ONLY, self.messages, self.params)
        async with contextlib.aclosing(run.items):
            async for item in run.items:
                text = getattr(item, "text", None)
                if text:
                    yield text

    async def _chunks(self) -> AsyncIterator[str]:
        chunks = self.model._chunks(self.messages, None)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if chunk.text:
                    yield chunk.text

    async def _astream_private(self) -> AsyncIterator[str]:
        chunks = self.model._astream(self.messages)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                if chunk.text:
                    yield chunk.text

    async def _astream(self) -> AsyncIterator[str]:
        chunks = self.model.astream(self.messages)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                if isinstance(chunk.content, str) and chunk.content:
                    yield chunk.content


async def _join(texts: AsyncIterator[str]) -> str:
    return "".join([text async for text in texts])


def memory_per_stream(layers: Layers, layer: str, streams: int = 100) -> float:
    """Bytes still allocated per stream while `streams` streams through `layer` are each
    paused just before their last token: what one in-flight stream keeps (traced by
    `tracemalloc`, so Python allocations only; the echo endpoint's share included)."""

    async def measure() -> float:
        release = asyncio.Event()
        paused = 0
        all_paused = asyncio.Event()

        async def one() -> None:
            nonlocal paused
            seen = 0
            async for _ in layers._streams[layer]():
                seen += 1
                if seen == layers.tokens - 1:
                    paused += 1
                    if paused == streams:
                        all_paused.set()
                    await release.wait()

        await layers.stream(layer)  # warm: first-use caches are not a stream's
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tasks = [asyncio.create_task(one()) for _ in range(streams)]
            await asyncio.wait_for(all_paused.wait(), timeout=60)
            held = tracemalloc.get_traced_memory()[0] - before
            release.set()
            await asyncio.gather(*tasks)
        finally:
            tracemalloc.stop()
        return held / streams

    return asyncio.run(measure())


def cpu_per_token(layers: Layers, layer: str, *, requests: int = 300, rounds: int = 5) -> float:
    """Seconds of process CPU per token through `layer`: the median over `rounds` rounds of
    `requests` answers each, one at a time, after a warm-up."""

    async def measure() -> float:
        for _ in range(10):
            await layers.stream(layer)
        per_round = []
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(requests):
                await layers.stream(layer)
            per_round.append((time.process_time() - start) / (requests * layers.tokens))
        return statistics.median(per_round)

    return asyncio.run(measure())


def profile(layers: Layers, layer: str, *, requests: int = 500) -> Any:
    """A pyinstrument session of `requests` answers through `layer` (pyinstrument, from the
    ``bench`` extra, samples every 0.2 ms; its overhead inflates every figure alike)."""
    from pyinstrument import Profiler

    async def run() -> Any:
        for _ in range(10):
            await layers.stream(layer)
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        for _ in range(requests):
            await layers.stream(layer)
        return profiler.stop()

    return asyncio.run(run())


def held_per_chunk(layer: str, *, short: int = 32, long: int = 160, streams: int = 50) -> float:
    """Bytes an in-flight stream through `layer` keeps per chunk it has delivered: the growth
    of `memory_per_stream` from `short`-token to `long`-token answers, per token."""
    small = memory_per_stream(Layers(tokens=short), layer, streams)
    large = memory_per_stream(Layers(tokens=long), layer, streams)
    return (large - small) / (long - short)
