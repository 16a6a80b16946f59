"""What the last chunk and the report say after a failover, a migration, a retry or a race.

`finish_reason` and `model_name` come from the endpoint that finished the answer; usage and cost
count what is billed (docs/concepts.md, "What is billed"), the report also what was attempted.
Checked against the loopback server's echo backend (real HTTP, real SSE, no model to wait for)
and an in-process echo device; the server's request log says what really happened on the wire.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco import DiscoChatModel, Endpoint, GenerationParams, StreamStats  # noqa: E402
from langchain_disco.endpoints import openai as openai_endpoint  # noqa: E402
from langchain_disco.endpoints.base import StreamItem  # noqa: E402
from langchain_disco.endpoints.openai import OpenAIEndpoint  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402
from langchain_disco.testing.echo import EchoEndpoint  # noqa: E402

pytestmark = pytest.mark.timeout(60)

QUESTION = "Tell me about rivers."
MAX_TOKENS = 16
# The device's and the server's models have different names, so the report can say which one
# finished: the echo device is "echo", the loopback server's model "loopback".
DEVICE_MODEL = "echo"


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(backend="echo", echo_tok_s=2000.0) as server:
        yield server


@pytest.fixture
def server(echo_server: LoopbackServer) -> Iterator[LoopbackServer]:
    echo_server.clear_faults()
    echo_server.clear_requests()
    yield echo_server
    echo_server.clear_faults()


@pytest.fixture
async def remote(server: LoopbackServer) -> AsyncIterator[OpenAIEndpoint]:
    endpoint = OpenAIEndpoint(
        base_url=server.base_url,
        model=server.model_name,
        continuation="vllm",
        max_retries=0,
        retry_backoff_s=0.0,
    )
    yield endpoint
    await endpoint.aclose()


def disco(remote: Endpoint, mode: str, local: Endpoint | None = None, **kw: Any) -> DiscoChatModel:
    return DiscoChatModel(
        mode=mode,
        local=local or EchoEndpoint(name="local"),
        remote=remote,
        max_tokens=MAX_TOKENS,
        stall_floor_s=5.0,  # no stall failover on a busy machine: the faults here are explicit
        **kw,
    )


async def collect(model: DiscoChatModel) -> tuple[list[AIMessageChunk], dict[str, Any]]:
    chunks = [c async for c in model.astream(QUESTION)]
    return chunks, chunks[-1].response_metadata["disco_report"]


def delivered_by(chunks: list[AIMessageChunk], endpoint: str) -> int:
    return sum(
        1 for c in chunks if c.content and c.response_metadata["disco_endpoints"] == [endpoint]
    )


def server_usd(model: DiscoChatModel, run: dict[str, Any]) -> float:
    return model.scheduler.cost_model.server_usd(run["input_tokens"], run["output_tokens"])


async def test_failover_before_the_first_token_reports_the_device_and_bills_the_server_nothing(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    server.set_fault("error_status", status=503)
    model = disco(remote, "remote")
    chunks, report = await collect(model)

    last = chunks[-1]
    assert delivered_by(chunks, "local") == MAX_TOKENS
    assert report["finished_by"] == "local"
    # The reader's first token came from the failover: that is the TTFT (no race was won).
    assert report["winner"] is None
    assert report["ttft_s"] == report["endpoints"]["local"]["first_token_s"] is not None
    assert last.response_metadata["finish_reason"] == "length"  # the device hit max_tokens
    assert last.response_metadata["model_name"] == DEVICE_MODEL
    (entry,) = server.requests()
    assert entry["status"] == "fault"
    rejected = report["endpoints"]["remote"]
    assert (rejected["outcome"], rejected["attempts"]) == ("failed", 1)
    assert (rejected["input_tokens"], rejected["output_tokens"]) == (0, 0)
    assert rejected["attempted_input_tokens"] > 0  # the prompt was sent, and refused
    assert report["cost"]["server_usd"] == 0.0
    device = report["endpoints"]["local"]
    assert last.usage_metadata is not None
    assert last.usage_metadata["input_tokens"] == device["input_tokens"] > 0
    assert last.usage_metadata["output_tokens"] == device["output_tokens"] == MAX_TOKENS
    sent = device["input_tokens"] + rejected["attempted_input_tokens"]
    assert report["attempted_input_tokens"] == sent


async def test_generation_info_names_the_finish_reason_of_the_endpoint_that_finished(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    server.set_fault("error_status", status=503)
    result = await disco(remote, "remote").agenerate([[HumanMessage(QUESTION)]])
    (generation,) = result.generations[0]
    assert generation.generation_info is not None
    assert generation.generation_info["finish_reason"] == "length"


async def test_mid_stream_failover_reports_the_finisher_and_bills_what_the_server_sent(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    server.set_fault("disconnect", after_tokens=3)
    model = disco(remote, "remote")
    chunks, report = await collect(model)

    last = chunks[-1]
    assert report["winner"] == "remote"  # the first token still counts as the server's
    assert report["finished_by"] == "local"
    assert last.response_metadata["finish_reason"] == "length"
    assert last.response_metadata["model_name"] == DEVICE_MODEL
    entry = await asyncio.to_thread(server.wait_for_request_status, 0, "fault", 10.0)
    assert entry["tokens_sent"] == delivered_by(chunks, "remote") == 3
    failed = report["endpoints"]["remote"]
    # Accepted, then cut off: its prompt and the three tokens it produced are billed.
    assert failed["outcome"] == "failed"
    assert failed["input_tokens"] == failed["attempted_input_tokens"] > 0
    assert failed["output_tokens"] == 3
    assert report["cost"]["server_usd"] == pytest.approx(server_usd(model, failed))
    assert last.usage_metadata is not None
    device = report["endpoints"]["local"]
    assert last.usage_metadata["input_tokens"] == failed["input_tokens"] + device["input_tokens"]
    assert last.usage_metadata["output_tokens"] == 3 + device["output_tokens"]


async def test_migration_to_the_server_reports_the_server_as_finisher(
    server: LoopbackServer, remote: OpenAIEndpoint
) -> None:
    # Device energy priced high, so moving the rest of the answer to the server pays off.
    model = disco(remote, "local", migration="cost", usd_per_j=1e-3, server_profile="anyscale-7b")
    chunks, report = await collect(model)

    last = chunks[-1]
    (event,) = [e for e in report["events"] if e["event"] == "migration"]
    assert (event["from"], event["to"]) == ("local", "remote")
    assert report["winner"] == "local"
    assert report["finished_by"] == "remote"
    assert report["endpoints"]["local"]["outcome"] == "migrated"
    (entry,) = server.requests()
    assert entry["status"] == "completed"
    # The server's own finish reason ("length": the rest of max_tokens) and its model's name.
    assert (
        last.response_metadata["finish_reason"]
        == report["endpoints"]["remote"]["finish_reason"]
        == "length"
    )
    assert last.response_metadata["model_name"] == server.model_name
    target = report["endpoints"]["remote"]
    assert (target["input_tokens"], target["output_tokens"]) == (
        entry["prompt_tokens"],
        entry["completion_tokens"],
    )


async def test_a_503_then_a_streamed_answer_bills_the_prompt_once(server: LoopbackServer) -> None:
    server.set_fault("error_status", status=503)
    retrying = OpenAIEndpoint(
        base_url=server.base_url, model=server.model_name, max_retries=1, retry_backoff_s=0.0
    )
    try:
        model = disco(retrying, "remote")
        chunks, report = await collect(model)
    finally:
        await retrying.aclose()

    assert [e["status"] for e in server.requests()] == ["fault", "completed"]
    answered = server.requests()[1]
    run = report["endpoints"]["remote"]
    assert run["attempts"] == 2
    assert run["input_tokens"] == answered["prompt_tokens"]  # the server's own usage report
    assert run["attempted_input_tokens"] == 2 * answered["prompt_tokens"]
    assert run["output_tokens"] == answered["completion_tokens"] == MAX_TOKENS
    assert report["cost"]["server_usd"] == pytest.approx(server_usd(model, run))
    usage = chunks[-1].usage_metadata
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        answered["prompt_tokens"],
        MAX_TOKENS,
    )
    assert chunks[-1].response_metadata["model_name"] == server.model_name


class _AnswersOnce(Endpoint):
    """A device that starts answering only once `ready` is set (the racing request got so far)."""

    def __init__(self, inner: Endpoint, ready: asyncio.Event) -> None:
        self.inner, self.ready = inner, ready
        self.name, self.kind = inner.name, inner.kind
        self.model_name, self.capabilities = inner.model_name, inner.capabilities

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[StreamItem]:
        await self.ready.wait()
        async for item in self.inner.stream(messages, params, stats, prefix=prefix):
            yield item


@pytest.fixture
def server_accepted(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when a remote endpoint made from now on receives response headers.

    An httpx event hook (``response`` runs once the headers are in, before the body is read)
    on the HTTP client the endpoint builds for itself.
    """
    accepted = asyncio.Event()

    async def on_response(response: Any) -> None:
        accepted.set()

    def http_client(max_connections: int | None) -> Any:
        return openai.DefaultAsyncHttpxClient(event_hooks={"response": [on_response]})

    monkeypatch.setattr(openai_endpoint, "_http_client", http_client)
    return accepted


