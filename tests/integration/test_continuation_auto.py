"""`continuation="auto"`: the probe's verdict per server dialect, when it runs, where it is kept.

The servers are the loopback server with its real llama.cpp model (Gemma 3 270M, greedy)
playing each dialect, so the probe's question is answered by a real model; llama-server itself is
probed in tests/integration/test_llama_server.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for _module in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the llama and demo extras")

from langchain_disco import DiscoChatModel, LlamaCppEndpoint  # noqa: E402
from langchain_disco.endpoints._probe import PROBE_MAX_TOKENS, PROBE_PREFIX  # noqa: E402
from langchain_disco.endpoints.openai import OpenAIEndpoint  # noqa: E402
from langchain_disco.errors import DiscoError  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402
from tests._faulty import FailsOnceAfter  # noqa: E402

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module", params=["vllm", "deepseek", "restart"])
def dialect_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, LoopbackServer]]:
    with LoopbackServer(dialect=request.param) as server:
        yield request.param, server


async def _probe(server: LoopbackServer) -> Any:
    endpoint = OpenAIEndpoint(base_url=server.base_url, model="loopback", continuation="auto")
    try:
        return await endpoint.aprobe_continuation()
    finally:
        await endpoint.aclose()


async def test_auto_finds_a_plain_prefill_that_continues_without_echo(
    server: LoopbackServer,
) -> None:
    verdict = await _probe(server)
    assert (verdict.style, verdict.echo, verdict.source) == ("prefill", False, "probed")
    (entry,) = server.requests()  # the first style tried continued: one request
    assert entry["prefix"] == PROBE_PREFIX and entry["max_tokens"] == PROBE_MAX_TOKENS


async def test_auto_finds_each_dialects_style_or_none(
    dialect_server: tuple[str, LoopbackServer],
) -> None:
    dialect, server = dialect_server
    server.clear_requests()
    verdict = await _probe(server)
    expected = {"vllm": ("vllm", False), "deepseek": ("deepseek", False), "restart": (None, False)}
    assert (verdict.style, verdict.echo) == expected[dialect]
    assert len(server.requests()) == {"vllm": 2, "deepseek": 3, "restart": 3}[dialect]


async def test_a_first_request_is_not_delayed_by_the_probe_and_the_verdict_is_remembered(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCO_PERSIST_PROFILES", "true")
    profile = tmp_path / "profiles.json"
    model = DiscoChatModel(
        mode="remote",
        remote_base_url=server.base_url,
        remote_model="loopback",
        remote_continuation="auto",
        profile_path=profile,
        failover=False,
        max_tokens=4,
        temperature=0.0,
    )
    remote = model.remote
    assert isinstance(remote, OpenAIEndpoint) and remote.verdict is None
    await model.ainvoke("Name a colour.")
    probe = remote._probe_task
    assert probe is not None  # started in the background by the first request
    async with asyncio.timeout(60):
        await probe
    assert remote.verdict is not None and remote.verdict.style == "prefill"
    assert remote.capabilities.exact_continuation
    saved = json.loads(profile.read_text())["profiles"]["continuation"]
    assert saved[f"{server.base_url}|loopback"]["style"] == "prefill"

    # A new process (a new model) remembers it: no probe, continuation available at once.
    server.clear_requests()
    again = DiscoChatModel(
        mode="remote",
        remote_base_url=server.base_url,
        remote_model="loopback",
        remote_continuation="auto",
        profile_path=profile,
        failover=False,
        max_tokens=4,
        temperature=0.0,
    )
    assert isinstance(again.remote, OpenAIEndpoint)
    assert again.remote.verdict is not None and again.remote.capabilities.exact_continuation
    await again.ainvoke("Name a colour.")
    assert again.remote._probe_task is None
    assert [e["prefix"] for e in server.requests()] == [""]  # the user's request only
    await again.remote.aclose()
    await remote.aclose()


async def test_a_server_that_restarts_is_never_asked_to_continue_a_delivered_answer(
    dialect_server: tuple[str, LoopbackServer], local_endpoint: LlamaCppEndpoint
) -> None:
    dialect, server = dialect_server
    if dialect != "restart":
        pytest.skip("only the restarting dialect")
    remote = OpenAIEndpoint(base_url=server.base_url, model="loopback", continuation="auto")
    await remote.aprobe_continuation()
    assert not remote.capabilities.exact_continuation
    server.clear_requests()
    model = DiscoChatModel(
        mode="local",
        local=FailsOnceAfter(local_endpoint, 3),
        remote=remote,
        max_tokens=12,
        temperature=0.0,
    )
    delivered: list[str] = []
    with pytest.raises(DiscoError, match="cannot continue a partial answer exactly"):
        async for chunk in model.astream("Write about rivers."):
            delivered.append(str(chunk.content))
    assert len("".join(delivered)) > 0  # the device's text, and nothing after it
    assert server.requests() == []  # the restarting server was never asked
    await remote.aclose()
