"""Provider usage details read from real SDK chunk objects: cache reads and reasoning tokens."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionChunk

from langchain_disco.endpoints.base import StreamStats
from langchain_disco.endpoints.openai import _absorb


def _usage_chunk(usage: dict[str, Any]) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "system_fingerprint": "fp_1",
            "choices": [],
            "usage": usage,
        }
    )


def test_openai_cached_and_reasoning_tokens() -> None:
    stats = StreamStats()
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }
    _absorb(_usage_chunk(usage), stats)
    assert (stats.cached_input_tokens, stats.reasoning_tokens) == (64, 7)
    assert (stats.response_id, stats.system_fingerprint) == ("chatcmpl-1", "fp_1")


def test_deepseek_prompt_cache_hit_tokens() -> None:
    stats = StreamStats()
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_cache_hit_tokens": 80,
        "prompt_cache_miss_tokens": 20,
    }
    _absorb(_usage_chunk(usage), stats)
    assert stats.cached_input_tokens == 80


def test_no_details_means_zero() -> None:
    stats = StreamStats()
    _absorb(_usage_chunk({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}), stats)
    assert (stats.cached_input_tokens, stats.reasoning_tokens) == (0, 0)
