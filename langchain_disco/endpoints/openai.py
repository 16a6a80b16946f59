"""Remote endpoint: any OpenAI-compatible chat completions API, streamed with the openai SDK.

Works with both openai lines (2.x on httpx, 3.x on httpx2). Retries are ours (tenacity), and only
happen *before* the first content token: once text was delivered, a repeat would duplicate it, so
a later failure is raised as `EndpointError` for the engine to fail over from the delivered text.

Continuing a partial assistant answer (``prefix``) depends on the server, chosen by `continuation`:

- ``"vllm"``: vLLM / SGLang, ``continue_final_message=true, add_generation_prompt=false``;
- ``"deepseek"``: DeepSeek chat prefix completion (``"prefix": true``; base URL ``.../beta``);
- ``"llamacpp"``: llama.cpp ``llama-server`` assistant prefill (a trailing assistant message);
- ``"none"``: the official OpenAI API, which cannot continue; asking raises
  `ContinuationUnsupportedError`;
- ``"auto"``: find out once per base URL and model (`_probe.py`), outside any user's request,
  and remember the verdict with the learned profiles.

Whatever the server does with the prefix, `stream` yields only what follows it: an echo of the
prefix (llama-server streams it back) is stripped and a restart is refused before delivery
(`_continuation.PrefixFilter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_args

import openai
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from langchain_disco.endpoints._continuation import PrefixFilter, continuation_request
from langchain_disco.endpoints._owned_generators import OwnedGenerators
from langchain_disco.endpoints._probe import (
    ContinuationVerdict,
    VerdictStore,
    configured_verdict,
    host_verdict,
    run_probe,
)
from langchain_disco.endpoints.base import (
    Capabilities,
    Endpoint,
    GenerationParams,
    StreamItem,
    StreamStats,
    ToolCallChunk,
)
from langchain_disco.errors import (
    ConfigError,
    ContinuationUnsupportedError,
    EndpointError,
    EndpointTimeoutError,
)

__all__ = ["ContinuationMode", "OpenAIEndpoint"]

logger = logging.getLogger(__name__)

ContinuationMode = Literal["none", "vllm", "deepseek", "llamacpp", "auto"]

_T = TypeVar("_T")

_RETRYABLE_STATUS = frozenset({408, 409, 429})
# Many local servers need no key, but the SDK insists on one.
_PLACEHOLDER_KEY = "not-needed"
_MAX_DETAIL_CHARS = 300
_MAX_BACKOFF_S = 30.0
_PROBE_RETRY_S = 60.0


def _transport_errors() -> tuple[type[Exception], ...]:
    """httpx/httpx2 transport errors, which openai 2.x lets escape raw from a stream's body."""
    found: list[type[Exception]] = []
    for module_name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)


def _transport_timeouts() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = []
    for module_name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.append(module.TimeoutException)
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()
_TRANSPORT_TIMEOUTS = _transport_timeouts()


class _FirstTokenTimeout(Exception):
    """No content within `first_token_timeout_s` of the request starting (retryable)."""


class _HeaderTimeout(_FirstTokenTimeout):
    """No response headers within `header_timeout_s`: the server took the connection and went
    silent (retryable; far sooner than the first-token timeout)."""


