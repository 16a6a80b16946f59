"""The engine core on a virtual clock, against scripted endpoints: one owner of time and events.

`replay` runs one request's `RequestCore` the way the live driver does (feed an event, carry
out the commands, call `timer`, wait until the next event or deadline), except that time is a
number and the endpoints are `Script`s: each stream started on one opens with a TTFT (which may
depend on the context it must prefill and on when it starts), then one token every gap,
optionally failing or falling silent after some tokens (`Behaviour` is the simple script).
Every endpoint generates the same answer, token by token, so a continuation picks up exactly
where its prefix ends, as a server that continues exactly does. The simulator and the engine's
tests both use it: what they show is what the live engine's code does.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from langchain_disco.endpoints.base import StreamStats
from langchain_disco.engine.commands import (
    CancelStream,
    Command,
    Delivery,
    EngineEvent,
    StartStream,
)
from langchain_disco.engine.core import RequestCore
from langchain_disco.errors import EndpointError


@dataclass(frozen=True)
class Opening:
    """How one stream on a scripted endpoint goes, decided when it starts."""

    ttft_s: float
    """Seconds from the start to the first token."""
    gap_s: float
    input_tokens: int
    """What the endpoint bills for the prompt (a warm cache bills less than the context)."""
    fail_after: int | None = None
    """Fail after this many tokens (0: before any token), when the next token was due."""
    stall_after: int | None = None
    """Fall silent for good after this many tokens."""
    error: str = "scripted failure"


class Script(Protocol):
    """A scripted endpoint: how each stream started on it goes."""

    def open(self, context_tokens: int, started_at: float) -> Opening:
        """A stream starting at `started_at` with `context_tokens` (prompt plus prefix)."""
        ...


@dataclass
class Behaviour:
    """A simple script: the same TTFT and gap for every stream; a fault in the first only."""

    ttft_s: float | Callable[[int, float], float]
    """Seconds from a start to its first token; or a function of the context tokens (prompt
    plus the prefix it continues) and the start time."""
    gap_s: float
    fail_after: int | None = None
    """Fail after this many tokens of its first stream (0: before any token)."""
    stall_after: int | None = None
    """Fall silent for good after this many tokens of its first stream."""
    error: str = "scripted failure"
    _opened: int = 0

    def open(self, context_tokens: int, started_at: float) -> Opening:
        ttft = self.ttft_s
        first = self._opened == 0
        self._opened += 1
        return Opening(
            ttft(context_tokens, started_at) if callable(ttft) else ttft,
            self.gap_s,
            context_tokens,
            self.fail_after if first else None,
            self.stall_after if first else None,
            self.error,
        )


@dataclass
class RequestReplay:
    """What one request did on the virtual clock."""

    deliveries: list[tuple[float, Delivery]] = field(default_factory=list)
    events: list[tuple[float, EngineEvent]] = field(default_factory=list)
    starts: list[tuple[float, StartStream]] = field(default_factory=list)
    cancels: list[tuple[float, int]] = field(default_factory=list)
    stats: list[StreamStats] = field(default_factory=list)
    first_token_s: list[float | None] = field(default_factory=list)
    """Per stream, when its first token came (None: it produced none)."""
    last_token_s: list[float | None] = field(default_factory=list)
    stopped_s: list[float] = field(default_factory=list)
    """Per stream, when it ended: its last event, or its cancellation."""
    end_s: float = 0.0
    error: BaseException | None = None

    @property
    def text(self) -> str:
        return "".join(d.text for _, d in self.deliveries)


_Kind = Literal["delta", "done", "error"]


class _Clock:
    """The event heap and `now`; one scripted stream per `StartStream`."""

    def __init__(
        self,
        scripts: Mapping[str, Script],
        answer: Sequence[str],
        prompt_tokens: int,
        max_tokens: int | None,
        now: float,
    ) -> None:
        self.scripts = scripts
        self.max_tokens = max_tokens
        self.errors: list[str] = []
        self.answer = answer
        self.prompt_tokens = prompt_tokens
        self.now = now
        self.heap: list[tuple[float, int, int, _Kind, int]] = []
        self.seq = 0
        self.live: list[bool] = []

    def start(self, command: StartStream, stats: StreamStats) -> None:
        done = prefix_tokens(self.answer, command.prefix)
        context = self.prompt_tokens + done
        opening = self.scripts[command.role].open(context, self.now)
        self.errors.append(opening.error)
        stats.input_tokens = opening.input_tokens
        stats.attempts = 1
        left = len(self.answer) - done
        cap = command.max_tokens if command.max_tokens is not None else self.max_tokens
        if cap is not None:
            left = min(left, cap)
        fail, stall, gap = opening.fail_after, opening.stall_after, opening.gap_s
        run = command.run
        self.live.append(True)
        at = self.now + opening.ttft_s
        for i in range(left):
            if fail is not None and i == fail:
                self._push(at + i * gap, "error", run, 0)
                return
            if stall is not None and i == stall:
                return
            self._push(at + i * gap, "delta", run, done + i)
        end = at + max(left - 1, 0) * gap
        if fail is not None and fail >= left:
            self._push(end, "error", run, 0)
        elif stall is None or stall >= left:
            self._push(end, "done", run, 0)

    def _push(self, at: float, kind: _Kind, run: int, token: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, run, kind, token))

    def next_at(self) -> float:
        return self.heap[0][0] if self.heap else math.inf


def prefix_tokens(answer: Sequence[str], prefix: str) -> int:
    """How many answer tokens `prefix` is (a continuation starts after them)."""
    if not prefix:
        return 0
    text = ""
    for i, token in enumerate(answer):
        text += token
        if len(text) >= len(prefix):
            if text != prefix:
                raise ValueError(f"prefix {prefix!r} is not a token boundary of the answer")
            return i + 1
    raise ValueError(f"prefix {prefix!r} is longer than the answer")


def replay(
    core: RequestCore,
    scripts: Mapping[str, Script],
    answer: Sequence[str],
    *,
    max_steps: int = 10_000_000,
) -> RequestReplay:
    """Run `core` to its end against `scripts`, all of them generating `answer`."""
    clock = _Clock(scripts, answer, core.prompt_tokens, core.max_tokens, core.t0)
    result = RequestReplay()
    try:
        _carry_out(core.begin(clock.now), clock, result)
        for _ in range(max_steps):
            if core.complete:
                break
            core.check_alive()
            deadline = core.deadline
            next_at = clock.next_at()
            if deadline is None and next_at == math.inf:
                raise RuntimeError("the request waits for nothing: no event and no deadline")
            if deadline is not None and deadline < next_at:
                clock.now = max(clock.now, deadline)
            else:
                at, _, run, kind, token = heapq.heappop(clock.heap)
                clock.now = max(clock.now, at)
                if not clock.live[run]:
                    continue
                out = _feed(core, clock, result, run, kind, token)
                if out:
                    _carry_out(out, clock, result)
            out = core.timer(clock.now)
            if out:
                _carry_out(out, clock, result)
        else:
            raise RuntimeError(f"no end after {max_steps} steps")
    except EndpointError as exc:
        result.error = exc
    _carry_out(core.cancel_all(), clock, result)
    core.settle(clock.now, result.stats)
    result.end_s = clock.now
    return result


def _feed(
    core: RequestCore, clock: _Clock, result: RequestReplay, run: int, kind: _Kind, token: int
) -> list[Command]:
    if kind == "delta":
        result.stats[run].output_tokens += 1
        if result.first_token_s[run] is None:
            result.first_token_s[run] = clock.now
        result.last_token_s[run] = result.stopped_s[run] = clock.now
        return core.delta(run, clock.answer[token], clock.now)
    clock.live[run] = False
    result.stopped_s[run] = clock.now
    if kind == "done":
        result.stats[run].finish_reason = "stop"
        return core.done(run, clock.now)
    role = core.streams[run].role
    return core.error(run, EndpointError(role, clock.errors[run]), clock.now)


def _carry_out(commands: list[Command], clock: _Clock, result: RequestReplay) -> None:
    for command in commands:
        if isinstance(command, StartStream):
            stats = StreamStats()
            result.stats.append(stats)
            result.first_token_s.append(None)
            result.last_token_s.append(None)
            result.stopped_s.append(clock.now)
            result.starts.append((clock.now, command))
            clock.start(command, stats)
        elif isinstance(command, CancelStream):
            if clock.live[command.run]:
                clock.live[command.run] = False
                result.cancels.append((clock.now, command.run))
                result.stopped_s[command.run] = clock.now
        elif isinstance(command, Delivery):
            result.deliveries.append((clock.now, command))
        else:
            result.events.append((clock.now, command))
