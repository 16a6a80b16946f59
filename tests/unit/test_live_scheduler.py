"""What the live model learns from a request: the plan the engine executed, keyed by the
policy's own plan."""

from __future__ import annotations

from pathlib import Path

from langchain_disco import DiscoSettings
from langchain_disco._live_scheduler import LiveScheduler
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    Plan,
    RequestFeatures,
    RequestOutcome,
    Start,
)


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.seen: list[RequestOutcome] = []

    def plan(self, request: RequestFeatures, ctx: DispatchContext) -> Plan:
        return Plan((Start("local"),), action="local")

    def observe(self, outcome: RequestOutcome) -> None:
        self.seen.append(outcome)


def test_a_capability_swapped_request_is_learned_as_executed(tmp_path: Path) -> None:
    policy = Recording()
    settings = DiscoSettings(profile_path=tmp_path / "p.json", persist_profiles=False)
    scheduler = LiveScheduler(settings, policy)
    features = RequestFeatures(prompt_tokens=200)
    chosen = Plan((Start("local"),), action="local")
    # The device cannot call tools: the engine ran the server instead.
    executed = Plan((Start("remote"),), action="remote", reason="local cannot serve it")
    report = RequestReport(action="remote", reason=executed.reason, winner="remote")
    report.endpoints["remote"] = EndpointRun(
        name="remote",
        kind="remote",
        model="m",
        outcome="completed",
        started_s=0.0,
        first_token_s=0.4,
        ended_s=1.0,
        output_tokens=31,
    )
    scheduler.learn(features, chosen, report, executed=executed)
    (outcome,) = policy.seen
    assert outcome.plan is executed and outcome.chosen is chosen
    # The server's run is learned (it used to be dropped: the chosen plan had no server).
    assert [(e.endpoint, e.first_token_s) for e in outcome.endpoints] == [("remote", 0.4)]


def test_an_executed_plan_that_is_the_chosen_one_needs_no_key(tmp_path: Path) -> None:
    policy = Recording()
    settings = DiscoSettings(profile_path=tmp_path / "p.json", persist_profiles=False)
    scheduler = LiveScheduler(settings, policy)
    chosen = Plan((Start("local"),), action="local")
    scheduler.learn(RequestFeatures(prompt_tokens=10), chosen, RequestReport("local", ""), chosen)
    assert policy.seen[0].plan is chosen and policy.seen[0].chosen is None
