"""Tool calling and structured output on the local model, through grammar-constrained decoding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_disco import DiscoChatModel, EndpointError, LlamaCppEndpoint


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def current_time() -> str:
    """The current time, as HH:MM."""
    return "12:00"


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's name")
    age: int = Field(description="age in years")


class PersonDict(TypedDict):
    """A person mentioned in the text."""

    name: str
    age: int


def local_model(local: LlamaCppEndpoint, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {"mode": "local", "temperature": 0.0, "max_tokens": 64}
    return DiscoChatModel(local=local, **{**params, **kw})


@pytest.mark.parametrize("choice", ["any", "multiply", True])
def test_forced_tool_call_has_schema_valid_arguments(
    local_endpoint: LlamaCppEndpoint, choice: Any
) -> None:
    bound = local_model(local_endpoint).bind_tools([multiply, current_time], tool_choice=choice)
    message = bound.invoke("What is 3 times 12?")
    (call,) = message.tool_calls
    if choice == "multiply":
        assert call["name"] == "multiply"
    assert call["name"] in {"multiply", "current_time"}
    if call["name"] == "multiply":
        assert set(call["args"]) == {"a", "b"}
        assert all(isinstance(v, int) for v in call["args"].values())
    assert call["id"]
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_streamed_tool_call_arrives_as_tool_call_chunks(local_endpoint: LlamaCppEndpoint) -> None:
    bound = local_model(local_endpoint).bind_tools([multiply], tool_choice="multiply")
    chunks = list(bound.stream("Multiply 6 by 7."))
    pieces = [p for c in chunks for p in c.tool_call_chunks]
    assert len(pieces) == 1
    assert pieces[0]["name"] == "multiply"
    assert set(json.loads(pieces[0]["args"] or "{}")) == {"a", "b"}
    assert all(c.content == "" for c in chunks)


@pytest.mark.parametrize("schema", [Person, PersonDict, Person.model_json_schema()])
def test_structured_output_is_validated(local_endpoint: LlamaCppEndpoint, schema: Any) -> None:
    structured = local_model(local_endpoint).with_structured_output(schema)
    result = structured.invoke("Alice is 30 years old. Extract the person.")
    if schema is Person:
        assert isinstance(result, Person)
        data = result.model_dump()
    else:
        assert isinstance(result, dict)
        data = result
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_structured_output_include_raw(local_endpoint: LlamaCppEndpoint) -> None:
    structured = local_model(local_endpoint).with_structured_output(
        Person, method="function_calling", include_raw=True
    )
    result = structured.invoke("Bob is 41.")
    assert isinstance(result, dict)
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], Person)
    assert result["raw"].tool_calls


def test_tool_choice_auto_is_refused_by_a_local_only_model(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    bound = local_model(local_endpoint).bind_tools([multiply])
    with pytest.raises(EndpointError, match="tool_choice='auto'"):
        bound.invoke("What is 3 times 12?")


def test_a_tool_call_cut_off_by_max_tokens_is_a_clear_error(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    bound = local_model(local_endpoint, max_tokens=3, failover=False).bind_tools(
        [multiply], tool_choice="multiply"
    )
    with pytest.raises(EndpointError, match="raise max_tokens"):
        bound.invoke("What is 3 times 12?")


class Address(BaseModel):
    city: str
    zip_code: str


class Tree(BaseModel):
    """A tree of labels (a recursive schema: its JSON schema refers to itself)."""

    label: str = Field(max_length=12)
    children: list[Tree] = Field(default_factory=list, max_length=2)


class Shipment(BaseModel):
    """Ship a parcel to an address (a nested model: its JSON schema has $defs)."""

    to: Address
    weight_kg: int


def _raw_tool(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAI tool whose parameters are the model's own JSON schema, `$defs` and all."""
    return {
        "type": "function",
        "function": {
            "name": model.__name__,
            "description": model.__doc__ or "",
            "parameters": model.model_json_schema(),
        },
    }


@pytest.mark.parametrize("schema", [Shipment, Tree])
def test_a_tool_schema_with_refs_and_defs_gives_a_valid_call(
    local_endpoint: LlamaCppEndpoint, schema: type[BaseModel]
) -> None:
    tool = _raw_tool(schema)
    assert "$defs" in tool["function"]["parameters"]  # refs resolved at the schema's root
    other = _raw_tool(Address)  # a second tool: its definitions must not collide
    bound = local_model(local_endpoint, max_tokens=256).bind_tools(
        [tool, other], tool_choice=schema.__name__
    )
    message = bound.invoke("Make one up.")
    (call,) = message.tool_calls
    assert call["name"] == schema.__name__
    schema.model_validate(call["args"])  # schema-valid, nested or recursive parts included


def test_a_recursive_model_converted_by_langchain_still_compiles(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    # LangChain inlines refs and leaves `items: {}` for the self-reference.
    bound = local_model(local_endpoint, max_tokens=256).bind_tools([Tree], tool_choice="Tree")
    (call,) = bound.invoke("Make one up.").tool_calls
    assert call["name"] == "Tree" and isinstance(call["args"].get("label"), str)
