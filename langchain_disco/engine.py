"""Executes a dispatch plan: races endpoints, delivers text, migrates and fails over.

This is the only module with tasks and timers. Every endpoint stream runs in a task that pumps
its deltas into one inbox; one loop reads the inbox and a few deadlines (the next hedge start,
the next paced release, the active stream's stall limit) and acts:

- **race**: the first endpoint with a content token wins; every other one is cancelled at once;
- **paced delivery** (optional): text goes into a buffer released at `pace_tok_s`, so the source
  can run ahead and a migration or failover hides behind the buffer;
- **migration**: the migration policy may move the rest of the answer to the other endpoint,
  which continues from the exact text generated so far;
- **failover**: an error or stall of the active stream continues on the other endpoint from the
  generated text; the consumer sees a delay, never an exception, while one endpoint works.

Invariant: the delivered text is the concatenation, in order, of each active stream's text, and
each continuation starts exactly where the previous text ends. Nothing is delivered twice.
Every task is cancelled and awaited before `run` returns, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_disco.endpoints.base import (
    Endpoint,
    GenerationParams,
    StreamItem,
    StreamStats,
    ToolCallChunk,
)
from langchain_disco.errors import AllEndpointsFailedError, EndpointError
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan
from langchain_disco.scheduling.migration import (
    MigrationPolicy,
    MigrationView,
    NoMigration,
    StallDetector,
    expected_remaining_tokens,
    usd_per_token,
)

Clock = Callable[[], float]
Purpose = Literal["dispatch", "failover", "migration", "probe"]

_STALL_CONFIRM_S = 0.1
"""A stall is declared only after the engine has waited this long on the event loop since it
first saw the silence. The silence may be the loop's, not the endpoint's: a consumer that blocks
the loop (or holds the stream) between chunks leaves what the endpoint sent meanwhile in the
HTTP client's buffers, a few loop iterations away from the engine."""


@dataclass(frozen=True)
class Delivery:
    """A piece of text (or of a tool call) delivered to the consumer, and who produced it."""

    text: str
    endpoint: str
    tool_call: ToolCallChunk | None = None


@dataclass(frozen=True)
class EngineEvent:
    """Something the consumer may want to know about: a migration or a failover."""

    name: str
    data: dict[str, Any]


class Predictor(Protocol):
    """What the engine needs predicted to take migration decisions."""

    def ttft_s(self, role: str, context_tokens: int) -> float: ...

    def decode_tok_s(self, role: str) -> float: ...

    def remaining_tokens(self, generated: int, max_tokens: int | None) -> float: ...


@dataclass(frozen=True)
class StaticPredictor:
    """Fixed figures, for when no learned profile is available."""

    local_overhead_s: float = 0.05
    local_prefill_tok_s: float = 500.0
    remote_ttft: float = 0.5
    local_decode: float = 50.0
    remote_decode: float = 80.0
    mean_output: float = 200.0

    def ttft_s(self, role: str, context_tokens: int) -> float:
        if role == "local":
            return self.local_overhead_s + context_tokens / self.local_prefill_tok_s
        return self.remote_ttft

    def decode_tok_s(self, role: str) -> float:
        return self.local_decode if role == "local" else self.remote_decode

    def remaining_tokens(self, generated: int, max_tokens: int | None) -> float:
        return expected_remaining_tokens(generated, max_tokens, self.mean_output)


@dataclass
class EngineOptions:
    """How the engine delivers and recovers. Shared by every request of one model."""

    failover: bool = True
    pace_tok_s: float | None = None
    """Paced delivery rate (tokens/s); None delivers eagerly, as fast as generated."""
    migration: MigrationPolicy = field(default_factory=NoMigration)
    stall: StallDetector = field(default_factory=StallDetector)
    approximate_continuation_prompt: str | None = None
    """When set, failover to an endpoint that cannot continue exactly sends the messages plus
    this prompt (with ``{partial}`` replaced by the text so far); flagged in the report."""
    predictor: Predictor = field(default_factory=StaticPredictor)


@dataclass(frozen=True)
class _Event:
    run: int
    kind: Literal["delta", "done", "error"]
    at: float
    item: StreamItem = ""
    error: BaseException | None = None


