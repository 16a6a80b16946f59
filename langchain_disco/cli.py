"""The `disco` command line: `disco demo`, `disco serve`, `disco bench ...`."""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from langchain_disco.errors import ConfigError, DiscoError


class Backend(str, enum.Enum):
    """What generates the loopback server's answers."""

    llama = "llama"
    echo = "echo"


app = typer.Typer(
    name="disco",
    help="langchain-disco: hybrid device-server LLM streaming for LangChain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks: results print as tables and are written as CSV and JSON.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
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
    from langchain_disco.testing.latency import LatencyProfile

    try:
        LatencyProfile(latency_profile)  # validate before starting a server and loading models
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
    backend: Annotated[
        Backend, typer.Option(help="llama: a real model; echo: model-free words, for benchmarks")
    ] = Backend.llama,
    echo_tok_s: Annotated[
        float, typer.Option(min=0.0, help="echo backend decode rate, tokens/s (0: unpaced)")
    ] = 1000.0,
) -> None:
    """Serve the loopback OpenAI-compatible API (a real llama.cpp model, or echo) until Ctrl-C."""
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
            backend=backend.value,
            echo_tok_s=echo_tok_s,
        )
    except DiscoError as exc:
        raise _fail(exc) from None


@bench_app.command("overhead")
def bench_overhead(
    requests: Annotated[
        int, typer.Option(min=1, help="single-stream requests per path (direct, disco)")
    ] = 100,
    max_tokens: Annotated[int, typer.Option(min=2, help="tokens per answer")] = 64,
    levels: Annotated[
        str, typer.Option(help="concurrent streams per level, comma-separated")
    ] = "1,10,100,500",
    tok_s: Annotated[
        float, typer.Option(min=0.0, help="echo decode rate per stream, tokens/s (0: unpaced)")
    ] = 1000.0,
    warmup: Annotated[int, typer.Option(min=0, help="unrecorded requests per path first")] = 3,
    out: Annotated[Path, typer.Option(help="folder for the CSV and JSON results")] = Path(
        "bench-out/overhead"
    ),
) -> None:
    """The scheduler's own cost: DiscoChatModel vs the bare endpoint, 1 to 500 streams."""
    from langchain_disco.bench import overhead
    from langchain_disco.bench._overhead_report import (
        concurrency_table,
        single_stream_table,
        write_results,
    )

    try:
        options = overhead.OverheadOptions(
            requests=requests,
            max_tokens=max_tokens,
            levels=overhead.parse_levels(levels),
            tok_s=tok_s,
            warmup=warmup,
        )
        _check_writable(out)
        with _progress() as progress:

            def phase(description: str, total: int) -> Callable[[int], None]:
                task = progress.add_task(description, total=total)
                return lambda n: progress.advance(task, n)

            result = overhead.measure_overhead(options, phase)
        console.print(single_stream_table(result))
        console.print(concurrency_table(result))
        written = write_results(result, out)
    except DiscoError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ConfigError(f"cannot write the results to --out {out}: {exc}")) from None
    console.print("results: " + ", ".join(str(p) for p in written))
    if not result.concurrency_ok():
        console.print("[red]some concurrent streams failed[/] (see the errors column)")
        raise typer.Exit(code=1)


def _check_writable(out: Path) -> None:
    """Fail before a long run, not after it, when the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the --out folder {out}: {exc}") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise ConfigError(f"--out {out} is not a writable folder: choose another --out")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def main() -> None:  # pragma: no cover - console-script shim
    app()
