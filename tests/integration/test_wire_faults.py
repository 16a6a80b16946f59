"""Wire faults of a hostile remote, a standing adversarial suite (issue 13).

Each case is one way a real server, proxy or network breaks a stream, played by the hostile
server (tests/_hostile.py) over real TCP and read by the real openai SDK. Two promises:

- a real fault fails over text-exactly: the reader gets exactly the text the server sent whole
  before the fault (from the remote), then the device's continuation of exactly that text,
  nothing twice, nothing lost; the bare endpoint raises only our `EndpointError`, with no SDK
  or JSON exception chained, and keeps no connection open;
- an oddity that is not a fault is delivered whole, from the remote alone: UTF-8 characters
  split across writes, a byte-by-byte drip, chunks with empty ``choices``, a stream that ends
  after its finish reason without ``data: [DONE]``, and a 5 MB SSE line (the SDK's decoder has
  no line limit and `OpenAIEndpoint` sets none, so one is accepted: refusing it would take a
  new setting, not a fix).

What the server sent is read from its own record (`Exchange`), not from the code under test.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint
from langchain_disco.errors import EndpointError
from tests._faulty import Recording
from tests._hostile import (
    UNICODE_WORDS,
    WORDS,
    Exchange,
    Fault,
    HostileServer,
    client_sockets_to,
    exception_chain,
)
from tests.integration.test_failover import split_by_endpoint

QUESTION = "Continue the list: w0 w1 w2"
MAX_TOKENS = 16
SHORT_TIMEOUT_S = 0.5
"""First-token and idle timeout where the server stalls; elsewhere 10 s, far above a drip's gap."""


@dataclass(frozen=True)
class Case:
    id: str
    fault: Fault
    error: str | None
    """What the endpoint's error says (a regex), or None where this is no fault."""
    ends: str
    """How the server saw the exchange end (`Exchange.outcome`): a held connection must be
    hung up by the client."""
    answer: tuple[str, ...] = WORDS

    def whole_text(self) -> str:
        return "".join(self.answer)


FAULTS = [
    Case("html-502-page", Fault("html_502"), r"HTTP 502 after 1 attempt", "closed"),
    Case(
        "html-page-mid-stream",
        Fault("html_mid_stream", after_tokens=4),
        r"stream ended without a finish reason after 4 delta",
        "closed",
    ),
    Case(
        "truncated-json",
        Fault("truncated_json", after_tokens=4),
        r"malformed stream event \(invalid JSON",
        "client_hung_up",
    ),
    Case(
        "in-band-error",
        Fault("inband_error", after_tokens=3),
        r"error event in the stream: upstream overloaded",
        "client_hung_up",
    ),
    Case(
        "no-done-no-finish",
        Fault("no_finish_no_done", after_tokens=5),
        r"stream ended without a finish reason after 5 delta",
        "closed",
    ),
    Case(
        "reset-mid-stream",
        Fault("reset", after_tokens=4),
        r"connection failed \(ReadError\)",
        "reset",
    ),
    Case(
        "chunk-cut-mid-chunk",
        Fault("cut_mid_chunk", after_tokens=4),
        r"connection failed \(RemoteProtocolError\)",
        "closed",
    ),
    Case(
        "stall-before-first-token",
        Fault("stall"),
        rf"no first token within {SHORT_TIMEOUT_S}s",
        "client_hung_up",
    ),
    Case(
        "stall-mid-stream",
        Fault("stall", after_tokens=4),
        rf"no data for {SHORT_TIMEOUT_S}s after 4 delta\(s\) \(idle timeout\)",
        "client_hung_up",
    ),
]
"""Faults that must fail over."""

FIRST_EVENT_FAULTS = [
    Case("reset-at-once", Fault("reset"), r"connection failed \(ReadError\)", "reset"),
    Case("truncated-json-first", Fault("truncated_json"), r"invalid JSON", "client_hung_up"),
    Case("in-band-error-first", Fault("inband_error"), r"upstream overloaded", "client_hung_up"),
    Case("chunk-cut-first", Fault("cut_mid_chunk"), r"\(RemoteProtocolError\)", "closed"),
]
"""The same faults before any token, where they meet the retry loop (bare endpoint only)."""

