"""Paced delivery and token-level migration in trace replay, with the live migration policy.

The delivery and buffer arithmetic is checked against a token-by-token replay of the engine's
release rule; the replays against the properties issue 5 asks of the simulator.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass, field

import pytest

from langchain_disco import DiscoChatModel
from langchain_disco.scheduling import (
    Budget,
    CostModel,
    Generalized,
    LengthProfile,
    Profiles,
    Race,
)
from langchain_disco.scheduling.migration import (
    CostAwareMigration,
    MigrationDecision,
    MigrationView,
    NoMigration,
    ProfileMigrationPredictor,
    StallDetector,
    ViewBuilder,
    usd_per_token,
)
from langchain_disco.sim import SimConfig, SimResult, Simulator, load_trace
from langchain_disco.sim.delivery import Playout, Segment, buffered_tokens, delivery
from langchain_disco.sim.streaming import DeviceScript, ServerScript, StreamedRequest, play
from langchain_disco.sim.trace import Trace
from langchain_disco.sim.virtual import Opening

SERVER_EXPENSIVE = SimConfig(device="MacBook Pro M1 Max", server="together-13b")
DEVICE_EXPENSIVE = SimConfig(
    device="Galaxy S25", server="together-13b", cost_model=CostModel(usd_per_j=1e-4)
)
PACE = 10.0
SMALL = 600


@functools.cache
def _trace(n: int) -> Trace:
    return load_trace(limit=n)


@functools.cache
def _race(config: SimConfig, n: int, migration: bool, pace: float | None) -> SimResult:
    sim = Simulator(_trace(n), config)
    return sim.run(Race(), migration=CostAwareMigration() if migration else None, pace_tok_s=pace)


# -- delivery arithmetic ----------------------------------------------------------------------


def _release(generated: list[float], pace: float | None) -> list[float]:
    """The engine's rule, token by token: the first at once, then at most one per 1/pace."""
    out: list[float] = []
    for g in generated:
        out.append(g if not out or pace is None else max(g, out[-1] + 1.0 / pace))
    return out


def test_delivery_runs_match_a_token_by_token_release() -> None:
    rng = random.Random(5)
    for _ in range(300):
        pace = rng.choice([None, 2.0, 10.0, 50.0])
        segments, generated, t = [], [], rng.uniform(0, 3)
        for _ in range(rng.randint(1, 3)):
            seg = Segment(t, rng.choice([0.005, 0.02, 0.1, 0.3]), rng.randint(0, 40))
            segments.append(seg)
            generated += [seg.first_s + m * seg.gap_s for m in range(seg.tokens)]
            t = (generated[-1] if generated else t) + rng.uniform(0, 4)
        times = _release(generated, pace)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        got = delivery(segments, pace)
        expanded = [gap for gap, count in got.runs for _ in range(count)]
        assert expanded == pytest.approx(gaps, abs=1e-9)
        assert got.last_s == pytest.approx(times[-1] if times else 0.0)


def test_buffer_counts_what_the_pace_has_not_released_yet() -> None:
    for gap in (0.005, 0.05, 0.1, 0.2):
        times = _release([m * gap for m in range(60)], PACE)
        for j in range(1, 61):
            now = (j - 1) * gap
            released = sum(1 for d in times[: j - 1] if d < now - 1e-12)
            assert buffered_tokens(j, gap, PACE) == j - released, (gap, j)
    assert buffered_tokens(30, 0.01, None) == 0  # eager: nothing is held back


MIGRATE = MigrationDecision("migrate", "test")
PROBE = MigrationDecision("probe", "test")

# -- one request, played through the engine core ---------------------------------------------

CM = CostModel()


@dataclass(frozen=True)
class _At:
    """Answers `decision` at source token `token`, waits before."""

    token: int
    decision: MigrationDecision
    wants_on_time_p = False

    def decide(self, view: MigrationView) -> MigrationDecision:
        if view.generated_tokens < self.token:
            return MigrationDecision("wait", "not yet")
        return self.decision


@dataclass(frozen=True)
class _Knows:
    """Predicts the device's TTFT right (so the engine's stall bound does not fire)."""

    local_ttft_s: float

    def ttft_s(self, role: str, context_tokens: int) -> float:
        return self.local_ttft_s if role == "local" else 0.5

    def p_first_within(self, role: str, context_tokens: int, seconds: float) -> float:
        return 1.0 if self.ttft_s(role, context_tokens) <= seconds else 0.0

    def decode_tok_s(self, role: str) -> float:
        return 50.0

    def remaining_tokens(self, generated: int, max_tokens: int | None) -> float:
        return 300.0 - generated


