"""The per-request state machine of the engine, with no I/O: events and times in, commands out.

One `RequestCore` is one request. Its driver tells it what happened (a delta from stream X at
time t, X finished, X failed, a deadline passed) and carries out what it answers: start a
stream with this prefix and budget (`StartStream`), stop one (`CancelStream`), a `Delivery` to
hand to the consumer, an `EngineEvent` to report. Between events the driver waits until
`deadline` (the next hedge start, paced release or stall limit). Nothing here reads a clock,
starts a task or touches an endpoint, so the live driver (`engine.driver`) and the simulator
run this same code, one on the event loop's time, the other on a virtual clock, and tests
script it in microseconds.

What the core does, in the order a request meets it (docs/concepts.md, Race, Hedging,
Migration, Failover):

- **race**: the first stream with a content token wins; every other one is cancelled at once;
- **hedge**: a planned start that has not fallen due when a stream wins is never made;
- **paced delivery** (optional): text goes into a buffer released at `pace_tok_s`, so the
  source can run ahead and a migration or failover hides behind the buffer;
- **migration**: the migration policy may move the rest of the answer to the other endpoint,
  which continues from the exact text generated so far (or first prefills it, `probe`);
- **failover**: an error or stall of the active stream continues on the other endpoint.

Invariant: the delivered text is the concatenation, in order, of each active stream's text, and
each continuation starts exactly where the previous text ends. Nothing is delivered twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_disco.engine._timing import TIME_EPS_S, Pacer, StallWatch, Stream
from langchain_disco.engine.commands import (
    CancelStream,
    Command,
    Delivery,
    EngineEvent,
    Purpose,
    StartStream,
)
from langchain_disco.engine.options import EndpointInfo, EngineOptions
from langchain_disco.errors import AllEndpointsFailedError, EndpointError
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan
from langchain_disco.scheduling.migration import (
    MigrationView,
    ViewBuilder,
)
from langchain_disco.scheduling.roles import Role

if TYPE_CHECKING:
    from langchain_disco.endpoints.base import StreamStats, ToolCallChunk


_FOLD_PIECES = 32
"""Generated pieces kept apart before they are joined onto the answer's text."""


