"""ChatOpenAI's conventions, each honoured or refused aloud (issue 14).

What the remote was sent is read from the loopback server's record of the request body (real
HTTP through the real openai SDK); the local model is the real embedded Gemma.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer

pytestmark = pytest.mark.llama

QUESTION = "Name a colour."


def model_for(local: LlamaCppEndpoint, server: LoopbackServer, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "mode": "remote",
        "local": local,
        "remote_base_url": server.base_url,
        "remote_model": server.model_name,
        "remote_max_retries": 0,
        "temperature": 0.0,
        "max_tokens": 8,
    }
    return DiscoChatModel(**{**params, **kw})


def body(server: LoopbackServer) -> dict[str, Any]:
    (entry,) = server.requests()
    return entry["body"]  # type: ignore[no-any-return]


def served_by(chunks: list[AIMessageChunk]) -> set[str]:
    return {e for c in chunks if c.content for e in c.response_metadata["disco_endpoints"]}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


async def test_model_keyword_names_the_remote_model(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, remote_model=None, model="gpt-4o")
    assert model.settings.remote_model == "gpt-4o"
    await model.ainvoke(QUESTION)
    assert body(server)["model"] == "gpt-4o"


def test_model_name_keyword_too(local_endpoint: LlamaCppEndpoint, server: LoopbackServer) -> None:
    model = model_for(local_endpoint, server, remote_model=None, model_name="gpt-4.1")
    assert model.settings.remote_model == "gpt-4.1"


def test_a_misspelled_keyword_is_refused_with_the_name_meant(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    with pytest.raises(ValueError, match=r"'remote_modle'.*did you mean 'remote_model'"):
        model_for(local_endpoint, server, remote_modle="gpt-4o")


async def test_an_unknown_keyword_warns_and_goes_to_model_kwargs(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    with pytest.warns(UserWarning, match="'user' is not a DiscoChatModel parameter"):
        model = model_for(local_endpoint, server, user="alice")
    assert model.model_kwargs == {"user": "alice"}
    await model.ainvoke(QUESTION)
    assert body(server)["user"] == "alice"


async def test_model_kwargs_and_extra_body_reach_the_remote_and_only_it(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(
        local_endpoint,
        server,
        mode="race",
        model_kwargs={"user": "bob"},
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    chunks = [c async for c in model.astream(QUESTION)]
    sent = body(server)
    assert sent["user"] == "bob"
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    report = chunks[-1].response_metadata["disco_report"]
    assert list(report["endpoints"]) == ["remote"]  # the device cannot forward them
    assert "local cannot serve it" in report["reason"]


async def test_sampling_penalties_are_sent(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, presence_penalty=0.5)
    await model.ainvoke(QUESTION, frequency_penalty=0.25)
    sent = body(server)
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, 0.25)


async def test_sampling_penalties_run_on_the_local_model_too(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, mode="local", presence_penalty=1.5)
    chunks = [c async for c in model.astream(QUESTION)]
    assert served_by(chunks) == {"local"}


async def test_bind_tools_strict_and_parallel_tool_calls_are_sent(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, max_tokens=48)
    bound = model.bind_tools(
        [get_weather], tool_choice="get_weather", strict=True, parallel_tool_calls=False
    )
    await bound.ainvoke("Weather in Paris?")
    sent = body(server)
    assert sent["parallel_tool_calls"] is False
    (definition,) = sent["tools"]
    assert definition["function"]["strict"] is True
    assert definition["function"]["parameters"]["additionalProperties"] is False


async def test_logprobs_restrict_dispatch_to_the_remote(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, mode="race")
    chunks = [c async for c in model.astream(QUESTION, logprobs=True, top_logprobs=2)]
    sent = body(server)
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    report = chunks[-1].response_metadata["disco_report"]
    assert list(report["endpoints"]) == ["remote"]
    assert "logprobs" in chunks[-1].response_metadata


def test_logprobs_with_only_the_local_model_are_refused(local_endpoint: LlamaCppEndpoint) -> None:
    model = DiscoChatModel(mode="local", local=local_endpoint, max_tokens=4)
    with pytest.raises(Exception, match="logprobs"):
        model.invoke(QUESTION, logprobs=True)


@pytest.mark.parametrize("n", [2, 0])
def test_n_other_than_one_is_refused(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer, n: int
) -> None:
    model = model_for(local_endpoint, server)
    with pytest.raises(ValueError, match=rf"n={n}.*batch"):
        model.invoke(QUESTION, n=n)
    assert server.requests() == []


def test_an_unknown_call_keyword_is_refused(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server)
    with pytest.raises(ValueError, match=r"call keyword.*logit_bais.*model_kwargs"):
        model.invoke(QUESTION, logit_bais={"1": 2})
    assert server.requests() == []


def test_stream_usage_is_accepted(local_endpoint: LlamaCppEndpoint, server: LoopbackServer) -> None:
    model = model_for(local_endpoint, server)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = model.invoke(QUESTION, stream_usage=True)
    assert message.usage_metadata is not None


async def test_custom_events_reach_astream_events_of_the_bare_model(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server)
    events = [e async for e in model.astream_events(QUESTION, version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom][:1] == ["disco_dispatch"]
    (start,) = [e for e in events if e["event"] == "on_chat_model_start"]
    assert custom[0]["run_id"] == start["run_id"]  # an event of the chat-model run


def test_custom_events_reach_callbacks_of_a_sync_stream(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    names: list[str] = []

    class Listener(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            names.append(name)

    model = model_for(local_endpoint, server)
    list(model.stream(QUESTION, config={"callbacks": [Listener()]}))
    assert names[:1] == ["disco_dispatch"]


async def test_custom_events_reach_async_callbacks_of_astream(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    names: list[str] = []

    class Listener(AsyncCallbackHandler):
        async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            names.append(name)

    model = model_for(local_endpoint, server)
    [c async for c in model.astream(QUESTION, config={"callbacks": [Listener()]})]
    assert names[:1] == ["disco_dispatch"]
