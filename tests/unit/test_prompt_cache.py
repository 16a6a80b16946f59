"""The loopback server's emulated provider prompt cache, on its own: prefix blocks, LRU, usage."""

from __future__ import annotations

import pytest

from langchain_disco.errors import ConfigError
from langchain_disco.testing._prompt_cache import CHARS_PER_TOKEN, PromptCache, prompt_text

SYSTEM = "You are a careful assistant. " * 200  # 5,800 characters, about 1,450 tokens


def chat(system: str, question: str) -> str:
    return prompt_text([("system", system), ("user", question)])


def test_a_repeated_prefix_is_cached_in_whole_blocks_from_the_first_token() -> None:
    cache = PromptCache()
    first = cache.admit(chat(SYSTEM, "Which river is longest?"))
    second = cache.admit(chat(SYSTEM, "Which river is widest?"))
    assert first.cached_tokens == 0
    shared_tokens = len(prompt_text([("system", SYSTEM)])) // CHARS_PER_TOKEN
    assert second.cached_tokens % 128 == 0
    assert shared_tokens - 128 < second.cached_tokens <= shared_tokens
    assert second.uncached_tokens == second.prompt_tokens - second.cached_tokens


def test_the_same_text_later_in_the_prompt_is_no_prefix() -> None:
    cache = PromptCache()
    cache.admit(chat(SYSTEM, "Which river is longest?"))
    assert cache.admit(chat("Another instruction. " + SYSTEM, "Which river?")).cached_tokens == 0
    # The role is part of the prompt: the same text as a user message is another prompt.
    assert cache.admit(prompt_text([("user", SYSTEM), ("user", "Which river?")])).cached_tokens == 0


def test_prompts_and_hits_below_the_minimum_are_not_cached() -> None:
    cache = PromptCache(min_tokens=1024)
    short = "a short prompt " * 20  # 300 characters
    cache.admit(short)
    assert cache.admit(short).cached_tokens == 0
    assert len(cache) == 0
    # A long prompt sharing only ~600 tokens with an earlier one: below 1,024, no hit.
    head = "x" * (600 * CHARS_PER_TOKEN)
    cache.admit(head + "y" * (1000 * CHARS_PER_TOKEN))
    assert cache.admit(head + "z" * (1000 * CHARS_PER_TOKEN)).cached_tokens == 0


def test_the_cache_holds_at_most_max_blocks_and_evicts_the_least_recently_used() -> None:
    cache = PromptCache(block_tokens=128, min_tokens=128, max_blocks=12)
    a, b = chat("A" * 5000, "q"), chat("B" * 5000, "q")  # 9 full blocks each
    cache.admit(a)
    assert cache.admit(a).cached_tokens == 9 * 128
    cache.admit(b)  # 18 blocks > 12: the oldest of a go first
    assert len(cache) == 12 and cache.evictions == 6
    assert cache.admit(a).cached_tokens == 0  # a's first blocks are gone, so no prefix matches
    assert len(cache) <= 12


def test_usage_fields_take_the_openai_or_the_deepseek_shape() -> None:
    assert PromptCache().usage_fields(2000, 1536) == {
        "prompt_tokens_details": {"cached_tokens": 1536}
    }
    assert PromptCache(usage_shape="deepseek").usage_fields(2000, 1536) == {
        "prompt_cache_hit_tokens": 1536,
        "prompt_cache_miss_tokens": 464,
    }
    # The generator's real count wins: never more cached than the prompt it reported.
    assert PromptCache().usage_fields(100, 128)["prompt_tokens_details"]["cached_tokens"] == 100


def test_prefill_delay_scales_with_the_uncached_tokens() -> None:
    cache = PromptCache(prefill_tok_s=2000.0)
    assert cache.prefill_s(2000) == pytest.approx(1.0)
    assert cache.prefill_s(64) == pytest.approx(0.032)
    assert cache.prefill_s(0) == 0.0
    assert PromptCache(prefill_tok_s=0.0).prefill_s(10_000) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"block_tokens": 0}, "--prompt-cache-block-tokens"),
        ({"min_tokens": -1}, "--prompt-cache-min-tokens"),
        ({"max_blocks": 0}, "--prompt-cache-max-blocks"),
        ({"prefill_tok_s": float("nan")}, "--prefill-tok-s"),
        ({"usage_shape": "anthropic"}, "openai, deepseek"),
    ],
)
def test_bad_settings_name_the_option_to_fix(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        PromptCache(**kwargs)  # type: ignore[arg-type]
