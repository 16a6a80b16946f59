"""The local endpoint against the real Gemma 3 270M model through llama-cpp-python."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_disco import GenerationParams, LlamaCppEndpoint, StreamStats

GREEDY = dict(temperature=0.0, seed=7)
MESSAGES = [SystemMessage("You are terse."), HumanMessage("List three colours of the sky.")]


async def collect(
    endpoint: LlamaCppEndpoint, max_tokens: int, prefix: str = ""
) -> tuple[list[str], StreamStats]:
    stats = StreamStats()
    params = GenerationParams(max_tokens=max_tokens, **GREEDY)  # type: ignore[arg-type]
    deltas = [d async for d in endpoint.stream(MESSAGES, params, stats, prefix=prefix)]
    return deltas, stats


@pytest.mark.parametrize("cut", [15, 5, 27])
async def test_continuation_is_text_exact_under_greedy_sampling(
    local_endpoint: LlamaCppEndpoint, cut: int
) -> None:
    """40 tokens straight == `cut` tokens, then continued from their *text* for the rest.

    Text-exact by construction (the continuation sees the rendered template + the delivered
    text, re-tokenised). It is token-exact too whenever re-tokenising the delivered text gives
    back the generated tokens, which we also check: Gemma's tokenizer is canonical on its own
    output here, so the model sees the same context and greedy decoding picks the same tokens.
    """
    straight, s_stats = await collect(local_endpoint, 40)
    head, h_stats = await collect(local_endpoint, cut)
    tail, t_stats = await collect(local_endpoint, 40 - cut, prefix="".join(head))
    assert "".join(head) + "".join(tail) == "".join(straight)
    assert s_stats.output_tokens == 40
    assert h_stats.output_tokens + t_stats.output_tokens == 40
    # The continuation's prompt is the original prompt plus exactly the `cut` delivered tokens.
    assert t_stats.input_tokens == s_stats.input_tokens + cut


async def test_cancelling_the_consumer_stops_generation_within_a_token(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    stats = StreamStats()
    params = GenerationParams(max_tokens=400, **GREEDY)  # type: ignore[arg-type]
    got_three = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in local_endpoint.stream(MESSAGES, params, stats):
            n += 1
            if n == 3:
                got_three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_three.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The stream's cleanup waits for the worker: by now it is idle, a token or so later.
    assert not local_endpoint.busy
    assert local_endpoint.pending == 0
    assert stats.output_tokens <= 3 + 2
    assert stats.finish_reason is None


async def test_a_stream_cancelled_again_while_it_stops_still_waits_for_its_worker(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    # A race cancels its loser, then closing the request cancels every task again: the second
    # cancellation lands while the stream waits for its worker to stop. (Seen in CI: the
    # request was gone and the device still generating.)
    params = GenerationParams(max_tokens=400, **GREEDY)  # type: ignore[arg-type]
    got_three = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in local_endpoint.stream(MESSAGES, params, StreamStats()):
            n += 1
            if n == 3:
                got_three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_three.wait(), 30)
    cancels = 0
    async with asyncio.timeout(30):
        while not task.done():  # cancel at every step of the loop until it is done
            task.cancel()
            cancels += 1
            await asyncio.sleep(0)
    assert cancels >= 2  # the stream did wait for its worker after the first one
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not local_endpoint.busy
    assert local_endpoint.pending == 0


async def test_requests_queue_behind_a_running_generation_and_report_the_wait(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    first_started = asyncio.Event()
    first_stats, second_stats = StreamStats(), StreamStats()
    params = GenerationParams(max_tokens=30, **GREEDY)  # type: ignore[arg-type]

    async def first() -> None:
        async for _ in local_endpoint.stream(MESSAGES, params, first_stats):
            first_started.set()

    async def second() -> None:
        await first_started.wait()
        assert local_endpoint.pending == 1
        async for _ in local_endpoint.stream(MESSAGES, params, second_stats):
            pass

    await asyncio.wait_for(asyncio.gather(first(), second()), 60)
    assert first_stats.queue_wait_s < 0.05
    # The second waited for most of the first generation (30 tokens at tens of ms each).
    assert second_stats.queue_wait_s > 0.1
    assert local_endpoint.pending == 0


def _long_prompt(topic: str) -> list[HumanMessage]:
    # About 1,300 tokens; each topic starts differently, so no KV-cache prefix is shared.
    return [HumanMessage(f"{topic}: " + " ".join(f"{topic} fact number {i}." for i in range(170)))]


async def test_a_stream_cancelled_during_its_prefill_frees_the_device_within_a_chunk(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    params = GenerationParams(max_tokens=1, temperature=0.0)
    # The yardstick, in this run: how long this prefill takes when it is not cancelled.
    loop = asyncio.get_running_loop()
    started = loop.time()
    [_ async for _ in local_endpoint.stream(_long_prompt("Rivers"), params, StreamStats())]
    full_prefill_s = loop.time() - started

    async def consume() -> None:
        async for _ in local_endpoint.stream(_long_prompt("Mountains"), params, StreamStats()):
            pass

    task = asyncio.create_task(consume())
    llama = local_endpoint._llama
    async with asyncio.timeout(30):  # until the prefill is under way (its first chunk is in)
        while not (local_endpoint.busy and llama.n_tokens >= 128):  # noqa: ASYNC110 - a thread's state
            await asyncio.sleep(0.01)
    task.cancel()
    cancelled_at = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await local_endpoint.wait_idle(30)
    tail_s = loop.time() - cancelled_at
    assert tail_s < full_prefill_s / 3, (tail_s, full_prefill_s)
    assert local_endpoint.pending == 0 and not local_endpoint.busy
