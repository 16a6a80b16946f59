"""Dispatch: which endpoint starts generation, and when. A policy decides; the engine acts.

A `Plan` is a list of starts, each at an offset from the request's arrival. A start with a
positive offset is a *hedge*: it only happens if no content token has arrived by then. The
first endpoint to produce a content token wins; every other one is cancelled at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Role = Literal["local", "remote"]
Mode = Literal["local", "remote", "race"]
MODES: tuple[Mode, ...] = ("local", "remote", "race")


@dataclass(frozen=True)
class RequestFeatures:
    """What a policy may know about a request before it starts."""

    prompt_tokens: int
    max_tokens: int | None = None
    local_queue: int = 0
    """Generations already queued or running on the local model."""


@dataclass(frozen=True)
class Start:
    """Start `endpoint` at `at_s` seconds after arrival, unless a token arrived before."""

    endpoint: Role
    at_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    """Which endpoints start when, with the policy's name for the action and its reason."""

    starts: tuple[Start, ...]
    action: str
    reason: str = ""

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


@runtime_checkable
class DispatchPolicy(Protocol):
    """Turns what is known about a request into a plan. Pure: no I/O, no clock."""

    @property
    def name(self) -> str: ...

    def plan(self, request: RequestFeatures) -> Plan: ...


@dataclass(frozen=True)
class LocalOnly:
    """Baseline: everything on the device."""

    name: str = "local"

    def plan(self, request: RequestFeatures) -> Plan:
        return Plan((Start("local"),), action="local", reason="mode=local")


@dataclass(frozen=True)
class RemoteOnly:
    """Baseline: everything on the server."""

    name: str = "remote"

    def plan(self, request: RequestFeatures) -> Plan:
        return Plan((Start("remote"),), action="remote", reason="mode=remote")


@dataclass(frozen=True)
class Race:
    """Baseline: both start at t=0; the first content token wins, the loser is cancelled."""

    name: str = "race"

    def plan(self, request: RequestFeatures) -> Plan:
        return Plan((Start("local"), Start("remote")), action="race", reason="mode=race")


def policy_for_mode(mode: Mode) -> DispatchPolicy:
    """The baseline policy behind each `DISCO_MODE` value."""
    policies: dict[str, DispatchPolicy] = {
        "local": LocalOnly(),
        "remote": RemoteOnly(),
        "race": Race(),
    }
    return policies[mode]