@dataclass
class _Run:
    """One endpoint stream inside one request."""

    id: int
    role: str
    purpose: Purpose
    prefix: str
    stats: StreamStats = field(default_factory=StreamStats)
    task: asyncio.Task[None] | None = None
    live: bool = True
    started_at: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    first_by: float | None = None
    """A migration target's predicted first token (clock time): its silence is watched from
    there, as a streaming run's is from its last token."""
    tokens: int = 0
    failed: bool = False


class Engine:
    """Runs plans over a fixed set of endpoints, keyed by role (`"local"`, `"remote"`)."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
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
        report: RequestReport,
    ) -> AsyncGenerator[Delivery | EngineEvent, None]:
        """Yield deliveries (and events); fill `report`, complete once the iterator is done.

        Only endpoints able to serve `params` (tools, structured output) are started, and only
        they are migration or failover targets.
        """
        for role in plan.endpoints:
            if role not in self.endpoints:
                raise EndpointError(role, "the plan starts it but no such endpoint is configured")
            missing = params.needs(self.endpoints[role].capabilities)
            if missing is not None:
                raise EndpointError(role, f"the plan starts it but it cannot do {missing}")
        return _Request(self, plan, list(messages), params, report).run()


class _Request:
    """The state of one request while the engine runs it."""

    def __init__(
        self,
        engine: Engine,
        plan: Plan,
        messages: list[BaseMessage],
        params: GenerationParams,
        report: RequestReport,
    ) -> None:
        self.engine = engine
        self.opts = engine.options
        self.clock = engine.clock
        self.messages = messages
        self.params = params
        self.report = report
        self.t0 = self.clock()
        # The pumps' events: a deque and one wake-up future rather than an asyncio.Queue, whose
        # per-token getter task and wait() cost several event-loop passes per token.
        self.inbox: deque[_Event] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._stall_confirm_at: float | None = None
        self.runs: list[_Run] = []
        self.pending = sorted(plan.starts, key=lambda s: s.at_s)
        self.active: _Run | None = None
        self.probe: _Run | None = None
        self.text = ""
        self.generated_tokens = 0
        self.buffer: deque[Delivery] = deque()
        self.next_release = 0.0
        self.last_delivery_at: float | None = None
        self.source_done = False
        # The run that finished the answer: its finish reason and model are the answer's,
        # whoever produced the first token.
        self.finisher: _Run | None = None
        self.migration_settled = False
        self.tool_call_started = False
        self.errors: list[BaseException] = []
        self.out: list[Delivery | EngineEvent] = []
        self.prompt_tokens = max(
            engine.endpoints[r].estimate_input_tokens(messages) for r in plan.endpoints
        )
        for planned in plan.starts:
            self._row(planned.endpoint)

    # -- bookkeeping -------------------------------------------------------------------

    def _row(self, role: str) -> EndpointRun:
        row = self.report.endpoints.get(role)
        if row is None:
            endpoint = self.engine.endpoints[role]
            row = EndpointRun(
                name=role, kind=endpoint.kind, model=endpoint.model_name, outcome="not_started"
            )
            self.report.endpoints[role] = row
        return row

    def _rel(self, at: float) -> float:
        return at - self.t0

    def _other(self, role: str) -> str | None:
        """The other endpoint, if it can serve this request (tools, structured output)."""
        return next(
            (
                r
                for r, endpoint in self.engine.endpoints.items()
                if r != role and self.params.needs(endpoint.capabilities) is None
            ),
            None,
        )

    def _event(self, name: str, **data: Any) -> None:
        data = {"event": name, "at_s": self._rel(self.clock()), **data}
        self.report.events.append(data)
        self.out.append(EngineEvent(name, data))

    # -- runs --------------------------------------------------------------------------

    def _start(
        self,
        role: str,
        purpose: Purpose,
        *,
        prefix: str = "",
        messages: list[BaseMessage] | None = None,
        max_tokens: int | None = None,
    ) -> _Run:
        run = _Run(id=len(self.runs), role=role, purpose=purpose, prefix=prefix)
        run.started_at = self.clock()
        row = self._row(role)
        row.outcome = "pending"
        if row.started_s is None:
            row.started_s = self._rel(run.started_at)
        params = self.params
        if max_tokens is not None:
            params = replace(params, max_tokens=max_tokens)
        run.task = asyncio.create_task(
            self._pump(run, messages or self.messages, params), name=f"disco-{role}-{purpose}"
        )
        self.runs.append(run)
        return run

    async def _pump(self, run: _Run, messages: list[BaseMessage], params: GenerationParams) -> None:
        endpoint = self.engine.endpoints[run.role]
        stream = endpoint.stream(messages, params, run.stats, prefix=run.prefix)
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for item in stream:
                    if item:
                        self._post(_Event(run.id, "delta", self.clock(), item))
            self._post(_Event(run.id, "done", self.clock()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._post(_Event(run.id, "error", self.clock(), error=exc))

    def _post(self, event: _Event) -> None:
        """Hand an event to the loop (called by the pump tasks, on the same event loop)."""
        self.inbox.append(event)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _next_event(self, timeout: float | None) -> _Event | None:
        """The next event, or None when `timeout` seconds pass first."""
        if not self.inbox:
            loop = asyncio.get_running_loop()
            self._wake = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, self._wake_up)
            try:
                await self._wake
            finally:
                self._wake = None
                if timer is not None:
                    timer.cancel()
        return self.inbox.popleft() if self.inbox else None

    def _stop(self, run: _Run, outcome: Literal["cancelled", "migrated"]) -> None:
        if run.live:
            run.live = False
            assert run.task is not None
            run.task.cancel()
            self._row(run.role).outcome = outcome

    def _live(self) -> list[_Run]:
        return [r for r in self.runs if r.live]

    def _remaining_max_tokens(self) -> int | None:
        if self.params.max_tokens is None:
            return None
        return max(1, self.params.max_tokens - self.generated_tokens)

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> AsyncGenerator[Delivery | EngineEvent, None]:
        try:
            while self.pending and self.pending[0].at_s <= 0:
                self._start(self.pending.pop(0).endpoint, "dispatch")
            while True:
                if self.out:
                    for item in self.out:
                        yield item
                    self.out.clear()
                if self._complete():
                    break
                self._check_alive()
                deadline = self._deadline()
                timeout = None if deadline is None else max(0.0, deadline - self.clock())
                event = await self._next_event(timeout)
                if event is not None:
                    self._handle(event)
                self._on_timer()  # whatever fell due meanwhile (each check is its own guard)
        finally:
            await self._finish()

    def _complete(self) -> bool:
        return self.source_done and not self.buffer

    def _check_alive(self) -> None:
        """Raise once nothing can produce text any more."""
        if self._live() or self.pending or self.source_done:
            return
        raise AllEndpointsFailedError(self.errors)

    def _deadline(self) -> float | None:
        deadlines: list[float] = []
        if self.report.winner is None and self.pending:
            deadlines.append(self.t0 + self.pending[0].at_s)
        if self.buffer:
            deadlines.append(self.next_release)
        active = self.active
        if active is not None and active.live:
            silent_at = self._silence_limit(active)
            if silent_at is not None:
                confirm_at = self._stall_confirm_at
                deadlines.append(silent_at if confirm_at is None else max(silent_at, confirm_at))
        return min(deadlines, default=None)

    def _silence_limit(self, run: _Run) -> float | None:
        """When `run` counts as stalled: the stall threshold after its last token or, for a
        migration target that has produced none yet, after its predicted first token (the
        buffer was sized for that; past it the reader is left waiting). Otherwise None: a
        dispatch or failover run's first token is bounded by the endpoint's own timeout."""
        since = run.last_at if run.last_at is not None else run.first_by
        if since is None:
            return None
        return since + self.opts.stall.threshold_s(run.role)

    def _on_timer(self) -> None:
        now = self.clock()
        if self.report.winner is None and self.pending and now >= self.t0 + self.pending[0].at_s:
            self._start(self.pending.pop(0).endpoint, "dispatch")
        if self.buffer and now >= self.next_release:
            self._deliver(self.buffer.popleft(), now)
            assert self.opts.pace_tok_s is not None
            self.next_release = max(now, self.next_release) + 1.0 / self.opts.pace_tok_s
        active = self.active
        limit = self._silence_limit(active) if active is not None and active.live else None
        if limit is None or now < limit:
            self._stall_confirm_at = None
        elif self._stall_confirm_at is None:
            self._stall_confirm_at = now + _STALL_CONFIRM_S  # first sight: let the loop run
        if (
            active is not None
            and self._stall_confirm_at is not None
            and now >= self._stall_confirm_at
        ):
            self._stall_confirm_at = None
            if active.last_at is not None:
                why = f"stalled: no token for {now - active.last_at:.2f} s"
            else:
                why = (
                    f"stalled: no first token {now - active.started_at:.2f} s after the hand-over"
                    f" (predicted {(active.first_by or now) - active.started_at:.2f} s)"
                )
            self._stop(active, "cancelled")
            active.failed = True
            self._row(active.role).outcome = "failed"
            error = EndpointError(active.role, why)
            self._row(active.role).error = str(error)
            self.errors.append(error)
            self._failover(active, error, reason="stall")

    # -- events ------------------------------------------------------------------------

    def _handle(self, event: _Event) -> None:
        run = self.runs[event.run]
        if not run.live:
            return  # a late event from a stream we already stopped
        if event.kind == "delta":
            self._on_delta(run, event)
        elif event.kind == "done":
            run.live = False
            self._row(run.role).ended_s = self._rel(event.at)
            if run is self.probe:
                self._switch_to_probed_target()
            elif run is self.active:
                self._row(run.role).outcome = "completed"
                self._finished(run)
            elif self.active is None:
                # Finished without a single content token (an empty answer): it wins anyway.
                self.report.winner = self.report.winner or run.role
                self._row(run.role).outcome = "completed"
                self.active = run
                self._cancel_others(run)
                self._finished(run)
        else:
            assert event.error is not None
            run.live = False
            run.failed = True
            row = self._row(run.role)
            row.outcome = "failed"
            row.error = f"{type(event.error).__name__}: {event.error}"
            row.ended_s = self._rel(event.at)
            self.errors.append(event.error)
            if run is self.probe:
                self.probe = None
                self.migration_settled = True
                self._event("migration_aborted", target=run.role, reason=row.error)
            elif run is self.active:
                self._failover(run, event.error, reason="error")
            elif self.active is None and not self._live():
                if self.pending:  # everything started failed before a token: hedge now
                    self._start(self.pending.pop(0).endpoint, "dispatch")
                else:
                    self._failover(run, event.error, reason="error")

    def _finished(self, run: _Run) -> None:
        self.source_done = True
        self.finisher = run
        self.report.finished_by = run.role

    def _on_delta(self, run: _Run, event: _Event) -> None:
        if run.first_at is None:
            run.first_at = event.at
            row = self._row(run.role)
            if row.first_token_s is None:
                row.first_token_s = self._rel(event.at)
            if run.purpose in ("failover", "migration"):
                self._event(
                    f"{run.purpose}_first_token",
                    endpoint=run.role,
                    actual_ttft_s=event.at - run.started_at,
                )
        if run is self.probe:
            self._switch_to_probed_target()
            return
        if self.active is None:
            self.active = run
            self.report.winner = run.role
            self.report.ttft_s = self._rel(event.at)
            self._row(run.role).outcome = "won"
            self._cancel_others(run)
            self.pending.clear()
        if run is not self.active:
            return
        if self.report.ttft_s is None:
            # Everything dispatched failed before a token and a failover answered: the reader's
            # first token is this one (no endpoint *won*, so `winner` stays None).
            self.report.ttft_s = self._rel(event.at)
        if run.last_at is not None:
            self.opts.stall.observe_gap(run.role, event.at - run.last_at)
        run.last_at = event.at
        run.tokens += 1
        if isinstance(event.item, ToolCallChunk):
            # Never migrate or continue inside a tool call: it is not text that can be resumed.
            self.tool_call_started = self.migration_settled = True
            delivery = Delivery("", run.role, event.item)
        else:
            self.generated_tokens += 1
            self.text += event.item
            delivery = Delivery(event.item, run.role)
        if self.opts.pace_tok_s is None:
            self._deliver(delivery, event.at)
        else:
            if not self.buffer and self.last_delivery_at is None:
                self.next_release = event.at  # the first token goes out at once
            self.buffer.append(delivery)
        self._consider_migration(run)

    def _deliver(self, delivery: Delivery, at: float) -> None:
        if self.last_delivery_at is not None:
            self.report.tbt_gaps_s.append(at - self.last_delivery_at)
        self.last_delivery_at = at
        self._row(delivery.endpoint).delivered_chunks += 1
        self.out.append(delivery)

    def _cancel_others(self, winner: _Run) -> None:
        for other in self._live():
            if other is not winner:
                self._stop(other, "cancelled")
                self._row(other.role).ended_s = self._rel(self.clock())

    # -- migration and failover --------------------------------------------------------

    def _consider_migration(self, source: _Run) -> None:
        if self.migration_settled or self.probe is not None:
            return
        target = self._other(source.role)
        if target is None:
            self.migration_settled = True
            return
        endpoint = self.engine.endpoints[target]
        predictor = self.opts.predictor
        context = self.prompt_tokens + self.generated_tokens
        view = MigrationView(
            source=source.role,  # type: ignore[arg-type]
            target=target,  # type: ignore[arg-type]
            prompt_tokens=self.prompt_tokens,
            generated_tokens=self.generated_tokens,
            max_tokens=self.params.max_tokens,
            buffered_tokens=len(self.buffer),
            pace_tok_s=self.opts.pace_tok_s,
            target_can_continue=endpoint.capabilities.exact_continuation,
            target_ttft_s=predictor.ttft_s(target, context),
            source_decode_tok_s=predictor.decode_tok_s(source.role),
            target_decode_tok_s=predictor.decode_tok_s(target),
            expected_remaining_tokens=predictor.remaining_tokens(
                self.generated_tokens, self.params.max_tokens
            ),
            source_usd_per_out_token=self._usd_per_token(source.role, output=True),
            target_usd_per_out_token=self._usd_per_token(target, output=True),
            target_usd_per_in_token=self._usd_per_token(target, output=False),
        )
        decision = self.opts.migration.decide(view)
        if decision.verdict == "wait":
            return
        self.migration_settled = decision.verdict == "never"
        if decision.verdict == "never":
            return
        details = {
            "from": source.role,
            "to": target,
            "reason": decision.reason,
            "token_index": self.generated_tokens,
            "buffered_tokens": len(self.buffer),
            "predicted_target_ttft_s": decision.predicted_target_ttft_s,
            "expected_saving_usd": decision.expected_saving_usd,
        }
        if decision.verdict == "probe":
            self.probe = self._start(target, "probe", prefix=self.text, max_tokens=1)
            self._event("migration_probe", **details)
            return
        self.migration_settled = True
        self._event("migration", **details)
        self._hand_over(source, target, "migration")

    def _switch_to_probed_target(self) -> None:
        """The probe's prefill is done: stop the source here and continue on the target."""
        probe, self.probe = self.probe, None
        assert probe is not None
        self._stop(probe, "cancelled")
        self.migration_settled = True
        source = self.active
        if source is None or not source.live:
            return
        self._event(
            "migration",
            **{"from": source.role, "to": probe.role, "reason": "probe ready"},
            token_index=self.generated_tokens,
            buffered_tokens=len(self.buffer),
        )
        self._hand_over(source, probe.role, "migration")

    def _hand_over(self, source: _Run, target: str, purpose: Purpose) -> None:
        self._stop(source, "migrated")
        run = self._start(
            target, purpose, prefix=self.text, max_tokens=self._remaining_max_tokens()
        )
        context = self.prompt_tokens + self.generated_tokens
        run.first_by = run.started_at + self.opts.predictor.ttft_s(target, context)
        self.active = run

    def _failover(self, failed: _Run, error: BaseException, *, reason: str) -> None:
        """Continue on the other endpoint from the text generated so far, or give up."""
        if not self.opts.failover:
            raise error
        if self.tool_call_started:
            raise EndpointError(
                failed.role,
                f"failed ({reason}) after a tool call began streaming; not continued elsewhere, "
                "since a tool call cannot be resumed and must not turn into prose",
            ) from error
        if self.probe is not None:
            self._stop(self.probe, "cancelled")
            self.probe = None
        self.migration_settled = True
        target = self._other(failed.role)
        if target is None or any(r.role == target and r.failed for r in self.runs):
            raise AllEndpointsFailedError(self.errors)
        endpoint = self.engine.endpoints[target]
        details: dict[str, Any] = {
            "from": failed.role,
            "to": target,
            "reason": reason,
            "error": f"{type(error).__name__}: {error}",
            "token_index": self.generated_tokens,
            "buffered_tokens": len(self.buffer),
            "predicted_target_ttft_s": self.opts.predictor.ttft_s(
                target, self.prompt_tokens + self.generated_tokens
            ),
        }
        if not self.text or endpoint.capabilities.exact_continuation:
            self._event("failover", approximate=False, **details)
            self.active = self._start(
                target, "failover", prefix=self.text, max_tokens=self._remaining_max_tokens()
            )
            return
        prompt = self.opts.approximate_continuation_prompt
        if prompt is None:
            raise EndpointError(
                target,
                f"cannot take over from {failed.role} ({reason}): it cannot continue a partial "
                "answer exactly; set its continuation mode (DISCO_REMOTE_CONTINUATION) or "
                "enable approximate continuation (DISCO_APPROXIMATE_CONTINUATION_PROMPT)",
            ) from error
        self._event("failover", approximate=True, **details)
        messages = [*self.messages, HumanMessage(prompt.replace("{partial}", self.text))]
        self.active = self._start(
            target, "failover", messages=messages, max_tokens=self._remaining_max_tokens()
        )

    # -- settling ----------------------------------------------------------------------

    def _usd_per_token(self, role: str, *, output: bool) -> float:
        kind = self.engine.endpoints[role].kind
        return usd_per_token(self.engine.cost_model, kind, output=output)

    async def _finish(self) -> None:
        """Cancel and await every task still running, then settle usage and cost."""
        tasks = [r.task for r in self.runs if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        now = self._rel(self.clock())
        self.report.total_s = now
        server_in = server_out = device_in = device_out = 0
        for row in self.report.endpoints.values():
            row.input_tokens = row.output_tokens = row.attempted_input_tokens = row.attempts = 0
            row.cached_input_tokens = row.reasoning_tokens = 0
            row.queue_wait_s = 0.0
        for run in self.runs:
            row, stats = self._row(run.role), run.stats
            if row.outcome == "pending":
                row.outcome = "cancelled"
            if row.ended_s is None:
                row.ended_s = now
            # Billed, not attempted: a rejected retry costs nothing (docs/concepts.md).
            billed_in = stats.billed_input_tokens
            row.input_tokens += billed_in
            row.attempted_input_tokens += stats.attempted_input_tokens
            row.output_tokens += stats.output_tokens
            row.usage_reported = stats.usage_reported
            row.queue_wait_s += stats.queue_wait_s
            row.attempts += stats.attempts
            row.finish_reason = stats.finish_reason or row.finish_reason
            row.cached_input_tokens += stats.cached_input_tokens
            row.reasoning_tokens += stats.reasoning_tokens
            row.response_id = stats.response_id or row.response_id
            row.system_fingerprint = stats.system_fingerprint or row.system_fingerprint
            if stats.logprobs:
                row.logprobs = [*(row.logprobs or ()), *stats.logprobs]
            if "continuation" in stats.extra:
                row.continuation = str(stats.extra["continuation"])
            echoed = stats.extra.get("prefix_echoed")
            if isinstance(echoed, bool):
                row.prefix_echoed = echoed
            if self.engine.endpoints[run.role].kind == "remote":
                server_in += billed_in
                server_out += stats.output_tokens
            else:
                device_in += billed_in
                device_out += stats.output_tokens
        if self.finisher is not None:
            # The answer's finish reason, not that of an earlier run on the same endpoint
            # (a migration probe stopped after one token, say).
            self._row(self.finisher.role).finish_reason = self.finisher.stats.finish_reason
        self.report.cost = self.engine.cost_model.cost(
            server_in=server_in, server_out=server_out, device_in=device_in, device_out=device_out
        )
