"""The engine core on scripted endpoints and virtual time: every behaviour, in milliseconds.

Each test builds one `RequestCore` and runs it with `sim.virtual.replay` (the simulator's driver
of the same core), or feeds it events by hand where a script cannot say it (tool calls). The
invariant checked throughout: the delivered text is the answer, exactly once, in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from langchain_disco.endpoints.base import StreamStats, ToolCallChunk
from langchain_disco.engine import (
    CancelStream,
    EndpointInfo,
    EngineOptions,
    RequestCore,
    StartStream,
    StaticPredictor,
)
from langchain_disco.errors import AllEndpointsFailedError, EndpointError
from langchain_disco.report import RequestReport
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan, Start
from langchain_disco.scheduling.migration import (
    CostAwareMigration,
    MigrationDecision,
    MigrationView,
)
from langchain_disco.sim.virtual import Behaviour, RequestReplay, replay

ANSWER = [f"w{i} " for i in range(40)]
TEXT = "".join(ANSWER)
RACE = Plan((Start("local"), Start("remote")), action="race")
LOCAL = Plan((Start("local"),), action="local")
REMOTE = Plan((Start("remote"),), action="remote")
INFOS = {
    "local": EndpointInfo("local", "gemma", exact_continuation=True),
    "remote": EndpointInfo("remote", "gpt", exact_continuation=True),
}


def core(
    plan: Plan,
    options: EngineOptions | None = None,
    *,
    infos: Mapping[str, EndpointInfo] = INFOS,
    max_tokens: int | None = None,
    cost_model: CostModel | None = None,
) -> RequestCore:
    return RequestCore(
        plan,
        infos,
        options or EngineOptions(),
        cost_model or CostModel(),
        RequestReport(action=plan.action, reason=""),
        prompt_tokens=100,
        max_tokens=max_tokens,
        now=0.0,
    )


def run(request: RequestCore, **behaviours: Behaviour) -> RequestReplay:
    return replay(request, behaviours, ANSWER)


def producers(result: RequestReplay) -> list[str]:
    """Who produced each delivered piece, run-length encoded."""
    seq: list[str] = []
    for _, delivery in result.deliveries:
        if not seq or seq[-1] != delivery.endpoint:
            seq.append(delivery.endpoint)
    return seq


def event_names(result: RequestReplay) -> list[str]:
    return [e.name for _, e in result.events]


# -- race and hedge ----------------------------------------------------------------------------


def test_the_first_token_wins_the_race_and_the_loser_is_cancelled_then() -> None:
    request = core(RACE)
    result = run(request, local=Behaviour(0.5, 0.02), remote=Behaviour(0.2, 0.01))
    assert result.text == TEXT
    assert request.report.winner == "remote"
    assert request.report.ttft_s == pytest.approx(0.2)
    assert result.cancels == [(pytest.approx(0.2), 0)]
    assert request.report.endpoints["local"].outcome == "cancelled"
    assert request.report.endpoints["remote"].outcome == "completed"
    assert result.stats[0].output_tokens == 0  # the device never produced a token


def test_a_hedge_that_has_not_fallen_due_when_a_stream_wins_is_never_started() -> None:
    plan = Plan((Start("local"), Start("remote", at_s=1.0)), action="hedge")
    request = core(plan)
    result = run(request, local=Behaviour(0.3, 0.01), remote=Behaviour(0.1, 0.01))
    assert [s.role for _, s in result.starts] == ["local"]
    assert request.report.endpoints["remote"].outcome == "not_started"
    assert result.text == TEXT


def test_a_hedge_starts_at_its_offset_while_no_stream_has_produced() -> None:
    plan = Plan((Start("local"), Start("remote", at_s=1.0)), action="hedge")
    request = core(plan)
    result = run(request, local=Behaviour(3.0, 0.01), remote=Behaviour(0.5, 0.01))
    assert [(round(t, 6), s.role) for t, s in result.starts] == [(0.0, "local"), (1.0, "remote")]
    assert request.report.winner == "remote"
    assert request.report.ttft_s == pytest.approx(1.5)


def test_everything_started_failing_before_a_token_starts_the_hedge_at_once() -> None:
    plan = Plan((Start("local"), Start("remote", at_s=5.0)), action="hedge")
    request = core(plan)
    result = run(request, local=Behaviour(0.2, 0.01, fail_after=0), remote=Behaviour(0.3, 0.01))
    assert [(round(t, 6), s.role) for t, s in result.starts] == [(0.0, "local"), (0.2, "remote")]
    assert result.text == TEXT


# -- paced delivery ----------------------------------------------------------------------------


def test_paced_delivery_releases_the_first_token_at_once_then_one_per_step() -> None:
    request = core(REMOTE, EngineOptions(pace_tok_s=10.0))
    result = run(request, remote=Behaviour(0.2, 0.01))
    times = [t for t, _ in result.deliveries]
    assert times[0] == pytest.approx(0.2)
    assert request.report.tbt_gaps_s == pytest.approx([0.1] * (len(ANSWER) - 1))
    assert result.text == TEXT
    assert result.end_s == pytest.approx(0.2 + 0.1 * (len(ANSWER) - 1))


def test_paced_delivery_never_releases_a_token_before_it_exists() -> None:
    request = core(REMOTE, EngineOptions(pace_tok_s=100.0))
    result = run(request, remote=Behaviour(0.2, 0.05))
    assert request.report.tbt_gaps_s == pytest.approx([0.05] * (len(ANSWER) - 1))
    assert result.text == TEXT


# -- migration ---------------------------------------------------------------------------------

EXPENSIVE_SERVER = CostModel(price_in_per_mtok=0.0, price_out_per_mtok=1000.0)
"""Remote output so dear that moving the rest of any answer to the device saves money."""


def test_paced_migration_moves_the_rest_to_the_target_exactly_behind_the_buffer() -> None:
    options = EngineOptions(
        pace_tok_s=10.0,
        migration=CostAwareMigration(margin=1.0, safety_s=0.0, min_remaining_tokens=1),
        predictor=StaticPredictor(local_overhead_s=0.2, local_prefill_tok_s=1e9, mean_output=40),
    )
    request = core(REMOTE, options, cost_model=EXPENSIVE_SERVER)
    result = run(
        request,
        remote=Behaviour(0.1, 0.01),
        local=Behaviour(lambda context, at: 0.2, 0.02),
    )
    assert result.text == TEXT
    assert producers(result) == ["remote", "local"]
    assert "migration" in event_names(result)
    migration = dict(next(e for _, e in result.events if e.name == "migration").data)
    assert migration["buffered_tokens"] >= 2  # 0.2 s of a 10 tok/s pace
    # The target's first token came before the buffer ran dry: no gap beyond the pace.
    assert max(request.report.tbt_gaps_s) == pytest.approx(0.1)
    assert request.report.finished_by == "local"
    assert request.report.endpoints["remote"].outcome == "migrated"


def test_eager_migration_probes_the_local_target_then_hands_over_on_its_first_token() -> None:
    options = EngineOptions(
        migration=CostAwareMigration(min_remaining_tokens=1),
        predictor=StaticPredictor(local_decode=100.0, remote_decode=100.0, mean_output=40),
    )
    request = core(REMOTE, options, cost_model=EXPENSIVE_SERVER)
    result = run(request, remote=Behaviour(0.1, 0.01), local=Behaviour(0.05, 0.01))
    names = event_names(result)
    assert names.index("migration_probe") < names.index("migration")
    probe = next(s for _, s in result.starts if s.purpose == "probe")
    assert probe.max_tokens == 1 and probe.role == "local"
    assert result.text == TEXT
    assert producers(result) == ["remote", "local"]


def test_the_view_counts_what_remains_of_a_capped_answer() -> None:
    seen: list[MigrationView] = []

    class Recording:
        wants_on_time_p = False

        def decide(self, view: MigrationView) -> MigrationDecision:
            seen.append(view)
            return MigrationDecision("wait", "recording")

    options = EngineOptions(migration=Recording(), predictor=StaticPredictor(mean_output=250))
    request = core(REMOTE, options, max_tokens=30)
    run(request, remote=Behaviour(0.1, 0.01))
    eleventh = seen[10]
    assert eleventh.generated_tokens == 11
    assert eleventh.max_tokens == 30
    assert eleventh.expected_remaining_tokens == pytest.approx(19)


@dataclass(frozen=True)
class CountingPredictor(StaticPredictor):
    """`StaticPredictor` that records each on-time-chance lookup (a spy: answers unchanged)."""

    windows_s: list[float] = field(default_factory=list)

    def p_first_within(self, role: str, context_tokens: int, seconds: float) -> float:
        self.windows_s.append(seconds)
        return super().p_first_within(role, context_tokens, seconds)


@pytest.mark.parametrize("hedge", [False, True])
def test_the_on_time_chance_is_looked_up_only_for_a_policy_that_hedges(hedge: bool) -> None:
    predictor = CountingPredictor(mean_output=250)
    options = EngineOptions(
        pace_tok_s=10.0, migration=CostAwareMigration(hedge=hedge), predictor=predictor
    )
    request = core(REMOTE, options)
    result = run(request, remote=Behaviour(0.1, 0.01), local=Behaviour(0.2, 0.02))
    assert result.text == TEXT
    # Paced, the policy is asked on every source token; only a hedge prices the lookup.
    assert bool(predictor.windows_s) is hedge


def test_a_silent_migration_target_hands_the_answer_back_to_the_source() -> None:
    options = EngineOptions(
        pace_tok_s=10.0,
        migration=CostAwareMigration(margin=1.0, safety_s=0.0, min_remaining_tokens=1),
        predictor=StaticPredictor(local_overhead_s=0.2, local_prefill_tok_s=1e9, mean_output=40),
    )
    request = core(REMOTE, options, cost_model=EXPENSIVE_SERVER)
    result = run(request, remote=Behaviour(0.1, 0.01), local=Behaviour(0.2, 0.02, stall_after=0))
    assert result.text == TEXT
    assert event_names(result)[:2] == ["migration", "failover"]
    failover = next(e for _, e in result.events if e.name == "failover").data
    assert failover["from"] == "local" and failover["to"] == "remote"
    assert "no first token" in failover["error"]
    # Bounded: the stall threshold (2 s floor) after the predicted first token, confirmed.
    assert max(request.report.tbt_gaps_s) < 0.2 + 2.0 + 0.1 + 0.2 + 0.1


# -- failover ----------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 1, 7, 39])
def test_an_error_mid_stream_continues_on_the_other_endpoint_from_the_exact_text(
    after: int,
) -> None:
    request = core(REMOTE)
    result = run(request, remote=Behaviour(0.1, 0.01, fail_after=after), local=Behaviour(0.3, 0.02))
    assert result.text == TEXT
    failover = next(e for _, e in result.events if e.name == "failover").data
    assert failover["token_index"] == after and failover["reason"] == "error"
    assert request.report.endpoints["remote"].outcome == "failed"
    assert request.report.finished_by == "local"


def test_a_stall_mid_stream_fails_over_after_the_threshold_and_its_confirmation() -> None:
    request = core(REMOTE)
    result = run(request, remote=Behaviour(0.1, 0.01, stall_after=5), local=Behaviour(0.3, 0.02))
    assert result.text == TEXT
    failover_at, failover = next((t, e) for t, e in result.events if e.name == "failover")
    last_remote = 0.1 + 4 * 0.01
    assert failover_at == pytest.approx(last_remote + 2.0 + 0.1)
    assert failover.data["reason"] == "stall"
    assert (pytest.approx(failover_at), 0) in result.cancels


def test_a_failover_to_an_endpoint_that_cannot_continue_needs_approximate_continuation() -> None:
    infos = {**INFOS, "local": EndpointInfo("local", "gemma", exact_continuation=False)}
    request = core(REMOTE, infos=infos)
    result = run(request, remote=Behaviour(0.1, 0.01, fail_after=3), local=Behaviour(0.3, 0.02))
    assert isinstance(result.error, EndpointError)
    assert "DISCO_APPROXIMATE_CONTINUATION_PROMPT" in str(result.error)
    assert result.text == "".join(ANSWER[:3])  # nothing after the fault, nothing twice


def test_approximate_continuation_sends_the_partial_text_as_a_user_turn() -> None:
    infos = {**INFOS, "local": EndpointInfo("local", "gemma", exact_continuation=False)}
    options = EngineOptions(approximate_continuation_prompt="Go on after: {partial}")
    request = core(REMOTE, options, infos=infos)
    out = request.begin(0.0)
    assert out == [StartStream(0, "remote", "dispatch")]
    request.delta(0, "Hello ", 0.1)
    commands = request.error(0, EndpointError("remote", "reset"), 0.2)
    start = next(c for c in commands if isinstance(c, StartStream))
    assert start.role == "local" and start.prefix == ""
    assert start.approximate_prompt == "Go on after: Hello "


def test_failover_off_raises_the_endpoints_own_error() -> None:
    request = core(REMOTE, EngineOptions(failover=False))
    result = run(request, remote=Behaviour(0.1, 0.01, fail_after=2), local=Behaviour(0.3, 0.02))
    assert isinstance(result.error, EndpointError)
    assert "scripted failure" in str(result.error)


def test_every_endpoint_failing_raises_all_endpoints_failed_with_each_cause() -> None:
    request = core(RACE)
    result = run(
        request,
        local=Behaviour(0.2, 0.01, fail_after=0, error="device"),
        remote=Behaviour(0.3, 0.01, fail_after=0, error="server"),
    )
    assert isinstance(result.error, AllEndpointsFailedError)
    assert [str(e) for e in result.error.errors] == [
        "endpoint 'local': device",
        "endpoint 'remote': server",
    ]


# -- tool calls and cancellation ---------------------------------------------------------------


def test_a_fault_inside_a_tool_call_is_not_continued_as_prose() -> None:
    request = core(REMOTE)
    request.begin(0.0)
    out = request.delta(0, "", 0.1, tool_call=ToolCallChunk(0, "call_1", "search", '{"q"'))
    assert out[0].tool_call is not None  # delivered as a tool-call piece
    with pytest.raises(EndpointError, match="tool call began streaming"):
        request.error(0, EndpointError("remote", "reset"), 0.2)


def test_a_tool_call_stops_the_migration_policy_being_asked() -> None:
    asked: list[int] = []

    class Counting:
        wants_on_time_p = False

        def decide(self, view: MigrationView) -> MigrationDecision:
            asked.append(view.generated_tokens)
            return MigrationDecision("wait", "counting")

    request = core(REMOTE, EngineOptions(migration=Counting()))
    request.begin(0.0)
    request.delta(0, "Let me look. ", 0.1)
    request.delta(0, "", 0.2, tool_call=ToolCallChunk(0, "call_1", "search", "{}"))
    request.delta(0, "", 0.3, tool_call=ToolCallChunk(0, None, None, ""))
    assert asked == [1]


def test_cancelling_a_request_stops_every_live_stream_once() -> None:
    request = core(RACE)
    assert request.begin(0.0) == [
        StartStream(0, "local", "dispatch"),
        StartStream(1, "remote", "dispatch"),
    ]
    assert request.cancel_all() == [CancelStream(0), CancelStream(1)]
    assert request.cancel_all() == []


def test_late_events_of_a_cancelled_stream_are_ignored() -> None:
    request = core(RACE)
    request.begin(0.0)
    request.delta(1, "w0 ", 0.1)  # remote wins; local is cancelled
    assert request.delta(0, "x ", 0.2) == []
    assert request.done(0, 0.3) == []
    assert request.error(0, EndpointError("local", "late"), 0.4) == []
    assert request.text == "w0 "


def test_billing_counts_what_each_stream_processed() -> None:
    request = core(RACE, cost_model=CostModel(price_in_per_mtok=1e6, price_out_per_mtok=2e6))
    result = run(request, local=Behaviour(0.5, 0.02), remote=Behaviour(0.2, 0.01))
    remote = request.report.endpoints["remote"]
    assert remote.input_tokens == 100 and remote.output_tokens == len(ANSWER)
    assert request.report.cost.server_usd == pytest.approx(100 * 1.0 + len(ANSWER) * 2.0)
    assert request.report.endpoints["remote"].delivered_chunks == len(ANSWER)
    assert result.stats[1].finish_reason == "stop"
    assert request.report.endpoints["remote"].finish_reason == "stop"


def _settled_remote(stats: StreamStats) -> RequestReport:
    request = core(REMOTE)
    request.begin(0.0)
    request.settle(1.0, [stats])
    return request.report


def test_a_remote_answer_read_from_the_provider_cache_is_billed_at_the_discount() -> None:
    stats = StreamStats(input_tokens=2000, output_tokens=10, cached_input_tokens=1536)
    stats.attempts = stats.billed_attempts = 1
    report = _settled_remote(stats)
    cm = CostModel()
    assert report.cached_input_tokens == 1536
    assert report.cost.server_usd == pytest.approx(
        (0.15 * (2000 - 1536) + 0.075 * 1536 + 0.60 * 10) / 1e6
    )
    assert report.cost.server_usd < cm.server_usd(2000, 10)


def test_cached_tokens_are_billed_once_per_billed_attempt_like_the_prompt() -> None:
    stats = StreamStats(input_tokens=2000, output_tokens=10, cached_input_tokens=1536)
    stats.attempts, stats.billed_attempts = 3, 2  # a 503, then two accepted sends
    report = _settled_remote(stats)
    assert report.cost.server_usd == pytest.approx(
        CostModel().server_usd(2 * 2000, 10, cached_input=2 * 1536)
    )
