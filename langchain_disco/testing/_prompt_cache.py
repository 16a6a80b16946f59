"""An emulated provider prompt cache: a repeated prompt prefix is faster, cheaper, and reported.

Hosted APIs and llama.cpp's server keep the work done on a prompt's prefix and reuse it for a
later prompt that starts the same way. What the loopback server copies from them:

- OpenAI ("Prompt Caching in the API", https://openai.com/index/api-prompt-caching/,
  2024-10-01): an exact prefix match from the first token, only for prompts of at least 1,024
  tokens, cached in 128-token increments, reported as
  ``usage.prompt_tokens_details.cached_tokens`` (0 when nothing is cached; the field is always
  there). Hence the defaults `block_tokens=128` and `min_tokens=1024`.
- DeepSeek (https://api-docs.deepseek.com/guides/kv_cache): the same prefix rule, reported as
  ``usage.prompt_cache_hit_tokens`` and ``prompt_cache_miss_tokens`` (`UsageShape` "deepseek").
- llama-server (tools/server/server-task.cpp): ``prompt_tokens_details.cached_tokens`` is the
  prompt tokens its slot reused, ``timings.cache_n`` the same count and ``timings.prompt_n``
  the tokens it evaluated; the TTFT is the prefill of the uncached part.

The sequence the cache sees is the prompt's text (each message's role and content, then any
continuation prefix) at `CHARS_PER_TOKEN` characters per token, the rate the echo backend counts
prompt tokens by and our estimator assumes; it is cut into blocks of `block_tokens` tokens, and
block i's key hashes block i's text with block i-1's key, so a key names a whole prefix (as
vLLM's and Mooncake's block hashes do). The cache holds at most `max_blocks` keys and forgets the
least recently used first. The TTFT model: `prefill_s(uncached)` = uncached tokens /
`prefill_tok_s`, added to the sampled (queueing and network) TTFT of the latency profile.
A prompt is stored when it arrives, not once its prefill is done: a twin sent while the first is
still waiting already hits, which a real provider may not do.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_disco.errors import ConfigError

CHARS_PER_TOKEN = 4
"""Characters per token of the cache's sequence (`Endpoint.estimate_input_tokens`' rate)."""

UsageShape = Literal["openai", "deepseek"]
"""How usage reports cached tokens: OpenAI's ``prompt_tokens_details.cached_tokens`` (also
llama-server's and vLLM's), or DeepSeek's ``prompt_cache_hit_tokens`` and
``prompt_cache_miss_tokens``."""

USAGE_SHAPES: tuple[UsageShape, ...] = ("openai", "deepseek")

DEFAULT_BLOCK_TOKENS = 128
DEFAULT_MIN_TOKENS = 1024
DEFAULT_MAX_BLOCKS = 4096
DEFAULT_PREFILL_TOK_S = 10_000.0
"""An assumption, not a measurement: a hosted 7-13B model on a datacenter GPU prefills on the
order of 10^4 prompt tokens/s. 0 adds no prefill delay at all."""


@dataclass(frozen=True)
class CacheLookup:
    """What the cache held of one prompt when it arrived, in the cache's tokens."""

    prompt_tokens: int
    cached_tokens: int

    @property
    def uncached_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class PromptCache:
    """A bounded LRU of prompt-prefix blocks; `admit(prompt)` looks a prompt up, then stores it.

    One instance serves every request of a loopback server (one provider's cache, shared by all
    its clients, as hosted caches are per organisation).
    """

    def __init__(
        self,
        *,
        block_tokens: int = DEFAULT_BLOCK_TOKENS,
        min_tokens: int = DEFAULT_MIN_TOKENS,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        prefill_tok_s: float = DEFAULT_PREFILL_TOK_S,
        usage_shape: UsageShape = "openai",
    ) -> None:
        if block_tokens < 1:
            raise ConfigError(
                f"prompt cache block size must be >= 1 token, got {block_tokens}: set "
                "--prompt-cache-block-tokens (OpenAI caches in 128-token increments)"
            )
        if min_tokens < 0:
            raise ConfigError(
                f"prompt cache minimum must be >= 0 tokens, got {min_tokens}: set "
                "--prompt-cache-min-tokens (OpenAI caches prompts of 1024 tokens or more)"
            )
        if max_blocks < 1:
            raise ConfigError(
                f"prompt cache capacity must be >= 1 block, got {max_blocks}: set "
                "--prompt-cache-max-blocks"
            )
        if not prefill_tok_s >= 0:  # also refuses nan
            raise ConfigError(
                f"prefill rate must be >= 0 tokens/s, got {prefill_tok_s}: set "
                "--prefill-tok-s (0 adds no prefill delay)"
            )
        if usage_shape not in USAGE_SHAPES:
            raise ConfigError(
                f"unknown usage shape {usage_shape!r}: use one of {', '.join(USAGE_SHAPES)}"
            )
        self.block_tokens = block_tokens
        self.min_tokens = min_tokens
        self.max_blocks = max_blocks
        self.prefill_tok_s = prefill_tok_s
        self.usage_shape: UsageShape = usage_shape
        self._blocks: OrderedDict[bytes, None] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        """Blocks held now (at most `max_blocks`)."""
        return len(self._blocks)

    def admit(self, prompt: str) -> CacheLookup:
        """How much of `prompt` was cached, then remember its blocks (most recent last).

        A prompt shorter than `min_tokens` is neither served from the cache nor stored, as
        OpenAI caches no such prompt; a hit shorter than `min_tokens` counts as none.
        """
        block_chars = self.block_tokens * CHARS_PER_TOKEN
        prompt_tokens = len(prompt) // CHARS_PER_TOKEN
        if prompt_tokens < max(self.min_tokens, 1):
            return CacheLookup(prompt_tokens, 0)
        keys = _block_keys(prompt, block_chars)
        hit = 0
        for key in keys:
            if key not in self._blocks:
                break
            hit += 1
        for key in keys:
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
            self.evictions += 1
        cached = hit * self.block_tokens
        # OpenAI: the cached prefix starts at 1,024 tokens; a shorter shared prefix is no hit.
        return CacheLookup(prompt_tokens, cached if cached >= self.min_tokens else 0)

    def state(self) -> dict[str, Any]:
        """What the cache holds and how it is set up (``GET /_disco/prompt-cache``)."""
        return {
            "blocks": len(self._blocks),
            "max_blocks": self.max_blocks,
            "evictions": self.evictions,
            "block_tokens": self.block_tokens,
            "min_tokens": self.min_tokens,
            "prefill_tok_s": self.prefill_tok_s,
            "usage_shape": self.usage_shape,
        }

    def prefill_s(self, uncached_tokens: int) -> float:
        """The modelled prefill time of `uncached_tokens` (0 with `prefill_tok_s=0`)."""
        if self.prefill_tok_s == 0 or uncached_tokens <= 0:
            return 0.0
        return uncached_tokens / self.prefill_tok_s

    def clear(self) -> None:
        """Forget every block (the eviction count stays)."""
        self._blocks.clear()

    def usage_fields(self, prompt_tokens: int, cached_tokens: int) -> dict[str, Any]:
        """The usage fields that report `cached_tokens` of `prompt_tokens`, in this shape."""
        cached = max(0, min(cached_tokens, prompt_tokens))
        if self.usage_shape == "deepseek":
            return {
                "prompt_cache_hit_tokens": cached,
                "prompt_cache_miss_tokens": prompt_tokens - cached,
            }
        return {"prompt_tokens_details": {"cached_tokens": cached}}


def prompt_text(messages: Sequence[tuple[str, str]], prefix: str = "") -> str:
    """The sequence the cache sees: each ``(role, content)`` in order, then the prefix.

    The role is part of the sequence (a system and a user message with the same text are not the
    same prompt); a NUL separates fields so no concatenation of two prompts meets in the middle.
    """
    return "".join(f"\x00{role}\x00{content}" for role, content in messages) + prefix


def _block_keys(prompt: str, block_chars: int) -> list[bytes]:
    """One key per *full* block of `prompt`, each hashing its block and the previous key."""
    keys: list[bytes] = []
    previous = b""
    for start in range(0, len(prompt) - block_chars + 1, block_chars):
        digest = hashlib.blake2b(previous, digest_size=16)
        digest.update(prompt[start : start + block_chars].encode("utf-8", "surrogatepass"))
        previous = digest.digest()
        keys.append(previous)
    return keys
