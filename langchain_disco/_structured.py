"""Structured output the way ChatOpenAI does it: `response_format` and `with_structured_output`.

Both endpoints take an OpenAI ``response_format`` (the remote sends it, the local model turns its
schema into a grammar), so the three methods of ChatOpenAI's `with_structured_output` map onto
what we already have: ``json_schema`` (the default, as in ChatOpenAI) binds a ``json_schema``
response format, ``json_mode`` binds ``{"type": "json_object"}``, ``function_calling`` forces a
tool call. A schema given as ``response_format`` (a pydantic class, a TypedDict, a JSON schema)
is converted to the OpenAI form before it reaches an endpoint, and the answer parsed into it is
put in the final message's ``additional_kwargs["parsed"]``, as ChatOpenAI does.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, cast

import openai
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel
from pydantic.v1 import BaseModel as BaseModelV1

if TYPE_CHECKING:
    from langchain_core.language_models import LanguageModelInput

    from langchain_disco.chat_models import DiscoChatModel

StructuredOutputMethod = Literal["function_calling", "json_mode", "json_schema"]

_FORMAT_TYPES = ("json_schema", "json_object", "text")


def response_format_param(value: Any, *, strict: bool | None = None) -> dict[str, Any] | None:
    """`value` as an OpenAI ``response_format`` dict (what the SDK's `create` accepts).

    A pydantic (v2) class becomes exactly what the openai SDK's `parse` (so ChatOpenAI) sends:
    its strict JSON schema, ``strict: true``, named after the class. A TypedDict, a pydantic v1
    class or a JSON schema becomes ``{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}`` as ChatOpenAI's `bind_tools(response_format=...)` builds it. An OpenAI response
    format (``{"type": ...}``) passes unchanged.
    """
    if value is None:
        return None
    if isinstance(value, type) and is_basemodel_subclass(value) and issubclass(value, BaseModel):
        tool = openai.pydantic_function_tool(value)["function"]
        return {
            "type": "json_schema",
            "json_schema": {"name": tool["name"], "schema": tool["parameters"], "strict": True},
        }
    if isinstance(value, dict) and value.get("type") in _FORMAT_TYPES:
        return value
    if isinstance(value, dict) and "name" in value and "schema" in value:
        return {"type": "json_schema", "json_schema": value}
    if isinstance(value, dict | type):
        if strict is None:
            strict = value.get("strict") if isinstance(value, dict) else None
            strict = strict if isinstance(strict, bool) else False
        function = convert_to_openai_function(value, strict=strict)
        function["schema"] = function.pop("parameters")
        return {"type": "json_schema", "json_schema": function}
    raise TypeError(
        f"response_format={value!r} is not a schema: pass a pydantic class, a TypedDict, a JSON "
        'schema, or an OpenAI response format such as {"type": "json_object"}'
    )


def parse_target(value: Any) -> type | None:
    """What an answer to `response_format=value` is parsed into: the pydantic class, or `dict`
    for a TypedDict or JSON schema; None for an OpenAI response format (as the SDK, which parses
    only into classes)."""
    if isinstance(value, type) and is_basemodel_subclass(value):
        return value
    if isinstance(value, type) or (
        isinstance(value, dict)
        and value.get("type") not in _FORMAT_TYPES
        and not ("name" in value and "schema" in value)
    ):
        return dict
    return None


def parse_answer(text: str, target: type) -> Any | None:
    """`text` parsed into `target`, or None when it is not valid JSON for it.

    None rather than an error (the SDK raises): the local model's JSON can be cut off by
    ``max_tokens``, and the answer must still reach the caller; `with_structured_output`
    reports the failure itself (as ``parsing_error`` with ``include_raw=True``).
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if target is dict:
        return data
    try:
        return target(**data)
    except (ValueError, TypeError):  # pydantic's ValidationError (v1 and v2) is a ValueError
        return None


def with_parsed(
    chunks: AsyncGenerator[ChatGenerationChunk, None], response_format: Any
) -> AsyncGenerator[ChatGenerationChunk, None]:
    """`chunks`, with ``additional_kwargs["parsed"]`` added to the last one when the request
    asked for a schema and the answer is valid for it (not for tool calls). Without a schema,
    `chunks` themselves: no extra step per chunk."""
    target = parse_target(response_format)
    return chunks if target is None else _parsing(chunks, target)


async def _parsing(
    chunks: AsyncGenerator[ChatGenerationChunk, None], target: type
) -> AsyncGenerator[ChatGenerationChunk, None]:
    text: list[str] = []
    called_a_tool = False
    async with aclosing(chunks):
        async for chunk in chunks:
            message = chunk.message
            if isinstance(message.content, str):
                text.append(message.content)
            if isinstance(message, AIMessageChunk):
                called_a_tool = called_a_tool or bool(message.tool_call_chunks)
                if message.chunk_position == "last" and not called_a_tool:
                    parsed = parse_answer("".join(text), target)
                    if parsed is not None:
                        message.additional_kwargs["parsed"] = parsed
            yield chunk


def with_structured_output(
    model: DiscoChatModel,
    schema: dict[str, Any] | type | None,
    *,
    method: StructuredOutputMethod,
    include_raw: bool,
    strict: bool | None,
    **kwargs: Any,
) -> Runnable[LanguageModelInput, Any]:
    """ChatOpenAI's `with_structured_output`, on our endpoints (see `DiscoChatModel`'s)."""
    if strict is not None and method == "json_mode":
        raise ValueError("Argument `strict` is not supported with `method`='json_mode'")
    if schema is None and method != "json_mode":
        raise ValueError(
            f"schema must be specified when method is not 'json_mode' (method={method!r})"
        )
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if method == "json_schema" and is_pydantic and issubclass(schema, BaseModelV1):  # type: ignore[arg-type]
        warnings.warn(
            "Received a Pydantic BaseModel V1 schema. This is not supported by "
            'method="json_schema". Please use method="function_calling" or specify schema via '
            'JSON Schema or Pydantic V2 BaseModel. Overriding to method="function_calling".',
            stacklevel=3,
        )
        method = "function_calling"
    llm: Runnable[LanguageModelInput, Any]
    parser: Runnable[Any, Any]
    if method == "function_calling":
        assert schema is not None
        tool_name = convert_to_openai_tool(schema)["function"]["name"]
        llm = model.bind_tools(
            [schema],
            tool_choice=tool_name,
            parallel_tool_calls=False,
            strict=strict,
            ls_structured_output_format={
                "kwargs": {"method": method, "strict": strict},
                "schema": schema,
            },
            **kwargs,
        )
        if is_pydantic:
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
        else:
            parser = JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True)
    elif method == "json_mode":
        llm = model.bind(
            response_format={"type": "json_object"},
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
            **kwargs,
        )
        parser = (
            PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            if is_pydantic
            else JsonOutputParser()
        )
    elif method == "json_schema":
        assert schema is not None
        # A pydantic class is bound as it is, as ChatOpenAI does: it is converted to the
        # request's form on the way out and the answer is parsed back into it.
        llm = model.bind(
            response_format=schema if is_pydantic else response_format_param(schema, strict=strict),
            ls_structured_output_format={
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_openai_tool(schema),
            },
            **kwargs,
        )
        if is_pydantic:
            model_schema = cast("type[BaseModel]", schema)
            parser = RunnableLambda(partial(_parsed_model, schema=model_schema)).with_types(
                output_type=model_schema
            )
        else:
            parser = JsonOutputParser()
    else:
        raise ValueError(
            "Unrecognized method argument. Expected one of 'function_calling', 'json_mode' or "
            f"'json_schema'. Received: '{method}'"
        )
    if include_raw:
        parser_assign = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
        parser_with_fallback = parser_assign.with_fallbacks(
            [parser_none], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | parser_with_fallback
    return llm | parser


def _parsed_model(message: AIMessage, schema: type[BaseModel]) -> BaseModel | None:
    """The answer's ``parsed`` object; without one (invalid JSON), the parser's own error."""
    parsed = message.additional_kwargs.get("parsed")
    if parsed is not None:
        return schema(**parsed) if isinstance(parsed, dict) else parsed  # type: ignore[no-any-return]
    if message.tool_calls:
        return None
    # Raises an OutputParserException that quotes the text.
    result: BaseModel = PydanticOutputParser(pydantic_object=schema).invoke(message)
    return result
