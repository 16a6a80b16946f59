"""The one small interface every endpoint adapter implements.

An endpoint turns a list of LangChain messages into a stream of content deltas. It may be asked
to *continue* a partial assistant answer (``prefix``): then it yields only the text that comes
after the prefix. It reports usage and timings by filling in the `StreamStats` it is given, so the
engine can read what a cancelled stream had already cost. Cancelling the task that iterates the
stream (or closing the iterator) must stop the work promptly: close the HTTP stream, stop the
llama generation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from langchain_core.messages import BaseMessage

from langchain_disco.errors import ConfigError

EndpointKind = Literal["local", "remote"]


@dataclass(frozen=True)
class Capabilities:
    """What an endpoint can do, so dispatch and migration only ask for what is possible."""

    exact_continuation: bool = False
    """Can continue a partial assistant message token-for-token (needed to migrate *to* it)."""
    tools: bool = False
    """Can make a tool call when the request forces one (`tool_choice` required or a name)."""
    tool_choice_auto: bool = False
    """Can itself decide between calling a tool and answering (`tool_choice` auto)."""
    structured_output: bool = False
    """Can constrain its answer to a JSON schema (`response_format`)."""
    logprobs: bool = False
    """Can report token log-probabilities (`logprobs`, `top_logprobs`)."""
    provider_parameters: bool = False
    """Forwards parameters it does not itself interpret to a provider (`model_kwargs`,
    `extra_body`, a per-call `model`): an OpenAI-compatible API can, an in-process model not."""


@dataclass(frozen=True)
class ToolCallChunk:
    """A piece of a tool call, as streamed; the first piece of a call carries its id and name."""

    index: int
    id: str | None = None
    name: str | None = None
    args: str = ""


StreamItem = Union[str, ToolCallChunk]  # noqa: UP007 - a runtime alias, valid on Python 3.10
"""What an endpoint stream yields: text deltas, or pieces of tool calls."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters passed through to whichever endpoint generates."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI-format tool definitions (``{"type": "function", "function": {...}}``)."""
    tool_choice: str | dict[str, Any] | None = None
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name"}}``."""
    response_format: dict[str, Any] | None = None
    """OpenAI-format ``response_format`` (``json_schema`` or ``json_object``)."""
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    parallel_tool_calls: bool | None = None
    """False: at most one tool call (the local model never makes more than one)."""
    model: str | None = None
    """A per-call remote model name, overriding the endpoint's."""
    provider_kwargs: tuple[tuple[str, Any], ...] = ()
    """Further top-level request parameters for the provider (`model_kwargs`), as pairs."""
    extra_body: tuple[tuple[str, Any], ...] = ()
    """Fields merged into the provider's JSON body as they are (`extra_body`), as pairs."""

    def __post_init__(self) -> None:
        # llama.cpp reads max_tokens <= 0 as "until the context is full" (4,079 tokens in 80 s
        # at n_ctx 4096 were seen) and servers answer it with a 400: refuse it here, for both.
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens < 1
        ):
            raise ConfigError(
                f"max_tokens={self.max_tokens!r} must be a whole number of tokens, 1 or more: "
                "pass max_tokens=N (or leave it unset for DISCO_MAX_TOKENS, the model's cap)"
            )

    @property
    def forces_tool_call(self) -> bool:
        """True when the request demands a tool call (no free choice left to the model)."""
        return bool(self.tools) and (
            self.tool_choice == "required" or isinstance(self.tool_choice, dict)
        )

    def needs(self, capabilities: Capabilities) -> str | None:
        """Why an endpoint with `capabilities` cannot serve this request, or None if it can."""
        if self.tools and self.tool_choice != "none":
            if not capabilities.tools:
                return "tool calling"
            if not self.forces_tool_call and not capabilities.tool_choice_auto:
                return "tool_choice='auto' (choosing between a tool call and an answer)"
        if self.response_format is not None and not capabilities.structured_output:
            return "structured output"
        if (self.logprobs or self.top_logprobs is not None) and not capabilities.logprobs:
            return "logprobs"
        if not capabilities.provider_parameters:
            passed = [
                name
                for name, given in (
                    ("model", self.model is not None),
                    ("model_kwargs", bool(self.provider_kwargs)),
                    ("extra_body", bool(self.extra_body)),
                )
                if given
            ]
            if passed:
                return f"provider parameters ({', '.join(passed)})"
        return None


