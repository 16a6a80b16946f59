"""Runs the engine core on asyncio with real endpoints: the only place with tasks and a timer.

Every endpoint stream runs in a task that pumps its deltas into one inbox; one loop reads the
inbox, feeds each event to the request's `RequestCore` and carries out the commands it returns
(start a stream, cancel one, deliver text, report an event), waiting in between until the
core's next deadline. Every task is cancelled and awaited before `run` returns, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_disco.endpoints.base import (
    Endpoint,
    GenerationParams,
    StreamItem,
    StreamStats,
    ToolCallChunk,
)
from langchain_disco.engine.commands import (
    CancelStream,
    Command,
    Delivery,
    EngineEvent,
    StartStream,
)
from langchain_disco.engine.core import RequestCore
from langchain_disco.engine.options import EndpointInfo, EngineOptions
from langchain_disco.errors import EndpointError
from langchain_disco.report import RequestReport
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan, Start
from langchain_disco.scheduling.roles import Role

Clock = Callable[[], float]


@dataclass(frozen=True)
class _Event:
    run: int
    kind: Literal["delta", "done", "error"]
    at: float
    item: StreamItem = ""
    error: BaseException | None = None


class Engine:
    """Runs plans over a fixed set of endpoints, keyed by role (`"local"`, `"remote"`).

    `clock` must be the time the event loop waits in (the default, `time.monotonic`, is the
    loop's own; a test on a virtual-time loop passes `loop.time`).
    """

    def __init__(
        self,
        endpoints: Mapping[Role, Endpoint],
        cost_model: CostModel,
        clock: Clock = time.monotonic,
        options: EngineOptions | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        self.cost_model = cost_model
        self.clock = clock
        self.options = options or EngineOptions()

    def run(
        self,
        plan: Plan,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        *,
        prompt_tokens: int | None = None,
        queue_wait_s: Mapping[Role, float] | None = None,
        local_queue: int = 0,
    ) -> EngineRun:
        """Start running `plan`: iterate the result's `items` for deliveries and events (the
        first is the `disco_dispatch` event); its `report` is complete once they are done.

        Only endpoints able to serve `params` (tools, structured output) are started, and only
        they are migration or failover targets. `prompt_tokens` is the prompt's size as the
        dispatch decision estimated it (default: the endpoints' own estimate); `queue_wait_s`
        the predicted wait of a busy endpoint (the device) at dispatch, which a migration view
        counts in the target's TTFT as it drains; `local_queue` the generations queued on the
        device then (for the report).
        """
        for role in plan.endpoints:
            if role not in self.endpoints:
                raise EndpointError(role, "the plan starts it but no such endpoint is configured")
        capable = {
            role: params.needs(endpoint.capabilities) for role, endpoint in self.endpoints.items()
        }
        plan = _servable(plan, capable)
        report = RequestReport.for_plan(plan, local_queue=local_queue)
        driver = _Driver(
            self, plan, list(messages), params, report, capable, prompt_tokens, queue_wait_s
        )
        return EngineRun(report, driver.run(), plan)


@dataclass(frozen=True)
class EngineRun:
    """One request the engine runs: what it yields, and the report it fills meanwhile."""

    report: RequestReport
    items: AsyncGenerator[Delivery | EngineEvent, None]
    """Deliveries and events, in order; close it (`contextlib.aclosing`) to stop the request."""
    plan: Plan
    """The plan executed: the one given, less the endpoints that cannot serve the request."""


def _servable(plan: Plan, missing: Mapping[Role, str | None]) -> Plan:
    """Keep only the starts whose endpoint can serve the request (tools, structured output):
    `missing` says, per endpoint, what it lacks (None: nothing).

    A request with tools goes only where tools are supported; when the policy chose no such
    endpoint, the first capable one starts at once.
    """
    capable = [role for role, lacks in missing.items() if lacks is None]
    if not capable:
        detail = ", ".join(f"{role} cannot do {lacks}" for role, lacks in missing.items())
        raise EndpointError(
            "all",
            f"no configured endpoint can serve this request ({detail}); configure a "
            "remote that can (DISCO_REMOTE_BASE_URL) or force a tool call (tool_choice='any')",
        )
    starts = tuple(s for s in plan.starts if s.endpoint in capable)
    if starts == plan.starts:
        return plan
    if not starts:
        starts = (Start(capable[0]),)
    dropped = sorted(set(plan.endpoints) - set(capable))
    return replace(
        plan, starts=starts, reason=f"{plan.reason}; {', '.join(dropped)} cannot serve it"
    )


class _Driver:
    """One request on the event loop: the core, the pump tasks and their inbox."""

    def __init__(
        self,
        engine: Engine,
        plan: Plan,
        messages: list[BaseMessage],
        params: GenerationParams,
        report: RequestReport,
        missing: Mapping[Role, str | None],
        prompt_tokens: int | None,
        queue_wait_s: Mapping[Role, float] | None,
    ) -> None:
        self.engine = engine
        self.clock = engine.clock
        self.messages = messages
        self.params = params
        infos = {
            role: EndpointInfo(
                kind=endpoint.kind,
                model=endpoint.model_name,
                exact_continuation=endpoint.capabilities.exact_continuation,
                serves=missing[role] is None,
                queue_wait_s=(queue_wait_s or {}).get(role, 0.0),
            )
            for role, endpoint in engine.endpoints.items()
        }
        if prompt_tokens is None:
            prompt_tokens = max(
                engine.endpoints[r].estimate_input_tokens(messages) for r in plan.endpoints
            )
        self.core = RequestCore(
            plan,
            infos,
            engine.options,
            engine.cost_model,
            report,
            prompt_tokens=prompt_tokens,
            max_tokens=params.max_tokens,
            now=self.clock(),
        )
        # The pumps' events: a deque and one wake-up future rather than an asyncio.Queue, whose
        # per-token getter task and wait() cost several event-loop passes per token.
        self.inbox: deque[_Event] = deque()
        self._wake: asyncio.Future[None] | None = None
        # One timer for the core's deadline, moved only when the deadline comes earlier: the
        # stall watch's deadline moves later with every token, and re-arming a timer per token
        # (call_later, then cancel) was the engine loop's largest cost after the wake-ups. A
        # timer that fires before the deadline it was armed for wakes the loop once for nothing.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.tasks: list[asyncio.Task[None]] = []
        self.stats: list[StreamStats] = []
        self.out: list[Delivery | EngineEvent] = []

    async def run(self) -> AsyncGenerator[Delivery | EngineEvent, None]:
        core = self.core
        report = core.report
        decision = {"action": report.action, "reason": report.reason, "expected": report.expected}
        try:
            yield EngineEvent("disco_dispatch", decision)
            self._carry_out(core.begin(self.clock()))
            while True:
                if self.out:
                    for item in self.out:
                        yield item
                    self.out.clear()
                if core.complete:
                    break
                core.check_alive()
                event = await self._next_event(core.deadline)
                if event is not None:
                    self._carry_out(self._feed(event))
                # Whatever fell due meanwhile (each check is its own guard).
                self._carry_out(core.timer(self.clock()))
        finally:
            await self._finish()

    def _feed(self, event: _Event) -> list[Command]:
        core = self.core
        if event.kind == "delta":
            item = event.item
            if isinstance(item, ToolCallChunk):
                return core.delta(event.run, "", event.at, tool_call=item)
            return core.delta(event.run, item, event.at)
        if event.kind == "done":
            return core.done(event.run, event.at)
        assert event.error is not None
        return core.error(event.run, event.error, event.at)

    def _carry_out(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, StartStream):
                self._start(command)
            elif isinstance(command, CancelStream):
                self.tasks[command.run].cancel()
            else:
                self.out.append(command)

    # -- streams -------------------------------------------------------------------------------

    def _start(self, command: StartStream) -> None:
        params = self.params
        if command.max_tokens is not None:
            params = replace(params, max_tokens=command.max_tokens)
        messages = self.messages
        if command.approximate_prompt is not None:
            messages = [*messages, HumanMessage(command.approximate_prompt)]
        stats = StreamStats()
        self.stats.append(stats)
        task = asyncio.create_task(
            self._pump(command, messages, params, stats),
            name=f"disco-{command.role}-{command.purpose}",
        )
        self.tasks.append(task)

    async def _pump(
        self,
        command: StartStream,
        messages: list[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
    ) -> None:
        endpoint = self.engine.endpoints[command.role]
        stream = endpoint.stream(messages, params, stats, prefix=command.prefix)
        run = command.run
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for item in stream:
                    if item:
                        self._post(_Event(run, "delta", self.clock(), item))
            self._post(_Event(run, "done", self.clock()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._post(_Event(run, "error", self.clock(), error=exc))

    def _post(self, event: _Event) -> None:
        """Hand an event to the loop (called by the pump tasks, on the same event loop)."""
        self.inbox.append(event)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _next_event(self, deadline: float | None) -> _Event | None:
        """The next event, or None once the clock reaches `deadline` first (or a timer armed
        for an earlier deadline fires: the caller checks the core's timers either way)."""
        if not self.inbox:
            loop = asyncio.get_running_loop()
            if deadline is not None and (self._timer is None or deadline < self._timer_at):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = deadline
                self._timer = loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)
            self._wake = loop.create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        return self.inbox.popleft() if self.inbox else None

    def _on_timer(self) -> None:
        self._timer = None
        self._wake_up()

    async def _finish(self) -> None:
        """CancelStream and await every task still running, then settle usage and cost."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.core.cancel_all()
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.core.settle(self.clock(), self.stats)
