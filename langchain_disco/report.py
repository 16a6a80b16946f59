"""Per-request metrics: TTFT, TBT gaps, stalls, tokens per endpoint, cost.

What each one measures, and why: docs/concepts.md (Metrics; billing in "What is billed").
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from langchain_disco.scheduling.cost import Cost
from langchain_disco.scheduling.dispatch import (
    EndpointOutcome,
    Plan,
    RequestFeatures,
    RequestOutcome,
)
from langchain_disco.scheduling.roles import Role

Outcome = Literal["pending", "won", "completed", "cancelled", "migrated", "failed", "not_started"]
"""What became of an endpoint in one request: `won` the race (still streaming), `completed`
the answer, was `cancelled` (lost the race, or stopped early), `migrated` away, `failed`."""


@dataclass
class EndpointRun:
    """What one endpoint did for one request. Times are seconds since the request arrived."""

    name: str
    kind: str
    model: str
    outcome: Outcome = "pending"
    started_s: float | None = None
    first_token_s: float | None = None
    ended_s: float | None = None
    input_tokens: int = 0
    """Input tokens billed: a remote request's prompt once per attempt the provider accepted
    (or may have started), none for one rejected with an HTTP error status or never connected;
    a local run's prefill. See docs/concepts.md, "What is billed"."""
    output_tokens: int = 0
    """Output tokens produced, all billed (a cancelled or failed stream's included)."""
    attempted_input_tokens: int = 0
    """Input tokens sent, once per attempt, billed or not (equal to `input_tokens` locally)."""
    delivered_chunks: int = 0
    usage_reported: bool = False
    queue_wait_s: float = 0.0
    attempts: int = 0
    finish_reason: str | None = None
    cached_input_tokens: int = 0
    """Of `input_tokens`, those the provider read from its prompt cache (reported by it)."""
    reasoning_tokens: int = 0
    """Of `output_tokens`, the reasoning tokens the provider reported."""
    response_id: str | None = None
    """The provider's id of the response (the last attempt's)."""
    system_fingerprint: str | None = None
    logprobs: list[dict[str, Any]] | None = None
    """Token log-probabilities, when the request asked for them (the final chunk's
    ``response_metadata["logprobs"]`` carries them; the report's dict leaves them out)."""
    continuation: str | None = None
    """How this endpoint continues a partial answer, and how that is known (a remote's
    configured or probed verdict, e.g. ``"continues as llamacpp, echoes the prefix (probed)"``)."""
    prefix_echoed: bool | None = None
    """For a continuation run: whether the server streamed the prefix back (it was stripped)."""
    error: str | None = None


