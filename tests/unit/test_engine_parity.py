"""The live driver and the simulator run one engine core: same requests, same story.

Each scenario (prompt, answer length, first-token times and gaps of both endpoints, faults) runs
twice: through the live `Engine` (asyncio, real tasks and timers) on scripted endpoints, with the
event loop's time made virtual by looptime, and through `sim.virtual.replay`, the simulator's
driver. Both must hand the migration policy the same views, get the same decisions, start the
same streams (role, purpose, prefix, budget) at the same times and deliver the same text, piece
by piece, at the same times. The simulator's closed-form delivery (its fast path for answers no
policy can move) is checked against the core on random requests.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from langchain_disco.endpoints.base import GenerationParams
from langchain_disco.engine import (
    EndpointInfo,
    Engine,
    EngineEvent,
    EngineOptions,
    RequestCore,
    StaticPredictor,
)
from langchain_disco.engine._timing import TIME_EPS_S
from langchain_disco.report import RequestReport
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import Plan, Start
from langchain_disco.scheduling.estimates import resolve_action
from langchain_disco.scheduling.migration import (
    CostAwareMigration,
    MigrationDecision,
    MigrationPolicy,
    MigrationView,
    StallDetector,
)
from langchain_disco.sim.delivery import Segment, delivery
from langchain_disco.sim.virtual import Behaviour, Script, replay
from tests._scripted import ScriptedEndpoint

PROMPT_TOKENS = 120
EXPENSIVE_SERVER = CostModel(price_in_per_mtok=0.0, price_out_per_mtok=1000.0)
CHEAP_SERVER = CostModel(price_in_per_mtok=0.01, price_out_per_mtok=0.01, usd_per_j=1.0)


class Recording:
    """Wraps a policy and records every (view, decision)."""

    def __init__(self, inner: MigrationPolicy) -> None:
        self.inner = inner
        self.seen: list[tuple[MigrationView, MigrationDecision]] = []

    @property
    def wants_on_time_p(self) -> bool:
        return self.inner.wants_on_time_p

    def decide(self, view: MigrationView) -> MigrationDecision:
        decision = self.inner.decide(view)
        self.seen.append((view, decision))
        return decision


@dataclass(frozen=True)
class Scenario:
    name: str
    plan: Plan
    scripts: Callable[[], dict[str, Script]]
    """Fresh scripts per run (a script may keep per-request state)."""
    tokens: int = 30
    pace_tok_s: float | None = None
    migration: Callable[[], MigrationPolicy] = lambda: CostAwareMigration(min_remaining_tokens=1)
    cost_model: CostModel = EXPENSIVE_SERVER
    max_tokens: int | None = None
    local_exact: bool = True


REMOTE = Plan((Start("remote"),), action="remote")
LOCAL = Plan((Start("local"),), action="local")
RACE = Plan((Start("local"), Start("remote")), action="race")
HEDGE = Plan((Start("local"), Start("remote", at_s=0.7)), action="hedge")

SCENARIOS = [
    Scenario(
        "race, server wins, paced",
        RACE,
        lambda: {"local": Behaviour(0.93, 0.031), "remote": Behaviour(0.27, 0.0113)},
        pace_tok_s=9.7,
        cost_model=CHEAP_SERVER,
    ),
    Scenario(
        "hedge fires, device wins late",
        HEDGE,
        lambda: {"local": Behaviour(0.91, 0.021), "remote": Behaviour(0.43, 0.017)},
        cost_model=CHEAP_SERVER,
    ),
    Scenario(
        "paced migration server -> device",
        REMOTE,
        lambda: {
            "remote": Behaviour(0.21, 0.0117),
            "local": Behaviour(lambda context, at: 0.05 + context / 2000, 0.0191),
        },
        pace_tok_s=9.3,
        migration=lambda: CostAwareMigration(margin=1.0, safety_s=0.0, min_remaining_tokens=1),
    ),
    Scenario(
        "eager probe server -> device",
        REMOTE,
        lambda: {
            "remote": Behaviour(0.21, 0.0117),
            "local": Behaviour(lambda context, at: 0.05 + context / 3000, 0.0109),
        },
    ),
    Scenario(
        "paced migration device -> server",
        LOCAL,
        lambda: {"local": Behaviour(0.33, 0.0213), "remote": Behaviour(0.19, 0.0131)},
        pace_tok_s=11.3,
        cost_model=CHEAP_SERVER,
        migration=lambda: CostAwareMigration(margin=1.0, safety_s=0.0, min_remaining_tokens=1),
    ),
    Scenario(
        "error mid-stream, failover",
        REMOTE,
        lambda: {"remote": Behaviour(0.21, 0.0117, fail_after=9), "local": Behaviour(0.37, 0.019)},
        migration=lambda: CostAwareMigration(min_remaining_tokens=10_000),
    ),
    Scenario(
        "stall mid-stream, paced failover",
        REMOTE,
        lambda: {
            "remote": Behaviour(0.21, 0.0117, stall_after=7),
            "local": Behaviour(0.37, 0.019),
        },
        pace_tok_s=9.1,
        migration=lambda: CostAwareMigration(min_remaining_tokens=10_000),
    ),
    Scenario(
        "silent migration target, handed back",
        REMOTE,
        lambda: {
            "remote": Behaviour(0.21, 0.0117),
            "local": Behaviour(lambda context, at: 0.05, 0.0191, stall_after=0),
        },
        tokens=60,
        pace_tok_s=9.3,
        migration=lambda: CostAwareMigration(margin=1.0, safety_s=0.0, min_remaining_tokens=1),
    ),
    Scenario(
        "capped answer",
        REMOTE,
        lambda: {"remote": Behaviour(0.21, 0.0117), "local": Behaviour(0.3, 0.0109)},
        tokens=40,
        max_tokens=25,
    ),
]


@dataclass
class Story:
    """What a run did, in the terms both drivers share."""

    decisions: list[tuple[MigrationView, MigrationDecision]]
    starts: list[tuple[float, str, str, int | None]]
    deliveries: list[tuple[float, str, str]]
    events: list[tuple[float, str]]
    report: RequestReport


def _options(scenario: Scenario, policy: Recording) -> EngineOptions:
    return EngineOptions(
        pace_tok_s=scenario.pace_tok_s,
        migration=policy,
        stall=StallDetector(),
        predictor=StaticPredictor(local_overhead_s=0.05, local_prefill_tok_s=2000.0),
    )


def _answer(scenario: Scenario) -> list[str]:
    return [f"tok{i} " for i in range(scenario.tokens)]


async def _live(scenario: Scenario) -> Story:
    loop = asyncio.get_running_loop()
    policy = Recording(scenario.migration())
    answer = _answer(scenario)
    epoch = loop.time()
    endpoints = {
        role: ScriptedEndpoint(
            role,
            script,
            answer,
            PROMPT_TOKENS,
            exact=scenario.local_exact if role == "local" else True,
            epoch=epoch,
        )
        for role, script in scenario.scripts().items()
    }
    engine = Engine(
        endpoints, scenario.cost_model, clock=loop.time, options=_options(scenario, policy)
    )
    deliveries: list[tuple[float, str, str]] = []
    events: list[tuple[float, str]] = []
    params = GenerationParams(max_tokens=scenario.max_tokens)
    run = engine.run(scenario.plan, [HumanMessage("hi")], params)
    report = run.report
    async for item in run.items:
        if isinstance(item, EngineEvent) and item.name == "disco_dispatch":
            continue  # the engine's own, before any stream: the core does not emit it
        at = loop.time() - epoch
        if hasattr(item, "text"):
            deliveries.append((at, item.endpoint, item.text))  # type: ignore[union-attr]
        else:
            events.append((at, item.name))  # type: ignore[union-attr]
    starts = sorted(
        (call.at, role, call.prefix, call.max_tokens)
        for role, endpoint in endpoints.items()
        for call in endpoint.calls
    )
    return Story(policy.seen, starts, deliveries, events, report)


def _simulated(scenario: Scenario) -> Story:
    policy = Recording(scenario.migration())
    infos = {
        "local": EndpointInfo("local", "scripted-local", exact_continuation=scenario.local_exact),
        "remote": EndpointInfo("remote", "scripted-remote", exact_continuation=True),
    }
    core = RequestCore(
        scenario.plan,
        infos,
        _options(scenario, policy),
        scenario.cost_model,
        RequestReport(action=scenario.plan.action, reason=""),
        prompt_tokens=PROMPT_TOKENS,
        max_tokens=scenario.max_tokens,
        now=0.0,
    )
    result = replay(core, scenario.scripts(), _answer(scenario))
    assert result.error is None
    starts = sorted(
        (at, s.role, s.prefix, s.max_tokens if s.max_tokens is not None else scenario.max_tokens)
        for at, s in result.starts
    )
    return Story(
        policy.seen,
        starts,
        [(at, d.endpoint, d.text) for at, d in result.deliveries],
        [(at, e.name) for at, e in result.events],
        core.report,
    )


def _times(rows: list[tuple[float, ...]]) -> list[float]:
    return [row[0] for row in rows]  # type: ignore[misc]


@pytest.mark.looptime(resolution=1e-9)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_live_driver_and_simulator_tell_the_same_story(scenario: Scenario) -> None:
    live = await _live(scenario)
    sim = _simulated(scenario)
    assert [d for d in live.decisions] == sim.decisions
    assert [s[1:] for s in live.starts] == [s[1:] for s in sim.starts]
    assert _times(live.starts) == pytest.approx(_times(sim.starts), abs=1e-6)
    assert [d[1:] for d in live.deliveries] == [d[1:] for d in sim.deliveries]
    assert _times(live.deliveries) == pytest.approx(_times(sim.deliveries), abs=1e-6)
    assert [e[1] for e in live.events] == [e[1] for e in sim.events]
    assert "".join(d[2] for d in live.deliveries) == "".join(
        _answer(scenario)[: scenario.max_tokens]
    )
    assert live.report.winner == sim.report.winner
    assert live.report.finished_by == sim.report.finished_by
    assert live.report.cost.unified_usd == pytest.approx(sim.report.cost.unified_usd)


def test_every_scenario_exercises_what_it_is_named_for() -> None:
    """A guard on the parity cases: each does what its name says (else parity proves little)."""
    stories = {s.name: _simulated(s) for s in SCENARIOS}
    names = {name: [e for _, e in story.events] for name, story in stories.items()}
    assert stories["race, server wins, paced"].report.winner == "remote"
    assert [s[1] for s in stories["hedge fires, device wins late"].starts][:2] == [
        "local",
        "remote",
    ]
    assert stories["hedge fires, device wins late"].report.winner == "local"
    assert "migration" in names["paced migration server -> device"]
    assert "migration_probe" in names["eager probe server -> device"]
    assert "migration" in names["paced migration device -> server"]
    assert names["error mid-stream, failover"] == ["failover", "failover_first_token"]
    assert "failover" in names["stall mid-stream, paced failover"]
    assert names["silent migration target, handed back"][:2] == ["migration", "failover"]
    assert len(stories["capped answer"].deliveries) == 25


# -- the simulator's fast path -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    ttft=st.floats(0.01, 5.0),
    gap=st.floats(0.001, 0.3),
    tokens=st.integers(1, 120),
    pace=st.one_of(st.none(), st.floats(1.0, 200.0)),
)
def test_the_closed_form_delivery_is_what_the_core_delivers(
    ttft: float, gap: float, tokens: int, pace: float | None
) -> None:
    core = RequestCore(
        REMOTE,
        {"remote": EndpointInfo("remote", "r", exact_continuation=True)},
        EngineOptions(pace_tok_s=pace),
        CostModel(),
        RequestReport(action="remote", reason=""),
        prompt_tokens=10,
        max_tokens=None,
        now=0.0,
    )
    result = replay(core, {"remote": Behaviour(ttft, gap)}, ["x"] * tokens)
    closed = delivery([Segment(ttft, gap, tokens)], pace)
    expanded = [g for g, n in closed.runs for _ in range(n)]
    # The pacer releases a token that arrives within TIME_EPS_S of its release time at once
    # (clocks are quantised), so a delivery may come up to that early: a gap differs from the
    # closed form by at most twice that, the schedule itself never drifts.
    assert expanded == pytest.approx(core.report.tbt_gaps_s, abs=2 * TIME_EPS_S)
    assert closed.last_s == pytest.approx(result.deliveries[-1][0], abs=TIME_EPS_S)


@pytest.mark.looptime(resolution=1e-9)
async def test_the_engine_opens_each_run_with_its_dispatch_decision_and_report() -> None:
    answer = ["a ", "b "]
    endpoint = ScriptedEndpoint("remote", Behaviour(0.1, 0.01), answer, PROMPT_TOKENS)
    engine = Engine({"remote": endpoint}, CostModel(), clock=asyncio.get_running_loop().time)
    plan = Plan((Start("remote"),), action="remote", reason="mode=remote")
    run = engine.run(plan, [HumanMessage("hi")], GenerationParams(), local_queue=2)
    items = [item async for item in run.items]
    first = items[0]
    assert isinstance(first, EngineEvent) and first.name == "disco_dispatch"
    assert first.data == {"action": "remote", "reason": "mode=remote", "expected": []}
    assert (run.report.action, run.report.local_queue, run.report.winner) == ("remote", 2, "remote")
    assert run.report.total_s == pytest.approx(0.11)


@settings(max_examples=300, deadline=None)
@given(
    local_at=st.one_of(st.none(), st.just(0.0), st.floats(0.01, 3.0)),
    remote_at=st.one_of(st.none(), st.just(0.0), st.floats(0.01, 3.0)),
    queue=st.floats(0.0, 2.0),
    prefill=st.floats(0.01, 4.0),
    server_ttft=st.floats(0.01, 6.0),
)
def test_the_dispatch_closed_form_is_what_the_core_decides(
    local_at: float | None,
    remote_at: float | None,
    queue: float,
    prefill: float,
    server_ttft: float,
) -> None:
    """The simulator resolves dispatch (race, hedge, first token wins, loser cancelled) in
    closed form (`resolve_action`); the core, given the same first-token times, agrees."""
    offsets = [t for t in (local_at, remote_at) if t is not None]
    assume(offsets and min(offsets) == 0.0)
    plan = Plan.at("p", local_at, remote_at)
    begin = max(local_at or 0.0, queue)
    device_token = begin + prefill if local_at is not None else math.inf
    server_token = remote_at + server_ttft if remote_at is not None else math.inf
    # Exact ties (measure zero) are broken differently: the core lets the event come first.
    for a, b in ((device_token, server_token), (device_token, remote_at), (server_token, local_at)):
        assume(a is None or b is None or abs(a - b) > 1e-6)
    cm = CostModel(price_in_per_mtok=1e6, price_out_per_mtok=2e6, usd_per_j=1.0)
    res = resolve_action(
        plan,
        server_ttft_s=server_ttft,
        local_begin_s=begin,
        prefill_s=prefill,
        prompt_tokens=100,
        output_tokens=5,
        cost_model=cm,
    )
    core = RequestCore(
        plan,
        {
            "local": EndpointInfo("local", "l", exact_continuation=True),
            "remote": EndpointInfo("remote", "r", exact_continuation=True),
        },
        EngineOptions(),
        cm,
        RequestReport(action="p", reason=""),
        prompt_tokens=100,
        max_tokens=None,
        now=0.0,
    )
    scripts: dict[str, Script] = {
        "local": Behaviour(lambda context, at: begin - at + prefill, 0.01),
        "remote": Behaviour(server_ttft, 0.01),
    }
    result = replay(core, scripts, ["x "] * 5)
    started = {s.role: i for i, (_, s) in enumerate(result.starts)}
    assert core.report.winner == res.winner
    assert core.report.ttft_s == pytest.approx(res.ttft_s)
    assert ("local" in started, "remote" in started) == (res.local_started, res.remote_started)
    assert core.report.cost.server_usd == pytest.approx(res.cost.server_usd)
    if res.winner == "local" or not res.local_started:
        assert core.report.cost.device_j == pytest.approx(res.cost.device_j)
    else:  # the device lost: it was stopped at the server's first token, mid-prefill or not
        assert result.stopped_s[started["local"]] == pytest.approx(res.local_end_s)