def _play(
    decision: MigrationDecision,
    token: int,
    *,
    overhead_s: float,
    s_per_token: float = 0.0,
    queue_s: float = 0.0,
    pace_tok_s: float | None = PACE,
    predicted_s: float | None = None,
) -> Playout:
    """A 300-token answer from a server streaming at 100 tok/s, first token at 0.5 s; the
    device target prefills in `overhead_s` + `s_per_token` per uncached token."""
    request = StreamedRequest(
        source="remote",
        prompt_tokens=1000,
        output_tokens=300,
        max_tokens=None,
        source_gap_s=0.01,
        target_can_continue=True,
        target_queue_wait_s=0.0,
    )
    device = DeviceScript(
        None, overhead_s, s_per_token, gap_s=0.02, free_at=lambda start: start + queue_s
    )
    server = ServerScript(Opening(0.5, 0.01, 1000), 0.5, 0.01)
    played, _, _ = play(
        request,
        device,
        server,
        migration=_At(token, decision),
        pace_tok_s=pace_tok_s,
        predictor=_Knows(predicted_s if predicted_s is not None else overhead_s + queue_s),
        stall=StallDetector(),
        cost_model=CM,
        base_cost=CM.cost(server_in=1000, server_out=300),
    )
    return played


def test_paced_migration_adds_no_stall_when_the_buffer_covers_the_target_ttft() -> None:
    # After 50 tokens at 100 tok/s the reader has had 5 (one per 0.1 s): 45 wait, 4.5 s.
    assert buffered_tokens(50, 0.01, PACE) == 45
    covered = _play(MIGRATE, 50, overhead_s=4.4)
    assert covered.stall_added_s == 0.0
    assert max(gap for gap, _ in covered.delivered.runs) == pytest.approx(1 / PACE)
    short = _play(MIGRATE, 50, overhead_s=6.0)
    # Token 50 reaches the reader at 0.5 + 4.9 s; the target's first token comes at
    # 0.99 + 6.0 s, instead of one pace gap later.
    assert short.stall_added_s == pytest.approx((0.99 + 6.0) - (0.5 + 4.9) - 0.1)
    assert (covered.source_tokens, covered.target_tokens) == (50, 250)


def test_a_migration_target_far_slower_than_predicted_is_handed_back_within_the_bound() -> None:
    # Predicted 1 s, takes 30 s: the engine gives up on it after the prediction plus the
    # stall threshold (2 s) and its confirmation (0.1 s), and the server continues (0.5 s).
    handed_back_first_token = 0.99 + 1.0 + 2.0 + 0.1 + 0.5
    paced = _play(MIGRATE, 50, overhead_s=30.0, predicted_s=1.0)
    assert paced.target_tokens == 0 and paced.source_tokens == 300
    assert [s.first_s for s in paced.segments] == pytest.approx([0.5, handed_back_first_token])
    assert paced.stall_added_s == 0.0  # 4.5 s of buffer hid the hand-back
    eager = _play(MIGRATE, 50, overhead_s=30.0, predicted_s=1.0, pace_tok_s=None)
    assert eager.source_tokens == 300
    assert eager.stall_added_s == pytest.approx(handed_back_first_token - 0.99 - 0.01)


def test_migration_bills_the_source_until_stopped_and_the_target_for_the_rest() -> None:
    played = _play(MIGRATE, 50, overhead_s=3.0)
    expected = CM.cost(server_in=1000, server_out=50, device_in=1050, device_out=250)
    assert played.cost.server_usd == pytest.approx(expected.server_usd)
    assert played.cost.device_j == pytest.approx(expected.device_j)
    assert played.cost.unified_usd == pytest.approx(expected.unified_usd)


def test_eager_probe_overlaps_the_prefill_and_takes_over_after_the_catch_up() -> None:
    # The probe prefills 1001 tokens in 2 s; the take-over feeds only the newer ones (its KV
    # cache holds the rest) at the same rate.
    played = _play(PROBE, 1, overhead_s=0.0, s_per_token=2.0 / 1001, pace_tok_s=None)
    # Ready 2 s after token 1 (at 2.5 s): the server reached token 201; 200 newer tokens
    # take 0.4 s to feed, the whole gap the reader sees beyond the server's own.
    assert played.token_index == 201
    assert played.stall_added_s == pytest.approx(0.4, abs=0.011)
    assert played.cost.device_j == pytest.approx(CM.device_j(1001 + 200, 1 + 99))
    assert played.cost.server_usd == pytest.approx(CM.server_usd(1000, 201))


