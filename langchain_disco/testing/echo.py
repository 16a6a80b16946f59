"""`EchoEndpoint`: a model-free generator for the loopback server (``--backend echo``).

It exists so that the scheduler's own overhead, and high concurrency (hundreds of streams), can
be measured without a model being the bottleneck: a llama.cpp model on a 2-core machine decodes
one stream at a few dozen tokens per second, the echo backend streams hundreds of streams at
thousands of tokens per second. `disco bench overhead` runs against it.

The answer is deterministic: words drawn from a fixed vocabulary by a `random.Random` seeded
from the prompt text (and the request's seed), one word per delta (``"word"``, then ``" word"``
...), paced at `tok_s`. A continuation (``prefix``) with ``k`` words continues with word ``k`` of
the same sequence, so continuing any cut of an answer reproduces the rest of it exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Iterator, Sequence

from langchain_core.messages import BaseMessage

from langchain_disco.endpoints.base import (
    Capabilities,
    Endpoint,
    EndpointKind,
    GenerationParams,
    StreamStats,
)
from langchain_disco.errors import ConfigError

__all__ = ["DEFAULT_ECHO_TOK_S", "EchoEndpoint"]

DEFAULT_ECHO_TOK_S = 1000.0
"""Default decode rate: far faster than any model, so the client side is what is measured."""

_VOCABULARY = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "the",
    "loopback",
    "server",
    "streams",
    "deterministic",
    "words",
    "so",
    "that",
    "every",
    "scheduler",
    "cost",
    "shows",
    "up",
    "in",
    "the",
    "measurements",
)


class EchoEndpoint(Endpoint):
    """Streams deterministic words at a fixed decode rate; no model, exact continuation.

    `tok_s` is the decode rate in tokens per second (``0`` streams as fast as the event loop
    allows); `ttft_s` an optional delay before the first token (a "prefill");
    `default_max_tokens` the answer length when a request sets no ``max_tokens`` (it then ends
    with ``finish_reason="stop"``; reaching ``max_tokens`` ends with ``"length"``).
    """

    capabilities = Capabilities(exact_continuation=True)

    def __init__(
        self,
        *,
        tok_s: float = DEFAULT_ECHO_TOK_S,
        ttft_s: float = 0.0,
        default_max_tokens: int = 64,
        name: str = "echo",
        kind: EndpointKind = "local",
    ) -> None:
        if not tok_s >= 0:  # also rejects NaN
            raise ConfigError(
                f"echo decode rate {tok_s!r} must be >= 0 tokens/s: set --echo-tok-s to a "
                "rate such as 1000 (0 streams as fast as possible)"
            )
        if not ttft_s >= 0:
            raise ConfigError(f"echo ttft_s={ttft_s!r} must be >= 0 seconds")
        if default_max_tokens < 1:
            raise ConfigError(f"echo default_max_tokens={default_max_tokens!r} must be >= 1")
        self.name = name
        self.kind = kind
        self.model_name = "echo"
        self.tok_s = tok_s
        self.ttft_s = ttft_s
        self.default_max_tokens = default_max_tokens

    def words(self, messages: Sequence[BaseMessage], seed: int | None = None) -> Iterator[str]:
        """The endless word sequence of the answer to `messages` (the same in every process)."""
        key = "\x1e".join(f"{m.type}\x1f{m.content}" for m in messages)
        digest = hashlib.sha256(f"{seed}\x1d{key}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        while True:
            yield rng.choice(_VOCABULARY)

    def first_token_delay_s(self, messages: Sequence[BaseMessage], input_tokens: int) -> float:
        """The delay before the first token of an answer to `messages` (`input_tokens` long by
        the echo's count): `ttft_s`. A subclass makes it depend on the request (a prefill rate,
        or a measured TTFT per request, as the fleet benchmark's endpoints do)."""
        return self.ttft_s

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[str]:
        """Yield one word per delta, ``max_tokens`` of them, at `tok_s`; continue `prefix`."""
        loop = asyncio.get_running_loop()
        chars = sum(len(str(m.content)) for m in messages) + len(prefix)
        stats.input_tokens = max(1, chars // 4)
        stats.output_tokens = 0
        stats.usage_reported = True
        limit = params.max_tokens
        count = limit if limit is not None else self.default_max_tokens
        # Continue after the prefix's words; glue the first word to it only after whitespace.
        skip = len(prefix.split())
        glued = prefix == "" or prefix[-1].isspace()
        words = self.words(messages, params.seed)
        for _ in range(skip):
            next(words)
        interval_s = 1.0 / self.tok_s if self.tok_s > 0 else 0.0
        ttft_s = self.first_token_delay_s(messages, stats.input_tokens)
        start = loop.time() + ttft_s
        if ttft_s > 0:
            await asyncio.sleep(ttft_s)
        for i in range(count):
            # An absolute schedule, so the sleeps' own lateness does not slow the mean rate.
            wait_s = start + i * interval_s - loop.time()
            # Always yield to the loop: many streams share it, none may hog it.
            await asyncio.sleep(max(0.0, wait_s))
            token = next(words) if (i == 0 and glued) else " " + next(words)
            if any(stop in token for stop in params.stop):
                stats.finish_reason = "stop"
                return
            stats.output_tokens += 1
            yield token
        stats.finish_reason = "length" if limit is not None else "stop"