@dataclass
class RequestReport:
    """Everything measured about one request; attached to the last chunk of its stream."""

    action: str
    reason: str
    winner: Role | None = None
    """The endpoint whose first content token won the race (None after a failover that
    happened before any first token)."""
    finished_by: Role | None = None
    """The endpoint that finished the answer: the winner, or the last failover or migration
    target; its finish reason and model are the answer's. None if the answer did not finish."""
    ttft_s: float | None = None
    total_s: float | None = None
    tbt_gaps_s: list[float] = field(default_factory=list)
    endpoints: dict[Role, EndpointRun] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    events: list[dict[str, Any]] = field(default_factory=list)
    local_queue: int = 0
    """Generations queued or running on the device when this request was dispatched."""
    expected: list[dict[str, Any]] = field(default_factory=list)
    """The policy's estimates (TTFT, cost) of the chosen action and of the runner-up."""
    prompt_tokens: int = 0
    """The prompt's size as dispatch estimated it (each endpoint counts its own tokens)."""
    expected_cached_tokens: dict[Role, int] = field(default_factory=dict)
    """Of the prompt (on the request's token scale), what dispatch expected each side to
    read from its cache: the device's KV state, the provider's prompt cache. What each
    endpoint then reported is its run's `cached_input_tokens`."""
    state: dict[str, str] = field(default_factory=dict)
    """With `DISCO_STATE_URL`, which state this request was decided from, per shared part:
    ``{"budget": "fleet", "profiles": "fleet"}``, or ``"local"`` for a part whose store was
    unreachable (this worker's own). Empty without a shared store."""

    @classmethod
    def for_plan(cls, plan: Plan, *, local_queue: int = 0) -> RequestReport:
        """A new report for a request about to run `plan`, with the policy's estimates (the
        chosen action's and the runner-up's)."""
        expected = [
            {"action": e.action, "ttft_s": e.ttft_s, "cost": asdict(e.cost), "score": e.score}
            for e in plan.expected[:2]
        ]
        return cls(plan.action, plan.reason, local_queue=local_queue, expected=expected)

    @property
    def max_stall_s(self) -> float:
        """The largest gap between two delivered chunks (0 with fewer than two)."""
        return max(self.tbt_gaps_s, default=0.0)

    @property
    def mean_tbt_s(self) -> float:
        return sum(self.tbt_gaps_s) / len(self.tbt_gaps_s) if self.tbt_gaps_s else 0.0

    @property
    def input_tokens(self) -> int:
        """Input tokens billed over all endpoints, the cancelled ones included."""
        return sum(r.input_tokens for r in self.endpoints.values() if r.started_s is not None)

    @property
    def attempted_input_tokens(self) -> int:
        """Input tokens sent over all endpoints and attempts, billed or not."""
        return sum(
            r.attempted_input_tokens for r in self.endpoints.values() if r.started_s is not None
        )

    @property
    def output_tokens(self) -> int:
        """Output tokens produced (and billed) over all endpoints, the cancelled ones included."""
        return sum(r.output_tokens for r in self.endpoints.values() if r.started_s is not None)

    @property
    def cached_input_tokens(self) -> int:
        """Of the billed input tokens, those providers read from their prompt caches."""
        return sum(r.cached_input_tokens for r in self.endpoints.values())

    @property
    def reasoning_tokens(self) -> int:
        """Of the output tokens, the reasoning tokens providers reported."""
        return sum(r.reasoning_tokens for r in self.endpoints.values())

    @property
    def logprobs(self) -> list[dict[str, Any]] | None:
        """The answer's token log-probabilities (from the endpoint that finished it)."""
        run = self.finisher
        return run.logprobs if run is not None else None

    @property
    def finisher(self) -> EndpointRun | None:
        """The row of the endpoint that finished the answer (None if it did not finish)."""
        return self.endpoints.get(self.finished_by) if self.finished_by is not None else None

    def outcome(self, request: RequestFeatures, plan: Plan) -> RequestOutcome:
        """This report in the learners' terms (times since arrival): what each endpoint of
        `plan` (the plan executed) showed. The one place a request's outcome is derived, for
        live requests and simulated ones alike."""
        endpoints = []
        # A migration or failover target's first token is a continuation's, not a dispatch
        # TTFT: it must not be learned as one (a raced-then-cancelled device would look slow).
        taken_over: Collection[str] = (
            {e["to"] for e in self.events if e.get("event") in ("migration", "failover")}
            if self.events
            else ()
        )
        planned = plan.endpoints
        delivered = 0
        for role, run in self.endpoints.items():
            delivered += run.delivered_chunks
            if run.started_s is None or role not in planned:
                continue
            first_token_s = None if role in taken_over else run.first_token_s
            endpoints.append(
                EndpointOutcome.of(
                    role,
                    run.started_s,
                    first_token_s,
                    run.ended_s,
                    run.queue_wait_s,
                    run.input_tokens,
                    run.output_tokens,
                    _decode_tok_s(run, first_token_s),
                    run.outcome == "failed",
                    run.cached_input_tokens,
                )
            )
        return RequestOutcome.of(
            request, plan, tuple(endpoints), self.winner, self.ttft_s, delivered, self.cost
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with the derived figures included (log-probabilities left out:
        they travel as the answer's ``response_metadata["logprobs"]``)."""
        # Field by field rather than `dataclasses.asdict`, which deep-copies every value one
        # call at a time (every gap between tokens included): the same dict, built once per
        # request on the stream's last chunk, for a fraction of the CPU.
        data: dict[str, Any] = {name: getattr(self, name) for name in _REPORT_FIELDS}
        data["tbt_gaps_s"] = list(self.tbt_gaps_s)
        data["endpoints"] = {
            role: {name: getattr(run, name) for name in _RUN_FIELDS}
            for role, run in self.endpoints.items()
        }
        data["cost"] = asdict(self.cost)
        data["events"] = copy.deepcopy(self.events)
        data["expected"] = copy.deepcopy(self.expected)
        data["expected_cached_tokens"] = dict(self.expected_cached_tokens)
        data["state"] = dict(self.state)
        data["max_stall_s"] = self.max_stall_s
        data["mean_tbt_s"] = self.mean_tbt_s
        data["input_tokens"] = self.input_tokens
        data["attempted_input_tokens"] = self.attempted_input_tokens
        data["output_tokens"] = self.output_tokens
        data["cached_input_tokens"] = self.cached_input_tokens
        data["reasoning_tokens"] = self.reasoning_tokens
        data["tokens_per_endpoint"] = {
            name: run.output_tokens for name, run in self.endpoints.items()
        }
        return data


_REPORT_FIELDS = tuple(f.name for f in fields(RequestReport))
# A run's fields are all scalars once its log-probabilities are left out (`to_dict`).
_RUN_FIELDS = tuple(f.name for f in fields(EndpointRun) if f.name != "logprobs")


def _decode_tok_s(run: EndpointRun, first_token_s: float | None) -> float | None:
    """The decode rate a run showed from its first token to its end (None: too short)."""
    if first_token_s is None or run.ended_s is None or run.output_tokens <= 1:
        return None
    span = run.ended_s - first_token_s
    return (run.output_tokens - 1) / span if span > 0 else None
