"""The loopback OpenAI-compatible server: a real llama model behind a hosted API's face.

`create_app` builds the FastAPI app around any `Endpoint`: the llama.cpp one (backend
``llama``, the default), so answers are real text with real token counts, or the model-free
`EchoEndpoint` (backend ``echo``), which streams deterministic words fast enough to measure
the client's own overhead and hundreds of concurrent streams. It speaks the chat-completions
protocol the official SDK expects (streamed and not, with usage), accepts the continuation
dialects of vLLM, DeepSeek and llama.cpp server, delays and paces tokens like a measured hosted
API (`LatencyProfile`), optionally emulates a provider's prompt cache (`PromptCache`: a repeated
prefix is served faster and reported as cached in usage, ``/_disco/prompt-cache``), injects
faults on demand (``/_disco/faults``) and logs every request (``/_disco/requests``). `serve`
runs it under uvicorn; `main` is the command line of ``python -m langchain_disco.testing``,
which `LoopbackServer` starts in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from langchain_core.messages import BaseMessage
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from langchain_disco.endpoints._grammar import rule_based_tool_choice
from langchain_disco.endpoints.base import (
    Endpoint,
    GenerationParams,
    StreamItem,
    StreamStats,
    ToolCallChunk,
)
from langchain_disco.errors import ConfigError, DiscoError
from langchain_disco.testing._prompt_cache import (
    DEFAULT_BLOCK_TOKENS,
    DEFAULT_MAX_BLOCKS,
    DEFAULT_MIN_TOKENS,
    DEFAULT_PREFILL_TOK_S,
    USAGE_SHAPES,
    PromptCache,
    UsageShape,
    prompt_text,
)
from langchain_disco.testing._records import RequestLog, RequestRecord
from langchain_disco.testing._streaming import STOP_TIMEOUT_S, deliver
from langchain_disco.testing._wire import (
    DIALECTS,
    ChatRequest,
    ChunkFactory,
    Dialect,
    WireError,
    apply_dialect,
    completion_body,
    error_body,
    finish_reason_of,
    new_completion_id,
    split_continuation,
    to_langchain,
)
from langchain_disco.testing.echo import DEFAULT_ECHO_TOK_S, EchoEndpoint
from langchain_disco.testing.faults import (
    FAULT_ADAPTER,
    DelayFault,
    ErrorStatusFault,
    FaultQueue,
    InbandErrorFault,
    MalformedFault,
    MidStreamFault,
)
from langchain_disco.testing.latency import LatencyProfile, profile_names
from langchain_disco.testing.loopback import READY_PREFIX

MALFORMED_EVENT_DATA = "{not json"

BACKENDS = ("llama", "echo")
"""What generates the answers: a real llama.cpp model, or the model-free echo generator."""

# Pending connections the listening socket queues (the kernel caps it at net.core.somaxconn).
# uvicorn's own default; 128 would make a burst of hundreds of concurrent clients wait for
# SYN retransmissions, which is the listener's limit, not the server's.
_LISTEN_BACKLOG = 2048


class AbortConnection(Exception):
    """Raised inside a response to make uvicorn drop the connection (the `disconnect` fault)."""


class _HideAbort(logging.Filter):
    """Keeps uvicorn from logging our deliberate aborts as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AbortConnection))


@dataclass
class _Server:
    """What every request handler shares."""

    generator: Endpoint
    latency: LatencyProfile
    rng: random.Random
    model_name: str
    dialect: Dialect = "lenient"
    prompt_cache: PromptCache | None = None
    faults: FaultQueue = field(default_factory=FaultQueue)
    log: RequestLog = field(default_factory=RequestLog)

    def usage_cache_fields(
        self, record: RequestRecord, prompt_tokens: int
    ) -> dict[str, Any] | None:
        """The cached-token fields of this request's usage (None: no prompt cache emulated).

        The cache counts `CHARS_PER_TOKEN` characters per token; the generator counts the real
        prompt, so the cached count is clamped to it, and the log keeps what was reported.
        """
        if self.prompt_cache is None:
            return None
        record.cached_tokens = min(record.cached_tokens, prompt_tokens)
        return self.prompt_cache.usage_fields(prompt_tokens, record.cached_tokens)


