"""Token-level migration and stall detection (DESIGN section 4): pure decisions, no I/O, no clock.

After the first token, the engine asks a `MigrationPolicy` (once per source token) whether to move
the rest of the generation to the other endpoint. The policy sees a `MigrationView`, a snapshot
of what the engine knows, and answers `wait`, `migrate`, `probe` (eager mode, local target:
prefill the target while the source keeps streaming) or `never` (stop asking for this request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["local", "remote"]
Verdict = Literal["wait", "migrate", "probe", "never"]


@dataclass(frozen=True)
class MigrationView:
    """What the engine knows when it asks, right after the source produced a token."""

    source: Role
    target: Role
    prompt_tokens: int
    generated_tokens: int
    max_tokens: int | None
    buffered_tokens: int
    """Generated but not yet delivered (paced delivery); 0 when eager."""
    pace_tok_s: float | None
    """Delivery pace; None means eager delivery (as fast as generated)."""
    target_can_continue: bool
    target_ttft_s: float
    """Predicted TTFT of the target for prompt + generated text (re-prefill, queue included)."""
    source_decode_tok_s: float
    target_decode_tok_s: float
    expected_remaining_tokens: float
    source_usd_per_out_token: float
    target_usd_per_out_token: float
    target_usd_per_in_token: float


@dataclass(frozen=True)
class MigrationDecision:
    """The policy's answer, with the figures behind it (they go into the report)."""

    verdict: Verdict
    reason: str
    expected_saving_usd: float = 0.0
    predicted_target_ttft_s: float = 0.0


class MigrationPolicy(Protocol):
    """Decides, token by token, whether to move generation to the other endpoint."""

    def decide(self, view: MigrationView) -> MigrationDecision: ...


@dataclass(frozen=True)
class NoMigration:
    """Never migrate on purpose (failover still happens on faults)."""

    def decide(self, view: MigrationView) -> MigrationDecision:
        return MigrationDecision("never", "migration off")


@dataclass(frozen=True)
class CostAwareMigration:
    """Migrate when the expected saving beats the target's re-prefill cost and it keeps pace.

    saving = remaining x (source cost per output token - target's) - target re-prefill cost.
    Paced delivery migrates once the undelivered buffer covers the target's predicted TTFT
    (times `margin`), so the consumer never waits. Eager delivery probes a local target (its
    KV cache then holds the common prefix) and moves to a remote one only when the predicted
    stall is within `eager_stall_bound_s`.
    """

    margin: float = 1.5
    min_saving_usd: float = 0.0
    min_remaining_tokens: float = 8.0
    eager_stall_bound_s: float = 0.5
    eager_min_speed_ratio: float = 0.5
    """Eager only: the target must decode at least this fraction of the source's speed."""

    def decide(self, view: MigrationView) -> MigrationDecision:
        if not view.target_can_continue:
            return MigrationDecision("never", f"{view.target} cannot continue a partial answer")
        remaining = view.expected_remaining_tokens
        if remaining < self.min_remaining_tokens:
            return MigrationDecision("wait", f"only ~{remaining:.0f} tokens expected to remain")
        context = view.prompt_tokens + view.generated_tokens
        saving = (
            remaining * (view.source_usd_per_out_token - view.target_usd_per_out_token)
            - context * view.target_usd_per_in_token
        )
        if saving <= self.min_saving_usd:
            return MigrationDecision("wait", "no expected saving", saving, view.target_ttft_s)
        if view.pace_tok_s is not None:
            if view.target_decode_tok_s < view.pace_tok_s:
                return MigrationDecision(
                    "never", "target decodes slower than the delivery pace", saving
                )
            needed = view.target_ttft_s * view.pace_tok_s * self.margin
            if view.buffered_tokens < needed:
                return MigrationDecision(
                    "wait", f"buffer {view.buffered_tokens} < {needed:.1f} tokens", saving
                )
            return MigrationDecision(
                "migrate", "buffer covers the target's TTFT", saving, view.target_ttft_s
            )
        if view.target_decode_tok_s < self.eager_min_speed_ratio * view.source_decode_tok_s:
            return MigrationDecision("never", "target decodes too slowly for eager delivery")
        if view.target == "local":
            return MigrationDecision(
                "probe",
                "prefill the local target while the source streams",
                saving,
                view.target_ttft_s,
            )
        if view.target_ttft_s > self.eager_stall_bound_s:
            return MigrationDecision("never", "predicted stall above the bound", saving)
        return MigrationDecision("migrate", "predicted stall within the bound", saving)


@dataclass
class StallDetector:
    """How long a silence mid-stream means "stalled", learned from each endpoint's gaps.

    threshold = max(floor_s, factor x EWMA of the gaps between tokens), so a slow but steady
    endpoint is not declared stalled and a fast one is caught quickly.
    """

    floor_s: float = 2.0
    factor: float = 10.0
    alpha: float = 0.05
    _ewma_gap_s: dict[str, float] = field(default_factory=dict)

    def observe_gap(self, endpoint: str, gap_s: float) -> None:
        if not math.isfinite(gap_s) or gap_s < 0:
            return
        prev = self._ewma_gap_s.get(endpoint)
        self._ewma_gap_s[endpoint] = gap_s if prev is None else prev + self.alpha * (gap_s - prev)

    def threshold_s(self, endpoint: str) -> float:
        gap = self._ewma_gap_s.get(endpoint)
        return self.floor_s if gap is None else max(self.floor_s, self.factor * gap)


def expected_remaining_tokens(
    generated: int, max_tokens: int | None, mean_output_tokens: float
) -> float:
    """A simple remaining-length estimate: the mean answer length, at least a little more than
    what was already generated, bounded by `max_tokens`."""
    total = max(mean_output_tokens, generated * 1.25 + 1)
    if max_tokens is not None:
        total = min(total, float(max_tokens))
    return max(0.0, total - generated)