def test_a_probe_the_source_outruns_is_cancelled_and_bills_its_partial_prefill() -> None:
    played = _play(PROBE, 1, overhead_s=9.0, queue_s=1.0, pace_tok_s=None)
    assert not played.migrated and played.source_tokens == 300
    # The answer ends 2.99 s after token 1; the probe prefilled from 1 s to then, of 9 s.
    assert played.cost.device_j == pytest.approx(CM.device_j(1001, 0) * 1.99 / 9.0)


# -- replays ----------------------------------------------------------------------------------


def test_replay_with_migration_is_deterministic_for_a_seed() -> None:
    trace = _trace(SMALL)
    budget = Budget(share=0.5, resource="server")
    runs = [
        Simulator(trace, SERVER_EXPENSIVE).run(
            Generalized(budget), budget, migration=CostAwareMigration(), pace_tok_s=PACE
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0].metrics.migration_rate > 0


@pytest.mark.parametrize("policy", ["race", "generalized"])
def test_no_migration_reproduces_the_replay_without_migration_exactly(policy: str) -> None:
    sim = Simulator(_trace(1500), SERVER_EXPENSIVE)
    budget = Budget(share=0.4, resource="server")

    def make() -> Race | Generalized:
        return Race() if policy == "race" else Generalized(budget)

    plain = sim.run(make(), budget)
    off = sim.run(make(), budget, migration=NoMigration())
    assert off.metrics == plain.metrics
    for name in ("ttft_s", "tbt_s", "server_usd", "device_j", "unified_usd", "winner", "action"):
        assert getattr(off, name) == getattr(plain, name), name
    assert not any(off.migrated)


@pytest.mark.parametrize("config", [SERVER_EXPENSIVE, DEVICE_EXPENSIVE], ids=["server", "device"])
@pytest.mark.parametrize("pace", [PACE, None], ids=["paced", "eager"])
def test_every_token_is_delivered_once_by_exactly_one_endpoint(
    config: SimConfig, pace: float | None
) -> None:
    n = SMALL
    result = _race(config, n, True, pace)
    outputs = _trace(n).output_tokens
    for i, o in enumerate(outputs):
        assert result.local_tokens[i] + result.remote_tokens[i] == o
        assert sum(count for _, count in result.tbt_runs[i]) == o - 1
        if result.migrated[i]:
            k = result.migration_token[i]
            assert k is not None and 1 <= k <= o
            source = result.local_tokens if result.winner[i] == "local" else result.remote_tokens
            assert source[i] == k
        else:
            assert result.migration_token[i] is None


def test_server_expensive_migration_cuts_cost_at_the_same_ttft() -> None:
    n = 3000
    without, with_ = _race(SERVER_EXPENSIVE, n, False, PACE), _race(SERVER_EXPENSIVE, n, True, PACE)
    m, base = with_.metrics, without.metrics
    assert m.mean_cost_usd < base.mean_cost_usd * 0.9
    assert m.mean_cost_without_migration_usd == pytest.approx(base.mean_cost_usd)
    assert m.mean_ttft_s <= base.mean_ttft_s * 1.05
    assert m.p99_ttft_s <= base.p99_ttft_s * 1.05
    assert m.migration_rate > 0.3
    # Server -> device: the device finishes the answers the server started.
    moved = [i for i, migrated in enumerate(with_.migrated) if migrated]
    assert all(with_.winner[i] == "remote" and with_.local_tokens[i] > 0 for i in moved[:50])


def test_paced_migration_to_an_idle_predictable_device_never_stalls() -> None:
    # One device per request (no queue) with one measured speed (no noise): the target's TTFT
    # is what the policy predicted, and the buffer covers it with the margin to spare.
    trace = _trace(1000)
    sim = Simulator(trace, SimConfig(device=SERVER_EXPENSIVE.device, n_devices=len(trace)))
    result = sim.run(Race(), migration=CostAwareMigration(), pace_tok_s=PACE)
    assert result.metrics.migration_rate > 0.3
    assert result.metrics.max_stall_added_s == 0.0
    # Within the engine's clock tolerance (TIME_EPS_S): a release may come a microsecond late.
    assert result.metrics.max_stall_s == pytest.approx(1 / PACE, abs=1e-5)


def test_device_expensive_migration_moves_device_answers_to_the_server() -> None:
    n = SMALL
    without, with_ = _race(DEVICE_EXPENSIVE, n, False, PACE), _race(DEVICE_EXPENSIVE, n, True, PACE)
    assert with_.metrics.mean_cost_usd < without.metrics.mean_cost_usd
    moved = [i for i, migrated in enumerate(with_.migrated) if migrated]
    assert moved and all(with_.winner[i] == "local" for i in moved)
    outputs = _trace(n).output_tokens
    assert all(with_.remote_tokens[i] > 0 for i in moved if with_.migration_token[i] != outputs[i])
    assert with_.ttft_s == without.ttft_s


@dataclass
class Recording:
    """Wraps a policy and keeps every view it was shown."""

    inner: CostAwareMigration = field(default_factory=CostAwareMigration)
    views: list[MigrationView] = field(default_factory=list)

    @property
    def wants_on_time_p(self) -> bool:
        return self.inner.wants_on_time_p

    def decide(self, view: MigrationView) -> MigrationDecision:
        self.views.append(view)
        return self.inner.decide(view)


def test_migration_never_targets_a_server_that_cannot_continue() -> None:
    trace = _trace(SMALL)
    config = SimConfig(
        device=DEVICE_EXPENSIVE.device,
        server=DEVICE_EXPENSIVE.server,
        cost_model=DEVICE_EXPENSIVE.cost_model,
        remote_exact_continuation=False,
    )
    policy = Recording()
    result = Simulator(trace, config).run(Race(), migration=policy, pace_tok_s=PACE)
    local_won = [i for i, w in enumerate(result.winner) if w == "local"]
    assert local_won, "the phone should win a few races"
    assert all(not result.migrated[i] and result.remote_tokens[i] == 0 for i in local_won)
    asked_remote = [v for v in policy.views if v.target == "remote"]
    assert asked_remote and all(not v.target_can_continue for v in asked_remote)
    # Server -> device is still allowed (the device can always continue).
    assert all(v.target_can_continue for v in policy.views if v.target == "local")


def test_the_policy_sees_the_view_the_engine_builds() -> None:
    trace = _trace(300)
    policy = Recording()
    sim = Simulator(trace, SERVER_EXPENSIVE)
    sim.run(Race(), migration=policy, pace_tok_s=PACE)
    cm = SERVER_EXPENSIVE.cost_model
    assert policy.views[0].generated_tokens == 1 and policy.views[0].buffered_tokens == 1
    previous: MigrationView | None = None
    for view in policy.views:
        assert view.pace_tok_s == PACE and view.max_tokens is None
        assert view.source != view.target
        assert view.source_usd_per_out_token == usd_per_token(cm, view.source, output=True)
        assert view.target_usd_per_in_token == usd_per_token(cm, view.target, output=False)
        assert 1 <= view.buffered_tokens <= view.generated_tokens
        if previous is not None and view.generated_tokens > 1:
            assert view.generated_tokens == previous.generated_tokens + 1  # every token
            assert view.prompt_tokens == previous.prompt_tokens
        previous = view
        assert math.isfinite(view.target_ttft_s) and view.target_ttft_s > 0


def test_the_live_model_predicts_migrations_with_the_simulators_predictor() -> None:
    model = DiscoChatModel(
        mode="remote", remote_base_url="http://127.0.0.1:9/v1", persist_profiles=False
    )
    predictor = model._engine_for_run().options.predictor
    assert isinstance(predictor, ProfileMigrationPredictor)
    assert predictor.profiles is model.scheduler.profiles


def test_remaining_tokens_are_the_mean_residual_of_the_learned_answer_lengths() -> None:
    # Answers of 10, 100 or 1000 tokens: 50 tokens in, the answer is one of the two longer
    # ones, so (50 + 950) / 2 remain, not the mean answer (370) minus 50. Past everything seen
    # it is expected to end soon, and never beyond max_tokens.
    profiles = Profiles.prior("MacBook Pro M1 Max", "together-13b")
    profiles.output_lengths = LengthProfile([10, 100, 1000])
    predictor = ProfileMigrationPredictor(profiles)
    assert predictor.remaining_tokens(50, None) == pytest.approx(500.0)
    assert predictor.remaining_tokens(500, None) == pytest.approx(500.0)
    assert predictor.remaining_tokens(500, 600) == pytest.approx(100.0)
    assert predictor.remaining_tokens(2000, None) == 1.0
    views = ViewBuilder.for_request(
        source="local",
        target="remote",
        prompt_tokens=100,
        max_tokens=None,
        pace_tok_s=None,
        target_can_continue=True,
        predictor=predictor,
        cost_model=CostModel(),
    )
    assert views.view(50, 0).expected_remaining_tokens == pytest.approx(500.0)


def test_without_migration_the_run_reports_its_own_cost_as_the_baseline() -> None:
    result = _race(SERVER_EXPENSIVE, SMALL, False, PACE)
    assert result.metrics.migration_rate == 0.0
    assert result.metrics.migration_saving == pytest.approx(0.0)
    assert result.cost_without_migration_usd == result.unified_usd


# -- what held migration back (issue 20) --------------------------------------------------------


def _view(**changes: object) -> MigrationView:
    """A view on which `CostAwareMigration()` migrates (paced), unless `changes` say otherwise:
    a phone answer (costly per token) moving to a server that can continue it."""
    base: dict[str, object] = {
        "source": "local",
        "target": "remote",
        "prompt_tokens": 500,
        "generated_tokens": 20,
        "max_tokens": None,
        "buffered_tokens": 40,
        "pace_tok_s": 10.0,
        "target_can_continue": True,
        "target_ttft_s": 1.0,
        "source_decode_tok_s": 20.0,
        "target_decode_tok_s": 50.0,
        "expected_remaining_tokens": 200.0,
        "source_usd_per_out_token": 1e-5,
        "target_usd_per_out_token": 6e-7,
        "target_usd_per_in_token": 1.5e-7,
    }
    base.update(changes)
    return MigrationView(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "verdict", "blocked_by"),
    [
        ({}, "migrate", None),
        ({"target_can_continue": False}, "never", "cannot_continue"),
        ({"expected_remaining_tokens": 3.0}, "wait", "few_remaining"),
        ({"source_usd_per_out_token": 1e-7}, "wait", "no_saving"),
        ({"target_decode_tok_s": 5.0}, "never", "target_slower_than_pace"),
        ({"buffered_tokens": 9}, "wait", "buffer_below_ttft"),  # 1 s x 10 tok/s = 10
        ({"buffered_tokens": 12}, "wait", "buffer_below_margin"),  # needs (1.5 + 0.25) x 10
        ({"pace_tok_s": None, "target_decode_tok_s": 9.0}, "never", "target_too_slow"),
        ({"pace_tok_s": None, "target_ttft_s": 0.6}, "never", "stall_above_bound"),
        ({"pace_tok_s": None, "target_ttft_s": 0.4}, "migrate", None),
        ({"pace_tok_s": None, "source": "remote", "target": "local"}, "probe", None),
    ],
)
def test_each_condition_that_holds_migration_back_is_named(
    changes: dict[str, object], verdict: str, blocked_by: str | None
) -> None:
    decision = CostAwareMigration(hedge=False).decide(_view(**changes))
    assert (decision.verdict, decision.blocked_by) == (verdict, blocked_by)
    # Hedging changes none of these: with the source at twice the pace, waiting for the
    # margin costs fewer tokens than a hedge would discard.
    decision = CostAwareMigration(hedge=True).decide(_view(**changes))
    assert (decision.verdict, decision.blocked_by) == (verdict, blocked_by)


