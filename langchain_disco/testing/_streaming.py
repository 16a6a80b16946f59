"""Turning one generator stream into what a hosted API would deliver: delayed, paced, faulty.

`deliver` is shared by the streamed and the non-streamed response: it waits the sampled TTFT,
starts the real generation, releases content deltas no faster than the sampled inter-token gap,
and applies a mid-stream fault at the point it strikes. Rendering (SSE chunks or one JSON body)
is the caller's job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import anyio
from langchain_core.messages import BaseMessage

from langchain_disco.endpoints.base import Endpoint, GenerationParams, StreamItem, StreamStats
from langchain_disco.testing._records import RequestRecord
from langchain_disco.testing.faults import MidStreamFault, StallFault

STOP_TIMEOUT_S = 30.0
"""Upper bound on waiting for a cancelled generation to stop (llama stops within a token)."""


@dataclass(frozen=True)
class _End:
    error: Exception | None


class TokenPump:
    """Runs one endpoint stream in a task of its own; the consumer reads deltas from a queue.

    Why a separate task: when the client goes away, anyio cancels the SSE response's scope and
    then re-cancels every await inside it, but the endpoint's cleanup (stop the llama thread and
    wait for it) must see exactly one cancellation to finish. A plain asyncio task gets that,
    and `aclose()` waits for it under a shield, so "the client left" really means "the
    generation stopped".
    """

    def __init__(
        self,
        endpoint: Endpoint,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        prefix: str,
    ) -> None:
        self._queue: asyncio.Queue[StreamItem | _End] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(
            self._run(endpoint, messages, params, stats, prefix)
        )

    async def _run(
        self,
        endpoint: Endpoint,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        prefix: str,
    ) -> None:
        try:
            async for delta in endpoint.stream(messages, params, stats, prefix=prefix):
                self._queue.put_nowait(delta)
        except Exception as exc:  # handed to the consumer, who reports it to the client
            self._queue.put_nowait(_End(exc))
        else:
            self._queue.put_nowait(_End(None))

    async def next(self) -> StreamItem | None:
        """The next delta, or None at the end; re-raises the generator's failure."""
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # stay at the end for any later call
            if item.error is not None:
                raise item.error
            return None
        return item

    async def aclose(self) -> bool:
        """Stop the generation and wait (bounded) until it is gone; True if it stopped."""
        self._task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
        return self._task.done()


async def deliver(
    endpoint: Endpoint,
    messages: Sequence[BaseMessage],
    params: GenerationParams,
    stats: StreamStats,
    *,
    prefix: str,
    first_delay_s: float,
    inter_token_s: float,
    fault: MidStreamFault | None,
    record: RequestRecord,
) -> AsyncGenerator[StreamItem | MidStreamFault, None]:
    """Yield content deltas as a hosted API would send them, or a terminal fault.

    The TTFT delay comes first (a queued request on a busy server), then the real prefill.
    A stall fault is served here; a terminal fault (in-band error, malformed event, disconnect)
    is yielded at the point it strikes (after ``min(after_tokens, generated)`` tokens) and ends
    the delivery. On the way out, `record` learns the usage and whether the generation stopped.
    """
    pump: TokenPump | None = None
    sent = 0
    last_sent_s: float | None = None
    pending = fault
    try:
        if first_delay_s > 0:
            await asyncio.sleep(first_delay_s)
        pump = TokenPump(endpoint, messages, params, stats, prefix)
        while True:
            if pending is not None and sent >= pending.after_tokens:
                if isinstance(pending, StallFault):
                    stall_s, pending = pending.seconds, None
                    await asyncio.sleep(stall_s)
                else:
                    yield pending
                    return
            delta = await pump.next()
            if delta is None:
                break
            if last_sent_s is not None:
                wait_s = last_sent_s + inter_token_s - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            yield delta
            last_sent_s = time.monotonic()
            sent += 1
        if pending is not None and not isinstance(pending, StallFault):
            yield pending  # the answer was shorter than `after_tokens`: strike at its end
    finally:
        # A request that ended during its TTFT delay never started any work.
        record.generation_stopped = True if pump is None else await pump.aclose()
        record.prompt_tokens = stats.input_tokens
        record.completion_tokens = stats.output_tokens
