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

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    Protocol,
    TypeVar,
    overload,
    runtime_checkable,
)

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
    local_cached_tokens: int = 0
    """Of `prompt_tokens`, those the device holds in its KV cache (an earlier turn's prefix):
    its prefill evaluates only the rest (`device_prompt_tokens`)."""
    remote_cached_tokens: int = 0
    """Of `prompt_tokens`, those the provider is expected to read from its prompt cache (a
    prefix it was sent recently, times the hit rate it has reported): billed at the
    cached-input price, and its TTFT drawn from what warm requests took."""

    @property
    def device_prompt_tokens(self) -> int:
        """The prompt tokens the device would evaluate: those it has not cached (at least one,
        the last, which llama.cpp always evaluates)."""
        cached = self.local_cached_tokens
        return max(self.prompt_tokens - cached, 1) if cached > 0 else self.prompt_tokens

    @classmethod
    def of(
        cls,
        prompt_tokens: int,
        max_tokens: int | None,
        local_queue: int,
        local_queue_wait_s: float,
        expected_output_tokens: float | None = None,
        local_cached_tokens: int = 0,
        remote_cached_tokens: int = 0,
    ) -> RequestFeatures:
        """The same as the constructor, faster (see `_frozen`): for a replay's every request."""
        return _frozen(
            cls,
            *(prompt_tokens, max_tokens, local_queue, local_queue_wait_s),
            *(expected_output_tokens, local_cached_tokens, remote_cached_tokens),
        )


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


_T = TypeVar("_T")


class _derived(Generic[_T]):
    """A figure derived from a frozen plan's fields, kept in the instance (as
    `functools.cached_property` does, without its lock). `Plan.__post_init__` sets them all;
    this computes one for an instance built without it (e.g. unpickled from an older copy)."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _derived[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _derived[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


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
        # The derived figures, while the starts are at hand (each endpoint starts once).
        local_at_s = remote_at_s = None
        for start in self.starts:
            if start.endpoint == "local":
                local_at_s = start.at_s
            elif start.endpoint == "remote":
                remote_at_s = start.at_s
        derived = self.__dict__
        derived["endpoints"] = tuple(roles)
        derived["local_at_s"] = local_at_s
        derived["remote_at_s"] = remote_at_s

    @_derived
    def endpoints(self) -> tuple[Role, ...]:
        """The endpoints the plan starts, in start order."""
        return tuple(s.endpoint for s in self.starts)

    def _offset(self, endpoint: Role) -> float | None:
        return next((s.at_s for s in self.starts if s.endpoint == endpoint), None)

    def offset(self, endpoint: Role) -> float | None:
        """When `endpoint` is planned to start (`None`: never)."""
        if endpoint == "local":
            return self.local_at_s
        if endpoint == "remote":
            return self.remote_at_s
        return self._offset(endpoint)

    @_derived
    def local_at_s(self) -> float | None:
        """When the device starts, in seconds after arrival (`None`: it never starts)."""
        return self._offset("local")

    @_derived
    def remote_at_s(self) -> float | None:
        """When the server starts, in seconds after arrival (`None`: it never starts)."""
        return self._offset("remote")

    def because(self, reason: str, expected: tuple[ActionEstimate, ...] = ()) -> Plan:
        """This plan, chosen for `reason` (with the estimates behind the choice)."""
        if type(self) is not Plan:
            return replace(self, reason=reason, expected=expected)
        # `replace` without re-checking the starts this plan was built (and checked) with; the
        # figures derived from them come along.
        plan = object.__new__(Plan)
        state = plan.__dict__
        state.update(self.__dict__)
        state["reason"] = reason
        state["expected"] = expected
        return plan

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
    cached_input_tokens: int = 0
    """Of `input_tokens`, those the endpoint read from its cache instead of evaluating (a
    device's KV cache, a provider's prompt cache)."""

    @classmethod
    def of(
        cls,
        endpoint: Role,
        started_s: float,
        first_token_s: float | None,
        ended_s: float | None,
        queue_wait_s: float,
        input_tokens: int,
        output_tokens: int,
        decode_tok_s: float | None,
        failed: bool,
        cached_input_tokens: int = 0,
    ) -> EndpointOutcome:
        """The same as the constructor, faster (see `_frozen`)."""
        return _frozen(
            cls,
            *(endpoint, started_s, first_token_s, ended_s, queue_wait_s),
            *(input_tokens, output_tokens, decode_tok_s, failed, cached_input_tokens),
        )


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

    @classmethod
    def of(
        cls,
        request: RequestFeatures,
        plan: Plan,
        endpoints: tuple[EndpointOutcome, ...],
        winner: Role | None,
        ttft_s: float | None,
        output_tokens: int,
        cost: Cost,
        chosen: Plan | None = None,
    ) -> RequestOutcome:
        """The same as the constructor, faster (see `_frozen`)."""
        return _frozen(cls, request, plan, endpoints, winner, ttft_s, output_tokens, cost, chosen)


_F = TypeVar("_F")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _frozen(cls: type[_F], *values: Any) -> _F:
    """The instance of frozen dataclass `cls` whose fields are `values` (all of them, in field
    order): what its `__init__` builds, without one `object.__setattr__` per field. For the
    records built per request (`of`), whose classes have no `__post_init__`."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", dict(zip(_field_names(cls), values, strict=True)))
    return obj


def _check_of(cls: type[RequestFeatures | EndpointOutcome | RequestOutcome]) -> None:
    """Fail at import if `cls.of` no longer takes exactly its class's fields, in order."""
    if tuple(inspect.signature(cls.of).parameters) != _field_names(cls):
        raise TypeError(f"{cls.__name__}.of must take the fields {_field_names(cls)}")


for _cls in (RequestFeatures, EndpointOutcome, RequestOutcome):
    _check_of(_cls)


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
