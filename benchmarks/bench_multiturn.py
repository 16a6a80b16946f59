"""Multi-turn chat and an agent loop live: cache-aware dispatch against cache-blind.

A chat or an agent resends its growing conversation every call; llama.cpp reuses the KV cache
of the common prefix and a provider's prompt cache bills (and serves) a known prefix for less.
This runs, through `DiscoChatModel` (`generalized`, budget 0.5 of server spend) with the
embedded local model and a loopback remote with lepton-7b latencies (echo backend, its emulated
prompt cache on), twice in one process: *aware* (what the package does) and *blind* (both
sides' caches hidden from dispatch and from learning: what it did before; the caches still act):

- a 5-turn chat over a ~900-token context, then a fresh prompt of the same size: per turn the
  device's predicted TTFT as dispatch saw it, the action, winner, TTFT and server spend, and what
  the learned device line predicts for a fresh prompt afterwards against its measured TTFT;
- an agent loop of 10 tool-using steps over a ~1,100-token system prompt (each step: a request,
  a calculator call, its result, the model's reply: 20 model calls): per call the same figures.

    python benchmarks/bench_multiturn.py            # writes docs/benchmarks.md, *Multi-turn*
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import datetime
import operator
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from langchain_disco import DiscoChatModel, GenerationParams, LlamaCppEndpoint, StreamStats
from langchain_disco.bench._measure import machine_info
from langchain_disco.bench._page import replace_section
from langchain_disco.endpoints.base import PromptCacheView, StreamItem
from langchain_disco.scheduling.server_cache import NO_MATCH, PrefixMatch, ServerPrefixCache
from langchain_disco.testing import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
HEADING = "## Multi-turn chat and an agent loop: what each side has cached"
CONTEXT = "The river carries sand and stones down to the sea every spring. " * 60
QUESTIONS = ("Where does the sand go?", "And the stones?", "When?", "Why?", "Who sees it?")
FRESH = "Birds fly south in the autumn, over hills and lakes. " * 70
AGENT = (
    "You are a bookkeeping agent. For every item the user adds, call the calculator with the "
    "item's arithmetic, then confirm the result in one short sentence. "
    + " ".join(
        f"Ledger rule {i}: entries are kept in whole units and rounded down." for i in range(70)
    )
)
AGENT_STEPS = 10
AGENT_NOTE = (
    " In the agent loop cache-aware dispatch saved nothing in this run (+1% spend, me"
    "an TTFT within 2%): a device tool call's TTFT includes building its grammar, whi"
    "ch the device line learns as prefill (it then predicted 9-19 s for calls that to"
    "ok 3.6-6.1 s), so after the first local step the policy raced again; and a race "
    "the server wins leaves the device's KV cache holding the device's own half-gener"
    "ated call, not the server's answer, so the next call shares only the prefix up t"
    "o it (the *device cached* column falls back to 2). Both are open work."
)
"""Observed in the run that docs/benchmarks.md shows; revisit when it changes."""


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    raise ValueError("only numbers and + - * / are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '17 * 23'."""
    try:
        return str(_evaluate(ast.parse(expression, mode="eval").body))
    except (ValueError, SyntaxError, ZeroDivisionError) as exc:
        return f"error: {exc}"


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


class CacheBlindServerMemory(ServerPrefixCache):
    """The server's prompt cache hidden from dispatch: nothing is ever expected cached."""

    def match(self, prefixes: object, now_s: float) -> PrefixMatch:  # type: ignore[override]
        return NO_MATCH


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
    server_cached_tokens: int = 0


def _turn(label: str, tokens: int, predicted: float, report: dict) -> Turn:
    remote = report["endpoints"].get("remote", {})
    return Turn(
        label,
        tokens,
        report["endpoints"].get("local", {}).get("cached_input_tokens", 0),
        predicted,
        report["action"],
        report["winner"],
        report["ttft_s"],
        report["cost"]["server_usd"],
        remote.get("cached_input_tokens", 0),
    )