NOT_FAULTS = [
    Case("well-behaved", Fault(), None, "completed"),
    Case("utf8-split-across-writes", Fault("split_utf8"), None, "completed", UNICODE_WORDS),
    Case("byte-by-byte-drip", Fault("drip"), None, "completed", WORDS[:4]),
    Case("empty-choices-mid-stream", Fault("empty_choices", after_tokens=3), None, "completed"),
    Case("5mb-sse-line", Fault("huge_line", after_tokens=3), None, "completed"),
    Case("no-done-after-finish", Fault("no_done"), None, "completed"),
]
"""Oddities that are no fault: the whole answer, from the remote alone."""


def cases(group: list[Case]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", group, ids=[c.id for c in group])


@pytest.fixture
def hostile(case: Case) -> Iterator[HostileServer]:
    with HostileServer(case.fault, answer=case.answer) as server:
        yield server


@pytest.fixture
async def nothing_left_running(local_endpoint: LlamaCppEndpoint) -> AsyncIterator[None]:
    """After a test: no task of ours still running, and the device idle."""
    yield
    me = asyncio.current_task()
    async with asyncio.timeout(10):
        # The loop's finaliser closes abandoned generators; no event marks it, so poll.
        while [t for t in asyncio.all_tasks() if t is not me]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await local_endpoint.wait_idle(10.0)


async def ended(server: HostileServer) -> Exchange:
    """The test's one exchange, once the server is done with it (bounded)."""
    (exchange,) = server.exchanges()
    await asyncio.to_thread(exchange.wait_ended, 10.0)
    return exchange


def assert_whole_answer(case: Case, exchange: Exchange) -> None:
    """The server sent its whole known answer (the 5 MB line on top, where there is one)."""
    extra = case.fault.line_bytes if case.fault.kind == "huge_line" else 0
    assert len(exchange.text_sent) == len(case.whole_text()) + extra
    assert exchange.tokens_sent == len(case.answer) + (extra > 0)
    if not extra:
        assert exchange.text_sent == case.whole_text()


# ----------------------------------------------------------------------------- the chat model


def model_for(server: HostileServer, local: Recording, case: Case) -> DiscoChatModel:
    timeout_s = SHORT_TIMEOUT_S if case.fault.kind == "stall" else 10.0
    return DiscoChatModel(
        mode="remote",
        local=local,
        remote_base_url=server.base_url,
        remote_model=server.model,
        remote_continuation="none",
        remote_max_retries=0,
        remote_first_token_timeout_s=timeout_s,
        remote_idle_timeout_s=timeout_s,
        # The engine's own stall detector stays out of the way: a stall must be caught by the
        # endpoint's first-token or idle timeout, which is what is under test here.
        stall_floor_s=30.0,
        temperature=0.0,
        max_tokens=MAX_TOKENS,
    )


@pytest.mark.llama
@pytest.mark.usefixtures("nothing_left_running")
@cases(FAULTS)
async def test_a_wire_fault_fails_over_to_the_device_text_exactly(
    local_endpoint: LlamaCppEndpoint, hostile: HostileServer, case: Case
) -> None:
    local = Recording(local_endpoint)
    model = model_for(hostile, local, case)
    chunks: list[AIMessageChunk] = [c async for c in model.astream(QUESTION)]
    report = chunks[-1].response_metadata["disco_report"]
    exchange = await ended(hostile)
    sent = exchange.text_sent
    runs = split_by_endpoint(chunks)
    # First exactly what the server sent whole before the fault (nothing, where it struck
    # before the first token), then the device's continuation of exactly that text, all of it.
    assert [endpoint for endpoint, _ in runs] == (["remote", "local"] if sent else ["local"])
    assert "".join(text for _, text in runs[:-1]) == sent
    assert local.streams == [(sent, runs[-1][1])]
    assert runs[-1][1]
    (event,) = [e for e in report["events"] if e["event"] == "failover"]
    assert (event["from"], event["to"], event["reason"]) == ("remote", "local", "error")
    assert event["token_index"] == exchange.tokens_sent == case.fault.after_tokens
    assert event["approximate"] is False  # the device continues a prefix exactly
    assert case.error is not None and re.search(case.error, event["error"])
    assert report["endpoints"]["remote"]["outcome"] == "failed"
    assert report["endpoints"]["local"]["outcome"] == "completed"
    assert exchange.outcome == case.ends
    assert client_sockets_to(hostile.port) == set()


@pytest.mark.llama
@pytest.mark.usefixtures("nothing_left_running")
@cases(NOT_FAULTS)
async def test_a_wire_oddity_that_is_no_fault_is_delivered_whole_from_the_remote(
    local_endpoint: LlamaCppEndpoint, hostile: HostileServer, case: Case
) -> None:
    local = Recording(local_endpoint)
    model = model_for(hostile, local, case)
    chunks: list[AIMessageChunk] = [c async for c in model.astream(QUESTION)]
    report = chunks[-1].response_metadata["disco_report"]
    exchange = await ended(hostile)
    assert split_by_endpoint(chunks) == [("remote", exchange.text_sent)]
    assert_whole_answer(case, exchange)
    assert not [e for e in report["events"] if e["event"] == "failover"]
    assert report["endpoints"]["remote"]["outcome"] == "completed"
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert local.streams == []
    assert_ended_as_the_case_says(case, exchange)
    assert client_sockets_to(hostile.port) == set()


# ----------------------------------------------------------------------------- the bare endpoint


def bare_endpoint(server: HostileServer, case: Case) -> OpenAIEndpoint:
    timeout_s = SHORT_TIMEOUT_S if case.fault.kind == "stall" else 10.0
    return OpenAIEndpoint(
        base_url=server.base_url,
        model=server.model,
        max_retries=0,
        first_token_timeout_s=timeout_s,
        idle_timeout_s=timeout_s,
    )


@cases(FAULTS + FIRST_EVENT_FAULTS)
async def test_a_wire_fault_raises_only_an_endpoint_error_and_keeps_no_connection(
    hostile: HostileServer, case: Case
) -> None:
    endpoint = bare_endpoint(hostile, case)
    delivered: list[str] = []
    try:
        with pytest.raises(EndpointError) as info:
            async with asyncio.timeout(20):
                stream = endpoint.stream([HumanMessage("hi")], GenerationParams(), StreamStats())
                async for item in stream:
                    assert isinstance(item, str)
                    delivered.append(item)
        error = info.value
        exchange = await ended(hostile)
        # Before the client is closed: the failed stream itself let go of its connection.
        assert client_sockets_to(hostile.port) == set()
    finally:
        await endpoint.aclose()
    assert "".join(delivered) == exchange.text_sent
    assert case.error is not None and re.search(case.error, str(error)), str(error)
    assert error.__cause__ is None and error.__context__ is None
    assert exception_chain(error) == [error]  # no SDK, httpx or JSON exception rides along
    assert "<html" not in str(error)  # a proxy's page is not a message for the reader
    assert exchange.outcome == case.ends


@cases(NOT_FAULTS)
async def test_a_wire_oddity_that_is_no_fault_reaches_the_bare_endpoint_whole(
    hostile: HostileServer, case: Case
) -> None:
    endpoint = bare_endpoint(hostile, case)
    stats = StreamStats()
    try:
        async with asyncio.timeout(20):
            stream = endpoint.stream([HumanMessage("hi")], GenerationParams(), stats)
            text = "".join([str(item) async for item in stream])
        exchange = await ended(hostile)
        assert client_sockets_to(hostile.port) == set()
    finally:
        await endpoint.aclose()
    assert text == exchange.text_sent
    assert_whole_answer(case, exchange)
    assert stats.finish_reason == "stop"
    assert_ended_as_the_case_says(case, exchange)


def assert_ended_as_the_case_says(case: Case, exchange: Exchange) -> None:
    """The server's view of how the exchange ended is the case's. One observed allowance: the
    openai 2.x SDK closes the response once it has read ``[DONE]``, without reading the body's
    final chunk, so a server still dripping that last chunk sees the client go; the answer is
    whole by then (3.x reads the body to its end)."""
    if case.ends == "completed" and exchange.outcome == "client_gone":
        assert exchange.done_sent and openai.__version__.startswith("2."), exchange
        return
    assert exchange.outcome == case.ends
