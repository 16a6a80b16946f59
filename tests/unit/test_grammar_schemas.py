"""Tool schemas with `$ref`/`$defs` become grammars the local model can use (issue 13, item 7)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from langchain_disco.endpoints._grammar import MAX_RECURSION_DEPTH, inline_refs, tool_call_schema
from langchain_disco.endpoints.base import GenerationParams


class Address(BaseModel):
    city: str


class Shipment(BaseModel):
    to: Address
    back: Address | None = None


class Tree(BaseModel):
    label: str
    children: list[Tree] = Field(default_factory=list)


def _depth(node: Any) -> int:
    if isinstance(node, dict):
        here = 1 if node.get("title") == "Tree" else 0
        return here + max((_depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return max((_depth(v) for v in node), default=0)
    return 0


def test_nested_definitions_are_inlined_where_they_are_used() -> None:
    schema = inline_refs(Shipment.model_json_schema())
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    assert schema["properties"]["to"]["properties"]["city"]["type"] == "string"


def test_a_recursive_definition_is_unrolled_to_a_bounded_depth() -> None:
    schema = inline_refs(Tree.model_json_schema())
    assert "$ref" not in json.dumps(schema)
    assert _depth(schema) == MAX_RECURSION_DEPTH


def test_each_tools_refs_resolve_inside_its_own_arguments() -> None:
    tools = tuple(
        {"type": "function", "function": {"name": m.__name__, "parameters": m.model_json_schema()}}
        for m in (Shipment, Tree)
    )
    schema = tool_call_schema(GenerationParams(tools=tools, tool_choice="required"))
    assert "$ref" not in json.dumps(schema)
    first, second = schema["anyOf"]
    assert first["properties"]["arguments"]["properties"]["to"]["title"] == "Address"
    assert second["properties"]["arguments"]["title"] == "Tree"