def test_a_replay_names_why_each_answer_did_not_move() -> None:
    result = _race(DEVICE_EXPENSIVE, SMALL, True, PACE)
    moved = [i for i, m in enumerate(result.migrated) if m]
    kept = [i for i, m in enumerate(result.migrated) if not m]
    assert moved and kept
    assert all(result.migration_blocked_by[i] is None for i in moved)
    named = {result.migration_blocked_by[i] for i in kept}
    assert None not in named
    assert "buffer_below_margin" in named  # the paced buffer is the phone's usual blocker
    # Without a migration policy nothing is named: nothing could move the answer.
    assert set(_race(DEVICE_EXPENSIVE, SMALL, False, PACE).migration_blocked_by) <= {None}


def test_the_engine_names_a_hand_back_and_an_unready_probe() -> None:
    handed_back = _play(MIGRATE, 50, overhead_s=30.0, predicted_s=1.0)
    assert not handed_back.migrated and handed_back.blocked_by == "handed_back"
    outrun = _play(PROBE, 1, overhead_s=9.0, queue_s=1.0, pace_tok_s=None)
    assert not outrun.migrated and outrun.blocked_by == "probe_not_ready"
    waited = _play(MigrationDecision("wait", "test", blocked_by="no_saving"), 0, overhead_s=1.0)
    assert not waited.migrated and waited.blocked_by == "no_saving"
    moved = _play(MIGRATE, 50, overhead_s=4.4)
    assert moved.migrated and moved.blocked_by is None