@dataclass(frozen=True)
class _Job:
    """One validated chat request, ready to generate."""

    request: ChatRequest
    messages: list[BaseMessage]
    prefix: str
    echo: str
    """Streamed back before the continuation, merged into its first delta (llama-server)."""
    params: GenerationParams
    first_delay_s: float
    inter_token_s: float
    fault: MidStreamFault | None
    record: RequestRecord

    def items(
        self, server: _Server, stats: StreamStats
    ) -> AsyncGenerator[StreamItem | MidStreamFault, None]:
        """The paced deltas (or the terminal fault) of this request from `server`'s generator.

        ``tool_choice="auto"`` follows the stand-in rule of `rule_based_tool_choice` (call a
        tool unless the last message is a tool result): the loopback model is a small base
        model that cannot make that choice, and the server stands in for one that can.
        """
        return deliver(
            server.generator,
            self.messages,
            rule_based_tool_choice(self.messages, self.params),
            stats,
            prefix=self.prefix,
            first_delay_s=self.first_delay_s,
            inter_token_s=self.inter_token_s,
            fault=self.fault,
            record=self.record,
        )


def create_app(
    generator: Endpoint,
    *,
    latency: LatencyProfile,
    seed: int = 0,
    model_name: str = "loopback",
    dialect: Dialect = "lenient",
    prompt_cache: PromptCache | None = None,
) -> FastAPI:
    """The loopback API around `generator`; latency samples come from `Random(seed)` in order.

    `dialect` picks which real server's continuation behaviour it plays (`_wire.Dialect`);
    `prompt_cache` (off by default) emulates a provider's prompt-prefix cache.
    """
    server = _Server(generator, latency, random.Random(seed), model_name, dialect, prompt_cache)
    app = FastAPI(title="langchain-disco loopback", docs_url=None, redoc_url=None)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        model = {"id": model_name, "object": "model", "created": 0, "owned_by": "langchain-disco"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = ChatRequest.model_validate_json(await request.body())
            wire_messages, prefix, mode = split_continuation(body)
            wire_messages, prefix, echo = apply_dialect(server.dialect, wire_messages, prefix, mode)
        except ValidationError as exc:
            return _error(400, f"invalid request: {exc}", type_="invalid_request_error")
        except WireError as exc:
            return _error(400, str(exc), type_="invalid_request_error", param=exc.param)
        fault = server.faults.take()
        ttft_s, inter_token_s = server.latency.sample(server.rng)
        first_delay_s = ttft_s + (fault.seconds if isinstance(fault, DelayFault) else 0.0)
        cached_tokens, prefill_s = 0, 0.0
        if server.prompt_cache is not None and not isinstance(fault, ErrorStatusFault):
            # A request rejected with an error status never reaches the model or its cache.
            lookup = server.prompt_cache.admit(
                prompt_text([(m.role, m.text()) for m in wire_messages], prefix)
            )
            cached_tokens = lookup.cached_tokens
            prefill_s = server.prompt_cache.prefill_s(lookup.uncached_tokens)
            first_delay_s += prefill_s
        params = body.params()
        users = [m for m in wire_messages if m.role == "user"]
        record = server.log.add(
            id=new_completion_id(),
            model=body.model,
            prompt=users[-1].text() if users else "",
            messages=[{"role": m.role, "content": m.text()} for m in wire_messages],
            prefix=prefix,
            continuation=mode,
            stream=body.stream,
            max_tokens=params.max_tokens,
            ttft_delay_s=first_delay_s,
            inter_token_s=inter_token_s,
            cached_tokens=cached_tokens,
            prefill_delay_s=prefill_s,
            fault=None if fault is None else fault.model_dump(),
            body=body.model_dump(mode="json", exclude_unset=True),
        )
        headers = {"x-request-id": record.id}
        if isinstance(fault, ErrorStatusFault):
            record.generation_stopped = True
            record.finish("fault", f"injected HTTP {fault.status}")
            return _error(fault.status, _status_message(fault.status), headers=headers)
        job = _Job(
            request=body,
            messages=to_langchain(wire_messages),
            prefix=prefix,
            echo=echo,
            params=params,
            first_delay_s=first_delay_s,
            inter_token_s=inter_token_s,
            fault=None if isinstance(fault, DelayFault) else fault,
            record=record,
        )
        if body.stream:
            return EventSourceResponse(_sse_events(server, job), sep="\n", headers=headers)
        response = await _unless_disconnected(request, _complete(server, job), record)
        response.headers.update(headers)
        return response

    @app.post("/_disco/faults")
    async def arm_fault(request: Request) -> Response:
        try:
            fault = FAULT_ADAPTER.validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, f"invalid fault: {exc}", type_="invalid_request_error")
        server.faults.arm(fault)
        return JSONResponse({"armed": server.faults.pending()})

    @app.delete("/_disco/faults")
    async def clear_faults() -> dict[str, Any]:
        server.faults.clear()
        return {"armed": []}

    @app.get("/_disco/faults")
    async def armed_faults() -> dict[str, Any]:
        return {"armed": server.faults.pending()}

    @app.get("/_disco/prompt-cache")
    async def prompt_cache_state() -> Response:
        if server.prompt_cache is None:
            return _error(404, "the prompt cache is off: start the server with --prompt-cache")
        return JSONResponse(server.prompt_cache.state())

    @app.delete("/_disco/prompt-cache")
    async def clear_prompt_cache() -> Response:
        if server.prompt_cache is None:
            return _error(404, "the prompt cache is off: start the server with --prompt-cache")
        server.prompt_cache.clear()
        return JSONResponse(server.prompt_cache.state())

    @app.get("/_disco/requests")
    async def list_requests() -> list[dict[str, Any]]:
        return server.log.as_json()

    @app.delete("/_disco/requests")
    async def clear_requests() -> dict[str, Any]:
        server.log.clear()
        return {"cleared": True}

    return app


