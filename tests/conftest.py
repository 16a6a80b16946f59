"""Shared fixtures: the real local model (one per test session) and clean DISCO_* env."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from langchain_disco import LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer
from tests._redis import redis_server  # noqa: F401  (the fleet tests' real redis-server)

# One llama.cpp thread each for the in-process model and the loopback server's model, so the
# two really run side by side on a 2-core machine instead of fighting for the same cores.
LOCAL_THREADS = 1


@pytest.fixture(autouse=True)
def _no_disco_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests configure models explicitly; a developer's DISCO_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)
    # Learned profiles stay in memory: no test reads or writes the user's profile cache.
    monkeypatch.setenv("DISCO_PERSIST_PROFILES", "false")
    # `auto` probes the server in the background: a test that counts the requests a server
    # saw asks for it explicitly (tests/integration/test_continuation_auto.py).
    monkeypatch.setenv("DISCO_REMOTE_CONTINUATION", "none")


@pytest.fixture(scope="session")
def local_endpoint() -> Iterator[LlamaCppEndpoint]:
    """The embedded Gemma 3 270M, shared like a device is: one model, one queue."""
    endpoint = LlamaCppEndpoint.shared(None, n_ctx=2048, n_threads=LOCAL_THREADS)
    # Loaded up front, so no test measures the one-off model load as a TTFT or a stall.
    asyncio.run(endpoint.load())
    yield endpoint


@pytest.fixture(scope="session")
def loopback() -> Iterator[LoopbackServer]:
    """The loopback OpenAI-compatible server (real HTTP, real llama.cpp) for the whole session."""
    with LoopbackServer(latency_profile="none", seed=0, n_threads=LOCAL_THREADS) as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackServer) -> Iterator[LoopbackServer]:
    """The session's loopback server with a clean request log and no faults armed."""
    loopback.clear_faults()
    loopback.clear_requests()
    yield loopback
    loopback.clear_faults()
