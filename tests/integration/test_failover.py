"""Mid-stream failover over the real local model and the real loopback server.

Invariant checked everywhere: the delivered text is the failed source's text followed by the
target's continuation, with nothing duplicated, lost or reordered. Both sides are observed
independently of the engine: the server's request log (what it sent, what prefix it was asked to
continue) and a recording spy around the real local endpoint.

(Why not "equals the fault-free greedy answer"? It usually does, but llama.cpp's arithmetic
depends on how a prompt is batched, which depends on its prefix-cache state, so near-tied
tokens can flip between two otherwise identical greedy runs. The invariant above is exact.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableLambda

from langchain_disco import AllEndpointsFailedError, DiscoChatModel, Endpoint, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer
from tests._faulty import FailsOnceAfter, Recording

QUESTION = "Write three sentences about rivers."
MAX_TOKENS = 24


def model_for(local: Endpoint, server: LoopbackServer, mode: str, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "mode": mode,
        "local": local,
        "remote_base_url": server.base_url,
        "remote_model": server.model_name,
        "remote_continuation": "vllm",
        "remote_max_retries": 0,
        "temperature": 0.0,
        "max_tokens": MAX_TOKENS,
        "stall_floor_s": 0.5,
    }
    return DiscoChatModel(**{**params, **kw})


async def collect(model: DiscoChatModel) -> tuple[list[AIMessageChunk], dict[str, Any]]:
    chunks = [c async for c in model.astream(QUESTION)]
    return chunks, chunks[-1].response_metadata["disco_report"]


def split_by_endpoint(chunks: list[AIMessageChunk]) -> list[tuple[str, str]]:
    """[(endpoint, text)] runs of consecutive chunks from the same endpoint."""
    runs: list[tuple[str, str]] = []
    for chunk in chunks:
        if not chunk.content:
            continue
        (endpoint,) = chunk.response_metadata["disco_endpoints"]
        if runs and runs[-1][0] == endpoint:
            runs[-1] = (endpoint, runs[-1][1] + str(chunk.content))
        else:
            runs.append((endpoint, str(chunk.content)))
    return runs


@pytest.fixture(autouse=True)
async def no_leaks(
    loopback: LoopbackServer, local_endpoint: LlamaCppEndpoint
) -> AsyncIterator[None]:
    """After every test: no task left running, the device idle, no HTTP stream left open.

    (Idle keep-alive connections in a client's pool are not leaks; an unfinished stream is,
    and the server sees those: every request it logged must have ended.)
    """
    yield
    me = asyncio.current_task()
    async with asyncio.timeout(10):
        # The loop's finaliser closes abandoned generators; no event marks it, so poll.
        while [t for t in asyncio.all_tasks() if t is not me]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await local_endpoint.wait_idle(10.0)
    for index in range(len(loopback.requests())):
        ended = ("completed", "disconnected", "fault", "error")
        await asyncio.to_thread(loopback.wait_for_request_status, index, ended, 10.0)


@pytest.mark.parametrize("pace_tok_s", [None, 30.0], ids=["eager", "paced"])
@pytest.mark.parametrize("after_tokens", [1, 4, 11])
@pytest.mark.parametrize("fault", ["disconnect", "inband_error", "malformed", "stall"])
async def test_remote_fault_mid_stream_continues_on_the_device(
    local_endpoint: LlamaCppEndpoint,
    server: LoopbackServer,
    fault: str,
    after_tokens: int,
    pace_tok_s: float | None,
) -> None:
    extra = {"seconds": 30.0} if fault == "stall" else {}
    server.set_fault(fault, after_tokens=after_tokens, **extra)
    local = Recording(local_endpoint)
    model = model_for(local, server, "remote", pace_tok_s=pace_tok_s)
    chunks, report = await collect(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["remote", "local"]
    entry = await asyncio.to_thread(
        server.wait_for_request_status, 0, ("fault", "disconnected"), 10.0
    )
    # The source part is exactly what the server sent before the fault ...
    assert runs[0][1] == entry["text_sent"]
    assert len(entry["text_sent"]) > 0
    # ... the device continued from exactly that text, and all it generated was delivered.
    assert local.streams == [(runs[0][1], runs[1][1])]
    (event,) = [e for e in report["events"] if e["event"] == "failover"]
    assert (event["from"], event["to"]) == ("remote", "local")
    assert event["reason"] == ("stall" if fault == "stall" else "error")
    assert event["token_index"] == after_tokens
    assert report["endpoints"]["remote"]["outcome"] == "failed"
    assert report["endpoints"]["local"]["outcome"] == "completed"
    assert await local_endpoint.wait_idle(10.0)


@pytest.mark.parametrize("mode", ["local", "race"])
@pytest.mark.parametrize("after_tokens", [2, 9])
async def test_device_fault_mid_stream_continues_on_the_server(
    local_endpoint: LlamaCppEndpoint,
    server: LoopbackServer,
    after_tokens: int,
    mode: str,
) -> None:
    faulty = FailsOnceAfter(local_endpoint, after_tokens)
    if mode == "race":
        server.set_fault("delay", seconds=5.0)  # the device wins the race, then fails
    chunks, report = await collect(model_for(faulty, server, mode))
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["local", "remote"]
    assert report["endpoints"]["local"]["outcome"] == "failed"
    # The server was asked to continue exactly the delivered text, and sent only the rest.
    entry = server.requests()[-1]
    assert entry["prefix"] == runs[0][1]
    assert entry["continuation"] == "vllm"
    assert entry["text_sent"] == runs[1][1]


async def test_both_endpoints_failing_raise_one_error_with_both_causes(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    server.set_fault("error_status", status=500, count=2)
    faulty = FailsOnceAfter(local_endpoint, 3)
    with pytest.raises(AllEndpointsFailedError) as err:
        await model_for(faulty, server, "local").ainvoke(QUESTION)
    causes = err.value.errors
    assert len(causes) == 2
    assert "injected fault" in str(causes[0])
    assert "500" in str(causes[1])


async def test_race_loser_error_before_the_first_token_is_not_a_failover(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    server.set_fault("error_status", status=503)
    chunks, report = await collect(model_for(local_endpoint, server, "race"))
    assert {e for c in chunks for e in c.response_metadata.get("disco_endpoints", [])} == {"local"}
    assert "".join(str(c.content) for c in chunks)
    assert report["winner"] == "local"
    assert not [e for e in report["events"] if e["event"] == "failover"]


async def test_remote_without_exact_continuation_is_not_a_failover_target_by_default(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    faulty = FailsOnceAfter(local_endpoint, 3)
    model = model_for(faulty, server, "local", remote_continuation="none")
    with pytest.raises(Exception, match="cannot continue a partial answer exactly"):
        await model.ainvoke(QUESTION)
    assert server.requests() == []


async def test_approximate_continuation_is_explicit_and_flagged(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    faulty = FailsOnceAfter(local_endpoint, 3)
    model = model_for(
        faulty,
        server,
        "local",
        remote_continuation="none",
        approximate_continuation_prompt="Continue this text exactly: {partial}",
    )
    chunks, report = await collect(model)
    runs = split_by_endpoint(chunks)
    assert [endpoint for endpoint, _ in runs] == ["local", "remote"]
    (event,) = [e for e in report["events"] if e["event"] == "failover"]
    assert event["approximate"] is True
    (entry,) = server.requests()
    assert entry["messages"][-1]["content"] == f"Continue this text exactly: {runs[0][1]}"


async def test_dispatch_and_failover_are_langchain_custom_events(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    server.set_fault("disconnect", after_tokens=2)
    model = model_for(local_endpoint, server, "remote")
    chain = RunnableLambda(lambda question: question) | model  # events go to the enclosing run
    custom = [
        (event["name"], event["data"])
        async for event in chain.astream_events(QUESTION, version="v2")
        if event["event"] == "on_custom_event"
    ]
    names = [name for name, _ in custom]
    assert names[0] == "disco_dispatch"
    assert custom[0][1]["action"] == "remote"
    assert "failover" in names and "failover_first_token" in names
    failover = dict(custom)["failover"]
    assert (failover["from"], failover["to"], failover["token_index"]) == ("remote", "local", 2)


async def test_custom_events_reach_callbacks_on_invoke(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    names: list[str] = []

    class Listener(AsyncCallbackHandler):
        async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            names.append(name)

    server.set_fault("inband_error", after_tokens=3)
    model = model_for(local_endpoint, server, "remote")
    await model.ainvoke(QUESTION, config={"callbacks": [Listener()]})
    assert names[0] == "disco_dispatch" and "failover" in names


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_invariant_holds_under_sampling_over_seeds_and_cut_points(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, seed: int
) -> None:
    """Sampled (not greedy) answers: the invariant is structural, so it holds for any text."""
    fault = ("disconnect", "inband_error", "malformed")[seed % 3]
    after_tokens = 1 + (seed * 5) % 13  # cut points 6, 11, 3, 8, 13, 5
    server.set_fault(fault, after_tokens=after_tokens)
    local = Recording(local_endpoint)
    model = model_for(local, server, "remote", temperature=0.8, seed=seed)
    chunks, report = await collect(model)
    runs = split_by_endpoint(chunks)
    entry = await asyncio.to_thread(server.wait_for_request_status, 0, "fault", 10.0)
    if entry["tokens_sent"] < after_tokens:
        # The sampled answer ended before the cut point: the fault struck at its end.
        assert runs[0][0] == "remote"
    assert runs[0] == ("remote", entry["text_sent"])
    if len(runs) > 1:
        assert [endpoint for endpoint, _ in runs] == ["remote", "local"]
        assert local.streams == [(runs[0][1], runs[1][1])]
    assert report["events"][0]["event"] == "failover"


@pytest.mark.parametrize("mode", ["local", "remote"])
async def test_a_blocked_event_loop_is_not_read_as_a_stall(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, mode: str
) -> None:
    # The consumer blocks the event loop for three stall thresholds right after the first
    # token (a saturated loop). The endpoint kept producing meanwhile (llama.cpp in its worker
    # thread, the server over its socket); what it produced is handled before the stall timer
    # when the loop comes back, so the silence is not mistaken for the endpoint's.
    model = model_for(local_endpoint, server, mode, stall_floor_s=0.5)
    chunks: list[AIMessageChunk] = []
    blocked = False
    async for chunk in model.astream(QUESTION):
        chunks.append(chunk)
        if chunk.content and not blocked:
            blocked = True
            time.sleep(1.5)  # noqa: ASYNC251 - the point: nothing else runs meanwhile
    report = chunks[-1].response_metadata["disco_report"]
    assert blocked
    assert not [e for e in report["events"] if e["event"] == "failover"]
    assert [endpoint for endpoint, _ in split_by_endpoint(chunks)] == [mode]
    assert report["endpoints"][mode]["outcome"] == "completed"
