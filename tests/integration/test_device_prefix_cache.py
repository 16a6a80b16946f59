"""Multi-turn chats on the real local model: dispatch knows what the device's KV cache holds,
and cached turns never teach the device line that a whole prompt prefills in a few ms."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.endpoints.base import GenerationParams, PromptCacheView, StreamStats
from langchain_disco.testing import LoopbackServer
from tests._faulty import Recording

pytestmark = pytest.mark.llama

CONTEXT = "The river carries sand and stones down to the sea every spring. " * 60  # ~900 tok


async def _answer(
    local: LlamaCppEndpoint, messages: list[BaseMessage], params: GenerationParams
) -> tuple[str, StreamStats]:
    stats = StreamStats()
    parts = [str(item) async for item in local.stream(messages, params, stats)]
    return "".join(parts), stats


async def test_the_endpoint_predicts_exactly_the_prefix_it_then_reuses(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    params = GenerationParams(max_tokens=3, temperature=0.0)
    first: list[BaseMessage] = [SystemMessage(CONTEXT), HumanMessage("Where does the sand go?")]
    answer, stats = await _answer(local_endpoint, first, params)
    follow_up = [*first, AIMessage(answer), HumanMessage("And the stones?")]
    view = local_endpoint.prompt_cache(follow_up, params)
    assert view is not None
    # Everything the first turn prefilled is still there for the follow-up.
    assert view.cached_tokens >= stats.input_tokens - 1
    assert view.cached_tokens < view.prompt_tokens
    _, again = await _answer(local_endpoint, follow_up, params)
    assert (again.input_tokens, again.cached_input_tokens) == (
        view.prompt_tokens,
        view.cached_tokens,
    )
    # A different conversation shares only the template's opening with it.
    fresh = [SystemMessage("Count the birds. " * 40), HumanMessage("How many?")]
    other = local_endpoint.prompt_cache(fresh, params)
    assert other is not None and other.cached_tokens < 8


def _chat_model(local: LlamaCppEndpoint, server: LoopbackServer, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {
        "policy": "length_threshold",
        "budget": 0.5,
        "remote_base_url": server.base_url,
        "remote_model": server.model_name,
        "temperature": 0.0,
        "max_tokens": 3,
    }
    return DiscoChatModel(local=local, **{**params, **kw})


async def test_follow_up_turns_are_dispatched_on_their_uncached_part_and_learned_so(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = _chat_model(local_endpoint, server)
    device = model.scheduler.profiles.device
    # Its own opening: the session's model may hold another test's context.
    opening = "This chat is about a river. "
    messages: list[BaseMessage] = [
        SystemMessage(opening + CONTEXT),
        HumanMessage("Question 0: where?"),
    ]
    params = GenerationParams(max_tokens=3)
    reasons, tokens = [], []
    for turn in range(5):
        # What dispatch will be told, and what the line (as it is now) makes of it.
        view = local_endpoint.prompt_cache(messages, params)
        assert view is not None
        estimate = local_endpoint.estimate_input_tokens(messages)
        cached = min(round(estimate * view.cached_share()), estimate - 1)
        uncached_s = device.predict_ttft_s(max(estimate - cached, 1))
        whole_s = device.predict_ttft_s(estimate)
        reply = await model.ainvoke(messages)
        report = reply.response_metadata["disco_report"]
        reasons.append(report["reason"])
        local = next(e["ttft_s"] for e in report["expected"] if e["action"] == "local")
        # Dispatch estimated the device on the uncached part: a follow-up far below the whole.
        assert local == pytest.approx(uncached_s, rel=1e-9)
        if turn:
            assert local < 0.5 * whole_s, (turn, local, whole_s)
        run = report["endpoints"]["local"]  # length_threshold starts the device every turn
        tokens.append((run["input_tokens"], run["cached_input_tokens"]))
        messages = [*messages, AIMessage(str(reply.content)), HumanMessage(f"Question {turn + 1}?")]
    # Turn 0 is a fresh prompt (the template's opening aside); every follow-up reused the
    # conversation so far, as predicted.
    assert tokens[0][1] < 8, tokens
    assert all(cached > 0.8 * total for total, cached in tokens[1:]), tokens
    assert all("uncached prompt" in r for r in reasons[1:]), reasons
    # A fresh prompt of the same length: the line learned from cached turns still predicts it
    # (fitted on the tokens evaluated, not on the whole prompt: it predicted 1 ms for 1.26 s).
    fresh = [SystemMessage("Birds fly south in the autumn, " * 110), HumanMessage("Why?")]
    view = local_endpoint.prompt_cache(fresh, GenerationParams(max_tokens=3))
    assert view is not None and view.cached_tokens < 8
    assert view.prompt_tokens > 0.8 * tokens[0][0]
    # The line is on the scale of the request's own prompt estimate, as dispatch asks it.
    predicted = device.predict_ttft_s(local_endpoint.estimate_input_tokens(fresh))
    measured = await _fresh_ttft(local_endpoint, fresh)
    assert measured / 3 < predicted < 3 * measured, (predicted, measured)


async def _fresh_ttft(local: LlamaCppEndpoint, messages: list[BaseMessage]) -> float:
    """The device's TTFT for `messages` with nothing of them cached (another prompt first)."""
    await _answer(local, [HumanMessage("Something else entirely.")], GenerationParams(max_tokens=1))
    stats = StreamStats()
    start = time.monotonic()
    async with contextlib.aclosing(
        local.stream(messages, GenerationParams(max_tokens=1), stats)
    ) as s:
        async for _ in s:
            break
    assert stats.cached_input_tokens < 8
    return time.monotonic() - start - stats.queue_wait_s


class _CacheThatFails(Recording):
    def prompt_cache(
        self, messages: Sequence[BaseMessage], params: GenerationParams
    ) -> PromptCacheView | None:
        raise RuntimeError("the template cannot render this")


async def test_a_device_that_cannot_tell_its_cache_is_planned_as_if_nothing_were_cached(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = _chat_model(_CacheThatFails(local_endpoint), server)
    reply = await model.ainvoke("Hello there.")
    report = reply.response_metadata["disco_report"]
    assert report["winner"] in ("local", "remote") and reply.content
    assert "uncached" not in report["reason"]
