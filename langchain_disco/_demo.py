"""`disco demo`: a LangChain chain over DiscoChatModel, racing the local model and a remote.

Runs on the embedded default: the Gemma 3 270M GGUF from PyPI in-process, and the loopback
OpenAI-compatible server (a real HTTP server with its own llama.cpp model whose first token is
delayed by real measured provider latencies). No API key, no download from a model hub.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from rich.console import Console
from rich.table import Table

from langchain_disco.chat_models import DiscoChatModel
from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint
from langchain_disco.testing.loopback import LoopbackServer

COLOURS = {"local": "green", "remote": "cyan"}

_FACTS = (
    "The water cycle moves water between the oceans, the air and the land. Sunlight heats "
    "the sea, water evaporates, rises, cools and condenses into clouds, and falls as rain or "
    "snow, which runs off into rivers or soaks into the ground before returning to the sea. "
)

# The embedded Gemma 3 270M is a *base* model: it continues text, it does not follow
# instructions. Asked "Name a colour." it echoed the question and rambled on. So each prompt is
# the start of a sentence for it to finish, after two finished examples (few-shot), and the
# chain stops it at the end of that sentence, which a base model does not mark by itself.
_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("The capital of France is", "The capital of France is Paris, a city on the river Seine."),
    ("A week has", "A week has seven days, from Monday to Sunday."),
)
_END_OF_SENTENCE = [".", "\n"]
_SUMMARY = "\n\nIn short, the water cycle is"

# Prompts of very different lengths: the device's TTFT grows with the prompt (prefill),
# the server's barely does. That is what the race exploits.
# The last one is asked while another job (a local-only generation) holds the device: a busy
# device queues the request, so the server's first token wins.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("short", "The three primary colours are"),
    ("medium", _FACTS * 3 + _SUMMARY),
    ("long", _FACTS * 12 + _SUMMARY),
    ("very long", _FACTS * 24 + _SUMMARY),
    ("device busy", "A cat is"),
)
_BACKGROUND_JOB = _FACTS * 8 + _SUMMARY


def demo_chain(model: BaseChatModel) -> Runnable[dict[str, str], str]:
    """``prompt | model | StrOutputParser()``, with the few-shot prompt a base model needs."""
    examples = [turn for q, a in _EXAMPLES for turn in (("human", q), ("ai", a))]
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise assistant."), *examples, ("human", "{question}")]
    )
    return prompt | model.bind(stop=_END_OF_SENTENCE) | StrOutputParser()


@dataclass
class _Row:
    label: str
    winner: str
    ttft_s: float
    first_token_s: dict[str, float | None]
    tokens: dict[str, int]
    input_tokens: int
    server_usd: float
    device_j: float


async def _run(console: Console, base_url: str, model_name: str, max_tokens: int) -> list[_Row]:
    model = DiscoChatModel(
        mode="race",
        remote_base_url=base_url,
        remote_model=model_name,
        temperature=0.0,
        max_tokens=max_tokens,
        local_n_threads=1,
    )
    chain = demo_chain(model)
    local = model.local
    assert isinstance(local, LlamaCppEndpoint)
    await local.load()  # measure races, not the one-off model load
    background = DiscoChatModel(local=local, mode="local", max_tokens=4 * max_tokens)
    rows: list[_Row] = []
    for label, question in PROMPTS:
        console.rule(f"[bold]{label}[/] ({len(question)} characters)")
        job: asyncio.Task[None] | None = None
        if label == "device busy":
            generating = asyncio.Event()
            job = asyncio.create_task(_hold_device(background, generating))
            await asyncio.wait_for(generating.wait(), 60)
        report: dict[str, Any] = {}
        async for event in chain.astream_events({"question": question}, version="v2"):
            if event["event"] == "on_chat_model_stream":
                chunk = event["data"]["chunk"]
                endpoints = chunk.response_metadata.get("disco_endpoints") or []
                if chunk.content and endpoints:
                    console.print(
                        chunk.content,
                        style=COLOURS[endpoints[0]],
                        end="",
                        markup=False,  # model text, not rich markup
                        highlight=False,
                    )
                report = chunk.response_metadata.get("disco_report", report)
        console.print()
        if job is not None:
            await job
        runs = report["endpoints"]
        rows.append(
            _Row(
                label=label,
                winner=report["winner"],
                ttft_s=report["ttft_s"],
                first_token_s={k: v["first_token_s"] for k, v in runs.items()},
                tokens={k: v["output_tokens"] for k, v in runs.items()},
                input_tokens=max(v["input_tokens"] for v in runs.values()),
                server_usd=report["cost"]["server_usd"],
                device_j=report["cost"]["device_j"],
            )
        )
    return rows


async def _hold_device(model: DiscoChatModel, generating: asyncio.Event) -> None:
    """Another job on the device: a local-only summary, generating when `generating` is set."""
    async for _chunk in model.astream(_BACKGROUND_JOB):
        generating.set()


def _table(rows: list[_Row]) -> Table:
    table = Table(title="race: the first content token wins, the loser is cancelled")
    table.add_column("prompt")
    for column in ("in tok", "winner", "TTFT s", "local 1st", "remote 1st", "tok l/r"):
        table.add_column(column, justify="right")
    table.add_column("server $", justify="right")
    table.add_column("device J", justify="right")

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in rows:
        table.add_row(
            row.label,
            str(row.input_tokens),
            f"[{COLOURS[row.winner]}]{row.winner}[/]",
            fmt(row.ttft_s),
            fmt(row.first_token_s.get("local")),
            fmt(row.first_token_s.get("remote")),
            f"{row.tokens.get('local', 0)}/{row.tokens.get('remote', 0)}",
            f"{row.server_usd:.2e}",
            f"{row.device_j:.2f}",
        )
    return table


def run_demo(latency_profile: str, seed: int, max_tokens: int, console: Console) -> list[_Row]:
    """Start the loopback remote, race every prompt through a chain, print the summary."""
    console.print(
        f"Starting the loopback remote (latency profile [bold]{latency_profile}[/], "
        f"seed {seed}) and the local model..."
    )
    with LoopbackServer(latency_profile=latency_profile, seed=seed, n_threads=1) as server:
        console.print(
            f"Remote at {server.base_url}. Tokens are coloured by the endpoint that produced "
            "them: [green]local[/] / [cyan]remote[/]."
        )
        rows = asyncio.run(_run(console, server.base_url, server.model_name, max_tokens))
    console.print(_table(rows))
    wins = {name: sum(r.winner == name for r in rows) for name in COLOURS}
    console.print(f"winner counts: local {wins['local']}, remote {wins['remote']}")
    return rows
