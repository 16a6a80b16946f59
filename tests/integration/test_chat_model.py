"""DiscoChatModel as a LangChain chat model: callbacks, bind, config, tracing params, report."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer


def make(local: LlamaCppEndpoint, server: LoopbackServer, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "mode": "race",
        "local": local,
        "remote_base_url": server.base_url,
        "remote_model": server.model_name,
        "temperature": 0.0,
        "max_tokens": 12,
    }
    return DiscoChatModel(**{**params, **kw})


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[tuple[str, list[str]]] = []

    def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
        if token:
            self.tokens.append((token, chunk.message.response_metadata["disco_endpoints"]))


class AsyncTokenRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.runs: set[UUID] = set()

    async def on_llm_new_token(
        self, token: str, *, run_id: UUID, chunk: Any = None, **kwargs: Any
    ) -> None:
        if token:
            self.tokens.append(token)
            self.runs.add(run_id)


def test_on_llm_new_token_sees_every_chunk_with_its_endpoint(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    recorder = TokenRecorder()
    message = make(local_endpoint, server).invoke("Name a fruit.", config={"callbacks": [recorder]})
    assert "".join(t for t, _ in recorder.tokens) == message.content
    winner = message.response_metadata["disco_report"]["winner"]
    assert all(endpoints == [winner] for _, endpoints in recorder.tokens)


async def test_async_callbacks_and_astream_agree(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    recorder = AsyncTokenRecorder()
    model = make(local_endpoint, server)
    chunks = [c async for c in model.astream("Name a tree.", config={"callbacks": [recorder]})]
    text = "".join(str(c.content) for c in chunks)
    assert "".join(recorder.tokens) == text
    assert len(recorder.runs) == 1
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.usage_metadata is not None
    assert sum(1 for c in chunks if c.usage_metadata) == 1


def test_bind_and_with_config_pass_through(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = make(local_endpoint, server, mode="local", max_tokens=40)
    straight = model.invoke("Count from one to ten in words.").content
    assert isinstance(straight, str) and len(straight) > 4
    # A stop sequence taken from the straight answer cuts the bound model's answer before it.
    stop_at = straight[len(straight) // 2 :].split()[0]
    bound = model.bind(stop=[stop_at]).with_config(tags=["disco-test"], run_name="bound")
    cut = bound.invoke("Count from one to ten in words.").content
    assert isinstance(cut, str)
    assert stop_at not in cut
    assert straight.startswith(cut)


def test_chain_with_string_parser(local_endpoint: LlamaCppEndpoint, server: LoopbackServer) -> None:
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | make(local_endpoint, server)
        | StrOutputParser()
    )
    pieces = list(chain.stream({"q": "Say hello."}))
    assert pieces and all(isinstance(p, str) for p in pieces)


def test_langsmith_params_name_provider_and_both_models(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    params = make(local_endpoint, server)._get_ls_params(stop=["\n"])
    assert params["ls_provider"] == "disco"
    assert params["ls_model_name"] == f"{local_endpoint.model_name}+{server.model_name}"
    assert params["ls_model_type"] == "chat"
    assert params["ls_temperature"] == 0.0
    assert params["ls_max_tokens"] == 12
    assert params["ls_stop"] == ["\n"]


def test_report_is_consistent_with_the_stream(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = make(local_endpoint, server, max_tokens=10)
    chunks = list(model.stream("Describe the moon."))
    report = chunks[-1].response_metadata["disco_report"]
    content_chunks = [c for c in chunks if c.content]
    winner = report["winner"]
    run = report["endpoints"][winner]
    assert run["outcome"] == "completed"  # it won the race, then finished the answer
    assert run["delivered_chunks"] == len(content_chunks)
    assert len(report["tbt_gaps_s"]) == len(content_chunks) - 1
    assert report["max_stall_s"] == max(report["tbt_gaps_s"])
    assert 0 < report["ttft_s"] <= report["total_s"]
    assert report["tokens_per_endpoint"][winner] == run["output_tokens"] > 0
    cost = report["cost"]
    if winner == "remote":
        assert cost["server_usd"] > 0
    else:
        assert cost["device_j"] > 0
    assert cost["unified_usd"] >= cost["server_usd"]
