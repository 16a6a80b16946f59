"""A hostile remote: what it may not break (issue 13, items 1 and 2).

- A server that echoes the caller's `Authorization` header, or the key, in its error bodies:
  the key must appear in nothing we raise, chain, log (DEBUG included), trace or print.
- A cancellation that lands exactly as the response headers arrive: the opened stream must be
  closed, or its connection stays checked out of the pool and the endpoint starves.

The hostile server is a real HTTP server on loopback (the standard library's), driven by the
real openai SDK; only the moment of the cancellation is injected (an httpx response hook), since
no server can time it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.tracers.context import collect_runs
from pydantic import SecretStr

pytest.importorskip("fastapi", reason="the loopback server needs the demo extra")

from langchain_core.messages import HumanMessage

from langchain_disco import DiscoChatModel
from langchain_disco.endpoints import openai as openai_endpoint
from langchain_disco.endpoints.base import GenerationParams, StreamStats
from langchain_disco.endpoints.openai import OpenAIEndpoint
from langchain_disco.errors import EndpointError
from langchain_disco.testing import LoopbackServer
from tests._hostile import exception_chain

KEY = "sk-hostile-test-5f1c9a27d3"


class _AsksToWait(BaseHTTPRequestHandler):
    """429 Too Many Requests with a Retry-After of `server.retry_after` seconds."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.hits += 1  # type: ignore[attr-defined]
        body = b'{"error": {"message": "rate limited"}}'
        self.send_response(429)
        self.send_header("retry-after", self.server.retry_after)  # type: ignore[attr-defined]
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class _EchoesTheKey(BaseHTTPRequestHandler):
    """401 with the Authorization header in the body, or an in-band error quoting the key."""

    mode = "401"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        auth = self.headers.get("authorization", "")
        if self.server.mode == "401":  # type: ignore[attr-defined]
            body = json.dumps({"error": {"message": f"Incorrect API key: {auth}"}}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        error = {"error": {"message": f"quota exceeded for key {auth.removeprefix('Bearer ')}"}}
        self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(params=["401", "inband"])
def hostile(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoesTheKey)
    server.mode = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _assert_no_key(error: BaseException) -> None:
    for e in exception_chain(error):
        assert KEY not in str(e) and KEY not in repr(e), type(e)
        assert all(KEY not in str(arg) for arg in e.args)
    assert KEY not in "".join(traceback.format_exception(error))
    # No SDK error rides along.
    assert all("openai" not in type(e).__module__ for e in exception_chain(error))


async def test_the_key_echoed_by_a_server_appears_in_no_error_log_or_trace(
    hostile: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model = DiscoChatModel(
        mode="remote",
        remote_base_url=hostile,
        remote_api_key=SecretStr(KEY),
        remote_max_retries=1,
        failover=False,
    )
    with collect_runs() as runs, pytest.raises(EndpointError) as info:
        await model.ainvoke("hello")
    _assert_no_key(info.value)
    logging.getLogger(__name__).exception("as a user would log it", exc_info=info.value)
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in (caplog.text or "")
    (run,) = runs.traced_runs
    assert run.error and KEY not in run.error
    assert KEY not in repr(model) and KEY not in str(model.model_dump())


async def test_the_bare_endpoint_raises_only_its_scrubbed_error(hostile: str) -> None:
    endpoint = OpenAIEndpoint(base_url=hostile, model="m", api_key=SecretStr(KEY), max_retries=0)
    with pytest.raises(EndpointError) as info:
        async for _ in endpoint.stream([HumanMessage("hi")], GenerationParams(), StreamStats()):
            pass
    await endpoint.aclose()
    _assert_no_key(info.value)
    assert "***" in str(info.value)  # the server's message is kept, the key masked


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(backend="echo", echo_tok_s=0) as server:
        yield server


async def test_cancelling_as_the_headers_arrive_returns_the_connection_to_the_pool(
    echo_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    victim: list[asyncio.Task[Any]] = []
    cancelled = 0

    async def on_response(_: Any) -> None:
        # Runs when the headers are in, just before `create()` returns the open stream: the
        # consumer is cancelled in the same loop pass, after the stream exists.
        if victim:
            loop.call_soon(victim.pop().cancel)

    real_http_client = openai_endpoint._http_client

    def pooled(max_connections: int | None) -> Any:
        client = real_http_client(max_connections)  # the real pool, of one connection
        client.event_hooks["response"] = [on_response]
        return client

    monkeypatch.setattr(openai_endpoint, "_http_client", pooled)
    endpoint = OpenAIEndpoint(
        base_url=echo_server.base_url,
        model="loopback",
        max_connections=1,
        max_retries=0,
        connect_timeout_s=2.0,
    )
    params = GenerationParams(max_tokens=50)

    async def consume() -> str:
        return "".join(
            [
                str(item)
                async for item in endpoint.stream([HumanMessage("hi")], params, StreamStats())
            ]
        )

    for _ in range(5):
        task = asyncio.create_task(consume())
        victim.append(task)
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled += 1
    # One connection in the pool: had any abandoned stream kept it, this would time out.
    async with asyncio.timeout(30):
        assert await consume()
    await endpoint.aclose()
    assert cancelled == 5


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections and reads the request, then never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


async def test_a_server_that_never_sends_headers_fails_within_the_header_timeout(
    silent_server: str,
) -> None:
    endpoint = OpenAIEndpoint(
        base_url=silent_server, model="m", header_timeout_s=0.5, max_retries=1, retry_backoff_s=0
    )
    stats = StreamStats()
    with pytest.raises(EndpointError, match=r"no response headers within 0.5s") as info:
        async with asyncio.timeout(20):  # the first-token timeout (60 s) is not what ends it
            async for _ in endpoint.stream([HumanMessage("hi")], GenerationParams(), stats):
                pass
    await endpoint.aclose()
    assert stats.attempts == 2  # retried once, as a timeout before the first token is
    _assert_no_key(info.value)


@pytest.fixture
def rate_limited() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AsksToWait)
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_retry_after_longer_than_a_request_may_wait_fails_at_once(
    rate_limited: ThreadingHTTPServer,
) -> None:
    rate_limited.retry_after = "3600"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{rate_limited.server_address[1]}/v1"
    endpoint = OpenAIEndpoint(base_url=url, model="m", max_retries=3, max_retry_after_s=10)
    with pytest.raises(EndpointError, match=r"asked to wait 3600s \(Retry-After\)"):
        async with asyncio.timeout(10):
            async for _ in endpoint.stream([HumanMessage("hi")], GenerationParams(), StreamStats()):
                pass
    await endpoint.aclose()
    assert rate_limited.hits == 1  # not retried: the engine can fail over now instead


async def test_a_short_retry_after_is_honoured_before_the_retry(
    rate_limited: ThreadingHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="langchain_disco")
    rate_limited.retry_after = "1"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{rate_limited.server_address[1]}/v1"
    endpoint = OpenAIEndpoint(base_url=url, model="m", max_retries=1, retry_backoff_s=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(EndpointError, match="HTTP 429"):
        async for _ in endpoint.stream([HumanMessage("hi")], GenerationParams(), StreamStats()):
            pass
    elapsed = loop.time() - started
    await endpoint.aclose()
    assert rate_limited.hits == 2
    assert "retrying in 1.0 s" in caplog.text  # the server's wait, not our 0.01 s backoff
    assert elapsed >= 1.0
