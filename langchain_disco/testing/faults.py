"""Fault switches of the loopback server: the failures a hosted streaming API really shows.

A test arms a fault (``POST /_disco/faults``) and the next ``count`` chat requests suffer it.
Faults queue in the order they were armed; each request takes at most one (the oldest armed
one), so a test can script "503, then a stall, then normal service".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(default=1, ge=1)
    """How many of the next chat requests suffer this fault."""


class ErrorStatusFault(_Fault):
    """Answer with an HTTP error status and an OpenAI-style error body, before any token."""

    kind: Literal["error_status"] = "error_status"
    status: int = Field(default=503, ge=400, le=599)


class InbandErrorFault(_Fault):
    """HTTP 200, then after `after_tokens` content tokens an SSE ``{"error": ...}`` event."""

    kind: Literal["inband_error"] = "inband_error"
    after_tokens: int = Field(default=0, ge=0)


class MalformedFault(_Fault):
    """After `after_tokens` content tokens, an SSE event whose data is not JSON; then the end."""

    kind: Literal["malformed"] = "malformed"
    after_tokens: int = Field(default=0, ge=0)


class DisconnectFault(_Fault):
    """After `after_tokens` content tokens, abort the connection (no ``[DONE]``, no end chunk)."""

    kind: Literal["disconnect"] = "disconnect"
    after_tokens: int = Field(default=0, ge=0)


class StallFault(_Fault):
    """After `after_tokens` content tokens, send nothing for `seconds`, then carry on."""

    kind: Literal["stall"] = "stall"
    after_tokens: int = Field(default=0, ge=0)
    seconds: float = Field(ge=0)


class DelayFault(_Fault):
    """Delay the first token by an extra `seconds` (on top of the latency profile)."""

    kind: Literal["delay"] = "delay"
    seconds: float = Field(ge=0)


Fault = Annotated[
    ErrorStatusFault
    | InbandErrorFault
    | MalformedFault
    | DisconnectFault
    | StallFault
    | DelayFault,
    Field(discriminator="kind"),
]
FAULT_ADAPTER: TypeAdapter[Fault] = TypeAdapter(Fault)
"""Validates a fault from JSON or a dict (``FAULT_ADAPTER.validate_python({...})``)."""

FAULT_TYPES: tuple[type[_Fault], ...] = get_args(get_args(Fault)[0])
"""Every kind of fault, in the order of `Fault` (what `disco serve --help` lists)."""

MidStreamFault = InbandErrorFault | MalformedFault | DisconnectFault | StallFault
"""The faults that strike after some content tokens have been sent."""


@dataclass
class _Armed:
    fault: Fault
    remaining: int


class FaultQueue:
    """Armed faults, oldest first, each with the number of requests it still applies to."""

    def __init__(self) -> None:
        self._armed: deque[_Armed] = deque()

    def arm(self, fault: Fault) -> None:
        """Queue `fault` for the next `fault.count` requests (after those already armed)."""
        self._armed.append(_Armed(fault, fault.count))

    def clear(self) -> None:
        """Disarm every fault."""
        self._armed.clear()

    def take(self) -> Fault | None:
        """The fault the request starting now suffers, if any; uses up one of its count."""
        if not self._armed:
            return None
        head = self._armed[0]
        head.remaining -= 1
        if head.remaining <= 0:
            self._armed.popleft()
        return head.fault

    def pending(self) -> list[dict[str, Any]]:
        """The armed faults as JSON-ready dicts, `count` being what is left of each."""
        return [{**a.fault.model_dump(), "count": a.remaining} for a in self._armed]