class _StopIf(stop_base):
    """Stop as soon as `predicate(retry_state)` says so (tenacity has no such stop built in)."""

    def __init__(self, predicate: Callable[[RetryCallState], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate(retry_state)


def _retry_after_s(exc: BaseException | None) -> float | None:
    """The wait a 429/503 asks for (``retry-after-ms``, ``retry-after`` seconds or HTTP date)."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            value = float(ms) / 1000.0
        elif (after := headers.get("retry-after")) is not None:
            try:
                value = float(after)
            except ValueError:
                when = email.utils.parsedate_to_datetime(after)
                value = when.timestamp() - time.time()
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, value) if math.isfinite(value) else None


class _MalformedChunkError(Exception):
    """A chunk that parsed as JSON but is not a chat completion chunk."""


def _is_retryable(exc: BaseException) -> bool:
    """Connect errors, first-token timeouts and 408/409/429/5xx: worth another attempt."""
    if isinstance(exc, _FirstTokenTimeout):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, *_TRANSPORT_ERRORS))


@dataclass(frozen=True)
class _Request:
    messages: list[dict[str, Any]]
    extra_body: dict[str, Any]


class OpenAIEndpoint(Endpoint):
    """A remote OpenAI-compatible chat completions endpoint (OpenAI, DeepSeek, vLLM, llama.cpp)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: SecretStr | None = None,
        continuation: ContinuationMode = "none",
        connect_timeout_s: float = 5.0,
        first_token_timeout_s: float = 60.0,
        idle_timeout_s: float = 30.0,
        header_timeout_s: float = 15.0,
        max_retry_after_s: float = 10.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
        name: str = "remote",
        extra_body: dict[str, Any] | None = None,
        max_connections: int | None = None,
        verdicts: VerdictStore | None = None,
    ) -> None:
        if continuation not in get_args(ContinuationMode):
            raise ConfigError(
                f"continuation={continuation!r} is not one of {get_args(ContinuationMode)}; "
                "use 'auto' to probe the server once, 'vllm' for vLLM/SGLang, 'deepseek', "
                "'llamacpp' for llama-server, or 'none' for the official OpenAI API"
            )
        for setting, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("first_token_timeout_s", first_token_timeout_s),
            ("idle_timeout_s", idle_timeout_s),
            ("header_timeout_s", header_timeout_s),
        ):
            if not value > 0:
                raise ConfigError(f"{setting}={value!r} must be a positive number of seconds")
        if max_retries < 0:
            raise ConfigError(f"max_retries={max_retries!r} must be 0 or more")
        if retry_backoff_s < 0:
            raise ConfigError(f"retry_backoff_s={retry_backoff_s!r} must be 0 or more")
        if max_connections is not None and max_connections < 1:
            raise ConfigError(f"max_connections={max_connections!r} must be 1 or more (or None)")

        self.name = name
        self.kind = "remote"
        self.model_name = model
        self.base_url = base_url
        self.continuation: ContinuationMode = continuation
        self._verdicts = verdicts
        self._probe_task: asyncio.Task[None] | None = None
        self._probe_retry_at = 0.0
        self.verdict: ContinuationVerdict | None = None
        """How this server continues a partial answer; None while `auto` has not found out."""
        if continuation != "auto":
            self.verdict = configured_verdict(continuation)
        else:
            self.verdict = host_verdict(base_url) or self._remembered()
        self.capabilities = self._capabilities()
        self.connect_timeout_s = connect_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        """Longest wait for the response headers of one attempt (then retried, or failed)."""
        if not (max_retry_after_s >= 0 and math.isfinite(max_retry_after_s)):
            raise ConfigError(f"max_retry_after_s={max_retry_after_s!r} must be 0 or more")
        self.max_retry_after_s = max_retry_after_s
        """A 429/503 asking to wait longer than this fails at once (the engine fails over)."""
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.extra_body: dict[str, Any] = dict(extra_body or {})
        self.max_connections = max_connections
        """Concurrent HTTP connections per event loop; None keeps the SDK's pool (1000)."""
        self._api_key = api_key
        # The HTTP pool of an AsyncOpenAI client is bound to the loop it first ran on.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI]
        self._clients = weakref.WeakKeyDictionary()

    # ----------------------------------------------------------------------------- continuation

    @property
    def _verdict_key(self) -> str:
        return f"{self.base_url.rstrip('/')}|{self.model_name}"

    def _capabilities(self) -> Capabilities:
        return Capabilities(
            exact_continuation=self.verdict is not None and self.verdict.style is not None,
            tools=True,
            tool_choice_auto=True,
            structured_output=True,
            logprobs=True,
            provider_parameters=True,
        )

    def _remembered(self) -> ContinuationVerdict | None:
        if self._verdicts is None:
            return None
        return ContinuationVerdict.from_dict(self._verdicts.get_verdict(self._verdict_key))

    def _settle(self, verdict: ContinuationVerdict) -> None:
        self.verdict = verdict
        self.capabilities = self._capabilities()
        if self._verdicts is not None and verdict.source == "probed":
            self._verdicts.put_verdict(self._verdict_key, verdict.to_dict())

    async def aprobe_continuation(self) -> ContinuationVerdict:
        """Find out (now) how the server continues a partial answer, and remember it.

        A few requests of at most 3 output tokens each (see `_probe.py`). Inconclusive
        failures (a 5xx, a timeout) raise `EndpointError` and leave the verdict unknown.
        """
        verdict = await run_probe(self._client(), self.model_name, name=self.name)
        self._settle(verdict)
        return verdict

    def _schedule_probe(self) -> None:
        """Probe in the background, once, when `auto` does not know the server yet."""
        if self.verdict is not None or self.continuation != "auto":
            return
        task = self._probe_task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return  # under way (a task stranded on a closed loop never finishes: probe again)
        loop = asyncio.get_running_loop()
        if loop.time() < self._probe_retry_at:
            return

        async def probe() -> None:
            try:
                verdict = await self.aprobe_continuation()
            except Exception as exc:  # inconclusive: try again a minute later
                self._probe_retry_at = loop.time() + _PROBE_RETRY_S
                logger.info("endpoint %r: continuation probe inconclusive (%s)", self.name, exc)
                return
            logger.info("endpoint %r: continuation probed: %s", self.name, verdict.describe())

        self._probe_task = loop.create_task(probe(), name=f"disco-{self.name}-probe")

    # ----------------------------------------------------------------------------- clients

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        # A closed loop's client can never be used (or closed) again; drop it so the loop it
        # references can be collected.
        for dead in [lp for lp in self._clients if lp.is_closed()]:
            del self._clients[dead]
        client = self._clients.get(loop)
        if client is None:
            # The read timeout is only a backstop: our own first-token and idle timers are
            # precise, and a read timeout shorter than first_token_timeout_s would cut a slow
            # (but allowed) wait for the response headers.
            read_s = max(self.first_token_timeout_s, self.idle_timeout_s) + 1.0
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=(self._api_key.get_secret_value() if self._api_key else _PLACEHOLDER_KEY),
                max_retries=0,
                timeout=openai.Timeout(
                    connect=self.connect_timeout_s,
                    read=read_s,
                    write=read_s,
                    pool=self.connect_timeout_s,
                ),
                http_client=_http_client(self.max_connections),
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP clients of every event loop this endpoint was used on."""
        current = asyncio.get_running_loop()
        probe, self._probe_task = self._probe_task, None
        if probe is not None and not probe.done() and probe.get_loop() is current:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        clients = list(self._clients.items())
        self._clients.clear()
        for loop, client in clients:
            if loop is current:
                await client.close()
            elif loop.is_running():
                # Used from another thread's loop: its connections must be closed there.
                done = asyncio.run_coroutine_threadsafe(client.close(), loop)
                await asyncio.wrap_future(done)
            # else: that loop is closed; its sockets cannot be awaited any more.

    # ----------------------------------------------------------------------------- request

    def _build_request(self, messages: Sequence[BaseMessage], prefix: str) -> _Request:
        payload: list[dict[str, Any]] = convert_to_openai_messages(list(messages))
        extra_body = dict(self.extra_body)
        if prefix:
            style = self.verdict.style if self.verdict is not None else None
            if style is None:
                why = (
                    "its continuation has not been probed yet (continuation='auto')"
                    if self.verdict is None
                    else self.verdict.describe()
                )
                raise ContinuationUnsupportedError(
                    self.name,
                    f"cannot continue a partial assistant answer: {why}; set "
                    "continuation='vllm', 'deepseek' or 'llamacpp' if the server supports one",
                )
            payload, extra_body = continuation_request(payload, extra_body, prefix, style)
        return _Request(messages=payload, extra_body=extra_body)

    # ----------------------------------------------------------------------------- stream

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[StreamItem]:
        """Yield content deltas and tool-call pieces; with `prefix`, only the continuation."""
        self._schedule_probe()
        stats.extra["continuation"] = (
            self.verdict.describe() if self.verdict is not None else "not known yet (auto)"
        )
        request = self._build_request(messages, prefix)
        prompt = [*messages, AIMessage(content=prefix)] if prefix else list(messages)
        stats.input_tokens = self.estimate_input_tokens(prompt)
        client = self._client()
        # Only what follows the prefix, whatever the server does with it (echo, restart).
        echo = self.verdict.echo if self.verdict is not None else None
        only_new = PrefixFilter(prefix, endpoint=self.name, expect_echo=echo) if prefix else None

        owned = OwnedGenerators()  # the SDK leaves its SSE/HTTP generators to the loop
        try:
            with owned.recording():
                stream, first = await self._open_with_retries(client, request, params, stats)
        except BaseException:
            await owned.aclose()
            raise
        delivered = 0
        forced = params.forces_tool_call  # until the answer has begun
        try:
            items: list[StreamItem] | None = first
            while items is not None:
                items = _filtered(items, only_new)
                if forced and items:
                    self._refuse_prose_for_a_forced_call(items[0], params)
                    forced = False
                for item in items:
                    delivered += 1
                    yield item
                items = await self._next_items(stream, stats, delivered=delivered)
            if only_new is not None:
                rest = only_new.end()
                stats.extra["prefix_echoed"] = only_new.echoed
                if rest:
                    delivered += 1
                    yield rest
            if stats.finish_reason is None:
                raise EndpointError(
                    self.name,
                    f"stream ended without a finish reason after {delivered} delta(s): "
                    "the response was truncated",
                )
        finally:
            # Releases the connection at once, also on cancellation or when the consumer
            # stops iterating early; then the SDK's own generators, which the loop would
            # otherwise close later, one task each (on a user-managed loop closed right after:
            # "Task was destroyed but it is pending!").
            await stream.close()
            await owned.aclose()

    async def _next_items(
        self,
        stream: openai.AsyncStream[ChatCompletionChunk],
        stats: StreamStats,
        *,
        delivered: int,
    ) -> list[StreamItem] | None:
        """The next chunk's text and tool calls, unfiltered (None: the stream ended), within the
        idle timeout; any failure is raised as our `EndpointError`, saying how far it got.

        Failures are raised *outside* the except clauses, with no cause: the SDK's exception
        carries the server's raw body and the request (its Authorization header), which a
        chained traceback, `logger.exception` or a tracer's `run.error` would print. Our
        message is scrubbed; nothing else travels.
        """
        failure: EndpointError
        try:
            chunk = await _within(stream.__anext__(), self.idle_timeout_s)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            failure = EndpointTimeoutError(
                self.name,
                f"no data for {self.idle_timeout_s}s after {delivered} delta(s) "
                "(idle timeout); not retried because text was already delivered",
            )
        except Exception as exc:
            failure = self._error(exc, stats, delivered=delivered)
        else:
            try:
                return _absorb(chunk, stats)
            except _MalformedChunkError as exc:
                failure = self._error(exc, stats, delivered=delivered)
        raise failure

    async def _open_with_retries(
        self,
        client: openai.AsyncOpenAI,
        request: _Request,
        params: GenerationParams,
        stats: StreamStats,
    ) -> tuple[openai.AsyncStream[ChatCompletionChunk], list[StreamItem]]:
        """Send the request until it yields its first content delta (or ends without any).

        Each attempt that may be billed is counted in `stats.billed_attempts` (see `_attempt`).
        """
        stats.billed_attempts = stats.billed_attempts or 0
        backoff = wait_exponential(multiplier=self.retry_backoff_s, max=_MAX_BACKOFF_S)

        def wait(state: RetryCallState) -> float:
            """Our backoff, or longer when the server says how long (``Retry-After``)."""
            asked = _retry_after_s(state.outcome.exception() if state.outcome else None)
            return max(backoff(state), asked or 0.0)

        def told_to_wait_too_long(state: RetryCallState) -> bool:
            asked = _retry_after_s(state.outcome.exception() if state.outcome else None)
            return asked is not None and asked > self.max_retry_after_s

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1) | _StopIf(told_to_wait_too_long),
            wait=wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        failure: EndpointError
        try:
            async for attempt in retrying:
                with attempt:
                    stats.attempts += 1
                    return await self._attempt(client, request, params, stats)
        except Exception as exc:
            failure = self._error(exc, stats, delivered=0)
        else:
            raise AssertionError("unreachable: tenacity either returns or re-raises")
        raise failure  # outside the except clause: no chained SDK error (see `_next_items`)

    async def _attempt(
        self,
        client: openai.AsyncOpenAI,
        request: _Request,
        params: GenerationParams,
        stats: StreamStats,
    ) -> tuple[openai.AsyncStream[ChatCompletionChunk], list[StreamItem]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_token_timeout_s
        headers_by = min(deadline, loop.time() + self.header_timeout_s)

        async def within_deadline(step: Awaitable[_T], by: float = deadline) -> _T:
            try:
                return await _within(step, by - loop.time())
            except asyncio.TimeoutError as exc:
                if by < deadline:
                    raise _HeaderTimeout from exc
                raise _FirstTokenTimeout from exc

        async def open_and_bill(step: Awaitable[_T]) -> _T:
            """Await the response headers, counting the attempt if the provider may bill it.

            docs/concepts.md, "What is billed": a request rejected with an error status, or
            that never reached the server, bills nothing; once accepted (2xx headers) its
            prompt is billed whatever follows; one abandoned while waiting for the headers
            (cancelled, timed out, connection lost after sending) is billed conservatively,
            since the server may have started its prefill.
            """
            try:
                opened = await within_deadline(step, headers_by)
            except BaseException as exc:
                # httpx and httpx2 name their connect-phase errors alike; the SDK chains them.
                unsent = isinstance(exc, openai.APIConnectionError) and type(
                    exc.__cause__
                ).__name__ in ("ConnectError", "ConnectTimeout", "PoolTimeout")
                if not (unsent or isinstance(exc, openai.APIStatusError)):
                    stats.billed_attempts = (stats.billed_attempts or 0) + 1
                raise
            stats.billed_attempts = (stats.billed_attempts or 0) + 1
            return opened

        # `model_kwargs` go in as top-level fields of the body, as ChatOpenAI sends them; they
        # are not keyword arguments of the SDK's `create`, which rejects names it does not know.
        extra_body = {
            **dict(params.provider_kwargs),
            **request.extra_body,
            **dict(params.extra_body),
        }
        stream = await open_and_bill(
            client.chat.completions.create(
                model=params.model or self.model_name,
                messages=cast(Any, request.messages),
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=_given(params.max_tokens),
                temperature=_given(params.temperature),
                top_p=_given(params.top_p),
                seed=_given(params.seed),
                stop=list(params.stop) if params.stop else openai.omit,
                tools=cast(Any, list(params.tools)) if params.tools else openai.omit,
                tool_choice=cast(Any, _given(params.tool_choice)),
                parallel_tool_calls=_given(params.parallel_tool_calls if params.tools else None),
                response_format=cast(Any, _given(params.response_format)),
                presence_penalty=_given(params.presence_penalty),
                frequency_penalty=_given(params.frequency_penalty),
                logprobs=_given(params.logprobs),
                top_logprobs=_given(params.top_logprobs),
                extra_body=extra_body or None,
            )
        )
        try:
            while True:
                try:
                    chunk = await within_deadline(stream.__anext__())
                except StopAsyncIteration:
                    return stream, []
                items = _absorb(chunk, stats)
                if items:
                    return stream, items
        except BaseException:
            await stream.close()
            raise

    def _refuse_prose_for_a_forced_call(self, first: StreamItem, params: GenerationParams) -> None:
        """A forced tool call answered with text is a failure, never an answer.

        Some servers accept ``tool_choice`` and ignore it (llama-server with a chat template
        that has no tool format, observed): delivered, that text would answer a request that
        demanded a call, and in a race it would beat the endpoint that makes the call.
        """
        if isinstance(first, str) and first.strip():
            raise EndpointError(
                self.name,
                f"answered a forced tool call (tool_choice={params.tool_choice!r}) with text: "
                "the server ignores tool_choice for this model; nothing of it was delivered",
            )

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep_s = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "endpoint %r: attempt %d failed (%s), retrying in %.1f s",
            self.name,
            state.attempt_number,
            self._describe(exc) if exc else "?",
            sleep_s,
        )

    # ----------------------------------------------------------------------------- errors

    def _scrub(self, text: str) -> str:
        """Trim a server-provided message and make sure our key never appears in it."""
        if self._api_key is not None:
            secret = self._api_key.get_secret_value()
            if secret:
                text = text.replace(secret, "***")
        return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "..."

    def _describe(self, exc: BaseException) -> str:
        """A short, secret-free description of a failure."""
        if isinstance(exc, _HeaderTimeout):
            return f"no response headers within {self.header_timeout_s}s (header timeout)"
        if isinstance(exc, _FirstTokenTimeout):
            return f"no first token within {self.first_token_timeout_s}s"
        if isinstance(exc, openai.APITimeoutError):
            return "request timed out"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            detail = f" ({type(cause).__name__})" if cause is not None else ""
            return f"connection failed{detail}"
        if isinstance(exc, openai.APIStatusError):
            message = _server_message(exc.body)
            return f"HTTP {exc.status_code}" + (f": {self._scrub(message)}" if message else "")
        if isinstance(exc, openai.APIError):  # SDK reports `data: {"error": ...}` this way
            message = _server_message(exc.body) or exc.message
            return f"error event in the stream: {self._scrub(message)}"
        if isinstance(exc, _MalformedChunkError):
            return f"malformed stream event: {self._scrub(str(exc))}"
        if isinstance(exc, ValueError):  # json.JSONDecodeError from the SDK's SSE parser
            return f"malformed stream event (invalid JSON: {self._scrub(str(exc))})"
        if isinstance(exc, _TRANSPORT_TIMEOUTS):
            return f"read timed out ({type(exc).__name__})"
        if isinstance(exc, _TRANSPORT_ERRORS):
            # openai 2.x lets a transport error mid-stream through raw; 3.x wraps it in an
            # APIConnectionError. One fault, one message, whichever SDK is installed.
            return f"connection failed ({type(exc).__name__})"
        return f"{type(exc).__name__}: {self._scrub(str(exc))}"

    def _error(self, exc: BaseException, stats: StreamStats, *, delivered: int) -> EndpointError:
        """Normalise any failure into our hierarchy, saying how far the stream got."""
        if isinstance(exc, EndpointError):
            return exc
        is_timeout = isinstance(
            exc, (_FirstTokenTimeout, openai.APITimeoutError, *_TRANSPORT_TIMEOUTS)
        )
        asked = _retry_after_s(exc)
        if delivered:
            where = f"after {delivered} delta(s); not retried because text was already delivered"
        elif asked is not None and asked > self.max_retry_after_s:
            where = (
                f"after {stats.attempts} attempt(s); not retried: the server asked to wait "
                f"{asked:.0f}s (Retry-After), more than the {self.max_retry_after_s:g}s a request "
                "may wait here"
            )
        else:
            retryable = "" if _is_retryable(exc) else ", not retryable"
            where = f"after {stats.attempts} attempt(s){retryable}"
        cls = EndpointTimeoutError if is_timeout else EndpointError
        return cls(self.name, f"{self._describe(exc)} {where}")


def _filtered(items: list[StreamItem], only_new: PrefixFilter | None) -> list[StreamItem]:
    """`items` with their text passed through the continuation filter (tool calls untouched)."""
    if only_new is None:
        return items
    out: list[StreamItem] = []
    for item in items:
        if isinstance(item, str):
            item = only_new.feed(item)
            if not item:
                continue
        out.append(item)
    return out


def _http_client(max_connections: int | None) -> Any:
    """The SDK's own async HTTP client with a pool of `max_connections` (kept alive), or None.

    The pool's `Limits` must come from the HTTP library the installed SDK is built on (httpx
    for openai 2.x, httpx2 for 3.x), found from the SDK's client class rather than assumed.
    """
    if max_connections is None:
        return None
    library = next(
        importlib.import_module(cls.__module__.split(".")[0])
        for cls in openai.DefaultAsyncHttpxClient.__mro__
        if cls.__module__.split(".")[0] in ("httpx", "httpx2")
    )
    limits = library.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return openai.DefaultAsyncHttpxClient(limits=limits)


async def _within(step: Awaitable[_T], timeout_s: float) -> _T:
    """Await `step` for at most `timeout_s` seconds, else raise `asyncio.TimeoutError`.

    Not `asyncio.wait_for`: before Python 3.12 it swallows a cancellation of the caller that
    arrives just as `step` completes, and a lost cancellation would leave the loser of a race
    streaming. (`asyncio.timeout` would do, but it needs 3.11 and we support 3.10.)
    """
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
    except GeneratorExit:  # an abandoned stream closed at gc, perhaps after its loop: no waiting
        raise
    except BaseException:  # we were cancelled: stop `step` and let it unwind before we go on
        task.cancel()
        await asyncio.wait({task})
        await _discard(task)
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task})  # a cancellation of ours during this wait propagates
        if task.cancelled() or task.exception() is not None:
            raise asyncio.TimeoutError
    return task.result()


async def _discard(task: asyncio.Future[Any]) -> None:
    """Release what a step we gave up on produced anyway.

    A cancellation that arrives just as the response headers do finds the step *finished*: it
    returned an open `AsyncStream`, whose connection stays checked out of the pool unless it is
    closed (300 abandoned race requests left 24 connections open; with a pool of 3 the endpoint
    stopped working after 78).
    """
    if task.cancelled():
        return
    if task.exception() is not None:  # retrieved: the cancellation is what matters now
        return
    close = getattr(task.result(), "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def _given(value: _T | None) -> _T | openai.Omit:
    return openai.omit if value is None else value


def _server_message(body: object) -> str:
    """The ``message`` of an OpenAI-style error body, if there is one."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            message = inner.get("message")
            if isinstance(message, str):
                return message
        elif isinstance(inner, str):
            return inner
    return ""


