"""Scripted endpoints for the live engine driver: a `sim.virtual.Script` behind the real
`Endpoint` interface, sleeping on the event loop's clock (virtual under `looptime`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage

from langchain_disco.endpoints.base import (
    Capabilities,
    Endpoint,
    GenerationParams,
    StreamItem,
    StreamStats,
)
from langchain_disco.errors import EndpointError
from langchain_disco.sim.virtual import Script, prefix_tokens


@dataclass
class Call:
    """One stream the engine started on a scripted endpoint."""

    at: float
    prefix: str
    max_tokens: int | None
    tokens: int = 0
    closed: bool = False


@dataclass
class ScriptedEndpoint(Endpoint):
    """Answers with `answer` (continuing after any prefix), timed by `script`."""

    name: str
    script: Script
    answer: Sequence[str]
    prompt_tokens: int
    exact: bool = True
    epoch: float = 0.0
    """Loop time the script's times count from (the request's start)."""
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = "local" if self.name == "local" else "remote"  # type: ignore[assignment]
        self.model_name = f"scripted-{self.name}"
        self.capabilities = Capabilities(exact_continuation=self.exact)

    def estimate_input_tokens(self, messages: Sequence[BaseMessage]) -> int:
        return self.prompt_tokens

    async def stream(  # type: ignore[override]
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[StreamItem]:
        loop = asyncio.get_running_loop()
        done = prefix_tokens(self.answer, prefix)
        call = Call(loop.time() - self.epoch, prefix, params.max_tokens)
        self.calls.append(call)
        opening = self.script.open(self.prompt_tokens + done, call.at)
        stats.input_tokens = opening.input_tokens
        stats.attempts = 1
        left = len(self.answer) - done
        if params.max_tokens is not None:
            left = min(left, params.max_tokens)
        try:
            first = self.epoch + call.at + opening.ttft_s
            for i in range(left):
                # Absolute times, as the simulator computes them: no drift from summed sleeps.
                await asyncio.sleep(max(0.0, first + i * opening.gap_s - loop.time()))
                if opening.fail_after is not None and i == opening.fail_after:
                    raise EndpointError(self.name, opening.error)
                if opening.stall_after is not None and i == opening.stall_after:
                    await asyncio.Event().wait()
                stats.output_tokens += 1
                call.tokens += 1
                yield self.answer[done + i]
            if opening.fail_after is not None and opening.fail_after >= left:
                raise EndpointError(self.name, opening.error)
            if opening.stall_after is not None and opening.stall_after >= left:
                await asyncio.Event().wait()
            stats.finish_reason = "stop"
        finally:
            call.closed = True
