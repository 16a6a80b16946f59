"""The loopback server's request log: what each chat request asked for and what it got.

Tests read it (``GET /_disco/requests``) to prove what happened on the server side: that a
client which went away was seen as ``disconnected`` and its generation stopped, which fault a
request suffered, how many tokens were actually sent and when. Times are `time.monotonic()`
seconds, which on Linux share one clock across processes, so a test can compare them with its
own measurements.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal

RequestStatus = Literal["running", "completed", "disconnected", "error", "fault"]
"""``running`` until the request ends; then ``completed`` (answer delivered in full),
``disconnected`` (the client went away first), ``error`` (the generator failed) or ``fault``
(an injected fault ended it). A stall or delay fault that lets the answer finish is
``completed``; its ``fault`` field still names it."""


@dataclass
class RequestRecord:
    """One chat-completions request, updated while it runs."""

    id: str
    index: int
    model: str
    prompt: str
    """Text of the last user message."""
    messages: list[dict[str, str]]
    """The conversation given to the generator (role, content), without the prefix."""
    prefix: str
    """The partial assistant answer that was continued ("" for a fresh request)."""
    continuation: str | None
    """How the continuation was asked for: ``vllm``, ``deepseek``, ``prefill`` or None."""
    stream: bool
    max_tokens: int | None
    ttft_delay_s: float
    """Injected delay before generation started: latency profile plus a ``delay`` fault."""
    inter_token_s: float
    """Minimum gap the server kept between content tokens."""
    fault: dict[str, Any] | None = None
    body: dict[str, Any] = field(default_factory=dict)
    """The request body as received (every field the client set, unknown ones included)."""
    status: RequestStatus = "running"
    error: str | None = None
    tokens_sent: int = 0
    text_sent: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Of the prompt, the tokens the emulated prompt cache served (as reported in usage)."""
    prefill_delay_s: float = 0.0
    """Of `ttft_delay_s`, the modelled prefill of the uncached part (prompt cache only)."""
    completion_tokens: int = 0
    """Tokens the generator produced (may exceed `tokens_sent` when the client left early)."""
    generation_stopped: bool | None = None
    """True once the generator's work is known to be over (None while running)."""
    started_s: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None
    ended_s: float | None = None

    def note_sent(self, text: str) -> None:
        """Record one content token as delivered to the client."""
        if self.first_token_s is None:
            self.first_token_s = time.monotonic()
        self.tokens_sent += 1
        self.text_sent += text

    def finish(self, status: RequestStatus, error: str | None = None) -> None:
        """Close the record with its final status; the first final status wins."""
        if self.status != "running":
            return
        self.status = status
        self.error = error
        self.ended_s = time.monotonic()

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RequestLog:
    """Every chat request since the last clear, in arrival order."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []

    def add(self, **fields: Any) -> RequestRecord:
        """Start a record; its `index` is its position in the log (0 = first since a clear)."""
        record = RequestRecord(index=len(self._records), **fields)
        self._records.append(record)
        return record

    def clear(self) -> None:
        self._records.clear()

    def as_json(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in self._records]