async def _sse_events(server: _Server, job: _Job) -> AsyncIterator[dict[str, str]]:
    """The SSE events of one streamed completion, ending in ``[DONE]`` unless a fault strikes."""
    record, request = job.record, job.request
    chunks = ChunkFactory(record.id, server.model_name, request.include_usage)
    stats = StreamStats()
    started = False
    try:
        async with aclosing(job.items(server, stats)) as items:
            async for item in items:
                if isinstance(item, str):
                    if not started:
                        started = True
                        yield _event(chunks.role())
                        item = job.echo + item
                    yield _event(chunks.content(item))
                    record.note_sent(item)
                elif isinstance(item, ToolCallChunk):
                    if not started:
                        started = True
                        yield _event(chunks.role())
                    yield _event(chunks.tool_call(item))
                elif isinstance(item, InbandErrorFault):
                    record.finish("fault", "injected in-band error")
                    message = "loopback fault: the model failed while generating"
                    yield _event(error_body(message, code="injected_fault"))
                    return
                elif isinstance(item, MalformedFault):
                    record.finish("fault", "injected malformed event")
                    yield {"data": MALFORMED_EVENT_DATA}
                    return
                else:
                    record.finish("fault", "injected disconnect")
                    raise AbortConnection
        if not started:
            yield _event(chunks.role())
            if job.echo:
                yield _event(chunks.content(job.echo))
                record.note_sent(job.echo)
        yield _event(chunks.finish(finish_reason_of(stats.finish_reason)))
        if request.include_usage:
            cache = server.usage_cache_fields(record, stats.input_tokens)
            yield _event(chunks.usage(stats.input_tokens, stats.output_tokens, cache))
        yield {"data": "[DONE]"}
        record.finish("completed")
    except (asyncio.CancelledError, GeneratorExit):
        # The response was cancelled (client disconnect) or closed after a failed send.
        record.finish("disconnected")
        raise
    except AbortConnection:
        raise
    except Exception as exc:  # the generator failed: tell the client the OpenAI way
        record.finish("error", f"{type(exc).__name__}: {exc}")
        yield _event(error_body(f"generation failed: {exc}"))


async def _complete(server: _Server, job: _Job) -> Response:
    """A non-streamed completion: the same delivery, gathered into one JSON body."""
    record = job.record
    stats = StreamStats()
    parts: list[str] = [job.echo] if job.echo else []
    calls: list[ToolCallChunk] = []
    try:
        async with aclosing(job.items(server, stats)) as items:
            async for item in items:
                if isinstance(item, str):
                    parts.append(item)
                    record.note_sent(item)
                    continue
                if isinstance(item, ToolCallChunk):
                    calls.append(item)
                    continue
                record.finish("fault", f"injected {item.kind}")
                if isinstance(item, InbandErrorFault):
                    return _error(500, "loopback fault: the model failed while generating")
                if isinstance(item, MalformedFault):
                    return Response(MALFORMED_EVENT_DATA, media_type="application/json")
                return _AbortedResponse()
    except Exception as exc:
        record.finish("error", f"{type(exc).__name__}: {exc}")
        return _error(500, f"generation failed: {exc}")
    record.finish("completed")
    return JSONResponse(
        completion_body(
            record.id,
            server.model_name,
            "".join(parts),
            finish_reason_of(stats.finish_reason),
            stats.input_tokens,
            stats.output_tokens,
            calls,
            server.usage_cache_fields(record, stats.input_tokens),
        )
    )


