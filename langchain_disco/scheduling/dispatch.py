"""Dispatch: which endpoint starts generation, and when. A policy decides; the engine acts.

A `Plan` is a list of starts, each at an offset from the request's arrival. A start with a
positive offset is a *hedge*: it only happens if no content token has arrived by then. The
first endpoint to produce a content token wins; every other one is cancelled at once.

The seam, used identically by the live model and the simulator::

    plan = policy.plan(features, ctx)      # before the request starts
    ...                                    # the engine (or the simulator) executes the plan
    ctx.profiles.observe(outcome)          # what the endpoints showed
    policy.observe(outcome)                # budget feedback: what the request cost

The budgeted policies live in `policies.py`; this module holds the seam and the baselines.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.roles import Role

if TYPE_CHECKING:
    from langchain_disco.scheduling.profiles import Profiles

Mode = Literal["local", "remote", "race"]
MODES: tuple[Mode, ...] = ("local", "remote", "race")


@dataclass(frozen=True)
class RequestFeatures:
    """What a policy may know about a request before it starts."""

    prompt_tokens: int
    max_tokens: int | None = None
    local_queue: int = 0
    """Generations already queued or running on the local model."""
    local_queue_wait_s: float = 0.0
    """Predicted wait before the local model could begin this request's prefill."""
    expected_output_tokens: float | None = None
    """Predicted answer length; `None` lets a policy ask the output-length profile."""


@dataclass(frozen=True)
class Start:
    """Start `endpoint` at `at_s` seconds after arrival, unless a token arrived before."""

    endpoint: Role
    at_s: float = 0.0


@dataclass(frozen=True)
class ActionEstimate:
    """A policy's expectation for one candidate action: TTFT, cost, and its objective value."""

    action: str
    ttft_s: float
    cost: Cost
    starts: tuple[Start, ...] = ()
    score: float | None = None
    """The policy's objective (lower is better), when it ranks actions by one."""


@dataclass(frozen=True)
class Plan:
    """Which endpoints start when, with the policy's name for the action and its reason.

    `expected` lists the chosen action's estimate first and, when the policy weighed
    alternatives, the runner-up next, so a report can say why this action was chosen.
    """

    starts: tuple[Start, ...]
    action: str
    reason: str = ""
    expected: tuple[ActionEstimate, ...] = ()

    def __post_init__(self) -> None:
        if not self.starts:
            raise ValueError("a plan must start at least one endpoint")
        roles = [s.endpoint for s in self.starts]
        if len(set(roles)) != len(roles):
            raise ValueError(f"a plan starts each endpoint at most once, got {roles}")
        if any(s.at_s < 0 for s in self.starts):
            raise ValueError("start offsets must be >= 0")

    @property
    def endpoints(self) -> tuple[Role, ...]:
        return tuple(s.endpoint for s in self.starts)

    def offset(self, endpoint: Role) -> float | None:
        """When `endpoint` is planned to start (`None`: never)."""
        return next((s.at_s for s in self.starts if s.endpoint == endpoint), None)

    @functools.cached_property
    def local_at_s(self) -> float | None:
        """When the device starts, in seconds after arrival (`None`: it never starts)."""
        return self.offset("local")

    @functools.cached_property
    def remote_at_s(self) -> float | None:
        """When the server starts, in seconds after arrival (`None`: it never starts)."""
        return self.offset("remote")

    def because(self, reason: str, expected: tuple[ActionEstimate, ...] = ()) -> Plan:
        """This plan, chosen for `reason` (with the estimates behind the choice)."""
        return replace(self, reason=reason, expected=expected)

    @classmethod
    def at(cls, action: str, local_at_s: float | None, remote_at_s: float | None) -> Plan:
        """The plan named `action` starting each endpoint at its offset (`None`: never),
        earliest first."""
        starts = [Start("local", local_at_s)] if local_at_s is not None else []
        if remote_at_s is not None:
            starts.append(Start("remote", remote_at_s))
        return cls(tuple(sorted(starts, key=lambda s: s.at_s)), action=action)


@dataclass
class DispatchContext:
    """What a policy consults besides the request: learned profiles and the cost model."""

    profiles: Profiles
    cost_model: CostModel = field(default_factory=CostModel)


@dataclass(frozen=True)
class EndpointOutcome:
    """What one started endpoint did for one request. Times are seconds since arrival."""

    endpoint: Role
    started_s: float
    first_token_s: float | None
    """Its first content token (`None`: cancelled or failed before one)."""
    ended_s: float | None
    """When it stopped: finished, cancelled or failed."""
    queue_wait_s: float = 0.0
    """Local only: how long it waited behind other generations before its prefill began."""
    input_tokens: int = 0
    output_tokens: int = 0
    decode_tok_s: float | None = None
    failed: bool = False


@dataclass(frozen=True)
class RequestOutcome:
    """Feedback after a request: who started, who won, what it cost, what it showed."""

    request: RequestFeatures
    plan: Plan
    """The plan the engine executed (what the profiles learn from)."""
    endpoints: tuple[EndpointOutcome, ...]
    winner: Role | None
    ttft_s: float | None
    output_tokens: int
    """Length of the delivered answer."""
    cost: Cost
    chosen: Plan | None = None
    """The policy's own plan object, when the engine executed another (an endpoint that could
    not serve the request was dropped): the key its spend accounting committed under."""


@runtime_checkable
class DispatchPolicy(Protocol):
    """Turns what is known about a request into a plan. Pure: no I/O, no clock."""

    @property
    def name(self) -> str: ...

    def plan(self, request: RequestFeatures, ctx: DispatchContext) -> Plan: ...

    def observe(self, outcome: RequestOutcome) -> None: ...


@dataclass(frozen=True)
class LocalOnly:
    """Baseline: everything on the device."""

    name: str = "local"

    def plan(self, request: RequestFeatures, ctx: DispatchContext | None = None) -> Plan:
        return Plan((Start("local"),), action="local", reason="mode=local")

    def observe(self, outcome: RequestOutcome) -> None:
        return None


@dataclass(frozen=True)
class RemoteOnly:
    """Baseline: everything on the server."""

    name: str = "remote"

    def plan(self, request: RequestFeatures, ctx: DispatchContext | None = None) -> Plan:
        return Plan((Start("remote"),), action="remote", reason="mode=remote")

    def observe(self, outcome: RequestOutcome) -> None:
        return None


@dataclass(frozen=True)
class Race:
    """Baseline: both start at t=0; the first content token wins, the loser is cancelled."""

    name: str = "race"

    def plan(self, request: RequestFeatures, ctx: DispatchContext | None = None) -> Plan:
        return Plan((Start("local"), Start("remote")), action="race", reason="mode=race")

    def observe(self, outcome: RequestOutcome) -> None:
        return None


def policy_for_mode(mode: Mode) -> DispatchPolicy:
    """The baseline policy behind each `DISCO_MODE` value."""
    policies: dict[str, DispatchPolicy] = {
        "local": LocalOnly(),
        "remote": RemoteOnly(),
        "race": Race(),
    }
    return policies[mode]
