"""What the engine core and its drivers say to each other: the commands it returns, and what
the consumer receives (`Delivery`, `EngineEvent`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_disco.scheduling.roles import Role

if TYPE_CHECKING:
    from langchain_disco.endpoints.base import ToolCallChunk

Purpose = Literal["dispatch", "failover", "migration", "probe"]


@dataclass(frozen=True)
class Delivery:
    """A piece of text (or of a tool call) delivered to the consumer, and who produced it."""

    text: str
    endpoint: str
    tool_call: ToolCallChunk | None = None
    stream: int = 0
    """Which of the request's streams produced it (0: the first started)."""


@dataclass(frozen=True)
class EngineEvent:
    """Something the consumer may want to know about: a migration or a failover."""

    name: str
    data: dict[str, Any]


@dataclass(frozen=True)
class StartStream:
    """Start stream `run` on endpoint `role`, continuing after `prefix`.

    `max_tokens` None keeps the request's own cap. `approximate_prompt` set: the endpoint
    cannot continue exactly, so send the messages plus this user turn instead of a prefix.
    """

    run: int
    role: Role
    purpose: Purpose
    prefix: str = ""
    max_tokens: int | None = None
    approximate_prompt: str | None = None


@dataclass(frozen=True)
class CancelStream:
    """Stop stream `run` (it lost the race, was migrated away, or stalled)."""

    run: int


Command = StartStream | CancelStream | Delivery | EngineEvent
