"""Prefix caches of a multi-turn replay: what each side holds of the prompts it processed.

A multi-turn trace names each prompt's blocks (`Trace.hash_ids`); a prompt whose leading blocks
match what a side holds reuses them: the device does not prefill them again, the provider bills
them at its cached-input price and answers sooner. Two models, each fed only what its side saw:

- `DevicePrefixCache`: the device's KV states of recent prompts, a least-recently-used cache
  with a token budget, as llama-cpp-python's `LlamaRAMCache` (states keyed by their tokens, the
  one with the longest common prefix served and moved to the front, the least recently used
  evicted while the total exceeds the capacity). It holds what the device *ran*: a prefill cut
  short by a lost race keeps the blocks it evaluated.
- `ServerPrefixCache`: the provider's prompt cache, blocks seen within a time-to-live of their
  last use (OpenAI: "cached prefixes generally remain active for 5 to 10 minutes of inactivity,
  up to one hour", prompt caching guide, developers.openai.com/docs/guides/prompt-caching), and
  only for a prefix of at least `min_tokens` (OpenAI: 1,024). It holds what reached the server,
  race losers included: their prompt was sent.

Both answer in blocks; `Trace.shared_tokens` turns blocks into tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_DEVICE_CACHE_TOKENS = 16_384
"""LlamaRAMCache's default capacity (2 GiB) over the f16 KV state of the default simulated
device's model, Llama 3.1 8B (32 layers x 8 KV heads x 128 dims x K and V x 2 bytes = 128 KiB
per token)."""
DEFAULT_SERVER_CACHE_TTL_S = 300.0
"""OpenAI's documented lower bound: 5 minutes of inactivity."""
DEFAULT_SERVER_CACHE_MIN_TOKENS = 1024
"""OpenAI caches prompts of 1,024 tokens or more."""
DEFAULT_SERVER_CACHED_TTFT_SAVING = 0.8
"""A fully cached prompt's TTFT is this much shorter: OpenAI's "can reduce latency by up to
80%" (prompt caching guide); a partly cached one saves that share in proportion."""