@dataclass
class StreamStats:
    """Usage and timings of one endpoint stream, filled in by the endpoint while it runs.

    The engine reads it after the stream ended *or was cancelled*, so an endpoint updates it
    incrementally: `input_tokens` as soon as known (estimated if the API has not said yet),
    `output_tokens` per delta, then the API's own usage report when it arrives. `input_tokens`
    is the prompt of one attempt; retries send it again, and `billed_attempts` says how many
    of those sends are billed. Output tokens are billed as produced.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    usage_reported: bool = False
    """True once the counts come from the endpoint itself rather than our estimate."""
    queue_wait_s: float = 0.0
    """Time spent waiting for the endpoint to become free (local model busy) before prefill."""
    attempts: int = 0
    """Connection attempts made (retries before the first token count here)."""
    billed_attempts: int | None = None
    """How many of the `attempts` the provider bills (docs/concepts.md, "What is billed"): a
    remote endpoint counts the requests it accepted or may have started, not those rejected
    with an HTTP error status or never connected. None: the endpoint does not tell them apart,
    and all it processed counts (a device spends energy on whatever it prefilled)."""
    finish_reason: str | None = None
    cached_input_tokens: int = 0
    """Of `input_tokens`, those the provider read from its prompt cache (as it reported)."""
    reasoning_tokens: int = 0
    """Of `output_tokens`, the reasoning tokens the provider reported."""
    response_id: str | None = None
    system_fingerprint: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    """Token log-probabilities as the provider streamed them (OpenAI's ``logprobs.content``)."""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def attempted_input_tokens(self) -> int:
        """The prompt tokens sent, once per attempt, billed or not."""
        if self.billed_attempts is None:
            return self.input_tokens
        return self.input_tokens * self.attempts

    @property
    def billed_input_tokens(self) -> int:
        """The prompt tokens billed: once per billed attempt (every attempt sends the prompt)."""
        if self.billed_attempts is None:
            return self.input_tokens
        return self.input_tokens * self.billed_attempts

    @property
    def billed_cached_input_tokens(self) -> int:
        """Of `billed_input_tokens`, those the provider read from its prompt cache: the cached
        count it reported, at most the prompt, once per billed attempt (only the last attempt's
        usage is known; an earlier one sent the same prompt)."""
        cached = min(max(self.cached_input_tokens, 0), self.input_tokens)
        if self.billed_attempts is None:
            return cached
        return cached * self.billed_attempts


@dataclass(frozen=True)
class PromptCacheView:
    """How much of a prompt an endpoint holds in its cache, as it would be when the request
    started now: both counts in the endpoint's own tokens."""

    prompt_tokens: int
    cached_tokens: int
    """Of `prompt_tokens`, those it would read from its cache instead of evaluating."""

    def cached_share(self) -> float:
        """The cached fraction of the prompt (0 for an empty one)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens > 0 else 0.0


class Endpoint(ABC):
    """A place that can generate: the local llama.cpp model, a remote API, any chat model."""

    name: str
    kind: EndpointKind
    model_name: str
    capabilities: Capabilities

    @abstractmethod
    def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[StreamItem]:
        """Yield content deltas (and tool-call pieces) for `messages`.

        With a non-empty `prefix`, continue an assistant answer that already starts with
        `prefix` and yield only what follows it. Raises `ContinuationUnsupportedError` if the
        endpoint cannot continue exactly, and `EndpointError` subclasses for failures.
        """

    @property
    def pending(self) -> int:
        """Generations queued or running on this endpoint that the next one waits behind (a
        device runs one at a time; a hosted API is taken to have room: 0)."""
        return 0

    @property
    def busy(self) -> bool:
        """Whether a generation is running right now (its prefill may be part-way)."""
        return False

    def prompt_cache(
        self, messages: Sequence[BaseMessage], params: GenerationParams
    ) -> PromptCacheView | None:
        """How much of this request's prompt the endpoint has cached right now, if it can
        tell without waiting (None: it cannot; dispatch then takes nothing to be cached)."""
        return None

    def estimate_input_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """A cheap estimate of the prompt size in tokens (about 4 characters per token)."""
        chars = sum(len(str(m.content)) for m in messages)
        return max(1, chars // 4)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release long-lived resources (HTTP clients, worker threads, model memory)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model_name!r})"
