"""`response_format` conversion and `with_structured_output`'s bindings, as ChatOpenAI's.

No model is loaded: these check what would be sent and how answers are parsed. The requests
themselves, on both endpoints, are in tests/integration/test_structured_output.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableBinding, RunnableSequence
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, Field
from pydantic.v1 import BaseModel as BaseModelV1
from typing_extensions import TypedDict

from langchain_disco import DiscoChatModel
from langchain_disco._structured import parse_target, response_format_param, with_parsed


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's name")
    age: int | None = None


class PersonDict(TypedDict):
    """A person mentioned in the text."""

    name: str
    age: int


class PersonV1(BaseModelV1):
    """A person, pydantic v1."""

    name: str


def model() -> DiscoChatModel:
    return DiscoChatModel(mode="remote", remote_base_url="http://127.0.0.1:9/v1", failover=False)


def bound_kwargs(runnable: Any) -> dict[str, Any]:
    """The keywords the model step of a structured-output runnable was bound with."""
    assert isinstance(runnable, RunnableSequence)
    first = runnable.first
    assert isinstance(first, RunnableBinding)
    return dict(first.kwargs)


def test_a_pydantic_class_becomes_what_the_openai_sdk_sends_for_it() -> None:
    # ChatOpenAI hands the class to the SDK's `parse`, which sends exactly this.
    assert response_format_param(Person) == type_to_response_format_param(Person)


@pytest.mark.parametrize("schema", [PersonDict, Person.model_json_schema()])
def test_a_typeddict_or_json_schema_becomes_a_json_schema_response_format(schema: Any) -> None:
    fmt = response_format_param(schema)
    assert fmt is not None
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] in {"PersonDict", "Person"}
    assert fmt["json_schema"]["strict"] is False
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"name", "age"}
    assert response_format_param(schema, strict=True)["json_schema"]["strict"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_object"},
        {"type": "text"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    ],
)
def test_an_openai_response_format_passes_unchanged(fmt: dict[str, Any]) -> None:
    assert response_format_param(fmt) is fmt
    assert parse_target(fmt) is None  # the SDK parses only into classes; so do we


def test_something_that_is_no_schema_is_refused_naming_what_is_accepted() -> None:
    with pytest.raises(TypeError, match="pydantic class, a TypedDict, a JSON schema"):
        response_format_param("json")


def test_the_default_method_is_json_schema_as_in_chatopenai() -> None:
    kwargs = bound_kwargs(model().with_structured_output(Person))
    assert kwargs["response_format"] is Person  # converted on the way out, parsed back
    assert "tools" not in kwargs
    assert kwargs["ls_structured_output_format"]["kwargs"] == {
        "method": "json_schema",
        "strict": None,
    }


def test_json_schema_with_a_dict_schema_binds_the_converted_format() -> None:
    kwargs = bound_kwargs(model().with_structured_output(PersonDict, strict=True))
    assert kwargs["response_format"] == response_format_param(PersonDict, strict=True)


def test_json_mode_binds_a_json_object_response_format() -> None:
    kwargs = bound_kwargs(model().with_structured_output(Person, method="json_mode"))
    assert kwargs["response_format"] == {"type": "json_object"}
    assert "tools" not in kwargs


def test_json_mode_refuses_strict_as_chatopenai_does() -> None:
    with pytest.raises(ValueError, match="strict"):
        model().with_structured_output(Person, method="json_mode", strict=True)


def test_function_calling_forces_the_schema_as_a_tool() -> None:
    kwargs = bound_kwargs(
        model().with_structured_output(Person, method="function_calling", strict=True)
    )
    (tool,) = kwargs["tools"]
    assert tool["function"]["name"] == "Person"
    assert tool["function"]["strict"] is True
    assert kwargs["tool_choice"] == {"type": "function", "function": {"name": "Person"}}
    assert kwargs["parallel_tool_calls"] is False
    assert "response_format" not in kwargs


def test_a_pydantic_v1_schema_falls_back_to_function_calling_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="function_calling"):
        structured = model().with_structured_output(PersonV1)
    assert "tools" in bound_kwargs(structured)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="Unrecognized method"):
        model().with_structured_output(Person, method="xml")  # type: ignore[arg-type]


def test_a_schema_is_required_except_for_json_mode() -> None:
    with pytest.raises(ValueError, match="schema must be specified"):
        model().with_structured_output(None)
    assert model().with_structured_output(None, method="json_mode") is not None


def chunks(*texts: str) -> AsyncGenerator[ChatGenerationChunk, None]:
    async def gen() -> AsyncGenerator[ChatGenerationChunk, None]:
        for text in texts:
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last"))

    return gen()


def last_kwargs(response_format: Any, *texts: str) -> dict[str, Any]:
    async def collect() -> list[ChatGenerationChunk]:
        return [c async for c in with_parsed(chunks(*texts), response_format)]

    return dict(asyncio.run(collect())[-1].message.additional_kwargs)


def test_the_last_chunk_carries_the_answer_parsed_into_the_class() -> None:
    parsed = last_kwargs(Person, '{"name": "Ada", ', '"age": 36}')["parsed"]
    assert parsed == Person(name="Ada", age=36)


def test_a_typeddict_answer_is_parsed_into_a_dict() -> None:
    assert last_kwargs(PersonDict, '{"name": "Ada", "age": 36}')["parsed"] == {
        "name": "Ada",
        "age": 36,
    }


def test_an_answer_cut_off_or_invalid_has_no_parsed_object() -> None:
    assert "parsed" not in last_kwargs(Person, '{"name": "Ada", "ag')
    assert "parsed" not in last_kwargs(Person, '{"nickname": "Ada"}')
    assert "parsed" not in last_kwargs({"type": "json_object"}, '{"name": "Ada"}')
