"""The `disco` command line: `disco demo`, `disco serve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from langchain_disco.errors import DiscoError

app = typer.Typer(
    name="disco",
    help="langchain-disco: hybrid device-server LLM streaming for LangChain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Wide enough for the summary tables when output is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 120)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/] {exc}")
    return typer.Exit(code=2)


@app.command()
def demo(
    latency_profile: Annotated[
        str, typer.Option(help="measured provider latency replayed by the loopback remote")
    ] = "lepton-7b",
    seed: Annotated[int, typer.Option(help="seed of the latency samples")] = 0,
    max_tokens: Annotated[int, typer.Option(min=1, help="answer length cap")] = 32,
) -> None:
    """Race the embedded local model against the loopback remote through a LangChain chain."""
    from langchain_disco._demo import run_demo

    try:
        run_demo(latency_profile, seed, max_tokens, console)
    except DiscoError as exc:
        raise _fail(exc) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="bind address (loopback only by default)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 8000,
    model_path: Annotated[
        Path | None, typer.Option(help="GGUF file; default: the embedded Gemma 3 270M")
    ] = None,
    latency_profile: Annotated[str, typer.Option(help="measured provider latency")] = "none",
    latency_scale: Annotated[float, typer.Option(min=0.0, help="multiplies delays")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the latency samples")] = 0,
    n_threads: Annotated[int, typer.Option(min=1, help="llama.cpp threads")] = 1,
) -> None:
    """Serve the loopback OpenAI-compatible API (a real llama.cpp model) until Ctrl-C."""
    from langchain_disco.testing.latency import LatencyProfile
    from langchain_disco.testing.server import serve as run_server

    try:
        LatencyProfile(latency_profile, scale=latency_scale)  # validate before loading a model
        run_server(
            host=host,
            port=port,
            model_path=model_path,
            latency_profile=latency_profile,
            latency_scale=latency_scale,
            seed=seed,
            n_threads=n_threads,
            on_ready=lambda p: console.print(f"serving on http://{host}:{p}/v1"),
        )
    except DiscoError as exc:
        raise _fail(exc) from None


def main() -> None:  # pragma: no cover - console-script shim
    app()
