"""The OpenAI chat-completions wire format, as the loopback server reads and writes it.

Requests are validated leniently (unknown fields are accepted, as real servers do) and turned
into LangChain messages, `GenerationParams` and an optional continuation prefix. Responses are
built as plain dicts shaped exactly like OpenAI's, so the official SDK parses them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, ConfigDict, Field

from langchain_disco.endpoints.base import GenerationParams, ToolCallChunk

ContinuationMode = Literal["vllm", "deepseek", "prefill"]
"""How a request asked to continue its last assistant message:

- ``vllm``: ``continue_final_message: true`` with ``add_generation_prompt: false`` (vLLM, SGLang);
- ``deepseek``: the last assistant message carries ``"prefix": true`` (chat prefix completion);
- ``prefill``: the last message is an assistant message (llama.cpp server assistant prefill).
"""


Dialect = Literal["lenient", "llamacpp", "vllm", "deepseek", "restart"]
"""Which real server's continuation the loopback server plays (docs/servers.md cites each):

- ``lenient``: continues a trailing assistant message in every style, without echo (the
  loopback server's historical behaviour, kept as the default for fast tests);
- ``llamacpp``: llama.cpp ``llama-server`` as measured (tests/integration/test_llama_server.py):
  a plain trailing assistant message is a prefill whose text is streamed back, merged into the
  first delta; with ``continue_final_message`` and ``add_generation_prompt=false`` no echo
  (tools/server/server-task.cpp, ``is_continuation && !echo``);
- ``vllm``: vLLM / SGLang: only ``continue_final_message`` continues, without echo; a plain
  trailing assistant message is closed and a new turn answers (``add_generation_prompt`` is
  true by default);
- ``deepseek``: only ``"prefix": true`` continues, without echo; otherwise a new turn;
- ``restart``: llama-cpp-python's server and the official OpenAI API: the partial answer is a
  closed turn of the context and the answer starts anew.
"""

DIALECTS: tuple[Dialect, ...] = ("lenient", "llamacpp", "vllm", "deepseek", "restart")


def apply_dialect(
    dialect: Dialect,
    messages: list[WireMessage],
    prefix: str,
    mode: ContinuationMode | None,
) -> tuple[list[WireMessage], str, str]:
    """`(messages, prefix, echo)` as the server of `dialect` would treat the request.

    A restart moves the partial answer back into the context as a closed assistant turn and
    continues nothing; `echo` is the text streamed back before the continuation.
    """
    if mode is None or dialect == "lenient":
        return messages, prefix, ""
    continues = {
        "llamacpp": True,
        "vllm": mode == "vllm",
        "deepseek": mode == "deepseek",
        "restart": False,
    }[dialect]
    if not continues:
        return [*messages, WireMessage(role="assistant", content=prefix)], "", ""
    echo = prefix if dialect == "llamacpp" and mode != "vllm" else ""
    return messages, prefix, echo


class WireError(Exception):
    """A request the server rejects with HTTP 400 and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class WireMessage(BaseModel):
    """One OpenAI chat message; content may be a string or a list of content parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    prefix: bool = False

    def text(self) -> str:
        """The message text; list content keeps its text parts only."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` the loopback server acts on."""

    model_config = ConfigDict(extra="allow")

    model: str = "loopback"
    messages: list[WireMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    # vLLM / SGLang extensions for continuing the final assistant message.
    continue_final_message: bool = False
    add_generation_prompt: bool = True

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def params(self) -> GenerationParams:
        """The sampling parameters, `max_completion_tokens` taking precedence over `max_tokens`."""
        stop: tuple[str, ...]
        if self.stop is None:
            stop = ()
        elif isinstance(self.stop, str):
            stop = (self.stop,)
        else:
            stop = tuple(self.stop)
        return GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            tools=tuple(self.tools or ()),
            tool_choice=self.tool_choice,
            response_format=self.response_format,
        )


def split_continuation(
    request: ChatRequest,
) -> tuple[list[WireMessage], str, ContinuationMode | None]:
    """Split off the partial assistant answer to continue: `(messages, prefix, mode)`.

    A trailing assistant message is continued in every dialect (that is what llama.cpp server
    does with it); the flags only decide which dialect is logged and which misuse is a 400,
    mirroring what vLLM and DeepSeek reject.
    """
    if request.n != 1:
        raise WireError("the loopback server generates one choice only; set n=1", "n")
    messages = list(request.messages)
    for i, m in enumerate(messages[:-1]):
        if m.prefix:
            raise WireError(
                f"messages[{i}] has prefix=true; only the last assistant message can be a prefix",
                "messages",
            )
    last = messages[-1]
    if request.continue_final_message and request.add_generation_prompt:
        raise WireError(
            "continue_final_message and add_generation_prompt cannot both be true; "
            "set add_generation_prompt=false",
            "continue_final_message",
        )
    if last.role != "assistant":
        if request.continue_final_message or last.prefix:
            raise WireError(
                "continuing the final message needs the last message to have role 'assistant'",
                "messages",
            )
        return messages, "", None
    mode: ContinuationMode
    if request.continue_final_message:
        mode = "vllm"
    elif last.prefix:
        mode = "deepseek"
    else:
        mode = "prefill"
    return messages[:-1], last.text(), mode


def to_langchain(messages: list[WireMessage]) -> list[BaseMessage]:
    """OpenAI message dicts as LangChain messages (``developer`` is treated as ``system``)."""
    converted: list[BaseMessage] = []
    for m in messages:
        text = m.text()
        if m.role in ("system", "developer"):
            converted.append(SystemMessage(text))
        elif m.role == "user":
            converted.append(HumanMessage(text, name=m.name))
        elif m.role == "assistant":
            calls = [
                {
                    "name": c["function"]["name"],
                    "args": json.loads(c["function"].get("arguments") or "{}"),
                    "id": c.get("id"),
                }
                for c in m.tool_calls or ()
            ]
            converted.append(AIMessage(text, name=m.name, tool_calls=calls))
        elif m.role == "tool":
            converted.append(ToolMessage(text, tool_call_id=m.tool_call_id or ""))
        else:
            converted.append(ChatMessage(content=text, role=m.role))
    return converted


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


SYSTEM_FINGERPRINT = "fp_loopback"
"""What the loopback server sends as ``system_fingerprint``."""


class ChunkFactory:
    """Builds the ``chat.completion.chunk`` objects of one streamed completion."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.completion_id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            # A string, as OpenAI ("fp_...") and llama-server ("b<build>-<commit>") send it.
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None  # OpenAI sends usage: null on every chunk but the last
        return chunk

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._chunk([choice])

    def role(self) -> dict[str, Any]:
        return self.delta({"role": "assistant", "content": "", "refusal": None})

    def content(self, text: str) -> dict[str, Any]:
        return self.delta({"content": text})

    def tool_call(self, call: ToolCallChunk) -> dict[str, Any]:
        return self.delta({"tool_calls": [tool_call_dict(call, streamed=True)]})

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return self.delta({}, finish_reason)

    def usage(
        self, prompt_tokens: int, completion_tokens: int, cache: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage_dict(prompt_tokens, completion_tokens, cache)
        return chunk


def tool_call_dict(call: ToolCallChunk, *, streamed: bool = False) -> dict[str, Any]:
    """One OpenAI tool call (streamed deltas carry their ``index``)."""
    body: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.args},
    }
    return {"index": call.index, **body} if streamed else body


def usage_dict(
    prompt_tokens: int, completion_tokens: int, cache: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenAI's usage object, like llama-server's, with the prompt tokens served from a cache:
    `cache` holds those fields in the emulated provider's shape (`PromptCache.usage_fields`);
    without the prompt cache, ``prompt_tokens_details.cached_tokens`` is 0."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        **(cache if cache is not None else {"prompt_tokens_details": {"cached_tokens": 0}}),
    }


def completion_body(
    completion_id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: list[ToolCallChunk] | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object (`cache`: as for `usage_dict`)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [tool_call_dict(c) for c in tool_calls]
        message["content"] = text or None
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_dict(prompt_tokens, completion_tokens, cache),
    }


def error_body(
    message: str, *, type_: str = "server_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def finish_reason_of(reported: str | None) -> str:
    """OpenAI's finish reason for what the generator reported (``stop`` unless cut by length)."""
    return reported if reported in ("length", "tool_calls") else "stop"
