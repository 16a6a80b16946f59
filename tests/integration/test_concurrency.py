"""Many requests at once through one DiscoChatModel: each completes with a correct report."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco.testing import LoopbackServer


class InFlight(AsyncCallbackHandler):
    """Counts chat-model runs in flight, to check `max_concurrency`."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def on_chat_model_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    async def on_llm_end(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self.now -= 1


async def test_fifty_concurrent_requests_complete_with_correct_reports(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = DiscoChatModel(
        mode="race",
        local=local_endpoint,
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        temperature=0.0,
        max_tokens=4,
    )
    counter = InFlight()
    prompts = [f"Say a word about the number {i}." for i in range(50)]
    messages = await model.abatch(prompts, config={"max_concurrency": 10, "callbacks": [counter]})
    assert len(messages) == 50
    assert counter.peak == 10  # the cap was reached and respected
    queued = 0
    for message in messages:
        report = message.response_metadata["disco_report"]
        winner = report["endpoints"][report["winner"]]
        assert message.content and winner["delivered_chunks"] > 0
        assert set(message.response_metadata["disco_endpoints"]) == {report["winner"]}
        assert message.usage_metadata is not None
        assert message.usage_metadata["input_tokens"] == sum(
            run["input_tokens"] for run in report["endpoints"].values()
        )
        queued += report["local_queue"] > 0
    # The device serves one generation at a time: most requests found it busy, and dispatch saw it.
    assert queued > 25
    assert await local_endpoint.wait_idle(30.0)


async def test_many_concurrent_streams_stay_separate(
    local_endpoint: LlamaCppEndpoint, server: LoopbackServer
) -> None:
    model = DiscoChatModel(
        mode="remote",
        local=local_endpoint,
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        temperature=0.0,
        max_tokens=6,
    )

    async def one(i: int) -> tuple[str, str]:
        text = ""
        last: Any = None
        async for chunk in model.astream(f"Tell me about {i}."):
            text += str(chunk.content)
            last = chunk
        return text, str(last.response_metadata["disco_report"]["winner"])

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert all(text and winner == "remote" for text, winner in results)
    # Each stream got its own answer: the server log's texts match what each consumer saw.
    sent = sorted(entry["text_sent"] for entry in server.requests())
    assert sent == sorted(text for text, _ in results)
