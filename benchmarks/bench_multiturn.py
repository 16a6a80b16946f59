"""Multi-turn chat live: cache-aware dispatch against cache-blind, on the embedded model.

A chat resends its growing conversation every turn and llama.cpp reuses the KV cache of the
common prefix. This runs the same 5-turn chat over a ~900-token context, then a fresh prompt of
the same size, through `DiscoChatModel` (`generalized`, budget 0.5 of server spend) with the
embedded local model and a loopback remote with lepton-7b latencies (echo backend), twice in
one process: *aware* (what the package does) and *blind* (the device's cache hidden from
dispatch and from learning: what it did before). Per turn: the device's predicted TTFT for the
request as dispatch saw it, the action, the winner, TTFT and server spend; and what the learned
device line predicts for a fresh 900-token prompt afterwards, against its measured TTFT.

    python benchmarks/bench_multiturn.py            # writes docs/benchmarks.md, *Multi-turn*
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_disco import DiscoChatModel, GenerationParams, LlamaCppEndpoint, StreamStats
from langchain_disco.bench._measure import machine_info
from langchain_disco.bench._page import replace_section
from langchain_disco.endpoints.base import PromptCacheView, StreamItem
from langchain_disco.testing import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
HEADING = "## Multi-turn chat: what the device has cached"
CONTEXT = "The river carries sand and stones down to the sea every spring. " * 60
QUESTIONS = ("Where does the sand go?", "And the stones?", "When?", "Why?", "Who sees it?")
FRESH = "Birds fly south in the autumn, over hills and lakes. " * 70


class CacheBlindEndpoint(LlamaCppEndpoint):
    """The local model with its cache hidden: dispatch is told nothing is cached, and runs
    report no reused tokens (so the line learns a cached turn as a whole prompt)."""

    def prompt_cache(
        self, messages: Sequence[BaseMessage], params: GenerationParams
    ) -> PromptCacheView | None:
        return None

    async def stream(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stats: StreamStats,
        *,
        prefix: str = "",
    ) -> AsyncIterator[StreamItem]:
        try:
            items = super().stream(messages, params, stats, prefix=prefix)
            async with contextlib.aclosing(items):  # type: ignore[type-var]
                async for item in items:
                    yield item
        finally:
            stats.cached_input_tokens = 0


@dataclass(frozen=True)
class Turn:
    label: str
    prompt_tokens: int
    cached_tokens: int
    predicted_device_s: float
    action: str
    winner: str
    ttft_s: float
    server_usd: float


async def _run_arm(local: LlamaCppEndpoint, server: LoopbackServer) -> tuple[list[Turn], float]:
    model = DiscoChatModel(
        local=local,
        policy="generalized",
        budget=0.5,
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        temperature=0.0,
        max_tokens=8,
        persist_profiles=False,
    )
    device = model.scheduler.profiles.device
    params = GenerationParams(max_tokens=8)
    turns: list[Turn] = []
    messages: list[BaseMessage] = [SystemMessage(CONTEXT)]
    for i, question in enumerate((*QUESTIONS, None)):
        if question is None:  # a new conversation of the same size
            messages = [SystemMessage(FRESH), HumanMessage("Where do they go?")]
        else:
            messages = [*messages, HumanMessage(question)]
        # What dispatch is told (the cached share scaled onto the prompt estimate) and what
        # the device line makes of it.
        view = local.prompt_cache(messages, params)
        estimate = local.estimate_input_tokens(messages)
        cached = min(round(estimate * view.cached_share()), estimate - 1) if view else 0
        predicted = device.predict_ttft_s(max(estimate - cached, 1))
        tokens = local.count_prompt_tokens(messages)
        reply = await model.ainvoke(messages)
        report = reply.response_metadata["disco_report"]
        turns.append(
            Turn(
                f"turn {i}" if question is not None else "fresh",
                tokens,
                report["endpoints"].get("local", {}).get("cached_input_tokens", 0),
                predicted,
                report["action"],
                report["winner"],
                report["ttft_s"],
                report["cost"]["server_usd"],
            )
        )
        if question is not None:
            messages = [*messages, AIMessage(str(reply.content))]
    return turns, device.predict_ttft_s(local.estimate_input_tokens(messages))


async def _measured_fresh_ttft(local: LlamaCppEndpoint) -> float:
    """The device alone on a fresh prompt of the same size (nothing of it cached)."""
    await _drain(local, [HumanMessage("Something else entirely.")])
    stats = StreamStats()
    start = time.monotonic()
    messages = [SystemMessage(FRESH), HumanMessage("Where do they go?")]
    items = local.stream(messages, GenerationParams(max_tokens=1), stats)
    async with contextlib.aclosing(items):  # type: ignore[type-var]
        async for _ in items:
            break
    return time.monotonic() - start - stats.queue_wait_s


async def _drain(local: LlamaCppEndpoint, messages: list[BaseMessage]) -> None:
    async for _ in local.stream(messages, GenerationParams(max_tokens=1), StreamStats()):
        pass


async def measure(latency_scale: float) -> dict[str, tuple[list[Turn], float, float]]:
    results = {}
    with LoopbackServer(
        backend="echo", latency_profile="lepton-7b", latency_scale=latency_scale, seed=0
    ) as server:
        for arm, cls in (("aware", LlamaCppEndpoint), ("blind", CacheBlindEndpoint)):
            local = cls()
            await local.load()
            turns, predicted_fresh = await _run_arm(local, server)
            measured_fresh = await _measured_fresh_ttft(local)
            results[arm] = (turns, predicted_fresh, measured_fresh)
            await local.aclose()
    return results


def section(results: dict[str, tuple[list[Turn], float, float]], command: str) -> str:
    m = machine_info()
    lines = [
        HEADING,
        "",
        "Generated by `benchmarks/bench_multiturn.py`; do not edit this section by hand.",
        "",
        f"- command: `{command}`; run {datetime.date.today().isoformat()}.",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}.",
        "",
        "A 5-turn chat over a ~900-token context, then a fresh prompt of the same size, through "
        "`generalized` at budget 0.5 of server spend: the embedded local model and a loopback "
        "remote with lepton-7b latencies (echo backend; times x the command's latency scale), "
        "one live run per arm. *Aware* is the "
        "package; *blind* hides the device's KV cache from dispatch and from learning (the "
        "behaviour before). *Predicted device* is the device line's TTFT for what dispatch "
        "took the device to prefill; *cached* is what the device run reused (0 when the device "
        "did not run or, blind, is not told).",
        "",
        "| arm | request | prompt tokens | cached | predicted device (s) | action | winner | "
        "TTFT (s) | server USD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, (turns, _, _) in results.items():
        for t in turns:
            lines.append(
                f"| {arm} | {t.label} | {t.prompt_tokens} | {t.cached_tokens} | "
                f"{t.predicted_device_s:.3f} | {t.action} | {t.winner} | {t.ttft_s:.3f} | "
                f"{t.server_usd:.2e} |"
            )
    lines += [
        "",
        "| arm | mean TTFT (s) | server USD | line at the fresh prompt (s) | "
        "measured fresh device TTFT (s) |",
        "|---|---|---|---|---|",
    ]
    for arm, (turns, predicted, measured) in results.items():
        mean = sum(t.ttft_s for t in turns) / len(turns)
        usd = sum(t.server_usd for t in turns)
        lines.append(f"| {arm} | {mean:.3f} | {usd:.2e} | {predicted:.3f} | {measured:.3f} |")
    lines += [
        "",
        "A device's cache only pays when the device holds the conversation: it prefilled the "
        "turn (a race it won, or a loser that got part-way: what it evaluated stays cached) "
        "and, for the next turn's reply, generated the previous one. When a much faster "
        "server wins every race while the device is still prefilling, nothing is cached and "
        "both arms decide alike. One live run per arm on a shared 2-core machine: TTFTs vary "
        "by tens of percent between runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, leave the page alone")
    parser.add_argument(
        "--latency-scale", type=float, default=1.0, help="the remote's lepton-7b times x this"
    )
    args = parser.parse_args()
    results = asyncio.run(measure(args.latency_scale))
    command = "python benchmarks/bench_multiturn.py" + (
        f" --latency-scale {args.latency_scale:g}" if args.latency_scale != 1.0 else ""
    )
    text = section(results, command)
    print(text)
    if not args.no_write:
        replace_section(OUT, HEADING, text)


if __name__ == "__main__":
    main()
