"""langchain-disco: hybrid device-server LLM streaming for LangChain (DiSCo, ACL Findings 2025).

Public API. Everything not listed here is internal.
"""

from importlib import metadata

from langchain_disco.chat_models import DiscoChatModel
from langchain_disco.config import DiscoSettings
from langchain_disco.endpoints.base import (
    Capabilities,
    Endpoint,
    GenerationParams,
    PromptCacheView,
    StreamStats,
)
from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint
from langchain_disco.errors import (
    AllEndpointsFailedError,
    ConfigError,
    ContinuationRestartError,
    ContinuationUnsupportedError,
    DiscoError,
    EndpointError,
    EndpointTimeoutError,
)
from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling import (
    Cost,
    CostModel,
    DispatchPolicy,
    LocalOnly,
    Plan,
    Race,
    RemoteOnly,
    RequestFeatures,
    Start,
)

try:
    __version__ = metadata.version(__package__ or "langchain-disco")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = ""


def __getattr__(name: str) -> object:
    # The adapters that import optional heavy SDKs load on first use.
    if name == "OpenAIEndpoint":
        from langchain_disco.endpoints.openai import OpenAIEndpoint

        return OpenAIEndpoint
    if name == "LangChainEndpoint":
        from langchain_disco.endpoints.langchain import LangChainEndpoint

        return LangChainEndpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AllEndpointsFailedError",
    "Capabilities",
    "ConfigError",
    "ContinuationRestartError",
    "ContinuationUnsupportedError",
    "Cost",
    "CostModel",
    "DiscoChatModel",
    "DiscoError",
    "DiscoSettings",
    "DispatchPolicy",
    "Endpoint",
    "EndpointError",
    "EndpointRun",
    "EndpointTimeoutError",
    "GenerationParams",
    "LangChainEndpoint",
    "LlamaCppEndpoint",
    "LocalOnly",
    "OpenAIEndpoint",
    "Plan",
    "PromptCacheView",
    "Race",
    "RemoteOnly",
    "RequestFeatures",
    "RequestReport",
    "Start",
    "StreamStats",
    "__version__",
]
