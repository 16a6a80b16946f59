"""`LoopbackServer`: the loopback API in a child process, for tests and demos.

A subprocess rather than a thread, because the server runs its own llama.cpp model (or, with
``backend="echo"``, hundreds of model-free streams): in another process it cannot hold the GIL
or the event loop of the code under test, exactly like a real remote API. The child binds
127.0.0.1 on a free port and prints a ready line with the port once the model is loaded, so
start-up waits for a fact, not for a sleep.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from langchain_disco.errors import DiscoError
from langchain_disco.testing._prompt_cache import (
    DEFAULT_BLOCK_TOKENS,
    DEFAULT_MAX_BLOCKS,
    DEFAULT_MIN_TOKENS,
    DEFAULT_PREFILL_TOK_S,
)
from langchain_disco.testing.echo import DEFAULT_ECHO_TOK_S

READY_PREFIX = "DISCO_LOOPBACK_READY"
"""The child prints ``DISCO_LOOPBACK_READY <port>`` on stdout once it serves."""
_READY_LINE = re.compile(rf"{READY_PREFIX} (\d+)")


class LoopbackServerError(DiscoError):
    """The loopback server did not start, or a control request to it failed."""


class LoopbackServer:
    """Start ``python -m langchain_disco.testing`` and drive its fault switches and request log.

    Use as a context manager (or call `start()` and `stop()`)::

        with LoopbackServer(latency_profile="none") as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test")

    `backend="echo"` replaces the llama.cpp model with `EchoEndpoint` (deterministic words at
    `echo_tok_s` tokens/s, no model to load), for benchmarks of the client's own overhead.
    `prompt_cache=True` emulates a provider's prompt cache (`testing._prompt_cache`): a prompt
    sharing a long prefix with a recent one is reported as cached in usage (`usage_shape`
    "openai" or "deepseek") and its TTFT adds only the uncached part's prefill.
    """

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        latency_profile: str = "none",
        latency_scale: float = 1.0,
        seed: int = 0,
        n_threads: int = 1,
        model_name: str = "loopback",
        host: str = "127.0.0.1",
        startup_timeout_s: float = 120.0,
        backend: str = "llama",
        echo_tok_s: float = DEFAULT_ECHO_TOK_S,
        dialect: str = "lenient",
        prompt_cache: bool = False,
        prompt_cache_block_tokens: int = DEFAULT_BLOCK_TOKENS,
        prompt_cache_min_tokens: int = DEFAULT_MIN_TOKENS,
        prompt_cache_max_blocks: int = DEFAULT_MAX_BLOCKS,
        prefill_tok_s: float = DEFAULT_PREFILL_TOK_S,
        usage_shape: str = "openai",
    ) -> None:
        self.host = host
        self.model_name = model_name
        self.startup_timeout_s = startup_timeout_s
        self._args = [
            "--host",
            host,
            "--port",
            "0",
            "--latency-profile",
            latency_profile,
            "--latency-scale",
            str(latency_scale),
            "--seed",
            str(seed),
            "--n-threads",
            str(n_threads),
            "--model-name",
            model_name,
            "--backend",
            backend,
            "--echo-tok-s",
            repr(float(echo_tok_s)),
            "--dialect",
            dialect,
        ]
        if model_path is not None:
            self._args += ["--model-path", str(model_path)]
        if prompt_cache:
            self._args += [
                "--prompt-cache",
                "--prompt-cache-block-tokens",
                str(prompt_cache_block_tokens),
                "--prompt-cache-min-tokens",
                str(prompt_cache_min_tokens),
                "--prompt-cache-max-blocks",
                str(prompt_cache_max_blocks),
                "--prefill-tok-s",
                repr(float(prefill_tok_s)),
                "--usage-shape",
                usage_shape,
            ]
        self._process: subprocess.Popen[str] | None = None
        self._port: int | None = None
        self._ready = threading.Event()
        self._output: deque[str] = deque(maxlen=200)
        self._client: httpx.Client | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        """Start the child and wait (at most `startup_timeout_s`) until it serves."""
        if self._process is not None:
            raise LoopbackServerError("the loopback server is already started")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "langchain_disco.testing", *self._args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        reader = threading.Thread(target=self._read_output, name="disco-loopback-output")
        reader.daemon = True
        reader.start()
        if not self._ready.wait(self.startup_timeout_s) or self._port is None:
            code = self._process.poll()
            self.stop()
            why = (
                f"exited with code {code}"
                if code is not None
                else f"was not ready within {self.startup_timeout_s:g} s"
            )
            raise LoopbackServerError(f"the loopback server {why}; its output:\n{self.output}")
        self._client = httpx.Client(base_url=self.root_url, timeout=10.0)
        return self

    def _read_output(self) -> None:
        """Drain the child's output (so its pipe never fills) and catch the ready line."""
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._output.append(line.rstrip("\n"))
            # Searched, not matched at the start: llama.cpp writes to the same pipe from C,
            # sometimes without a final newline, so the ready line can arrive glued to it.
            match = _READY_LINE.search(line)
            if match and not self._ready.is_set():
                self._port = int(match.group(1))
                self._ready.set()
        self._ready.set()  # the child exited: wake `start()` instead of letting it time out

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the child (graceful), and kill it if it has not exited after `timeout_s`."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise LoopbackServerError("the loopback server is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: where the ``/_disco/...`` control routes live."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI SDK's `base_url`."""
        return f"{self.root_url}/v1"

    @property
    def output(self) -> str:
        """The last lines the child printed (stdout and stderr), for diagnostics."""
        return "\n".join(self._output)

    # -- control -------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._client is None:
            raise LoopbackServerError("the loopback server is not started")
        response = self._client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise LoopbackServerError(
                f"{method} {path} failed with HTTP {response.status_code}: {response.text}"
            )
        return response.json()

    def set_fault(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        """Arm a fault for the next ``count`` chat requests (default 1); returns the armed list.

        ``set_fault("error_status", status=503)``, ``set_fault("stall", after_tokens=3,
        seconds=1.0)``; kinds and fields are those of `langchain_disco.testing.faults`.
        """
        armed: list[dict[str, Any]] = self._call(
            "POST", "/_disco/faults", json={"kind": kind, **fields}
        )["armed"]
        return armed

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._call("DELETE", "/_disco/faults")

    def requests(self) -> list[dict[str, Any]]:
        """The request log since the last `clear_requests()`, oldest first."""
        log: list[dict[str, Any]] = self._call("GET", "/_disco/requests")
        return log

    def clear_requests(self) -> None:
        """Empty the request log (indexes start again at 0)."""
        self._call("DELETE", "/_disco/requests")

    def prompt_cache_state(self) -> dict[str, Any]:
        """What the emulated prompt cache holds: ``blocks``, ``max_blocks``, ``evictions``..."""
        state: dict[str, Any] = self._call("GET", "/_disco/prompt-cache")
        return state

    def clear_prompt_cache(self) -> None:
        """Forget every cached prefix (a cold provider cache)."""
        self._call("DELETE", "/_disco/prompt-cache")

    def wait_for_request_status(
        self,
        request: int | str,
        status: str | tuple[str, ...],
        timeout: float = 10.0,
        *,
        poll_s: float = 0.02,
    ) -> dict[str, Any]:
        """Poll the log until `request` (log index, or completion id) has `status`; return it.

        Raises `TimeoutError`, naming the status last seen, when `timeout` seconds pass first.
        """
        wanted = (status,) if isinstance(status, str) else status
        deadline = time.monotonic() + timeout
        entry: dict[str, Any] | None = None
        while True:
            entry = _find(self.requests(), request)
            if entry is not None and entry["status"] in wanted:
                return entry
            if time.monotonic() >= deadline:
                seen = "no such request" if entry is None else f"status {entry['status']!r}"
                raise TimeoutError(
                    f"request {request!r} did not reach status {status!r} within {timeout:g} s "
                    f"({seen})"
                )
            time.sleep(poll_s)


def _find(log: list[dict[str, Any]], request: int | str) -> dict[str, Any] | None:
    if isinstance(request, int):
        return log[request] if -len(log) <= request < len(log) else None
    return next((entry for entry in log if entry["id"] == request), None)
