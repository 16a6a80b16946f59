"""Structured output as ChatOpenAI does it, on both endpoints (issue 14).

What the remote was sent is read from the loopback server's record of the request body (real
HTTP through the real openai SDK); the local model is the real embedded Gemma. The schema is
one whose every answer is short (a boolean and a small bounded integer, which the grammar
spells out), so the tests check the mechanics, not the small base model's judgement.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, Field

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer

pytestmark = pytest.mark.llama

QUESTION = "The film was wonderful, five stars. Rate the review."


class Rating(BaseModel):
    """How a review rates what it reviews."""

    stars: int = Field(ge=1, le=5, description="from 1 to 5")
    positive: bool


def model_for(local: LlamaCppEndpoint, server: LoopbackServer, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "mode": "remote",
        "local": local,
        "remote_base_url": server.base_url,
        "remote_model": server.model_name,
        "remote_max_retries": 0,
        "temperature": 0.0,
        "max_tokens": 32,
    }
    return DiscoChatModel(**{**params, **kw})


def body(server: LoopbackServer) -> dict[str, Any]:
    (entry,) = server.requests()
    return entry["body"]  # type: ignore[no-any-return]


def served_by(message: Any) -> set[str]:
    report = message.response_metadata["disco_report"]
    return set(report["endpoints"])


async def test_bind_response_format_with_a_pydantic_class_sends_its_json_schema(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    message = await model_for(local_endpoint, server).bind(response_format=Rating).ainvoke(QUESTION)
    assert body(server)["response_format"] == type_to_response_format_param(Rating)
    assert isinstance(message.additional_kwargs["parsed"], Rating)
    assert Rating.model_validate_json(str(message.content)) == message.additional_kwargs["parsed"]


def test_bind_response_format_on_the_local_model_parses_the_answer_too(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, mode="local")
    message = model.bind(response_format=Rating).invoke(QUESTION)
    assert served_by(message) == {"local"}
    assert isinstance(message.additional_kwargs["parsed"], Rating)
    chunks = list(model.bind(response_format=Rating).stream(QUESTION))
    assert isinstance(chunks[-1].additional_kwargs["parsed"], Rating)
    assert all("parsed" not in c.additional_kwargs for c in chunks[:-1])


async def test_json_schema_is_the_default_method_and_sends_no_tools(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    structured = model_for(local_endpoint, server).with_structured_output(Rating)
    result = await structured.ainvoke(QUESTION)
    assert isinstance(result, Rating)
    sent = body(server)
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert "tools" not in sent and "tool_choice" not in sent


async def test_json_schema_with_a_json_schema_dict_returns_a_dict(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    schema = Rating.model_json_schema()
    structured = model_for(local_endpoint, server).with_structured_output(schema, strict=True)
    result = await structured.ainvoke(QUESTION)
    assert isinstance(result, dict) and set(result) == {"stars", "positive"}
    sent = body(server)["response_format"]
    assert (sent["type"], sent["json_schema"]["name"], sent["json_schema"]["strict"]) == (
        "json_schema",
        "Rating",
        True,
    )


async def test_json_mode_asks_for_a_json_object(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    structured = model_for(local_endpoint, server).with_structured_output(None, method="json_mode")
    result = await structured.ainvoke(QUESTION + " Reply in JSON.")
    assert isinstance(result, dict)
    sent = body(server)
    assert sent["response_format"] == {"type": "json_object"}
    assert "tools" not in sent


async def test_function_calling_forces_a_tool_call_and_sends_no_response_format(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    structured = model_for(local_endpoint, server).with_structured_output(
        Rating, method="function_calling"
    )
    assert isinstance(await structured.ainvoke(QUESTION), Rating)
    sent = body(server)
    assert [t["function"]["name"] for t in sent["tools"]] == ["Rating"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "Rating"}}
    assert "response_format" not in sent


def test_include_raw_gives_the_message_and_the_parsed_object_on_the_local_model(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, mode="local")
    result = model.with_structured_output(Rating, include_raw=True).invoke(QUESTION)
    assert set(result) == {"raw", "parsed", "parsing_error"}
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], Rating)
    raw = result["raw"]
    assert isinstance(raw, AIMessage) and not raw.tool_calls  # json_schema: an answer
    assert served_by(raw) == {"local"}


def test_include_raw_reports_an_answer_cut_off_by_max_tokens_as_a_parsing_error(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = model_for(local_endpoint, server, mode="local", max_tokens=3, failover=False)
    result = model.with_structured_output(Rating, include_raw=True).invoke(QUESTION)
    assert result["parsed"] is None
    assert result["parsing_error"] is not None
    raw = result["raw"]
    assert raw.content and "parsed" not in raw.additional_kwargs  # the cut answer is kept
