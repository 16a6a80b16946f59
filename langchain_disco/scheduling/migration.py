"""Token-level migration and stall detection: pure decisions, no I/O, no clock.

Why and when an answer moves mid-stream is in docs/concepts.md (Migration, Failover).

After the first token, the engine asks a `MigrationPolicy` (once per source token) whether to move
the rest of the generation to the other endpoint. The policy sees a `MigrationView`, a snapshot
of what the engine knows, and answers `wait`, `migrate`, `probe` (eager mode, local target:
prefill the target while the source keeps streaming) or `never` (stop asking for this request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.roles import Role as Role  # re-exported: sim/ imports it here

if TYPE_CHECKING:
    from langchain_disco.scheduling.profiles import Profiles

Verdict = Literal["wait", "migrate", "probe", "never"]
Blocker = Literal[
    "cannot_continue",
    "few_remaining",
    "no_saving",
    "target_slower_than_pace",
    "buffer_below_ttft",
    "buffer_below_margin",
    "target_too_slow",
    "stall_above_bound",
]
"""The condition of `CostAwareMigration` that answered `wait` or `never`: the target cannot
continue a partial answer; too few tokens are expected to remain; no expected saving; (paced)
the target decodes slower than the pace; (paced) the buffer is below the target's predicted
TTFT itself, or covers it but not the margin and safety on top; (eager) the target decodes too
slowly next to the source; (eager, remote target) the predicted stall is above the bound."""


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
    blocked_by: Blocker | None = None
    """For `wait` and `never`, the condition that answered (None when the policy names none)."""


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
    (times `margin`, plus `safety_s`), so the consumer never waits. Eager delivery probes a
    local target (its KV cache then holds the common prefix) and moves to a remote one only
    when the predicted stall is within `eager_stall_bound_s`.
    """

    margin: float = 1.5
    safety_s: float = 0.25
    """Paced: extra buffer, in seconds of delivery, on top of margin x the predicted TTFT, for
    the error of a prediction that is small in absolute terms (a short local prefill)."""
    min_saving_usd: float = 0.0
    min_remaining_tokens: float = 8.0
    eager_stall_bound_s: float = 0.5
    eager_min_speed_ratio: float = 0.5
    """Eager only: the target must decode at least this fraction of the source's speed."""

    def decide(self, view: MigrationView) -> MigrationDecision:
        if not view.target_can_continue:
            return MigrationDecision(
                "never",
                f"{view.target} cannot continue a partial answer",
                blocked_by="cannot_continue",
            )
        remaining = view.expected_remaining_tokens
        if remaining < self.min_remaining_tokens:
            return MigrationDecision(
                "wait",
                f"only ~{remaining:.0f} tokens expected to remain",
                blocked_by="few_remaining",
            )
        context = view.prompt_tokens + view.generated_tokens
        saving = (
            remaining * (view.source_usd_per_out_token - view.target_usd_per_out_token)
            - context * view.target_usd_per_in_token
        )
        if saving <= self.min_saving_usd:
            return MigrationDecision(
                "wait", "no expected saving", saving, view.target_ttft_s, "no_saving"
            )
        if view.pace_tok_s is not None:
            if view.target_decode_tok_s < view.pace_tok_s:
                return MigrationDecision(
                    "never",
                    "target decodes slower than the delivery pace",
                    saving,
                    blocked_by="target_slower_than_pace",
                )
            needed = (view.target_ttft_s * self.margin + self.safety_s) * view.pace_tok_s
            if view.buffered_tokens < needed:
                short = view.buffered_tokens < view.target_ttft_s * view.pace_tok_s
                return MigrationDecision(
                    "wait",
                    f"buffer {view.buffered_tokens} < {needed:.1f} tokens",
                    saving,
                    blocked_by="buffer_below_ttft" if short else "buffer_below_margin",
                )
            return MigrationDecision(
                "migrate", "buffer covers the target's TTFT", saving, view.target_ttft_s
            )
        if view.target_decode_tok_s < self.eager_min_speed_ratio * view.source_decode_tok_s:
            return MigrationDecision(
                "never",
                "target decodes too slowly for eager delivery",
                blocked_by="target_too_slow",
            )
        if view.target == "local":
            return MigrationDecision(
                "probe",
                "prefill the local target while the source streams",
                saving,
                view.target_ttft_s,
            )
        if view.target_ttft_s > self.eager_stall_bound_s:
            return MigrationDecision(
                "never",
                "predicted stall above the bound",
                saving,
                blocked_by="stall_above_bound",
            )
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


# -- what the live engine and the simulator both need to build a view ------------------------