def _absorb(chunk: ChatCompletionChunk, stats: StreamStats) -> list[StreamItem]:
    """Record a chunk's usage and finish reason in `stats`; return its text and tool calls."""
    try:
        usage = getattr(chunk, "usage", None)
        choices = getattr(chunk, "choices", None) or []
        if not isinstance(choices, list):
            raise TypeError(f"choices is {type(choices).__name__}, expected a list")
        _record_identity(chunk, stats)
        text = ""
        calls: list[StreamItem] = []
        for choice in choices:
            if not isinstance(choice, ChunkChoice):
                raise TypeError(f"a choice is {type(choice).__name__}, expected an object")
            if getattr(choice, "index", 0) != 0:
                continue  # n > 1 is never requested; ignore stray extra choices
            choice_text, choice_calls = _absorb_choice(choice, stats)
            text += choice_text
            calls.extend(choice_calls)
        if usage is not None:
            _record_usage(usage, stats)
        elif text or calls:
            stats.output_tokens += 1
        return [text, *calls] if text else calls
    except (AttributeError, TypeError, ValueError) as exc:
        raise _MalformedChunkError(f"unexpected chunk shape ({exc})") from exc


def _record_identity(chunk: ChatCompletionChunk, stats: StreamStats) -> None:
    """Record which response this is (its first id) and the backend's system fingerprint."""
    if stats.response_id is None and isinstance(getattr(chunk, "id", None), str):
        stats.response_id = chunk.id
    fingerprint = getattr(chunk, "system_fingerprint", None)
    if isinstance(fingerprint, str):
        stats.system_fingerprint = fingerprint


