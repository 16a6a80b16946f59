"""Token-level migration over the real local model and the real loopback server (vllm mode).

Greedy sampling and the same model on both sides make the strongest invariant checkable: the
migrated answer equals the answer generated without migration, character for character.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer
from tests.integration.test_failover import QUESTION, model_for, split_by_endpoint

# The event loop and a 2-core machine add jitter to each release; a stall would be far larger.
GAP_TOLERANCE_S = 0.1

# Device energy priced high: each device token costs more than a server token.
DEVICE_EXPENSIVE = {"usd_per_j": 1e-3}


async def timed(model: DiscoChatModel) -> tuple[list[AIMessageChunk], list[float], dict[str, Any]]:
    chunks: list[AIMessageChunk] = []
    arrivals: list[float] = []
    async for chunk in model.astream(QUESTION):
        chunks.append(chunk)
        if chunk.content:
            arrivals.append(time.monotonic())
    return chunks, arrivals, chunks[-1].response_metadata["disco_report"]


@pytest.fixture(scope="module")
def straight_answer(local_endpoint: LlamaCppEndpoint, loopback: LoopbackServer) -> str:
    model = model_for(local_endpoint, loopback, "local", failover=False)
    return str(model.invoke(QUESTION).content)


@pytest.mark.parametrize(
    ("mode", "costs", "source", "target", "pace_tok_s"),
    [
        ("remote", {}, "remote", "local", 20.0),
        # A remote's predicted TTFT is longer: a slower pace builds the buffer it needs sooner.
        ("local", DEVICE_EXPENSIVE, "local", "remote", 10.0),
    ],
)
async def test_paced_migration_is_seamless_and_text_exact(
    local_endpoint: LlamaCppEndpoint,
    server: LoopbackServer,
    straight_answer: str,
    mode: str,
    costs: dict[str, float],
    source: str,
    target: str,
    pace_tok_s: float,
) -> None:
    model = model_for(
        local_endpoint, server, mode, migration="cost", pace_tok_s=pace_tok_s, **costs
    )
    chunks, arrivals, report = await timed(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == [source, target]
    assert "".join(text for _, text in runs) == straight_answer
    (event,) = [e for e in report["events"] if e["event"] == "migration"]
    assert (event["from"], event["to"]) == (source, target)
    assert event["buffered_tokens"] >= 1
    assert report["endpoints"][source]["outcome"] == "migrated"
    assert report["endpoints"][target]["outcome"] == "completed"
    # Paced: the consumer never waits much longer than one pace gap, migration included.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) <= 1.0 / pace_tok_s + GAP_TOLERANCE_S, max(gaps)
    if target == "remote":
        (entry,) = server.requests()
        assert entry["prefix"] == runs[0][1]
        assert entry["text_sent"] == runs[1][1]


async def test_eager_migration_to_the_device_probes_then_takes_over(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, straight_answer: str
) -> None:
    model = model_for(local_endpoint, server, "remote", migration="cost")
    chunks, _arrivals, report = await timed(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["remote", "local"]
    assert "".join(text for _, text in runs) == straight_answer
    names = [e["event"] for e in report["events"]]
    assert names.index("migration_probe") < names.index("migration")
    (entry,) = server.requests()
    assert entry["status"] == "disconnected"  # the source was stopped at the hand-over
    assert entry["text_sent"] == runs[0][1]


async def test_eager_migration_to_the_server_continues_exactly(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, straight_answer: str
) -> None:
    model = model_for(local_endpoint, server, "local", migration="cost", **DEVICE_EXPENSIVE)
    chunks, _arrivals, report = await timed(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["local", "remote"]
    assert "".join(text for _, text in runs) == straight_answer
    (entry,) = server.requests()
    assert entry["prefix"] == runs[0][1]
    (event,) = [e for e in report["events"] if e["event"] == "migration"]
    assert event["reason"] == "predicted stall within the bound"


async def test_no_migration_when_the_target_cannot_continue(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, straight_answer: str
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
    assert "".join(str(c.content) for c in chunks) == straight_answer
    assert not [e for e in report["events"] if e["event"].startswith("migration")]
    assert server.requests() == []
