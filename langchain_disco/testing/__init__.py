"""Test and demo support: a loopback OpenAI-compatible server with real latency and faults.

- `LoopbackServer` starts the server in a subprocess and drives its fault switches and log.
- `LatencyProfile` replays measured hosted-API latency (TTFT, inter-token gap).
- `create_app` and `serve` (in `langchain_disco.testing.server`, re-exported lazily here)
  need the ``demo`` extra (FastAPI, uvicorn, sse-starlette); the rest does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_disco.testing.faults import FAULT_ADAPTER, Fault, FaultQueue
from langchain_disco.testing.latency import LatencyProfile, LatencySample, profile_names
from langchain_disco.testing.loopback import LoopbackServer, LoopbackServerError

if TYPE_CHECKING:
    from langchain_disco.testing.server import create_app, serve

__all__ = [
    "FAULT_ADAPTER",
    "Fault",
    "FaultQueue",
    "LatencyProfile",
    "LatencySample",
    "LoopbackServer",
    "LoopbackServerError",
    "create_app",
    "profile_names",
    "serve",
]


def __getattr__(name: str) -> Any:
    # The server pulls in FastAPI and uvicorn; import it only when it is asked for.
    if name in ("create_app", "serve"):
        from langchain_disco.testing import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