def _absorb_choice(choice: ChunkChoice, stats: StreamStats) -> tuple[str, list[StreamItem]]:
    """Record a choice's logprobs and finish reason in `stats`; return its text and tool calls."""
    logprobs = getattr(choice, "logprobs", None)
    for entry in getattr(logprobs, "content", None) or ():
        stats.logprobs.append(entry.model_dump() if hasattr(entry, "model_dump") else entry)
    delta = getattr(choice, "delta", None)
    text = _delta_text(delta)
    calls: list[StreamItem] = [
        _tool_call_chunk(call)
        for call in (getattr(delta, "tool_calls", None) if delta is not None else None) or ()
    ]
    finish_reason = getattr(choice, "finish_reason", None)
    if finish_reason:
        stats.finish_reason = str(finish_reason)
    return text, calls


def _delta_text(delta: Any) -> str:
    """A delta's content ("" when it has none); content that is not a string is malformed."""
    content = getattr(delta, "content", None) if delta is not None else None
    if not content:
        return ""
    if not isinstance(content, str):
        raise TypeError(f"content is {type(content).__name__}, expected str")
    return content


def _tool_call_chunk(call: Any) -> ToolCallChunk:
    """One streamed piece of a tool call, tolerant of the fields a server leaves out."""
    function = getattr(call, "function", None)
    return ToolCallChunk(
        index=int(getattr(call, "index", 0) or 0),
        id=getattr(call, "id", None),
        name=getattr(function, "name", None) if function is not None else None,
        args=(getattr(function, "arguments", None) or "") if function else "",
    )


def _record_usage(usage: Any, stats: StreamStats) -> None:
    """Record the usage a chunk reports (the final one, with ``include_usage``) in `stats`."""
    stats.input_tokens = int(usage.prompt_tokens)
    stats.output_tokens = int(usage.completion_tokens)
    stats.usage_reported = True
    stats.cached_input_tokens = _cached_tokens(usage)
    details = getattr(usage, "completion_tokens_details", None)
    stats.reasoning_tokens = int(getattr(details, "reasoning_tokens", None) or 0)


def _cached_tokens(usage: Any) -> int:
    """Prompt tokens the provider served from its cache: OpenAI's (and vLLM's, llama-server's)
    ``prompt_tokens_details.cached_tokens``, or DeepSeek's ``prompt_cache_hit_tokens``."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    if cached is None:
        cached = getattr(usage, "prompt_cache_hit_tokens", None)  # DeepSeek, an extra field
    try:
        return max(int(cached or 0), 0)
    except (TypeError, ValueError):
        return 0