def _model(local: LlamaCppEndpoint, server: LoopbackServer, *, blind: bool, **kw: object):
    model = DiscoChatModel(
        local=local,
        policy="generalized",
        budget=0.5,
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        temperature=0.0,
        persist_profiles=False,
        **kw,
    )
    if blind:
        model.scheduler.server_cache = CacheBlindServerMemory()
    return model


def _predicted_device_s(model: DiscoChatModel, local: LlamaCppEndpoint, messages, params) -> float:
    """The device line's TTFT for what dispatch is told the device would prefill."""
    view = local.prompt_cache(messages, params)
    estimate = local.estimate_input_tokens(messages)
    cached = min(round(estimate * view.cached_share()), estimate - 1) if view else 0
    return model.scheduler.profiles.device.predict_ttft_s(max(estimate - cached, 1))


async def _run_agent(local: LlamaCppEndpoint, server: LoopbackServer, *, blind: bool) -> list[Turn]:
    """10 steps of request, tool call, tool result, reply; the device's tool choice follows
    the fixed rule a small model needs (call unless the last message is a tool result)."""
    model = _model(local, server, blind=blind, max_tokens=48)
    agent = model.bind_tools([calculator])
    params = GenerationParams(max_tokens=48)
    messages: list[BaseMessage] = [SystemMessage(AGENT)]
    turns: list[Turn] = []
    for step in range(AGENT_STEPS):
        messages.append(HumanMessage(f"Add item {step}: {3 + step} times {7 + 2 * step}."))
        for call in ("call", "reply"):
            predicted = _predicted_device_s(model, local, messages, params)
            tokens = local.count_prompt_tokens(messages)
            reply = await agent.ainvoke(messages)
            report = reply.response_metadata["disco_report"]
            turns.append(_turn(f"step {step} {call}", tokens, predicted, report))
            messages.append(reply)
            if call == "call":
                tool_calls = getattr(reply, "tool_calls", None) or []
                if not tool_calls:  # no call made: the step ends with its text
                    break
                for tc in tool_calls:
                    result = calculator.invoke(tc["args"])
                    messages.append(ToolMessage(str(result), tool_call_id=tc["id"]))
    return turns


async def _run_arm(
    local: LlamaCppEndpoint, server: LoopbackServer, *, blind: bool
) -> tuple[list[Turn], float]:
    model = _model(local, server, blind=blind, max_tokens=8)
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
        predicted = _predicted_device_s(model, local, messages, params)
        tokens = local.count_prompt_tokens(messages)
        reply = await model.ainvoke(messages)
        report = reply.response_metadata["disco_report"]
        label = f"turn {i}" if question is not None else "fresh"
        turns.append(_turn(label, tokens, predicted, report))
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


Results = dict[str, tuple[list[Turn], float, float, list[Turn]]]


async def measure(latency_scale: float) -> Results:
    results = {}
    with LoopbackServer(
        backend="echo",
        latency_profile="lepton-7b",
        latency_scale=latency_scale,
        seed=0,
        prompt_cache=True,
    ) as server:
        for arm, cls in (("aware", LlamaCppEndpoint), ("blind", CacheBlindEndpoint)):
            blind = arm == "blind"
            server.clear_prompt_cache()
            local = cls(rule_based_tool_choice=True)
            await local.load()
            turns, predicted_fresh = await _run_arm(local, server, blind=blind)
            measured_fresh = await _measured_fresh_ttft(local)
            agent = await _run_agent(local, server, blind=blind)
            results[arm] = (turns, predicted_fresh, measured_fresh, agent)
            await local.aclose()
    return results


def _rows(arm: str, turns: list[Turn]) -> list[str]:
    return [
        f"| {arm} | {t.label} | {t.prompt_tokens} | {t.cached_tokens} | "
        f"{t.server_cached_tokens} | {t.predicted_device_s:.3f} | {t.action} | {t.winner} | "
        f"{t.ttft_s:.3f} | {t.server_usd:.2e} |"
        for t in turns
    ]