# -- the hedged hand-over (issue 20, item 2) ----------------------------------------------------

HEDGE = MigrationDecision("hedge", "test")


def _hedged(server_ttft_s: float, token: int = 100) -> tuple[Playout, list[str]]:
    """A 300-token phone answer a little faster than the pace (12.5 tok/s against 10), hedged at
    source token `token` onto a server whose continuation answers after `server_ttft_s`."""
    request = StreamedRequest(
        source="local",
        prompt_tokens=1000,
        output_tokens=300,
        max_tokens=None,
        source_gap_s=0.08,
        target_can_continue=True,
        target_queue_wait_s=0.0,
    )
    device = DeviceScript(Opening(0.5, 0.08, 1000), 0.0, 0.0, 0.08, free_at=lambda start: start)
    server = ServerScript(None, server_ttft_s, 0.01)
    played, replay, _ = play(
        request,
        device,
        server,
        migration=_At(token, HEDGE),
        pace_tok_s=PACE,
        predictor=_Knows(0.5),
        stall=StallDetector(),
        cost_model=CM,
        base_cost=CM.cost(device_in=1000, device_out=300),
    )
    return played, [e.name for _, e in replay.events]


def test_a_hedged_target_that_answers_within_the_buffer_takes_over_without_a_stall() -> None:
    # At token 100 (8.42 s) the reader has had 80: 20 wait, 2 s of buffer; the server answers
    # in 1 s, so it continues from token 100 and the phone's tokens generated since are dropped.
    played, events = _hedged(1.0)
    assert played.migrated and played.blocked_by is None
    assert "migration_hedge" in events and "migration_handed_back" not in events
    assert (played.source_tokens, played.target_tokens) == (100, 200)
    assert played.stall_added_s == 0.0
    assert max(gap for gap, _ in played.delivered.runs) == pytest.approx(1 / PACE)