class MigrationPredictor(Protocol):
    """The predictions a `MigrationView` is built from (the engine's `EngineOptions.predictor`)."""

    def ttft_s(self, role: str, context_tokens: int) -> float: ...

    def decode_tok_s(self, role: str) -> float: ...

    def remaining_tokens(self, generated: int, max_tokens: int | None) -> float: ...


@dataclass(frozen=True)
class ProfileMigrationPredictor:
    """Migration predictions from learned `Profiles`, as the live model makes them.

    The device's TTFT is its fitted line for the whole context (queue wait not included; add
    it where a queue is known). The server's is a high quantile of its TTFT distribution
    (`remote_ttft_quantile`): a buffer sized for the mean would run dry on every slow request.
    """

    profiles: Profiles
    remote_ttft_quantile: float = 0.9

    def ttft_s(self, role: str, context_tokens: int) -> float:
        if role == "local":
            return self.profiles.device.predict_ttft_s(context_tokens)
        return self.profiles.server.quantile(self.remote_ttft_quantile, context_tokens)

    def decode_tok_s(self, role: str) -> float:
        profiles = self.profiles
        return profiles.device.decode_tok_s if role == "local" else profiles.server.decode_tok_s

    def remaining_tokens(self, generated: int, max_tokens: int | None) -> float:
        """E[length - generated | length > generated] over the learned answer lengths (their
        mean residual), bounded by `max_tokens`: what an answer already `generated` tokens long
        has left, not the mean answer minus what was produced (which reaches 0 mid-answer)."""
        return self.profiles.output_lengths.expected_remaining(generated, max_tokens)


def usd_per_token(cost_model: CostModel, kind: Role, *, output: bool) -> float:
    """What one more input or output token costs on a remote (price) or local (energy) side."""
    if kind == "remote":
        per_mtok = cost_model.price_out_per_mtok if output else cost_model.price_in_per_mtok
        return per_mtok / 1e6
    joules = (
        cost_model.energy_decode_j_per_token if output else cost_model.energy_prefill_j_per_token
    )
    return joules * cost_model.usd_per_j


@dataclass(frozen=True)
class ViewBuilder:
    """The parts of a `MigrationView` fixed for one request; `view()` adds the per-token ones.

    Built once per request (after the first token) and asked once per source token, so the
    live engine and the simulator hand a policy the same figures.
    """

    source: Role
    target: Role
    prompt_tokens: int
    max_tokens: int | None
    pace_tok_s: float | None
    target_can_continue: bool
    predictor: MigrationPredictor
    source_decode_tok_s: float
    target_decode_tok_s: float
    source_usd_per_out_token: float
    target_usd_per_out_token: float
    target_usd_per_in_token: float

    @classmethod
    def for_request(
        cls,
        *,
        source: Role,
        target: Role,
        prompt_tokens: int,
        max_tokens: int | None,
        pace_tok_s: float | None,
        target_can_continue: bool,
        predictor: MigrationPredictor,
        cost_model: CostModel,
        source_kind: Role | None = None,
        target_kind: Role | None = None,
    ) -> ViewBuilder:
        """Prices follow each side's kind (remote: money, local: energy); by default its role."""
        source_kind = source_kind or source
        target_kind = target_kind or target
        return cls(
            source=source,
            target=target,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            pace_tok_s=pace_tok_s,
            target_can_continue=target_can_continue,
            predictor=predictor,
            source_decode_tok_s=predictor.decode_tok_s(source),
            target_decode_tok_s=predictor.decode_tok_s(target),
            source_usd_per_out_token=usd_per_token(cost_model, source_kind, output=True),
            target_usd_per_out_token=usd_per_token(cost_model, target_kind, output=True),
            target_usd_per_in_token=usd_per_token(cost_model, target_kind, output=False),
        )

    def view(
        self, generated_tokens: int, buffered_tokens: int, target_queue_wait_s: float = 0.0
    ) -> MigrationView:
        """The view right after the source produced its `generated_tokens`-th token."""
        context = self.prompt_tokens + generated_tokens
        return MigrationView(
            source=self.source,
            target=self.target,
            prompt_tokens=self.prompt_tokens,
            generated_tokens=generated_tokens,
            max_tokens=self.max_tokens,
            buffered_tokens=buffered_tokens,
            pace_tok_s=self.pace_tok_s,
            target_can_continue=self.target_can_continue,
            target_ttft_s=self.predictor.ttft_s(self.target, context) + target_queue_wait_s,
            source_decode_tok_s=self.source_decode_tok_s,
            target_decode_tok_s=self.target_decode_tok_s,
            expected_remaining_tokens=self.predictor.remaining_tokens(
                generated_tokens, self.max_tokens
            ),
            source_usd_per_out_token=self.source_usd_per_out_token,
            target_usd_per_out_token=self.target_usd_per_out_token,
            target_usd_per_in_token=self.target_usd_per_in_token,
        )
