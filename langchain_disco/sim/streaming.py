"""A simulated answer after its first token, played token by token through the engine's core.

The simulator resolves dispatch (race, hedge, loser cancelled) on its own: one comparison of two
first-token times. Everything after the first token, migration, paced delivery, a probe, the
hand-back when a migration target stays silent, is the live engine's `RequestCore`, run by
`sim.virtual.replay` against two scripted endpoints that follow the simulator's truth:

- the **device** prefills what it is handed on its measured line (times this request's drawn
  residual), after any queue in front of it; what an earlier stream of the same request on it
  had finished prefilling is in its KV cache and is neither recomputed nor billed (a probe's
  prefill is why an eager migration to the device is cheap);
- the **server** answers a continuation like one more measured request of the provider (its own
  TTFT and gap draw); it keeps no cache for us.

So the simulator's migration views, decisions, hand-overs, stalls and billing are the engine's,
by construction (tests/unit/test_engine_parity.py checks it against the live driver).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from langchain_disco.engine.core import RequestCore
from langchain_disco.engine.options import EndpointInfo, EngineOptions
from langchain_disco.report import RequestReport
from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import Plan, Start
from langchain_disco.scheduling.migration import (
    MigrationPolicy,
    MigrationPredictor,
    StallDetector,
)
from langchain_disco.scheduling.roles import Role
from langchain_disco.sim.delivery import Delivered, GapRun, Playout, Segment
from langchain_disco.sim.virtual import Opening, RequestReplay, Script, replay

_EPS = 1e-9
_TOKEN = "t "
"""Every simulated token: the text only has to be exact, not meaningful."""


@dataclass
class DeviceScript:
    """The simulated device: queue, prefill on its line (minus what is cached), decode."""

    first: Opening | None
    """The dispatch stream's opening when the device won the race (None: it is the target)."""
    overhead_s: float
    s_per_token: float
    gap_s: float
    free_at: Callable[[float], float]
    """When the device can begin a job submitted at this (request-relative) time."""
    prefilled: list[tuple[float, int]] = field(default_factory=list)
    """(when done, context tokens) of each prefill this request ran on the device."""
    jobs: list[tuple[float, float, float, int]] = field(default_factory=list)
    """(start, begin, prefill s, billed input) of each stream: for partial-prefill billing."""

    def open(self, context_tokens: int, started_at: float) -> Opening:
        if self.first is not None and not self.prefilled:
            self.prefilled.append((self.first.ttft_s, context_tokens))
            self.jobs.append((started_at, started_at, self.first.ttft_s, context_tokens))
            return self.first
        cached = max(
            (c for done, c in self.prefilled if done <= started_at + _EPS and c <= context_tokens),
            default=0,
        )
        begin = max(started_at, self.free_at(started_at))
        prefill = self.overhead_s + self.s_per_token * (context_tokens - cached)
        self.prefilled.append((begin + prefill, context_tokens))
        new = context_tokens - cached
        self.jobs.append((started_at, begin, prefill, new))
        return Opening(begin - started_at + prefill, self.gap_s, new)


@dataclass
class ServerScript:
    """The simulated server: the dispatch draw first, then one more draw per continuation."""

    first: Opening | None
    continuation_ttft_s: float
    continuation_gap_s: float
    _opened: int = 0

    def open(self, context_tokens: int, started_at: float) -> Opening:
        self._opened += 1
        if self.first is not None and self._opened == 1:
            return self.first
        return Opening(self.continuation_ttft_s, self.continuation_gap_s, context_tokens)


@dataclass(frozen=True)
class StreamedRequest:
    """One request's answer from its first token on, as the simulator knows it."""

    source: Role
    prompt_tokens: int
    output_tokens: int
    max_tokens: int | None
    source_gap_s: float
    target_can_continue: bool
    target_queue_wait_s: float
    """The target's predicted queue wait at arrival (a busy device), as the policy is told."""


def play(
    request: StreamedRequest,
    device: DeviceScript,
    server: ServerScript,
    *,
    migration: MigrationPolicy,
    pace_tok_s: float | None,
    predictor: MigrationPredictor,
    stall: StallDetector,
    cost_model: CostModel,
    base_cost: Cost,
) -> tuple[Playout, RequestReplay, RequestCore]:
    """Play the answer through the engine core; `base_cost` is the request's cost had the
    winner generated all of it (the dispatch loser included)."""
    source = request.source
    target: Role = "remote" if source == "local" else "local"
    infos: dict[Role, EndpointInfo] = {
        source: EndpointInfo(source, source, exact_continuation=True),
        target: EndpointInfo(
            target,
            target,
            exact_continuation=request.target_can_continue,
            queue_wait_s=request.target_queue_wait_s,
        ),
    }
    options = EngineOptions(
        pace_tok_s=pace_tok_s,
        migration=migration,
        stall=stall,
        predictor=predictor,
    )
    core = RequestCore(
        Plan((Start(source),), action=source),
        infos,
        options,
        cost_model,
        RequestReport(action=source, reason="simulated"),
        prompt_tokens=request.prompt_tokens,
        max_tokens=request.max_tokens,
        now=0.0,
    )
    scripts: dict[str, Script] = {"local": device, "remote": server}
    result = replay(core, scripts, [_TOKEN] * request.output_tokens)
    if result.error is not None:
        raise result.error
    return _playout(request, target, result, core, device, cost_model, base_cost), result, core


