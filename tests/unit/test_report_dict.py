"""`RequestReport.to_dict` is `dataclasses.asdict` with the derived figures, built field by
field: the same dict, and as independent of the report."""

from __future__ import annotations

from dataclasses import asdict, fields

from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling.cost import Cost


def _rich_report() -> RequestReport:
    report = RequestReport(
        "race", "both, the server is cheap", winner="local", finished_by="remote"
    )
    report.ttft_s, report.total_s = 0.12, 1.5
    report.tbt_gaps_s = [0.01 * i for i in range(200)]
    report.endpoints = {
        "local": EndpointRun(
            "llama",
            "local",
            "gemma",
            outcome="migrated",
            started_s=0.0,
            first_token_s=0.12,
            ended_s=0.6,
            input_tokens=40,
            output_tokens=12,
            attempted_input_tokens=40,
            delivered_chunks=12,
            logprobs=[{"token": "a", "logprob": -0.1}],
        ),
        "remote": EndpointRun(
            "openai",
            "remote",
            "gpt",
            outcome="completed",
            started_s=0.0,
            first_token_s=0.3,
            ended_s=1.5,
            input_tokens=40,
            output_tokens=30,
            cached_input_tokens=8,
            response_id="r-1",
            finish_reason="stop",
            continuation="continues (probed)",
        ),
    }
    report.cost = Cost(server_usd=1e-5, device_j=2.0, unified_usd=1.1e-5)
    report.events = [
        {"event": "migration", "at_s": 0.6, "from": "local", "to": "remote", "nested": {"a": [1]}}
    ]
    report.expected = [{"action": "race", "ttft_s": 0.1, "cost": {"server_usd": 1.0}}]
    report.expected_cached_tokens = {"local": 10, "remote": 0}
    report.state = {"budget": "fleet", "profiles": "local"}
    return report


def test_to_dict_is_asdict_without_logprobs_plus_the_derived_figures() -> None:
    report = _rich_report()
    reference = asdict(report)
    for run in reference["endpoints"].values():
        del run["logprobs"]
    data = report.to_dict()
    derived = {
        "max_stall_s",
        "mean_tbt_s",
        "input_tokens",
        "attempted_input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "tokens_per_endpoint",
    }
    assert set(data) == {f.name for f in fields(RequestReport)} | derived
    assert {k: v for k, v in data.items() if k not in derived} == reference
    assert data["max_stall_s"] == max(report.tbt_gaps_s)
    assert data["tokens_per_endpoint"] == {"local": 12, "remote": 30}


def test_to_dict_shares_no_mutable_value_with_the_report() -> None:
    report = _rich_report()
    data = report.to_dict()
    data["tbt_gaps_s"].append(99.0)
    data["endpoints"]["local"]["output_tokens"] = 0
    data["events"][0]["nested"]["a"].append(2)
    data["expected"][0]["cost"]["server_usd"] = 0.0
    data["state"]["budget"] = "x"
    data["expected_cached_tokens"]["local"] = 0
    assert report.to_dict() == _rich_report().to_dict()