_HEADER = [
    "| arm | request | prompt tokens | device cached | server cached | predicted device (s) | "
    "action | winner | TTFT (s) | server USD |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def _summary(results: Results, which: int) -> list[str]:
    lines = [
        "| arm | requests | mean TTFT (s) | p90 TTFT (s) | server USD | vs blind |",
        "|---|---|---|---|---|---|",
    ]
    blind_usd = sum(t.server_usd for t in results["blind"][which])  # type: ignore[union-attr]
    for arm, result in results.items():
        turns: list[Turn] = result[which]  # type: ignore[assignment]
        ttfts = sorted(t.ttft_s for t in turns)
        usd = sum(t.server_usd for t in turns)
        p90 = ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))]
        change = f"{(usd / blind_usd - 1) * 100:+.0f}% spend" if blind_usd > 0 else "-"
        lines.append(
            f"| {arm} | {len(turns)} | {sum(ttfts) / len(ttfts):.3f} | {p90:.3f} | "
            f"{usd:.2e} | {change} |"
        )
    return lines


def section(results: Results, command: str) -> str:
    m = machine_info()
    lines = [
        HEADING,
        "",
        "Generated by `benchmarks/bench_multiturn.py`; do not edit this section by hand.",
        "",
        f"- command: `{command}`; run {datetime.date.today().isoformat()}.",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}.",
        "",
        "Through `generalized` at budget 0.5 of server spend: the embedded local model and a "
        "loopback remote with lepton-7b latencies (echo backend; times x the command's latency "
        "scale) and its emulated prompt cache (OpenAI's rule: 128-token blocks from 1,024 "
        "tokens; the uncached part's prefill at 10,000 tokens/s added to the sampled TTFT), "
        "one live run per arm, both arms in one process. *Aware* is the package; *blind* hides "
        "both caches from dispatch and the device's from learning (the behaviour before; the "
        "caches still act, and the bill is what the server reported). *Predicted device* is the "
        "device line's TTFT for what dispatch took the device to prefill; *device cached* and "
        "*server cached* are what the runs reused (0 for a side that did not run or, blind on "
        "the device, is not told).",
        "",
        "### A 5-turn chat, then a fresh prompt",
        "",
        "A ~900-token context, five short follow-up questions, then a new conversation of the "
        "same size.",
        "",
        *_HEADER,
    ]
    for arm, (turns, _, _, _) in results.items():
        lines += _rows(arm, turns)
    lines += [
        "",
        *_summary(results, 0),
        "",
        "| arm | line at the fresh prompt (s) | measured fresh device TTFT (s) |",
        "|---|---|---|",
    ]
    for arm, (_, predicted, measured, _) in results.items():
        lines.append(f"| {arm} | {predicted:.3f} | {measured:.3f} |")
    lines += [
        "",
        f"### An agent loop of {AGENT_STEPS} tool-using steps",
        "",
        "A ~1,100-token system prompt; each step adds a request, the model calls a calculator "
        "tool (grammar-constrained on the device; both sides follow the fixed rule a small "
        "model needs: call a tool unless the last message is a tool result), the result goes "
        "back, and the model replies: two calls per step, each resending the conversation.",
        "",
        *_HEADER,
    ]
    for arm, (_, _, _, agent) in results.items():
        lines += _rows(arm, agent)
    lines += [
        "",
        *_summary(results, 3),
        "",
        "A device's cache only pays when the device holds the conversation: it prefilled the "
        "turn (a race it won, or a loser that got part-way: what it evaluated stays cached) "
        "and, for the next turn's reply, generated the previous one. When a much faster "
        "server wins every race while the device is still prefilling, nothing is cached on "
        "the device and both arms decide alike. One live run per arm on a shared 2-core "
        "machine: TTFTs vary by tens of percent between runs." + AGENT_NOTE,
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