async def _unless_disconnected(
    request: Request, work: Coroutine[Any, Any, Response], record: RequestRecord
) -> Response:
    """Run `work`, cancelling it if the client disconnects first (non-streamed requests)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            # Only now: readers of the log may rely on `generation_stopped` being final.
            record.finish("disconnected")
    if task.cancelled():
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    return task.result()


class _AbortedResponse(Response):
    """Starts a JSON body, then drops the connection: a non-streamed `disconnect` fault."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
        raise AbortConnection


def _event(payload: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(payload, separators=(",", ":"))}


def _status_message(status: int) -> str:
    if status == 429:
        return "loopback fault: rate limit reached, retry later"
    if status in (502, 503, 504):
        return "loopback fault: the server is overloaded or not ready yet"
    return f"loopback fault: injected HTTP {status}"


def _error(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if type_ is None:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse(
        error_body(message, type_=type_, param=param), status_code=status, headers=headers
    )


# -- running it --------------------------------------------------------------------------


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    model_path: str | Path | None = None,
    latency_profile: str = "none",
    latency_scale: float = 1.0,
    seed: int = 0,
    n_threads: int | None = 1,
    on_ready: Callable[[int], None] | None = None,
    *,
    model_name: str = "loopback",
    n_ctx: int = 4096,
    backend: str = "llama",
    echo_tok_s: float = DEFAULT_ECHO_TOK_S,
    dialect: Dialect = "lenient",
    prompt_cache: bool = False,
    prompt_cache_block_tokens: int = DEFAULT_BLOCK_TOKENS,
    prompt_cache_min_tokens: int = DEFAULT_MIN_TOKENS,
    prompt_cache_max_blocks: int = DEFAULT_MAX_BLOCKS,
    prefill_tok_s: float = DEFAULT_PREFILL_TOK_S,
    usage_shape: UsageShape = "openai",
) -> None:
    """Serve the loopback API until interrupted (blocking).

    `backend="llama"` generates with a real llama.cpp model; `backend="echo"` with the
    model-free `EchoEndpoint` at `echo_tok_s` tokens/s (model options are then ignored).
    `prompt_cache=True` emulates a provider's prompt cache (`PromptCache`, the
    ``prompt_cache_*``, `prefill_tok_s` and `usage_shape` options; ignored otherwise).
    `port=0` picks a free port; `on_ready(port)` is called once the model is loaded and the
    socket accepts requests. `n_threads=1` by default, so a local model in the client process
    still gets a core of its own on a small machine.
    """
    latency = LatencyProfile(latency_profile, scale=latency_scale)  # fail fast on a bad name
    generator = _generator(backend, model_path, n_ctx, n_threads, echo_tok_s)
    if dialect not in DIALECTS:
        raise ConfigError(
            f"unknown continuation dialect {dialect!r}: use one of {', '.join(DIALECTS)}"
        )
    cache = None
    if prompt_cache:
        cache = PromptCache(
            block_tokens=prompt_cache_block_tokens,
            min_tokens=prompt_cache_min_tokens,
            max_blocks=prompt_cache_max_blocks,
            prefill_tok_s=prefill_tok_s,
            usage_shape=usage_shape,
        )
    app = create_app(
        generator,
        latency=latency,
        seed=seed,
        model_name=model_name,
        dialect=dialect,
        prompt_cache=cache,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        load = getattr(generator, "load", None)
        if load is not None:
            await load()  # load before announcing readiness, not on the first request
        try:
            yield
        finally:
            await generator.aclose()

    app.router.lifespan_context = lifespan
    sock = _listening_socket(host, port)
    bound_port = int(sock.getsockname()[1])
    logging.getLogger("uvicorn.error").addFilter(_HideAbort())
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on"
    )
    server = _NotifyingServer(config, lambda: on_ready(bound_port) if on_ready else None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _generator(
    backend: str,
    model_path: str | Path | None,
    n_ctx: int,
    n_threads: int | None,
    echo_tok_s: float,
) -> Endpoint:
    """The endpoint that generates the answers of `backend`."""
    if backend == "echo":
        return EchoEndpoint(tok_s=echo_tok_s, name="loopback")
    if backend != "llama":
        raise ConfigError(
            f"unknown loopback backend {backend!r}: use one of {', '.join(BACKENDS)} "
            "('llama' runs a real model, 'echo' streams model-free deterministic words)"
        )
    from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint

    return LlamaCppEndpoint(model_path, n_ctx=n_ctx, n_threads=n_threads, name="loopback")


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening before uvicorn starts, so port 0 resolves here.

    Created with the explicit protocol (IPPROTO_TCP), not 0: asyncio only sets TCP_NODELAY on
    accepted sockets whose protocol says TCP, and without it Nagle's algorithm held the SSE
    events of a request sent right after another on a kept-alive connection until the client's
    delayed ACK, about 40 ms later.
    """
    family, type_, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_LISTEN_BACKLOG)
    return sock


class _NotifyingServer(uvicorn.Server):
    """A uvicorn server that reports when startup (lifespan included) has completed."""

    def __init__(self, config: uvicorn.Config, notify: Callable[[], None]) -> None:
        super().__init__(config)
        self._notify = notify

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._notify()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m langchain_disco.testing``: serve, and print the ready line with the port."""
    parser = argparse.ArgumentParser(
        prog="python -m langchain_disco.testing",
        description="Loopback OpenAI-compatible server backed by a real llama.cpp model "
        "(or by the model-free echo generator).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model-path", default=None, help="GGUF file (default: embedded)")
    parser.add_argument(
        "--latency-profile", default="none", help=f"one of: {', '.join(profile_names())}"
    )
    parser.add_argument("--latency-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-threads", type=int, default=1)
    parser.add_argument("--model-name", default="loopback")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="llama",
        help="llama: a real llama.cpp model; echo: model-free deterministic words (benchmarks)",
    )
    parser.add_argument(
        "--echo-tok-s",
        type=float,
        default=DEFAULT_ECHO_TOK_S,
        help="decode rate of the echo backend in tokens/s (0: as fast as possible)",
    )
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="lenient",
        help="which real server's continuation behaviour to play (llamacpp echoes the prefill)",
    )
    cache = parser.add_argument_group(
        "prompt cache", "emulate a provider's prompt-prefix cache (off unless --prompt-cache)"
    )
    cache.add_argument(
        "--prompt-cache",
        action="store_true",
        help="serve a repeated prompt prefix faster and report it as cached in usage",
    )
    cache.add_argument(
        "--prompt-cache-block-tokens",
        type=int,
        default=DEFAULT_BLOCK_TOKENS,
        help="cached in increments of this many tokens (OpenAI: 128)",
    )
    cache.add_argument(
        "--prompt-cache-min-tokens",
        type=int,
        default=DEFAULT_MIN_TOKENS,
        help="shorter prompts and hits are not cached (OpenAI: 1024)",
    )
    cache.add_argument(
        "--prompt-cache-max-blocks",
        type=int,
        default=DEFAULT_MAX_BLOCKS,
        help="blocks kept; the least recently used is evicted first",
    )
    cache.add_argument(
        "--prefill-tok-s",
        type=float,
        default=DEFAULT_PREFILL_TOK_S,
        help="modelled prefill rate of the uncached part, tokens/s, added to the TTFT (0: none)",
    )
    cache.add_argument(
        "--usage-shape",
        choices=USAGE_SHAPES,
        default="openai",
        help="openai: prompt_tokens_details.cached_tokens; deepseek: prompt_cache_hit_tokens "
        "and prompt_cache_miss_tokens",
    )
    args = parser.parse_args(argv)

    def announce(port: int) -> None:
        print(f"{READY_PREFIX} {port}", flush=True)

    try:
        serve(
            host=args.host,
            port=args.port,
            model_path=args.model_path,
            latency_profile=args.latency_profile,
            latency_scale=args.latency_scale,
            seed=args.seed,
            n_threads=args.n_threads,
            on_ready=announce,
            model_name=args.model_name,
            backend=args.backend,
            echo_tok_s=args.echo_tok_s,
            dialect=args.dialect,
            prompt_cache=args.prompt_cache,
            prompt_cache_block_tokens=args.prompt_cache_block_tokens,
            prompt_cache_min_tokens=args.prompt_cache_min_tokens,
            prompt_cache_max_blocks=args.prompt_cache_max_blocks,
            prefill_tok_s=args.prefill_tok_s,
            usage_shape=args.usage_shape,
        )
    except DiscoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