def common_blocks(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading blocks `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class DevicePrefixCache:
    """One device's KV states, least recently used first, within `capacity_tokens`.

    `max_states` bounds the number of states too (None: only tokens bound it)."""

    def __init__(
        self,
        capacity_tokens: float = DEFAULT_DEVICE_CACHE_TOKENS,
        *,
        block_tokens: float = 512,
        max_states: int | None = None,
    ) -> None:
        if capacity_tokens < 0:
            raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
        if max_states is not None and max_states < 1:
            raise ValueError(f"max_states must be >= 1 or None, got {max_states}")
        self.capacity_tokens = capacity_tokens
        self.block_tokens = block_tokens
        self.max_states = max_states
        self._states: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._blocks = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def tokens(self) -> float:
        """Tokens the cache holds (block-sized)."""
        return self._blocks * self.block_tokens

    def lookup(self, blocks: Sequence[int]) -> int:
        """Leading blocks of `blocks` the best state holds; that state becomes the most
        recently used (as `LlamaRAMCache` does when it serves one)."""
        best, best_key = 0, None
        for key in self._states:
            n = common_blocks(key, blocks)
            if n > best:
                best, best_key = n, key
        if best_key is not None:
            self._states.move_to_end(best_key)
        return best

    def store(self, blocks: Sequence[int]) -> None:
        """The device evaluated `blocks`: keep their state, drop the states it extends, evict
        the least recently used while over capacity."""
        key = tuple(blocks)
        if not key:
            return
        if key in self._states:
            self._states.move_to_end(key)
            return
        for old in [k for k in self._states if len(k) <= len(key) and key[: len(k)] == k]:
            del self._states[old]
            self._blocks -= len(old)
        self._states[key] = None
        self._blocks += len(key)
        while self._states and (
            self._blocks * self.block_tokens > self.capacity_tokens
            or (self.max_states is not None and len(self._states) > self.max_states)
        ):
            old, _ = self._states.popitem(last=False)
            self._blocks -= len(old)
            self.evictions += 1


class _Node:
    __slots__ = ("children", "seen_s")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.seen_s = -float("inf")


class ServerPrefixCache:
    """The provider's prompt cache: a prefix tree of blocks, each with when it was last used."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_SERVER_CACHE_TTL_S,
        *,
        block_tokens: float = 512,
        min_tokens: float = DEFAULT_SERVER_CACHE_MIN_TOKENS,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self.ttl_s = ttl_s
        self.block_tokens = block_tokens
        self.min_tokens = min_tokens
        self._root = _Node()

    def lookup(self, blocks: Sequence[int], now_s: float) -> int:
        """Leading blocks of `blocks` cached at `now_s` (0 below `min_tokens`)."""
        node, n = self._root, 0
        for block in blocks:
            child = node.children.get(block)
            if child is None or not 0.0 <= now_s - child.seen_s <= self.ttl_s:
                break
            node, n = child, n + 1
        return n if n * self.block_tokens >= self.min_tokens else 0

    def store(self, blocks: Sequence[int], now_s: float) -> None:
        """`blocks` were sent at `now_s`: every prefix of them is fresh again."""
        node = self._root
        for block in blocks:
            child = node.children.get(block)
            if child is None:
                child = node.children[block] = _Node()
            child.seen_s = max(child.seen_s, now_s)
            node = child


@dataclass(frozen=True)
class CacheConfig:
    """The prefix caches of a multi-turn replay, and whether the dispatch is told of them."""

    aware: bool = True
    """True: each request's features carry the device's cached tokens
    (`RequestFeatures.local_cached_tokens`) and device outcomes report them, so the profiles
    learn the device line on evaluated tokens (as the live model does from llama.cpp's KV
    state). False (cache-blind): the caches act all the same, but dispatch sees every prompt as
    fresh and learns cached turns as whole prompts."""
    device_tokens: float = DEFAULT_DEVICE_CACHE_TOKENS
    device_states: int | None = None
    server_ttl_s: float = DEFAULT_SERVER_CACHE_TTL_S
    server_min_tokens: float = DEFAULT_SERVER_CACHE_MIN_TOKENS
    server_cached_ttft_saving: float = DEFAULT_SERVER_CACHED_TTFT_SAVING

    def __post_init__(self) -> None:
        if not 0.0 <= self.server_cached_ttft_saving < 1.0:
            raise ValueError(
                f"server_cached_ttft_saving must be in [0, 1), got {self.server_cached_ttft_saving}"
            )

    def device_cache(self, block_tokens: float) -> DevicePrefixCache:
        return DevicePrefixCache(
            self.device_tokens, block_tokens=block_tokens, max_states=self.device_states
        )

    def server_cache(self, block_tokens: float) -> ServerPrefixCache:
        return ServerPrefixCache(
            self.server_ttl_s, block_tokens=block_tokens, min_tokens=self.server_min_tokens
        )

    def server_ttft_s(self, ttft_s: float, cached_tokens: int, prompt_tokens: int) -> float:
        """A server TTFT drawn for a fresh prompt, with `cached_tokens` of it cached."""
        if cached_tokens <= 0 or prompt_tokens <= 0:
            return ttft_s
        return ttft_s * (1.0 - self.server_cached_ttft_saving * cached_tokens / prompt_tokens)


class _CachedRun(Protocol):
    device_cached_tokens: list[int]
    server_cached_tokens: list[int]


@dataclass(frozen=True)
class CachedTokens:
    """Per request, the prompt tokens each side held cached: the input of the hindsight bounds
    of a multi-turn replay."""

    device: Sequence[int]
    server: Sequence[int]

    @classmethod
    def of(cls, result: _CachedRun) -> CachedTokens:
        """The cache states one run had (`SimResult`): a bound for policies that leave the
        caches as that run did."""
        return cls(result.device_cached_tokens, result.server_cached_tokens)


def warm_blocks(
    hash_ids: Sequence[Sequence[int]], device: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Per request, the most blocks of its prompt any side could hold cached: its device every
    earlier prompt on that device (no eviction), the provider every earlier prompt of all (no
    expiry). No run's caches hold more, so bounds computed on them hold for every run."""
    device_roots: dict[int, dict[int, dict[int, object]]] = {}
    server_root: dict[int, dict[int, object]] = {}
    on_device: list[int] = []
    on_server: list[int] = []
    for blocks, k in zip(hash_ids, device, strict=True):
        for root, out in ((device_roots.setdefault(k, {}), on_device), (server_root, on_server)):
            node, n = root, 0
            for block in blocks:
                child = node.get(block)
                if child is None:
                    break
                node, n = child, n + 1  # type: ignore[assignment]
            out.append(n)
            node = root
            for block in blocks:
                node = node.setdefault(block, {})  # type: ignore[assignment]
    return on_device, on_server
