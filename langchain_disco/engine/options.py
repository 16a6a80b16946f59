"""How the engine runs requests: options shared by every request of one model, and what the
core is told about each endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from langchain_disco.scheduling.migration import (
    MigrationPolicy,
    MigrationPredictor,
    NoMigration,
    StallDetector,
    expected_remaining_tokens,
)
from langchain_disco.scheduling.roles import Role


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

    def p_first_within(self, role: str, context_tokens: int, seconds: float) -> float:
        return 1.0 if self.ttft_s(role, context_tokens) <= seconds else 0.0

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
    predictor: MigrationPredictor = field(default_factory=StaticPredictor)


@dataclass(frozen=True)
class EndpointInfo:
    """What the core needs to know of one endpoint for one request."""

    kind: Role
    """``"local"`` (energy) or ``"remote"`` (money): how its work is priced."""
    model: str
    exact_continuation: bool
    serves: bool = True
    """It can serve this request (tools, structured output): a migration or failover target."""
    queue_wait_s: float = 0.0
    """Its predicted queue wait when the request arrived (a busy device); drains with time."""
