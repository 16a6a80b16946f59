"""Conversion of LangChain messages to the role/content dicts that chat templates expect."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)


def message_text(message: BaseMessage) -> str:
    """The plain text of a message; list content keeps only its text blocks."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def role_of(message: BaseMessage) -> str:
    """The chat-template role of a LangChain message."""
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage):
        return message.role
    raise TypeError(f"unsupported message type {type(message).__name__}")


def to_role_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """`[{"role": ..., "content": ...}]` for a chat template.

    An assistant turn that called tools is rendered as the JSON of its calls (the form the
    local model is asked to produce), so a conversation with tool results reads naturally.
    """
    rendered = []
    for m in messages:
        text = message_text(m)
        if isinstance(m, AIMessage) and m.tool_calls:
            calls = [{"name": c["name"], "arguments": c["args"]} for c in m.tool_calls]
            text = (text + "\n" if text else "") + json.dumps(
                calls[0] if len(calls) == 1 else calls
            )
        rendered.append({"role": role_of(m), "content": text})
    return rendered
