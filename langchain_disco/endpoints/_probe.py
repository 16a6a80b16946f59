"""Find out once how an OpenAI-compatible server continues a partial answer (``auto``).

Servers differ (docs/servers.md): vLLM and SGLang continue with ``continue_final_message``,
DeepSeek with ``"prefix": true``, llama.cpp's ``llama-server`` treats a trailing assistant
message as a prefill and streams it back, others ignore the prefill and answer anew, and the
official OpenAI API has no continuation at all. So the probe *asks*: a request whose answer is
known, cut in the middle of a number, with at most `PROBE_MAX_TOKENS` tokens to answer:

    user:      Count from 1 to 20, separated by commas.
    assistant: 1, 2, 3, 4, 5, 6, 7, 8, 9, 1                         <- the partial answer

A server that continues writes ``0`` (it finishes "10"; a new turn would begin at "1"); one that
echoes writes the whole partial answer first, which it could not have generated in
`PROBE_MAX_TOKENS` tokens; one that restarts writes ``1, 2`` or anything else. (A cut inside a
word, "...lazy d", was tried first and is not reliable: the model sees the token " d", not a
half word, and writes "dog", measured with Gemma 3 270M.) Each request style is tried in turn
(plain prefill, then vLLM's flags, then DeepSeek's) and the first that continues is the
verdict; a 400 (an unknown field) just rules a style out. The official OpenAI and Azure OpenAI
hosts are known to have no continuation and are never probed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletionChunk

from langchain_disco.endpoints._continuation import ContinuationStyle, continuation_request
from langchain_disco.errors import EndpointError

__all__ = [
    "PROBE_MAX_TOKENS",
    "ContinuationVerdict",
    "VerdictStore",
    "classify",
    "configured_verdict",
    "host_verdict",
    "run_probe",
]

PROBE_MAX_TOKENS = 3
PROBE_TIMEOUT_S = 30.0
PROBE_QUESTION = "Count from 1 to 20, separated by commas."
PROBE_PREFIX = "1, 2, 3, 4, 5, 6, 7, 8, 9, 1"
PROBE_CONTINUATION = "0"

_STYLES: tuple[ContinuationStyle, ...] = ("prefill", "vllm", "deepseek")
_NO_CONTINUATION_HOSTS = ("api.openai.com", ".openai.azure.com")
"""Hosts documented to have no continuation: a trailing assistant message is context there."""

_MODE_STYLE: Mapping[str, ContinuationStyle | None] = {
    "none": None,
    "vllm": "vllm",
    "deepseek": "deepseek",
    "llamacpp": "prefill",
}

Source = Literal["configured", "host", "probed"]


@dataclass(frozen=True)
class ContinuationVerdict:
    """How one server continues a partial answer, and how we know."""

    style: ContinuationStyle | None
    """The request style that continues; None: the server cannot continue."""
    echo: bool | None
    """True: the stream repeats the prefix first; False: only new text; None: not known."""
    source: Source
    probed_at: float | None = None
    """Unix time of the probe (``source="probed"``)."""

    @property
    def mode(self) -> str:
        """The `DISCO_REMOTE_CONTINUATION` value that means the same."""
        return next((m for m, s in _MODE_STYLE.items() if s == self.style), "none")

    def describe(self) -> str:
        if self.style is None:
            how = "cannot continue a partial answer"
        else:
            echo = {True: ", echoes the prefix", False: ", no echo", None: ""}[self.echo]
            how = f"continues as {self.mode}{echo}"
        return f"{how} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "style": self.style,
            "echo": self.echo,
            "source": self.source,
            "probed_at": self.probed_at,
        }

    @classmethod
    def from_dict(cls, data: object) -> ContinuationVerdict | None:
        """A remembered verdict, or None when `data` is missing or not one we wrote."""
        if not isinstance(data, dict):
            return None
        style, echo, probed_at = data.get("style"), data.get("echo"), data.get("probed_at")
        if style is not None and style not in _STYLES:
            return None
        if echo not in (True, False, None):
            return None
        if not isinstance(probed_at, (int, float)) or isinstance(probed_at, bool):
            return None
        return cls(style=style, echo=echo, source="probed", probed_at=float(probed_at))


class VerdictStore(Protocol):
    """Where probed verdicts are remembered (the learned profiles' file, in practice)."""

    def get_verdict(self, key: str) -> object: ...

    def put_verdict(self, key: str, verdict: dict[str, Any]) -> None: ...


def configured_verdict(mode: str) -> ContinuationVerdict:
    """The verdict a user's explicit `continuation` setting stands for.

    vLLM/SGLang (``continue_final_message``) and DeepSeek (``prefix``) document that they
    stream only new text (docs/servers.md), so their output is trusted as the continuation,
    even when a looping model repeats the prefix. llama-server's echo depends on its build
    (current ones echo, older ones did not): unknown, so its output is filtered (an echo
    stripped, a restart refused); `auto` measures it instead.
    """
    echo = None if mode == "llamacpp" else False
    return ContinuationVerdict(style=_MODE_STYLE[mode], echo=echo, source="configured")


def host_verdict(base_url: str) -> ContinuationVerdict | None:
    """`none`, without a request, for the hosts documented to have no continuation."""
    host = (urlparse(base_url).hostname or "").lower()
    if any(host == h or (h.startswith(".") and host.endswith(h)) for h in _NO_CONTINUATION_HOSTS):
        return ContinuationVerdict(style=None, echo=False, source="host")
    return None


def classify(text: str) -> tuple[bool, bool]:
    """`(continues, echoed)` for one probe answer."""
    echoed = text.startswith(PROBE_PREFIX)
    rest = text[len(PROBE_PREFIX) :] if echoed else text
    # An echo proves a prefill even if a weak model then writes something else: no answer of
    # PROBE_MAX_TOKENS tokens could have produced the whole prefix otherwise.
    continues = echoed or rest.startswith(PROBE_CONTINUATION)
    return continues, echoed


async def run_probe(
    client: openai.AsyncOpenAI, model: str, *, name: str = "remote"
) -> ContinuationVerdict:
    """Try each request style on the server; the first that continues is the verdict."""
    for style in _STYLES:
        try:
            text = await asyncio.wait_for(_ask(client, model, style), PROBE_TIMEOUT_S)
        except openai.BadRequestError:
            continue  # e.g. OpenAI-strict servers refuse vLLM's or DeepSeek's fields
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 422):
                continue
            raise EndpointError(name, f"continuation probe got HTTP {exc.status_code}") from None
        except (openai.APIError, asyncio.TimeoutError) as exc:
            raise EndpointError(name, f"continuation probe failed ({type(exc).__name__})") from None
        continues, echoed = classify(text)
        if continues:
            return ContinuationVerdict(
                style=style, echo=echoed, source="probed", probed_at=time.time()
            )
    return ContinuationVerdict(style=None, echo=False, source="probed", probed_at=time.time())


async def _ask(client: openai.AsyncOpenAI, model: str, style: ContinuationStyle) -> str:
    """The streamed text of one probe request in `style` (streamed: servers echo there)."""
    messages, extra = continuation_request(
        [{"role": "user", "content": PROBE_QUESTION}], {}, PROBE_PREFIX, style
    )
    stream: openai.AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(
        model=model,
        messages=cast(Any, messages),
        stream=True,
        max_tokens=PROBE_MAX_TOKENS,
        temperature=0.0,
        extra_body=extra or None,
    )
    parts: list[str] = []
    try:
        async for chunk in stream:
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
    finally:
        await stream.close()
    return "".join(parts)
