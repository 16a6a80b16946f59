"""Grammar-constrained decoding for the local model: tool calls and JSON-schema answers.

A small base model cannot be trusted to choose tools or to write valid JSON by itself, so the
local endpoint constrains its sampling with a llama.cpp grammar built from the JSON schema: the
output is then always schema-valid (its *content* is only as good as the model).
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage, ToolMessage

from langchain_disco.endpoints.base import GenerationParams


def tool_call_schema(params: GenerationParams) -> dict[str, Any]:
    """`{"name": <one of the allowed tools>, "arguments": <its parameters>}` as a JSON schema."""
    allowed = [t["function"] for t in params.tools if t.get("type", "function") == "function"]
    if isinstance(params.tool_choice, dict):
        wanted = params.tool_choice.get("function", {}).get("name")
        allowed = [f for f in allowed if f["name"] == wanted]
        if not allowed:
            raise ValueError(f"tool_choice names {wanted!r}, which is not among the tools")
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": inline_refs(f.get("parameters") or {"type": "object"}),
            },
            "required": ["name", "arguments"],
        }
        for f in allowed
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


_DEF_PREFIXES = ("#/$defs/", "#/definitions/")
MAX_RECURSION_DEPTH = 2
"""How deep a recursive definition (a tree, a linked list) is unrolled for the grammar."""


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every local ``$ref`` replaced by its definition, and no ``$defs`` left.

    Two reasons. A tool's parameters become ``properties.arguments`` of the call schema, while
    their ``$ref``s (``#/$defs/Node``, what pydantic writes for nested models) point at the
    schema's *root*: moved, they would dangle. And llama.cpp crashed (a segmentation fault,
    seen with Gemma 3 270M) sampling from the grammar of a recursive definition: so a
    recursive definition is unrolled `MAX_RECURSION_DEPTH` levels deep, below which only an
    empty object is admitted (an unbounded "any object" there let a small model write until it
    ran out of tokens; a deeper tree is cut, which the caller's validation will report).
    """
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def resolve(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(n, stack) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = next((ref.removeprefix(p) for p in _DEF_PREFIXES if ref.startswith(p)), None)
            if name is not None and name in defs:
                if stack.count(name) >= MAX_RECURSION_DEPTH:
                    return {"type": "object", "properties": {}, "additionalProperties": False}
                siblings = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**defs[name], **siblings}, (*stack, name))
        return {k: resolve(v, stack) for k, v in node.items() if k not in ("$defs", "definitions")}

    resolved: dict[str, Any] = resolve(schema, ())
    return resolved


def response_schema(params: GenerationParams) -> dict[str, Any] | None:
    """The JSON schema a `response_format` asks for, if any."""
    fmt = params.response_format
    if fmt is None:
        return None
    if fmt.get("type") == "json_schema":
        schema: dict[str, Any] = fmt.get("json_schema", {}).get("schema", {"type": "object"})
        return inline_refs(schema)
    return {"type": "object"}


def tools_preamble(params: GenerationParams) -> SystemMessage:
    """Tell the model which tools exist and the reply format the grammar will enforce."""
    listed = [
        {
            "name": t["function"]["name"],
            "description": t["function"].get("description", ""),
            "parameters": t["function"].get("parameters", {}),
        }
        for t in params.tools
    ]
    return SystemMessage(
        "You can call these tools:\n"
        + json.dumps(listed)
        + "\nTo call a tool, reply with one JSON object naming the tool and giving its "
        "arguments, with the values taken from the request. For example, for "
        '"What is add(2, 5)?" reply {"name": "add", "arguments": {"a": 2, "b": 5}}.'
    )


def with_tools_preamble(messages: list[BaseMessage], params: GenerationParams) -> list[BaseMessage]:
    return [tools_preamble(params), *messages]


_MAX_ENUMERATED_INTEGERS = 4096


def bounded_integers(schema: Any) -> Any:
    """The schema with small bounded integer ranges spelled out as enums.

    llama.cpp's schema-to-grammar conversion ignores ``minimum``/``maximum`` (and their
    exclusive forms), so `Field(gt=-1000, lt=1000)` would still admit any integer; listing a
    small range makes the bound part of the grammar. Larger or one-sided ranges stay as they
    are (schema-valid in shape, the bound left to validation).
    """
    if isinstance(schema, list):
        return [bounded_integers(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_integers(v) for k, v in schema.items()}
    if out.get("items") == {}:
        # "Any item" (what LangChain leaves of a recursive model's self-reference): llama.cpp's
        # converter reads an empty `items` as absent and fails; an array of anything is meant.
        del out["items"]
    if out.get("type") == "integer":
        low = out.get("minimum", out.get("exclusiveMinimum"))
        high = out.get("maximum", out.get("exclusiveMaximum"))
        if isinstance(low, int | float) and isinstance(high, int | float):
            lo = int(low) + (1 if "minimum" not in out else 0)
            hi = int(high) - (1 if "maximum" not in out else 0)
            if 0 <= hi - lo < _MAX_ENUMERATED_INTEGERS:
                # Small magnitudes first: the order is the grammar's, not a preference.
                values = sorted(range(lo, hi + 1), key=lambda v: (abs(v), v))
                return {"enum": values}
    return out


@lru_cache(maxsize=64)
def grammar_for(schema_json: str) -> Any:
    """A compiled llama.cpp grammar for a JSON schema (cached: agents reuse their tools)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    schema = bounded_integers(json.loads(schema_json))
    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


def rule_based_tool_choice(
    messages: list[BaseMessage], params: GenerationParams
) -> GenerationParams:
    """Turn ``tool_choice="auto"`` into a decision a small model can follow.

    The rule of a minimal agent step: answer in text right after a tool result, otherwise
    call a tool. A small base model cannot weigh that choice itself; this makes the mechanics
    of an agent loop (call, run the tool, answer) work on it, explicitly and predictably.
    """
    if not params.tools or params.tool_choice not in (None, "auto"):
        return params
    if messages and isinstance(messages[-1], ToolMessage):
        return replace(params, tools=(), tool_choice=None)
    return replace(params, tool_choice="required")