class RequestCore:
    """The state of one request: feed it events, carry out the commands it returns.

    Every method that takes `now` returns the commands that follow, in order. A method raises
    `AllEndpointsFailedError` or `EndpointError` when the request cannot be answered.
    """

    def __init__(
        self,
        plan: Plan,
        endpoints: Mapping[Role, EndpointInfo],
        options: EngineOptions,
        cost_model: CostModel,
        report: RequestReport,
        *,
        prompt_tokens: int,
        max_tokens: int | None,
        now: float,
    ) -> None:
        self.endpoints = dict(endpoints)
        self.opts = options
        self.cost_model = cost_model
        self.report = report
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.t0 = now
        self.streams: list[Stream] = []
        self.pending = sorted(plan.starts, key=lambda s: s.at_s)
        self.active: Stream | None = None
        self.probe: Stream | None = None
        self.hedge: _Hedge | None = None
        """A hedged hand-over in flight: the target runs while the source keeps generating."""
        self.handed_back = 0
        """Hedges of this request handed back (their target missed the buffer's end)."""
        self._text = ""
        self._pieces: list[str] = []
        """Text generated since `_text` was last joined, at most `_FOLD_PIECES` pieces: joining
        them in batches (and when the text is read: a migration, a failover) copies a long
        answer 1/32 as often as ``text += piece`` on an attribute, which copies the whole
        answer at every token, and keeps a stream's memory at what its text needs."""
        self.generated_tokens = 0
        self.pacer = Pacer(options.pace_tok_s, report.tbt_gaps_s)
        self.stall = StallWatch(options.stall)
        self.source_done = False
        self.finisher: Stream | None = None
        """The stream that finished the answer: its finish reason and model are the answer's."""
        self.migration_settled = False
        self.migration_blocked_by: str | None = None
        """The condition the policy named the last time it answered `wait` or `never`."""
        self.tool_call_started = False
        self.errors: list[BaseException] = []
        self.views: ViewBuilder | None = None
        self._others: dict[Role, Role | None] = {}
        for planned in plan.starts:
            self._row(planned.endpoint)

    @property
    def text(self) -> str:
        """The answer's text generated so far (what a continuation starts from)."""
        if self._pieces:
            self._text += "".join(self._pieces)
            self._pieces.clear()
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value
        self._pieces.clear()

    # -- the driver's view ---------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """The answer is finished and wholly delivered."""
        return self.source_done and not self.pacer.buffer

    @property
    def deadline(self) -> float | None:
        """When to call `timer` if no event comes first (None: wait for an event)."""
        # Written out rather than min() over a list: the drivers ask after every token.
        best = self.stall.deadline(self.active)
        pacer = self.pacer
        if pacer.buffer and (best is None or pacer.next_release < best):
            best = pacer.next_release
        if self.pending and self.report.winner is None:
            due = self.t0 + self.pending[0].at_s
            if best is None or due < best:
                best = due
        return best

    def check_alive(self) -> None:
        """Raise once nothing can produce text any more."""
        if self.source_done or self.pending or any(s.live for s in self.streams):
            return
        raise AllEndpointsFailedError(self.errors)

    # -- events --------------------------------------------------------------------------------

    def begin(self, now: float) -> list[Command]:
        """Start what the plan starts at once."""
        out: list[Command] = []
        while self.pending and self.pending[0].at_s <= 0:
            self._start(self.pending.pop(0).endpoint, "dispatch", now, out)
        return out

    def timer(self, now: float) -> list[Command]:
        """Whatever fell due by `now`: a hedge start, a paced release, a stall."""
        out: list[Command] = []
        pending = self.pending
        if pending and self.report.winner is None and now + TIME_EPS_S >= self.t0 + pending[0].at_s:
            self._start(pending.pop(0).endpoint, "dispatch", now, out)
        if self.pacer.buffer:
            hedge = self.hedge
            if (
                hedge is not None
                and self.pacer.count >= hedge.deliver_limit
                and now + TIME_EPS_S >= self.pacer.next_release
            ):
                self._hand_back(hedge, "the buffer ran out first", now, out)
            self.pacer.release(now, out)
        active = self.active
        if active is not None and self.stall.stalled(active, now):
            self._on_stall(active, now, out)
        return out

    def delta(
        self, run: int, text: str, now: float, tool_call: ToolCallChunk | None = None
    ) -> list[Command]:
        """Stream `run` produced `text` (or a piece of a tool call) at `now`."""
        out: list[Command] = []
        stream = self.streams[run]
        if stream.live:
            self._on_delta(stream, text, tool_call, now, out)
        return out

    def done(self, run: int, now: float) -> list[Command]:
        """Stream `run` ended normally at `now`."""
        out: list[Command] = []
        stream = self.streams[run]
        if not stream.live:
            return out  # a late event from a stream we already stopped
        stream.live = False
        self._row(stream.role).ended_s = now - self.t0
        if stream is self.probe:
            self._switch_to_probed_target(now, out)
        elif self.hedge is not None and stream is self.hedge.stream:
            # The target ended before a token (the answer ends where it took over).
            self._take_hedge(self.hedge, now, out)
            self._row(stream.role).outcome = "completed"
            self._finished(stream)
        elif stream is self.active:
            if self.hedge is not None:
                self._hand_back(self.hedge, "the source finished first", now, out)
            self._row(stream.role).outcome = "completed"
            self._finished(stream)
        elif self.active is None:
            # Finished without a single content token (an empty answer): it wins anyway.
            self.report.winner = self.report.winner or stream.role
            self._row(stream.role).outcome = "completed"
            self.active = stream
            self._cancel_others(stream, now, out)
            self._finished(stream)
        return out

    def error(self, run: int, error: BaseException, now: float) -> list[Command]:
        """Stream `run` failed at `now`."""
        out: list[Command] = []
        stream = self.streams[run]
        if not stream.live:
            return out
        stream.live = False
        stream.failed = True
        row = self._row(stream.role)
        row.outcome = "failed"
        row.error = f"{type(error).__name__}: {error}"
        row.ended_s = now - self.t0
        self.errors.append(error)
        if stream is self.probe:
            self.probe = None
            self.migration_settled = True
            self._event("migration_aborted", now, out, target=stream.role, reason=row.error)
        elif self.hedge is not None and stream is self.hedge.stream:
            self.hedge = None
            self.handed_back += 1
            self._event("migration_aborted", now, out, target=stream.role, reason=row.error)
        elif stream is self.active:
            self._failover(stream, error, "error", now, out)
        elif self.active is None and not any(s.live for s in self.streams):
            if self.pending:  # everything started failed before a token: hedge now
                self._start(self.pending.pop(0).endpoint, "dispatch", now, out)
            else:
                self._failover(stream, error, "error", now, out)
        return out

    def cancel_all(self) -> list[Command]:
        """The consumer went away (or the request ended): stop every live stream."""
        out: list[Command] = []
        for stream in self.streams:
            if stream.live:
                stream.live = False
                out.append(CancelStream(stream.id))
        return out

    # -- bookkeeping ---------------------------------------------------------------------------

    def _row(self, role: Role) -> EndpointRun:
        row = self.report.endpoints.get(role)
        if row is None:
            info = self.endpoints[role]
            row = EndpointRun(name=role, kind=info.kind, model=info.model, outcome="not_started")
            self.report.endpoints[role] = row
        return row

    def _other(self, role: Role) -> Role | None:
        """The other endpoint, if it can serve this request (tools, structured output)."""
        if role not in self._others:
            self._others[role] = next(
                (r for r, i in self.endpoints.items() if r != role and i.serves), None
            )
        return self._others[role]

    def _event(self, name: str, now: float, out: list[Command], **data: Any) -> None:
        data = {"event": name, "at_s": now - self.t0, **data}
        self.report.events.append(data)
        out.append(EngineEvent(name, data))

    def _start(
        self,
        role: Role,
        purpose: Purpose,
        now: float,
        out: list[Command],
        *,
        prefix: str = "",
        max_tokens: int | None = None,
        approximate_prompt: str | None = None,
    ) -> Stream:
        stream = Stream(len(self.streams), role, purpose, prefix, started_at=now)
        row = self._row(role)
        row.outcome = "pending"
        if row.started_s is None:
            row.started_s = now - self.t0
        self.streams.append(stream)
        out.append(StartStream(stream.id, role, purpose, prefix, max_tokens, approximate_prompt))
        return stream

    def _stop(
        self, stream: Stream, outcome: Literal["cancelled", "migrated"], out: list[Command]
    ) -> None:
        if stream.live:
            stream.live = False
            out.append(CancelStream(stream.id))
            self._row(stream.role).outcome = outcome

    def _cancel_others(self, winner: Stream, now: float, out: list[Command]) -> None:
        for other in self.streams:
            if other.live and other is not winner:
                self._stop(other, "cancelled", out)
                self._row(other.role).ended_s = now - self.t0

    def _remaining_max_tokens(self) -> int | None:
        if self.max_tokens is None:
            return None
        return max(1, self.max_tokens - self.generated_tokens)

    def _finished(self, stream: Stream) -> None:
        self.source_done = True
        self.finisher = stream
        self.report.finished_by = stream.role

    # -- tokens --------------------------------------------------------------------------------

    def _on_delta(
        self,
        stream: Stream,
        text: str,
        tool_call: ToolCallChunk | None,
        now: float,
        out: list[Command],
    ) -> None:
        if stream.first_at is None:
            self._first_token(stream, now, out)
        if stream is self.probe:
            self._switch_to_probed_target(now, out)
            return
        hedge = self.hedge
        if hedge is not None and stream is hedge.stream:
            self._take_hedge(hedge, now, out)
        if self.active is None:
            self._win(stream, now, out)
        if stream is not self.active:
            return
        if self.report.ttft_s is None:
            # Everything dispatched failed before a token and a failover answered: the reader's
            # first token is this one (no endpoint *won*, so `winner` stays None).
            self.report.ttft_s = now - self.t0
        if stream.last_at is not None:
            self.opts.stall.observe_gap(stream.role, now - stream.last_at)
        stream.last_at = now
        if tool_call is not None:
            # Never migrate or continue inside a tool call: it is not text that can be resumed.
            self.tool_call_started = self.migration_settled = True
            if self.hedge is not None:
                self._hand_back(self.hedge, "a tool call began", now, out)
            delivery = Delivery("", stream.role, tool_call, stream.id)
        else:
            self.generated_tokens += 1
            pieces = self._pieces
            pieces.append(text)
            if len(pieces) >= _FOLD_PIECES:
                self._text += "".join(pieces)
                pieces.clear()
            delivery = Delivery(text, stream.role, None, stream.id)
        self.pacer.push(delivery, now, out)
        self._consider_migration(stream, now, out)

    def _first_token(self, stream: Stream, now: float, out: list[Command]) -> None:
        stream.first_at = now
        row = self._row(stream.role)
        if row.first_token_s is None:
            row.first_token_s = now - self.t0
        if stream.purpose in ("failover", "migration"):
            self._event(
                f"{stream.purpose}_first_token",
                now,
                out,
                endpoint=stream.role,
                actual_ttft_s=now - stream.started_at,
            )

    def _win(self, stream: Stream, now: float, out: list[Command]) -> None:
        self.active = stream
        self.report.winner = stream.role
        self.report.ttft_s = now - self.t0
        self._row(stream.role).outcome = "won"
        self._cancel_others(stream, now, out)
        self.pending.clear()

    # -- migration -----------------------------------------------------------------------------

    def _view(self, source: Stream, target: Role, now: float) -> MigrationView:
        views = self.views
        if views is None or views.source != source.role:
            info = self.endpoints[target]
            views = self.views = ViewBuilder.for_request(
                source=source.role,
                target=target,
                prompt_tokens=self.prompt_tokens,
                max_tokens=self.max_tokens,
                pace_tok_s=self.opts.pace_tok_s,
                target_can_continue=info.exact_continuation,
                predictor=self.opts.predictor,
                cost_model=self.cost_model,
                source_kind=self.endpoints[source.role].kind,
                target_kind=info.kind,
                on_time_p=self.opts.migration.wants_on_time_p,
            )
        queue = max(0.0, self.endpoints[target].queue_wait_s - (now - self.t0))
        return views.view(self.generated_tokens, len(self.pacer.buffer), queue, self.handed_back)

    def _consider_migration(self, source: Stream, now: float, out: list[Command]) -> None:
        if self.migration_settled or self.probe is not None or self.hedge is not None:
            return
        target = self._other(source.role)
        if target is None:
            self.migration_settled = True
            return
        view = self._view(source, target, now)
        decision = self.opts.migration.decide(view)
        if decision.verdict in ("wait", "never"):
            self.migration_blocked_by = decision.blocked_by
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
            "buffered_tokens": len(self.pacer.buffer),
            "predicted_target_ttft_s": decision.predicted_target_ttft_s,
            "expected_saving_usd": decision.expected_saving_usd,
        }
        if decision.verdict == "probe":
            self.probe = self._start(target, "probe", now, out, prefix=self.text, max_tokens=1)
            self._event("migration_probe", now, out, **details)
            return
        if decision.verdict == "hedge":
            self._event("migration_hedge", now, out, **details)
            self.hedge = _Hedge(
                self._start_continuation(target, now, out),
                self.text,
                self.generated_tokens,
                self.pacer.count + len(self.pacer.buffer),
                details,
            )
            return
        self.migration_settled = True
        self._event("migration", now, out, **details)
        self._hand_over(source, target, now, out)

    def _switch_to_probed_target(self, now: float, out: list[Command]) -> None:
        """The probe's prefill is done: stop the source here and continue on the target."""
        probe, self.probe = self.probe, None
        assert probe is not None
        self._stop(probe, "cancelled", out)
        self.migration_settled = True
        source = self.active
        if source is None or not source.live:
            return
        self._event(
            "migration",
            now,
            out,
            **{"from": source.role, "to": probe.role, "reason": "probe ready"},
            token_index=self.generated_tokens,
            buffered_tokens=len(self.pacer.buffer),
        )
        self._hand_over(source, probe.role, now, out)

    def _take_hedge(self, hedge: _Hedge, now: float, out: list[Command]) -> None:
        """The hedged target answered before the buffer ran out: it continues from where it
        was started, and the source's tokens generated since (all undelivered) are dropped."""
        self.hedge = None
        self.migration_settled = True
        source = self.active
        if source is not None:
            self._stop(source, "migrated", out)
        keep = max(0, hedge.deliver_limit - self.pacer.count)
        buffer = self.pacer.buffer
        while len(buffer) > keep:
            buffer.pop()
        self.text = hedge.text
        self.generated_tokens = hedge.generated_tokens
        self._event(
            "migration",
            now,
            out,
            **{**hedge.details, "reason": "hedge: the target answered within the buffer"},
        )
        self.active = hedge.stream

    def _hand_back(self, hedge: _Hedge, why: str, now: float, out: list[Command]) -> None:
        """Cancel a hedged target: the source goes on, as if it had never been started."""
        self.hedge = None
        self.handed_back += 1
        self._stop(hedge.stream, "cancelled", out)
        self._row(hedge.stream.role).ended_s = now - self.t0
        self._event("migration_handed_back", now, out, target=hedge.stream.role, reason=why)

    def _start_continuation(self, target: Role, now: float, out: list[Command]) -> Stream:
        """Start `target` continuing the answer from the text so far."""
        return self._start(
            target,
            "migration",
            now,
            out,
            prefix=self.text,
            max_tokens=self._remaining_max_tokens(),
        )

    def _hand_over(self, source: Stream, target: Role, now: float, out: list[Command]) -> None:
        self._stop(source, "migrated", out)
        stream = self._start_continuation(target, now, out)
        context = self.prompt_tokens + self.generated_tokens
        stream.first_by = now + self.opts.predictor.ttft_s(target, context)
        self.active = stream

    # -- failover ------------------------------------------------------------------------------

    def _on_stall(self, active: Stream, now: float, out: list[Command]) -> None:
        if active.last_at is not None:
            why = f"stalled: no token for {now - active.last_at:.2f} s"
        else:
            why = (
                f"stalled: no first token {now - active.started_at:.2f} s after the hand-over"
                f" (predicted {(active.first_by or now) - active.started_at:.2f} s)"
            )
        self._stop(active, "cancelled", out)
        active.failed = True
        row = self._row(active.role)
        row.outcome = "failed"
        error = EndpointError(active.role, why)
        row.error = str(error)
        self.errors.append(error)
        self._failover(active, error, "stall", now, out)

    def _failover(
        self, failed: Stream, error: BaseException, reason: str, now: float, out: list[Command]
    ) -> None:
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
            self._stop(self.probe, "cancelled", out)
            self.probe = None
        if self.hedge is not None:
            self._stop(self.hedge.stream, "cancelled", out)
            self.hedge = None
        self.migration_settled = True
        target = self._other(failed.role)
        if target is None or any(s.role == target and s.failed for s in self.streams):
            raise AllEndpointsFailedError(self.errors)
        details: dict[str, Any] = {
            "from": failed.role,
            "to": target,
            "reason": reason,
            "error": f"{type(error).__name__}: {error}",
            "token_index": self.generated_tokens,
            "buffered_tokens": len(self.pacer.buffer),
            "predicted_target_ttft_s": self.opts.predictor.ttft_s(
                target, self.prompt_tokens + self.generated_tokens
            ),
        }
        budget = self._remaining_max_tokens()
        if not self.text or self.endpoints[target].exact_continuation:
            self._event("failover", now, out, approximate=False, **details)
            self.active = self._start(
                target, "failover", now, out, prefix=self.text, max_tokens=budget
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
        self._event("failover", now, out, approximate=True, **details)
        self.active = self._start(
            target,
            "failover",
            now,
            out,
            max_tokens=budget,
            approximate_prompt=prompt.replace("{partial}", self.text),
        )

    # -- settling ------------------------------------------------------------------------------

    def settle(self, now: float, stats: Sequence[StreamStats]) -> None:
        """Fill the report's usage and cost from each stream's stats (`stats[i]` is stream i's),
        once every stream has stopped. Billed, not attempted: a rejected retry costs nothing
        (docs/concepts.md, "What is billed")."""
        report = self.report
        report.total_s = now - self.t0
        for row in report.endpoints.values():
            row.input_tokens = row.output_tokens = row.attempted_input_tokens = row.attempts = 0
            row.cached_input_tokens = row.reasoning_tokens = 0
            row.queue_wait_s = 0.0
            row.delivered_chunks = self.pacer.delivered.get(row.name, 0)
        # Per side: billed input, output, and (remote) the billed input read from its cache.
        billed: dict[str, list[int]] = {"remote": [0, 0, 0], "local": [0, 0, 0]}
        for stream, run_stats in zip(self.streams, stats, strict=True):
            row = self._row(stream.role)
            if row.outcome == "pending":
                row.outcome = "cancelled"
            if row.ended_s is None:
                row.ended_s = now - self.t0
            _absorb_stats(row, run_stats)
            remote = self.endpoints[stream.role].kind == "remote"
            side = billed["remote" if remote else "local"]
            # A device spends prefill energy only on what it evaluated, not on its KV cache.
            cached = 0 if remote else min(run_stats.cached_input_tokens, run_stats.input_tokens)
            side[0] += run_stats.billed_input_tokens - cached
            side[1] += run_stats.output_tokens
            if remote:
                side[2] += run_stats.billed_cached_input_tokens
        if self.finisher is not None:
            # The answer's finish reason, not that of an earlier run on the same endpoint
            # (a migration probe stopped after one token, say).
            self._row(self.finisher.role).finish_reason = stats[self.finisher.id].finish_reason
        report.cost = self.cost_model.cost(
            server_in=billed["remote"][0],
            server_out=billed["remote"][1],
            server_cached_in=billed["remote"][2],
            device_in=billed["local"][0],
            device_out=billed["local"][1],
        )


@dataclass
class _Hedge:
    """A hedged hand-over: the target, and the answer as it stood when it was started."""

    stream: Stream
    text: str
    generated_tokens: int
    deliver_limit: int
    """Pieces delivered once the last one generated before the hedge is out: past it, the
    next piece is one the target would replace, so the hedge is handed back."""
    details: dict[str, Any]


def _absorb_stats(row: EndpointRun, stats: StreamStats) -> None:
    """Add one stream's usage to its endpoint's row (an endpoint may run several streams)."""
    row.input_tokens += stats.billed_input_tokens
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