async def test_a_race_loser_cancelled_after_its_headers_bills_its_prompt(
    server: LoopbackServer, server_accepted: asyncio.Event
) -> None:
    server.set_fault("delay", seconds=30.0)  # headers at once, the first token much later
    racing = OpenAIEndpoint(base_url=server.base_url, model=server.model_name, max_retries=0)
    device = _AnswersOnce(EchoEndpoint(name="local"), server_accepted)
    try:
        model = disco(racing, "race", local=device)
        chunks, report = await collect(model)
    finally:
        await racing.aclose()

    assert server_accepted.is_set()
    assert report["winner"] == report["finished_by"] == "local"
    assert chunks[-1].response_metadata["model_name"] == DEVICE_MODEL
    entry = await asyncio.to_thread(server.wait_for_request_status, 0, "disconnected", 10.0)
    assert entry["tokens_sent"] == 0
    loser = report["endpoints"]["remote"]
    assert loser["outcome"] == "cancelled"
    assert loser["input_tokens"] == loser["attempted_input_tokens"] > 0
    assert loser["output_tokens"] == 0
    assert report["cost"]["server_usd"] == pytest.approx(server_usd(model, loser))
    assert report["cost"]["server_usd"] > 0
    usage = chunks[-1].usage_metadata
    assert usage is not None
    assert (
        usage["input_tokens"]
        == loser["input_tokens"] + report["endpoints"]["local"]["input_tokens"]
    )


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An HTTP server that reads a request and never answers it; the event: a request is in."""
    received = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            received.set()
            await reader.read()  # no headers, ever: until the client hangs up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield f"http://127.0.0.1:{port}/v1", received


async def test_a_race_loser_cancelled_while_waiting_for_headers_bills_its_prompt(
    silent_server: tuple[str, asyncio.Event],
) -> None:
    url, received = silent_server
    racing = OpenAIEndpoint(base_url=url, model="silent", max_retries=0)
    device = _AnswersOnce(EchoEndpoint(name="local"), received)
    try:
        chunks, report = await collect(disco(racing, "race", local=device))
    finally:
        await racing.aclose()

    assert report["finished_by"] == "local"
    loser = report["endpoints"]["remote"]
    assert loser["outcome"] == "cancelled"
    # The server may have started its prefill: billed, conservatively.
    assert loser["input_tokens"] == loser["attempted_input_tokens"] > 0
    assert report["cost"]["server_usd"] > 0
    usage = chunks[-1].usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == report["input_tokens"] > loser["input_tokens"]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_server_that_never_connected_bills_nothing() -> None:
    unreachable = OpenAIEndpoint(
        base_url=f"http://127.0.0.1:{_closed_port()}/v1", model="nowhere", max_retries=0
    )
    try:
        chunks, report = await collect(disco(unreachable, "remote"))
    finally:
        await unreachable.aclose()

    assert report["finished_by"] == "local"
    assert chunks[-1].response_metadata["model_name"] == DEVICE_MODEL
    refused = report["endpoints"]["remote"]
    assert "connection failed" in refused["error"]
    assert refused["input_tokens"] == 0
    assert refused["attempted_input_tokens"] > 0
    assert report["cost"]["server_usd"] == 0.0
