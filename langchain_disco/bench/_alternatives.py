"""The clients a user would use instead of DiscoChatModel, as `disco bench overhead` paths.

- ``chatopenai``: langchain-openai's `ChatOpenAI.astream` (the `bench` extra), the baseline
  every ratio in the report is taken against;
- ``litellm``: LiteLLM's `acompletion(..., stream=True)`, if `litellm` is installed.

Both are optional: `unavailable` says why a path cannot run (and how to fix it) instead of the
benchmark failing on an import. Imports happen in the child process that runs the path, so a
path's memory does not include another client's modules.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator
from importlib.util import find_spec
from typing import Any

from langchain_core.messages import BaseMessage

ALTERNATIVES = ("chatopenai", "litellm")

_MODULES = {
    "chatopenai": ("langchain_openai", "pip install 'langchain-disco[bench]' (langchain-openai)"),
    "litellm": ("litellm", "pip install litellm"),
}


def unavailable(path: str) -> str | None:
    """Why `path` cannot run here (its package is missing, and the fix), or None if it can."""
    if path not in _MODULES:
        return None
    module, fix = _MODULES[path]
    if find_spec(module) is None:
        return f"{module} is not installed: {fix}"
    return None


class ChatOpenAISource:
    """One `ChatOpenAI` (streaming, no retries) on the echo server; text deltas of a request."""

    def __init__(self, base_url: str, model_name: str, max_tokens: int) -> None:
        from langchain_openai import ChatOpenAI

        self.model = ChatOpenAI(
            model=model_name,
            base_url=base_url,
            api_key="unused",  # type: ignore[arg-type]  # the echo server ignores it
            max_tokens=max_tokens,  # type: ignore[call-arg]
            max_retries=0,
            streaming=True,
        )

    async def texts(self, messages: list[BaseMessage]) -> AsyncGenerator[str, None]:
        chunks = self.model.astream(messages)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                if isinstance(chunk.content, str) and chunk.content:
                    yield chunk.content

    async def aclose(self) -> None:
        # Nothing to close: langchain-openai shares one cached HTTP client per process among
        # its models, and closing it would break every later ChatOpenAI here.
        return None


class LiteLLMSource:
    """LiteLLM's `acompletion` against the echo server as an OpenAI-compatible provider."""

    def __init__(self, base_url: str, model_name: str, max_tokens: int) -> None:
        # LiteLLM fetches a price list from GitHub on import (retrying for seconds offline);
        # its bundled copy is enough to talk to an OpenAI-compatible server.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.telemetry = False
        self._acompletion: Any = litellm.acompletion
        self.base_url = base_url
        self.model_name = model_name
        self.max_tokens = max_tokens

    async def texts(self, messages: list[BaseMessage]) -> AsyncGenerator[str, None]:
        stream = await self._acompletion(
            model=f"openai/{self.model_name}",
            api_base=self.base_url,
            api_key="unused",
            messages=[{"role": "user", "content": str(m.content)} for m in messages],
            max_tokens=self.max_tokens,
            stream=True,
            num_retries=0,
        )
        async for chunk in stream:
            content = chunk.choices[0].delta.content if chunk.choices else None
            if content:
                yield content

    async def aclose(self) -> None:
        return None
