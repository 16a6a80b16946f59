"""The continuation contract, enforced on whatever a server sends back.

An endpoint asked to continue a partial answer (``prefix``) must yield only what follows it.
OpenAI-compatible servers keep that contract in three different ways, all seen in practice
(docs/servers.md cites the source of each):

- **continue without echo**: vLLM and SGLang with ``continue_final_message``, DeepSeek's prefix
  completion, older llama.cpp servers: the stream holds only the new text;
- **continue with echo**: llama.cpp's ``llama-server`` (assistant prefill) streams the prefill
  back, merged into its first delta (prefix ``"The moon is a"``, first delta
  ``"The moon is a very"``);
- **restart**: a server that ignores the prefill (it closes the assistant turn and opens a new
  one) answers from the beginning again.

`PrefixFilter` turns each into "only what follows": it holds the first deltas while they still
read as the prefix, strips an echo exactly, passes a continuation through, and raises
`ContinuationRestartError` for a restart, which must never reach the reader (the engine treats
it as a failed continuation and fails over from the delivered text). Pure: no I/O, no clock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from langchain_disco.errors import ContinuationRestartError

__all__ = [
    "RESTART_MATCH_CHARS",
    "ContinuationStyle",
    "PrefixFilter",
    "continuation_request",
]

ContinuationStyle = Literal["vllm", "deepseek", "prefill"]
"""How a request asks the server to continue its last assistant message: ``vllm``
(``continue_final_message``, ``add_generation_prompt=false``), ``deepseek`` (``"prefix": true``
on the message) or ``prefill`` (a plain trailing assistant message, llama.cpp's assistant
prefill)."""

RESTART_MATCH_CHARS = 8
"""An answer that opens with this many characters of the prefix and then departs from it is a
restart, not a continuation: a continuation resumes *after* the prefix, and one that happens to
begin with the prefix's first eight characters verbatim is too unlikely to serve. Shorter
coincidences pass (a prefix ``"I"`` continued by ``"I..."``), and so do restarts that depart
within the first eight characters: the probe (``continuation="auto"``) catches servers that
restart before any user request depends on it."""


def _echo_forms(prefix: str) -> list[str]:
    """What an echo of `prefix` may look like, longest first.

    Chat templates commonly ``trim`` message content (Gemma's, Llama 3's), so a server that
    renders the prefill through its template echoes it without surrounding whitespace.
    """
    forms = [prefix, prefix.rstrip(), prefix.lstrip(), prefix.strip()]
    unique: list[str] = []
    for form in forms:
        if form and form not in unique:
            unique.append(form)
    return sorted(unique, key=len, reverse=True)


def _common_prefix_len(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))  # noqa: RUF071 - characters are what we compare


@dataclass
class PrefixFilter:
    """Feed the server's text deltas; get back only the continuation of `prefix`.

    `expect_echo`: True when the server is known to echo (a probed ``llama-server``): an echo
    is stripped, and an answer that ends before echoing the whole prefix is a failed
    continuation. None when unknown (``continuation="llamacpp"``: llama-server's echo depends
    on its build): an echo is stripped and a restart refused, and text equal to the whole
    prefix is read as its echo (the one ambiguity: a looping model's verbatim repeat). False
    when the server is known to continue without echo (probed, or vLLM/DeepSeek as
    documented): everything passes, a repeat of the prefix included.
    """

    prefix: str
    endpoint: str = "remote"
    expect_echo: bool | None = None
    echoed: bool | None = None
    """What the server did: True echoed, False continued without echo, None not yet known."""
    _held: str = ""
    _tail: str = ""

    def __post_init__(self) -> None:
        self._forms = _echo_forms(self.prefix)
        if not self._forms or self.expect_echo is False:
            self.echoed = False  # nothing to strip: everything passes

    def feed(self, text: str) -> str:
        """The part of `text` to deliver now ("" while it still reads as the prefix's echo)."""
        # (A server known to continue without echo, probed or documented, passes at once:
        # what it sends is the continuation, even one that repeats the prefix, as a looping
        # model does.)
        if self.echoed is not None:
            return self._strip_tail(text) if self._tail else text
        self._held += text
        return self._decide(final=False)

    def end(self) -> str:
        """The stream ended: whatever was held back, or raise if the answer was a restart."""
        if self.echoed is not None:
            return ""
        return self._decide(final=True)

    def _decide(self, *, final: bool) -> str:
        held = self._held
        for form in self._forms:
            if held.startswith(form):
                self.echoed = True
                self._held = ""
                return self._after_echo(form, held[len(form) :])
        still_echoing = any(form.startswith(held) for form in self._forms)
        if still_echoing and not final:
            return ""  # every delta so far is the start of an echo: wait for more
        matched = max(_common_prefix_len(held, form) for form in self._forms)
        if matched >= RESTART_MATCH_CHARS:
            raise ContinuationRestartError(
                self.endpoint,
                f"the answer repeated the first {matched} character(s) of the partial answer "
                + ("and ended" if still_echoing else "and then departed from it")
                + ": the server restarted the answer instead of continuing it (a failed "
                "continuation; nothing of it was delivered)",
            )
        if still_echoing and self.expect_echo is True:
            raise ContinuationRestartError(
                self.endpoint,
                "the stream ended inside the echo of the partial answer: no continuation came",
            )
        self.echoed = False
        self._held = ""
        return held

    def _after_echo(self, form: str, rest: str) -> str:
        """The continuation after an echo of `form`.

        If the template trimmed the prefix's trailing whitespace, the model saw the prefix
        without it and may write that whitespace again, which the reader already has: it is
        dropped once, also when it arrives in a later delta.
        """
        end = self.prefix.find(form) + len(form)
        self._tail = self.prefix[end:]
        return self._strip_tail(rest) if self._tail else rest

    def _strip_tail(self, text: str) -> str:
        matched = _common_prefix_len(text, self._tail)
        if matched == len(text) and matched < len(self._tail):
            self._tail = self._tail[matched:]  # all of it was the repeated whitespace
            return ""
        self._tail = ""
        return text[matched:]


def continuation_request(
    messages: list[dict[str, Any]],
    extra_body: dict[str, Any],
    prefix: str,
    style: ContinuationStyle,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`messages` and `extra_body` asking the server to continue `prefix` in `style`."""
    partial: dict[str, Any] = {"role": "assistant", "content": prefix}
    extra = dict(extra_body)
    if style == "vllm":
        extra.update(continue_final_message=True, add_generation_prompt=False)
    elif style == "deepseek":
        partial["prefix"] = True
    # "prefill": a trailing assistant message is the whole request (llama.cpp, Ollama).
    return [*messages, partial], extra