def _playout(
    request: StreamedRequest,
    target: Role,
    result: RequestReplay,
    core: RequestCore,
    device: DeviceScript,
    cost_model: CostModel,
    base_cost: Cost,
) -> Playout:
    source = request.source
    delivered = _delivered(result)
    who = [d.endpoint for _, d in result.deliveries]
    pace = core.opts.pace_tok_s
    nominal = max(request.source_gap_s, 1.0 / pace if pace is not None else 0.0)
    stall = max((s - nominal for s in delivered.seam_gaps_s), default=0.0)
    migrations = [e.data for _, e in result.events if e.name == "migration"]
    moved = bool(migrations) and target in who
    targets = [i for i, (_, s) in enumerate(result.starts) if s.role == target]
    takeovers = [i for i in targets if result.starts[i][1].purpose == "migration"]
    # The target stream that took over: the last one started (earlier hedges were handed back).
    takeover = takeovers[-1] if moved and takeovers else takeovers[0] if takeovers else None
    segments = _segments(result)
    return Playout(
        migrated=moved,
        token_index=int(migrations[-1]["token_index"]) if moved else None,
        source_tokens=who.count(source),
        target_tokens=who.count(target),
        delivered=delivered,
        stall_added_s=stall if stall > _EPS else 0.0,
        source_stop_s=result.stopped_s[0],
        generation_end_s=max((t for t in result.last_token_s if t is not None), default=0.0),
        target_start_s=result.starts[targets[0]][0] if targets else None,
        target_end_s=result.stopped_s[targets[-1]] if targets else None,
        target_first_token_s=result.first_token_s[takeover] if takeover is not None else None,
        target_context_tokens=request.prompt_tokens
        + (_prefix_len(result, takeover) if takeover is not None else 0),
        cost=_cost(request, result, device, cost_model, base_cost),
        segments=segments,
        blocked_by=None if moved else _blocked_by(result, core),
    )


def _blocked_by(result: RequestReplay, core: RequestCore) -> str:
    """Why an answer the policy could move did not move (see `Playout.blocked_by`)."""
    names = {e.name for _, e in result.events}
    if "migration" in names:
        return "handed_back"
    if "migration_handed_back" in names and core.migration_blocked_by in (None, "hedges_exhausted"):
        return "handed_back"
    if core.migration_blocked_by is not None:
        return core.migration_blocked_by
    if "migration_probe" in names:
        return "probe_not_ready"
    return "not_asked"


def _delivered(result: RequestReplay) -> Delivered:
    """The delivery gaps as runs, and the gap at each hand-over (a new stream's first piece)."""
    runs: list[GapRun] = []
    seams: list[float] = []
    previous: tuple[float, int] | None = None
    for at, piece in result.deliveries:
        if previous is not None:
            gap = at - previous[0]
            if piece.stream != previous[1]:  # a migration, failover or hand-back
                seams.append(gap)
            if runs and abs(runs[-1][0] - gap) <= _EPS:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((gap, 1))
        previous = (at, piece.stream)
    last = result.deliveries[-1][0] if result.deliveries else 0.0
    return Delivered(tuple(runs), tuple(seams), last)


def _prefix_len(result: RequestReplay, stream: int) -> int:
    return len(result.starts[stream][1].prefix) // len(_TOKEN)


def _segments(result: RequestReplay) -> tuple[Segment, ...]:
    """What each delivering stream generated, in order: first token time, gap, tokens.

    A source that a hedged target took over from generated more than it delivered (the tokens
    after the hedge point were dropped): its segment is the delivered part, at its own gap."""
    delivered = Counter(d.stream for _, d in result.deliveries)
    segments: list[Segment] = []
    for run, (_, start) in enumerate(result.starts):
        first = result.first_token_s[run]
        generated = result.stats[run].output_tokens if start.purpose != "probe" else 0
        if first is None or generated == 0:
            continue
        last = result.last_token_s[run]
        assert last is not None
        gap = (last - first) / (generated - 1) if generated > 1 else 0.0
        tokens = min(generated, delivered[run])
        if tokens:
            segments.append(Segment(first, gap, tokens))
    return tuple(segments)


def _cost(
    request: StreamedRequest,
    result: RequestReplay,
    device: DeviceScript,
    cost_model: CostModel,
    base_cost: Cost,
) -> Cost:
    """`base_cost`, less the source's tokens it never produced, plus every later stream's work
    (a device stream cancelled inside its prefill bills the part it ran)."""
    server_in = server_out = device_in = device_out = 0.0
    unproduced = request.output_tokens - result.stats[0].output_tokens
    if request.source == "remote":
        server_out -= unproduced
    else:
        device_out -= unproduced
    device_jobs = iter(device.jobs[1:] if request.source == "local" else device.jobs)
    for run, (_, start) in enumerate(result.starts):
        if run == 0:
            continue
        stats = result.stats[run]
        if start.role == "remote":
            server_in += stats.input_tokens
            server_out += stats.output_tokens
            continue
        _, begin, prefill, billed = next(device_jobs)
        ran = 1.0
        if result.first_token_s[run] is None and prefill > 0:
            ran = min(max(result.stopped_s[run] - begin, 0.0) / prefill, 1.0)
        device_in += billed * ran
        device_out += stats.output_tokens
    extra = cost_model.cost(
        server_in=server_in, server_out=server_out, device_in=device_in, device_out=device_out
    )
    return cost_model.total(
        base_cost.server_usd + extra.server_usd, base_cost.device_j + extra.device_j
    )
