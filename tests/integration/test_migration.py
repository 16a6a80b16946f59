"""Token-level migration over the real local model and the real loopback server (vllm mode).

The invariant is checked against what each side really produced, observed outside the engine:
the server's request log and a recording spy around the real local endpoint (see
test_failover.py for why equality with an unmigrated greedy run is not asserted).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.scheduling.migration import CostAwareMigration
from langchain_disco.testing import LoopbackServer
from tests._faulty import Recording
from tests.integration.test_failover import QUESTION, model_for, split_by_endpoint

# The event loop and a 2-core machine add jitter to each release; a stall would be far larger.
GAP_TOLERANCE_S = 0.1

# Device energy priced high: each device token costs more than a server token. The server prior
# is a fast measured provider, like the loopback server here (the default prior, "all", includes
# replicate's multi-second TTFTs and would size the buffer for those).
DEVICE_EXPENSIVE = {"usd_per_j": 1e-3, "server_profile": "anyscale-7b"}


async def timed(model: DiscoChatModel) -> tuple[list[AIMessageChunk], list[float], dict[str, Any]]:
    chunks: list[AIMessageChunk] = []
    arrivals: list[float] = []
    async for chunk in model.astream(QUESTION):
        chunks.append(chunk)
        if chunk.content:
            arrivals.append(time.monotonic())
    return chunks, arrivals, chunks[-1].response_metadata["disco_report"]


def assert_continued_exactly(
    report: dict[str, Any],
    runs: list[tuple[str, str]],
    source_stream: tuple[str, str],
    target_streams: list[tuple[str, str]],
) -> bool:
    """One paced migration, text exact, from what each side really produced ((prefix, text) per
    stream, seen by a spy or the server's log); True if the policy hedged.

    The target runs once per hedge handed back (it missed the buffer's end: nothing it made was
    delivered; it started from an earlier point of the same text), then once to continue from
    exactly the text delivered before it, all of which is delivered.
    """
    (source, before), (target, after) = runs
    (event,) = [e for e in report["events"] if e["event"] == "migration"]
    assert (event["from"], event["to"]) == (source, target)
    assert event["buffered_tokens"] >= 1
    taken = event["reason"].startswith("hedge")
    # The source's text was all delivered, unless a hedged target took over: then what it
    # generated past the hedge point was dropped, never delivered.
    assert source_stream[0] == ""
    assert source_stream[1].startswith(before) if taken else source_stream[1] == before
    *handed_back, continuation = target_streams
    assert continuation == (before, after)
    assert all(before.startswith(prefix) for prefix, _ in handed_back)
    names = [e["event"] for e in report["events"]]
    assert names.count("migration_handed_back") == len(handed_back)
    assert names.count("migration_hedge") == len(handed_back) + taken
    if handed_back:
        last = len(names) - 1 - names[::-1].index("migration_handed_back")
        assert last < names.index("migration")
    return bool(handed_back) or taken


@pytest.mark.parametrize(
    ("mode", "costs", "source", "target", "pace_tok_s"),
    [
        # A reading pace well below either side's decode rate, so the buffer builds up even on a
        # loaded 2-core machine.
        ("remote", {}, "remote", "local", 10.0),
        ("local", DEVICE_EXPENSIVE, "local", "remote", 10.0),
    ],
)
@pytest.mark.parametrize("hedge", [False, True], ids=["margin", "hedged"])
async def test_paced_migration_is_seamless_and_text_exact(
    local_endpoint: LlamaCppEndpoint,
    server: LoopbackServer,
    hedge: bool,
    mode: str,
    costs: dict[str, float],
    source: str,
    target: str,
    pace_tok_s: float,
) -> None:
    local = Recording(local_endpoint)
    # Long enough an answer for the buffer to build up while much of it still remains.
    model = model_for(
        local, server, mode, migration="cost", pace_tok_s=pace_tok_s, max_tokens=48, **costs
    )
    # `migration="cost"` builds the default policy; no setting picks the hand-over: pin it here.
    model._engine_for_run().options.migration = CostAwareMigration(hedge=hedge)
    chunks, arrivals, report = await timed(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == [source, target]
    # What each side really produced, seen from outside the engine: (prefix, text) per stream.
    served = [(entry["prefix"], entry["text_sent"]) for entry in server.requests()]
    (source_stream,), target_streams = (
        (served, local.streams) if target == "local" else (local.streams, served)
    )
    hedged = assert_continued_exactly(report, runs, source_stream, target_streams)
    assert hedge or not hedged
    assert report["endpoints"][source]["outcome"] == "migrated"
    assert report["endpoints"][target]["outcome"] == "completed"
    # Paced: the consumer never waits much longer than one pace gap, migration included. The
    # yardstick is a paced stream without migration measured in the same run (same machine
    # load), so the check is about the migration, not about the machine.
    control = model_for(local_endpoint, server, mode, pace_tok_s=pace_tok_s, max_tokens=48, **costs)
    _chunks, control_arrivals, _report = await timed(control)
    control_gap = max(b - a for a, b in itertools.pairwise(control_arrivals))
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) <= max(control_gap, 1.0 / pace_tok_s) + GAP_TOLERANCE_S, (
        max(gaps),
        control_gap,
    )


async def test_eager_migration_to_the_device_probes_then_takes_over(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    local = Recording(local_endpoint)
    model = model_for(local, server, "remote", migration="cost")
    chunks, _arrivals, report = await timed(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["remote", "local"]
    names = [e["event"] for e in report["events"]]
    assert names.index("migration_probe") < names.index("migration")
    (entry,) = server.requests()
    assert entry["status"] == "disconnected"  # the source was stopped at the hand-over
    # The server may have sent a little more than was delivered before it was stopped; the
    # device continued from exactly what was delivered, and everything it made was delivered.
    assert entry["text_sent"].startswith(runs[0][1])
    probe, takeover = local.streams
    assert runs[0][1].startswith(probe[0])  # the probe prefilled an earlier prefix
    assert takeover == (runs[0][1], runs[1][1])


async def test_eager_migration_to_the_server_continues_exactly(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    local = Recording(local_endpoint)
    model = model_for(local, server, "local", migration="cost", **DEVICE_EXPENSIVE)
    chunks, _arrivals, report = await timed(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["local", "remote"]
    (entry,) = server.requests()
    assert local.streams[0][1].startswith(runs[0][1])
    assert entry["prefix"] == runs[0][1]
    assert entry["text_sent"] == runs[1][1]
    (event,) = [e for e in report["events"] if e["event"] == "migration"]
    assert event["reason"] == "predicted stall within the bound"


async def test_no_migration_when_the_target_cannot_continue(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(
        local_endpoint,
        server,
        "local",
        migration="cost",
        remote_continuation="none",
        **DEVICE_EXPENSIVE,
    )
    chunks, _arrivals, report = await timed(model)
    assert {e for c in chunks for e in c.response_metadata.get("disco_endpoints", [])} == {"local"}
    assert not [e for e in report["events"] if e["event"].startswith("migration")]
    assert server.requests() == []


async def test_a_migration_target_silent_past_its_predicted_first_token_hands_back(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    # The server takes the hand-over but holds its first token for 30 s, well inside its
    # 60 s first-token timeout: without a watch the reader would wait for it. The engine gives
    # it its predicted TTFT plus the stall threshold, then continues on the device from
    # exactly what was generated.
    server.set_fault("delay", seconds=30.0)
    local = Recording(local_endpoint)
    model = model_for(local, server, "local", migration="cost", **DEVICE_EXPENSIVE)
    chunks, _arrivals, report = await timed(model)
    names = [e["event"] for e in report["events"]]
    assert names.index("migration") < names.index("failover")
    (failover,) = [e for e in report["events"] if e["event"] == "failover"]
    assert (failover["from"], failover["to"], failover["reason"]) == ("remote", "local", "stall")
    assert "no first token" in report["endpoints"]["remote"]["error"]
    assert report["endpoints"]["remote"]["outcome"] == "failed"
    assert report["endpoints"]["local"]["outcome"] == "completed"
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["local"]  # the server delivered nothing
    (before, handed), (prefix, after) = local.streams
    assert before == "" and prefix == handed  # continued from exactly what was generated
    assert runs[0][1] == handed + after
    entry = await asyncio.to_thread(server.wait_for_request_status, 0, ("disconnected",), 10.0)
    assert entry["text_sent"] == ""  # cancelled while it held its first token
