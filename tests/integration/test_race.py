"""Race mode over the real local model and the real loopback server: who wins, and the loser."""

from __future__ import annotations

import asyncio
import contextlib

import openai
import pytest

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer
from tests._net import open_connections_to

# Long enough that the device's prefill takes seconds on one thread.
LONG_PROMPT = "Summarise this text. " + "The river carries sand to the sea. " * 120


def race_model(local: LlamaCppEndpoint, server: LoopbackServer, **kw: object) -> DiscoChatModel:
    return DiscoChatModel(
        mode="race",
        local=local,
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        temperature=0.0,
        **kw,
    )


async def warm_connection(model: DiscoChatModel, server: LoopbackServer) -> None:
    """One tiny request over the model's own remote client, so its connection is open.

    Otherwise a device that answers within a few ms can win before the remote's request has
    even reached the server, and the server would have nothing to log.
    """
    warm = DiscoChatModel(mode="remote", remote=model.remote, failover=False, max_tokens=1)
    await warm.ainvoke("hi")
    await asyncio.to_thread(server.clear_requests)


async def test_local_wins_when_the_remote_is_delayed_and_the_remote_is_cancelled(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = race_model(local_endpoint, server, max_tokens=8)
    await warm_connection(model, server)
    server.set_fault("delay", seconds=20.0)
    message = await model.ainvoke("Name a colour.")
    report = message.response_metadata["disco_report"]
    assert report["winner"] == "local"
    assert set(message.response_metadata["disco_endpoints"]) == {"local"}
    assert report["endpoints"]["remote"]["outcome"] == "cancelled"
    # The server saw the client go away: the HTTP stream was closed, not left to finish.
    entry = await asyncio.to_thread(server.wait_for_request_status, 0, "disconnected", 10.0)
    assert entry["tokens_sent"] == 0
    # Usage includes what the cancelled remote is billed for (its input tokens).
    local_in = report["endpoints"]["local"]["input_tokens"]
    remote_in = report["endpoints"]["remote"]["input_tokens"]
    assert remote_in > 0
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == local_in + remote_in
    assert report["cost"]["server_usd"] > 0


async def test_remote_wins_when_the_device_is_slow_and_the_llama_generation_stops(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    # The server has this long prompt in its KV cache (like a provider's prompt cache), the
    # device has not: the device prefills for seconds while the server answers at once.
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")
    await client.chat.completions.create(
        model=server.model_name,
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=1,
    )
    await client.close()
    model = race_model(local_endpoint, server, max_tokens=8)
    message = await model.ainvoke(LONG_PROMPT)
    report = message.response_metadata["disco_report"]
    assert report["winner"] == "remote"
    assert set(message.response_metadata["disco_endpoints"]) == {"remote"}
    local_run = report["endpoints"]["local"]
    assert local_run["outcome"] == "cancelled"
    assert await local_endpoint.wait_idle(30.0)
    # Stopped at the first token boundary after the cancel: nothing like the 8 it was asked.
    assert local_run["output_tokens"] <= 1


async def test_consumer_that_stops_after_three_chunks_leaves_nothing_running(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = race_model(local_endpoint, server, max_tokens=200)
    await warm_connection(model, server)
    baseline = open_connections_to(server.port)  # e.g. the fixture's control client
    received = 0
    async for chunk in model.astream("Tell me a long story about the sea."):
        received += bool(chunk.content)
        if received == 3:
            break
    me = asyncio.current_task()
    async with asyncio.timeout(10):
        # The abandoned generator is closed by the loop's finaliser; wait for it, bounded.
        # No event marks "the finaliser ran", so poll the task set (bounded by the timeout).
        while [t for t in asyncio.all_tasks() if t is not me]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert not local_endpoint.busy and local_endpoint.pending == 0
    entry = await asyncio.to_thread(
        server.wait_for_request_status, 0, ("disconnected", "completed"), 10.0
    )
    # Whoever lost was cancelled at the first token; whoever won was cut off after 3 chunks.
    assert entry["status"] == "disconnected"
    assert entry["tokens_sent"] < 200
    # A half-read HTTP response cannot go back to the pool: the connection itself was closed.
    assert open_connections_to(server.port) - baseline == set()


def test_sync_stream_closed_early_stops_both_endpoints(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = race_model(local_endpoint, server, max_tokens=200)
    baseline = open_connections_to(server.port)  # e.g. the fixture's control client
    stream = model.stream("Tell me a long story about the mountains.")
    with contextlib.closing(stream):
        chunks = [next(stream) for _ in range(3)]
    assert all(c.response_metadata["disco_endpoints"] for c in chunks)
    assert not local_endpoint.busy and local_endpoint.pending == 0
    entry = server.wait_for_request_status(0, ("disconnected", "completed"), 10.0)
    assert entry["status"] == "disconnected"
    assert open_connections_to(server.port) - baseline == set()


@pytest.mark.parametrize("mode", ["local", "remote"])
async def test_single_endpoint_modes_only_touch_their_endpoint(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, mode: str
) -> None:
    model = DiscoChatModel(
        mode=mode,
        local=local_endpoint,
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        temperature=0.0,
        max_tokens=6,
    )
    message = await model.ainvoke("Say something.")
    report = message.response_metadata["disco_report"]
    assert report["winner"] == mode
    assert list(report["endpoints"]) == [mode]
    assert len(server.requests()) == (1 if mode == "remote" else 0)
