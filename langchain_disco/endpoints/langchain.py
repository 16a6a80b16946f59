"""Any LangChain chat model as an endpoint (a hosted partner model, Ollama, a fake in tests).

The wrapped model streams through its own `astream`; its own client does the retries and
timeouts. Continuation is only offered when the caller declares the model can do it exactly
(`Capabilities(exact_continuation=True)`): then the partial answer is sent as a trailing
`AIMessage`, which only some providers treat as a prefill to continue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

from langchain_disco.endpoints.base import (
    Capabilities,
    Endpoint,
    EndpointKind,
    GenerationParams,
    StreamStats,
)
from langchain_disco.errors import ContinuationUnsupportedError, EndpointError

__all__ = ["LangChainEndpoint"]

# Where providers put the reason a generation stopped in `response_metadata`.
_FINISH_REASON_KEYS = ("finish_reason", "stop_reason", "done_reason")


class LangChainEndpoint(Endpoint):
    """Wrap any `BaseChatModel` behind the endpoint interface."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        name: str = "remote",
        kind: EndpointKind = "remote",
        capabilities: Capabilities | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.kind = kind
        self.model_name = _model_name(model)
        self.capabilities = capabilities if capabilities is not None else Capabilities()

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[str]:
        """Yield the model's text deltas; with `prefix`, continue after a trailing AIMessage."""
        prompt = list(messages)
        if prefix:
            if not self.capabilities.exact_continuation:
                raise ContinuationUnsupportedError(
                    self.name,
                    f"{self.model_name!r} was not declared able to continue a partial answer; "
                    "pass capabilities=Capabilities(exact_continuation=True) if it prefills a "
                    "trailing assistant message",
                )
            prompt.append(AIMessage(content=prefix))
        stats.input_tokens = self.estimate_input_tokens(prompt)
        stats.attempts += 1

        # Only the parameters that were set: a model may reject keywords it does not know.
        kwargs: dict[str, Any] = {
            key: value
            for key, value in (
                ("max_tokens", params.max_tokens),
                ("temperature", params.temperature),
                ("top_p", params.top_p),
                ("seed", params.seed),
            )
            if value is not None
        }
        deltas = 0
        reported_in = reported_out = 0
        chunks = self.model.astream(prompt, stop=list(params.stop) or None, **kwargs)
        try:
            async for chunk in chunks:
                usage = chunk.usage_metadata if isinstance(chunk, AIMessageChunk) else None
                if usage:
                    # LangChain usage chunks are additive (summing the chunks gives the total).
                    reported_in += usage.get("input_tokens", 0)
                    reported_out += usage.get("output_tokens", 0)
                    stats.usage_reported = True
                for key in _FINISH_REASON_KEYS:
                    reason = chunk.response_metadata.get(key)
                    if reason:
                        stats.finish_reason = str(reason)
                        break
                text = chunk.text
                if text:
                    deltas += 1
                if stats.usage_reported:
                    stats.input_tokens = reported_in or stats.input_tokens
                    stats.output_tokens = max(reported_out, deltas)
                else:
                    stats.output_tokens = deltas
                if text:
                    yield text
        except EndpointError:
            raise
        except Exception as exc:
            raise EndpointError(
                self.name, f"{type(exc).__name__} from {self.model_name!r} after {deltas} delta(s)"
            ) from exc
        finally:
            # Stop the wrapped model's stream at once when our consumer stops or is cancelled.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if stats.usage_reported:
            # The stream finished: the provider's own count is final.
            stats.output_tokens = reported_out or stats.output_tokens


def _model_name(model: BaseChatModel) -> str:
    """The model's own name when it exposes one, else its LangChain type."""
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return model._llm_type
