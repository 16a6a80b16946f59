"""A prompt's message-boundary prefixes, as digests the server prefix cache can compare.

A follow-up turn resends the conversation so far: its messages up to the last answer are the
previous prompt's, byte for byte, and a provider's prompt cache holds exactly such prefixes.
Each prefix is a digest of the tools (sent before the messages) and the messages up to a
boundary; its token count is the prompt's, split in proportion to the serialised messages (the
learned hit rate absorbs what that approximation misses).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from langchain_disco.endpoints.base import GenerationParams


def prompt_prefixes(
    messages: Sequence[BaseMessage], params: GenerationParams, prompt_tokens: int
) -> tuple[tuple[bytes, int], ...]:
    """(digest up to each message boundary, prompt tokens up to there), shortest first."""
    running = hashlib.blake2b(digest_size=16)
    running.update(_canonical(list(params.tools)))
    parts = [_canonical(_fields(m)) for m in messages]
    total = sum(len(p) for p in parts) or 1
    out = []
    size = 0
    for part in parts:
        running.update(len(part).to_bytes(8, "little"))
        running.update(part)
        size += len(part)
        out.append((running.copy().digest(), round(prompt_tokens * size / total)))
    return tuple(out)


def _fields(message: BaseMessage) -> list[Any]:
    return [
        message.type,
        message.content,
        getattr(message, "tool_calls", None),
        getattr(message, "tool_call_id", None),
        message.name,
    ]


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode()
