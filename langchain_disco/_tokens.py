"""Token counting for `DiscoChatModel` (`get_token_ids`, `get_num_tokens`, and from messages).

LangChain's default falls back to a GPT-2 tokenizer from `transformers`, which we neither need
nor ship, while the local model's own tokenizer is at hand. So counts come from the local
model: exact for the device (the prompt through its chat template, as a generation tokenizes
it), an approximation for the remote, whose tokenizer we do not know. A model without a local
tokenizer estimates as the engine does: about 4 characters per token
(`Endpoint.estimate_input_tokens`); ids cannot be estimated, so `token_ids` refuses aloud.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage, HumanMessage, get_buffer_string
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_disco.errors import ConfigError

if TYPE_CHECKING:
    from langchain_disco.chat_models import DiscoChatModel
    from langchain_disco.endpoints.base import Endpoint


@runtime_checkable
class Tokenizes(Protocol):
    """An endpoint with its own tokenizer (`LlamaCppEndpoint`)."""

    def tokenize(self, text: str) -> list[int]: ...

    def count_prompt_tokens(
        self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = ()
    ) -> int: ...


def token_ids(model: DiscoChatModel, text: str) -> list[int]:
    """`text` in the local model's token ids (a `custom_get_token_ids` wins, as anywhere)."""
    if model.custom_get_token_ids is not None:
        return model.custom_get_token_ids(text)
    tokenizer = _tokenizer(model)
    if tokenizer is None:
        raise ConfigError(
            "DiscoChatModel has no local model, so no tokenizer to give token ids with (the "
            "remote's is unknown): pass custom_get_token_ids=..., or configure a local model "
            "(DISCO_LOCAL_MODEL_PATH, or the embedded default); get_num_tokens estimates instead"
        )
    return tokenizer.tokenize(text)


def num_tokens(model: DiscoChatModel, text: str) -> int:
    """The tokens in `text`: counted by the local tokenizer, else estimated (4 chars/token)."""
    if model.custom_get_token_ids is not None or _tokenizer(model) is not None:
        return len(token_ids(model, text))
    if not text:
        return 0
    return _estimator(model).estimate_input_tokens([HumanMessage(text)])


def num_tokens_from_messages(
    model: DiscoChatModel, messages: Sequence[BaseMessage], tools: Sequence[Any] | None
) -> int:
    """The prompt size of `messages` (and `tools`) for the local model, else the estimate."""
    tokenizer = _tokenizer(model)
    if model.custom_get_token_ids is not None:  # LangChain's own count, with the caller's ids
        return sum(len(model.custom_get_token_ids(get_buffer_string([m]))) for m in messages)
    if tokenizer is not None:
        formatted = [convert_to_openai_tool(t) for t in tools or ()]
        return tokenizer.count_prompt_tokens(messages, formatted)
    if tools:
        warnings.warn(
            "Counting tokens in tool schemas is not supported without a local model (the "
            "remote's tokenizer is unknown). Ignoring tools.",
            stacklevel=3,
        )
    return _estimator(model).estimate_input_tokens(messages)


def _tokenizer(model: DiscoChatModel) -> Tokenizes | None:
    return model.local if isinstance(model.local, Tokenizes) else None


def _estimator(model: DiscoChatModel) -> Endpoint:
    endpoint = model.local or model.remote
    assert endpoint is not None  # `_build_endpoints` builds at least one
    return endpoint