def test_a_hedged_target_that_misses_the_buffer_is_handed_back_without_a_stall() -> None:
    # The server needs 5 s, the buffer lasts 2: each hedge is cancelled when the buffer runs
    # out, the phone's own tokens go on, and the reader never waits for the server.
    played, events = _hedged(5.0)
    assert not played.migrated and played.blocked_by == "handed_back"
    assert events.count("migration_handed_back") == events.count("migration_hedge") >= 1
    assert (played.source_tokens, played.target_tokens) == (300, 0)
    assert played.stall_added_s == 0.0
    assert max(gap for gap, _ in played.delivered.runs) == pytest.approx(1 / PACE)
    # Each cancelled hedge billed what the server had prefilled: never free.
    assert played.cost.server_usd > 0


def test_hedging_pays_when_waiting_for_the_margin_costs_more_than_the_risk() -> None:
    # A phone barely faster than the pace (11 tok/s against 10) would take ~60 more tokens to
    # build the margin's buffer: a hedge that is likely on time saves them.
    slow_source = {"buffered_tokens": 12, "source_decode_tok_s": 11.0}
    likely = CostAwareMigration(hedge=True).decide(_view(**slow_source, target_on_time_p=1.0))
    assert likely.verdict == "hedge" and likely.expected_saving_usd > 0
    # Unlikely to be on time, the re-prefill is not worth it; the margin rule names the wait.
    unlikely = CostAwareMigration(hedge=True).decide(_view(**slow_source, target_on_time_p=0.1))
    assert (unlikely.verdict, unlikely.blocked_by) == ("wait", "buffer_below_margin")
    # Without hedging, or with its hedges spent, the same view waits.
    assert CostAwareMigration(hedge=False).decide(_view(**slow_source)).verdict == "wait"
    spent = CostAwareMigration(hedge=True, max_hedges=2).decide(_view(**slow_source, handed_back=2))
    assert spent.verdict == "wait"


def test_the_on_time_chance_comes_from_the_learned_server_distribution() -> None:
    predictor = ProfileMigrationPredictor(Profiles.prior("Galaxy S25", "together-13b"))
    ps = [predictor.p_first_within("remote", 1000, t) for t in (0.05, 0.5, 2.0, 1e4)]
    assert ps == sorted(ps) and 0.0 <= ps[0] < ps[-1] <= 1.0
    assert ps[-1] == pytest.approx(1.0)
    device = [predictor.p_first_within("local", 1000, t) for t in (0.0, 1e3)]
    assert device == [0.0, 1.0]
