"""Executes a dispatch plan: starts and cancels endpoint streams, races them, emits deliveries.

This is the only module with tasks and timers. Each started endpoint runs in a task that pumps
its deltas into one queue; the engine reads the queue, picks the winner (the first endpoint to
produce a content token), cancels every other endpoint at once, and forwards the winner's text.
Every task it starts is cancelled and awaited before `run` returns, whatever happened, so a
consumer that stops early leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_core.messages import BaseMessage

from langchain_disco.endpoints.base import Endpoint, GenerationParams, StreamStats
from langchain_disco.errors import AllEndpointsFailedError, EndpointError
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan

Clock = Callable[[], float]


@dataclass(frozen=True)
class Delivery:
    """A piece of text delivered to the consumer, and the endpoint that produced it."""

    text: str
    endpoint: str


@dataclass(frozen=True)
class _Event:
    endpoint: str
    kind: Literal["delta", "done", "error"]
    text: str = ""
    at: float = 0.0
    error: BaseException | None = None


class _Run:
    """One endpoint's stream inside one request: its task, live stats and report row."""

    def __init__(self, endpoint: Endpoint, row: EndpointRun) -> None:
        self.endpoint = endpoint
        self.row = row
        self.stats = StreamStats()
        self.task: asyncio.Task[None] | None = None


class Engine:
    """Runs plans over a fixed set of endpoints, keyed by role (`"local"`, `"remote"`)."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        cost_model: CostModel,
        clock: Clock = time.monotonic,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._cost_model = cost_model
        self._clock = clock

    async def run(
        self,
        plan: Plan,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        report: RequestReport,
    ) -> AsyncGenerator[Delivery, None]:
        """Yield the winner's deliveries; fill `report` (complete once the iterator is done)."""
        for role in plan.endpoints:
            if role not in self._endpoints:
                raise EndpointError(role, "the plan starts it but no such endpoint is configured")
        t0 = self._clock()
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        runs: dict[str, _Run] = {}
        for planned in plan.starts:
            endpoint = self._endpoints[planned.endpoint]
            report.endpoints[planned.endpoint] = EndpointRun(
                name=planned.endpoint,
                kind=endpoint.kind,
                model=endpoint.model_name,
                outcome="not_started",
            )
        pending = sorted(plan.starts, key=lambda s: s.at_s)
        winner: str | None = None
        errors: list[BaseException] = []
        last_at: float | None = None

        def start(role: str) -> None:
            run = _Run(self._endpoints[role], report.endpoints[role])
            run.row.outcome = "pending"
            run.row.started_s = self._clock() - t0
            run.task = asyncio.create_task(
                self._pump(role, run, messages, params, queue), name=f"disco-{role}"
            )
            runs[role] = run

        def live() -> int:
            return sum(1 for r in runs.values() if r.row.outcome == "pending")

        try:
            while pending and pending[0].at_s <= 0:
                start(pending.pop(0).endpoint)
            while True:
                if winner is None and not live():
                    if not pending:
                        raise AllEndpointsFailedError(errors)
                    # Everything started so far failed before a token: start the hedge now.
                    start(pending.pop(0).endpoint)
                    continue
                timeout = None
                if winner is None and pending:
                    timeout = max(0.0, pending[0].at_s - (self._clock() - t0))
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    start(pending.pop(0).endpoint)
                    continue
                run = runs[event.endpoint]
                if event.kind == "error":
                    assert event.error is not None
                    run.row.outcome = "failed"
                    run.row.error = f"{type(event.error).__name__}: {event.error}"
                    run.row.ended_s = event.at - t0
                    errors.append(event.error)
                    if event.endpoint == winner:
                        raise event.error
                    continue
                if event.kind == "done":
                    run.row.ended_s = event.at - t0
                    if run.row.outcome == "pending":
                        run.row.outcome = "completed"
                    if event.endpoint == winner:
                        break
                    continue
                # A content delta.
                if run.row.first_token_s is None:
                    run.row.first_token_s = event.at - t0
                if winner is None:
                    winner = event.endpoint
                    run.row.outcome = "won"
                    report.winner = winner
                    report.ttft_s = event.at - t0
                    pending.clear()
                    for other, other_run in runs.items():
                        if other != winner and other_run.row.outcome == "pending":
                            other_run.row.outcome = "cancelled"
                            other_run.row.ended_s = event.at - t0
                            assert other_run.task is not None
                            other_run.task.cancel()
                if event.endpoint != winner:
                    continue  # a late delta from a loser already cancelled
                if last_at is not None:
                    report.tbt_gaps_s.append(event.at - last_at)
                last_at = event.at
                run.row.delivered_chunks += 1
                yield Delivery(event.text, event.endpoint)
        finally:
            await self._finish(runs, report, t0)

    async def _pump(
        self,
        role: str,
        run: _Run,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        queue: asyncio.Queue[_Event],
    ) -> None:
        """Forward one endpoint's stream into the shared queue, errors included."""
        stream = run.endpoint.stream(messages, params, run.stats)
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for text in stream:
                    if text:
                        queue.put_nowait(_Event(role, "delta", text, self._clock()))
            queue.put_nowait(_Event(role, "done", at=self._clock()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(_Event(role, "error", at=self._clock(), error=exc))

    async def _finish(self, runs: dict[str, _Run], report: RequestReport, t0: float) -> None:
        """Cancel and await every task still running, then settle usage and cost."""
        tasks = [r.task for r in runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        now = self._clock() - t0
        report.total_s = now
        server_in = server_out = device_in = device_out = 0
        for run in runs.values():
            row, stats = run.row, run.stats
            if row.outcome == "pending":
                row.outcome = "cancelled"
            if row.ended_s is None:
                row.ended_s = now
            row.input_tokens = stats.input_tokens
            row.output_tokens = stats.output_tokens
            row.usage_reported = stats.usage_reported
            row.queue_wait_s = stats.queue_wait_s
            row.attempts = stats.attempts
            row.finish_reason = stats.finish_reason
            if run.endpoint.kind == "remote":
                server_in += stats.input_tokens
                server_out += stats.output_tokens
            else:
                device_in += stats.input_tokens
                device_out += stats.output_tokens
        report.cost = self._cost_model.cost(
            server_in=server_in, server_out=server_out, device_in=device_in, device_out=device_out
        )
