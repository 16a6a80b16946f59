"""A Redis outage in the middle of a DiscoChatModel's traffic (issue 18, item 2).

A budgeted model with `DISCO_STATE_URL` serves requests through an in-process echo device and
the loopback server's echo backend (the real `openai` SDK over real HTTP); the redis-server is
stopped after the first third and started again after the second. No request fails, every
answer is the whole answer once, each report says which state it was decided from, and what was
learned during the outage reaches Redis when it is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco import DiscoChatModel  # noqa: E402
from langchain_disco.endpoints.openai import OpenAIEndpoint  # noqa: E402
from langchain_disco.scheduling.profiles import Profiles  # noqa: E402
from langchain_disco.testing import LoopbackServer  # noqa: E402
from langchain_disco.testing.echo import EchoEndpoint  # noqa: E402
from tests._redis import RedisServer, require_redis_server  # noqa: E402
from tests.integration.test_redis_profiles import shared_profiles  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUESTION = "Tell me about rivers."
MAX_TOKENS = 12
PER_PHASE = 8


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(backend="echo", echo_tok_s=2000.0) as server:
        yield server


async def _answer(model: DiscoChatModel) -> tuple[str, dict[str, Any]]:
    chunks = [c async for c in model.astream(QUESTION)]
    text = "".join(str(c.content) for c in chunks)
    return text, chunks[-1].response_metadata["disco_report"]


async def test_a_redis_outage_mid_run_loses_no_request_and_no_text(
    echo_server: LoopbackServer, tmp_path: Path
) -> None:
    expected, _ = await _answer(
        DiscoChatModel(mode="local", local=EchoEndpoint(name="local"), max_tokens=MAX_TOKENS)
    )
    assert len(expected.split()) == MAX_TOKENS
    redis_server = RedisServer(require_redis_server())
    redis_server.start()
    remote = OpenAIEndpoint(
        base_url=echo_server.base_url,
        model=echo_server.model_name,
        continuation="vllm",
        max_retries=0,
        retry_backoff_s=0.0,
    )
    model = DiscoChatModel(
        policy="generalized",
        budget=0.5,
        state_url=redis_server.url,
        state_namespace="outage",
        profile_path=tmp_path / "profiles.json",
        persist_profiles=True,
        local=EchoEndpoint(name="local", ttft_s=0.01),
        remote=remote,
        max_tokens=MAX_TOKENS,
        stall_floor_s=5.0,
    )
    scheduler = model.scheduler
    ledger = scheduler.ledger
    assert ledger is not None and scheduler.shared is not None
    states: list[dict[str, str]] = []
    try:
        for phase in ("up", "down", "back"):
            if phase == "down":
                redis_server.stop()
            elif phase == "back":
                redis_server.start()
            # The background syncs find out within their period; a sync now makes it certain.
            ledger.sync_now()
            scheduler.save()
            for _ in range(PER_PHASE):
                text, report = await _answer(model)
                assert text == expected  # the whole answer, once
                assert report["finished_by"] is not None
                states.append(report["state"])
        up, down, back = (states[i * PER_PHASE] for i in range(3))
        assert up == {"budget": "fleet", "profiles": "fleet"}
        assert down == {"budget": "local", "profiles": "local"}
        assert back == {"budget": "fleet", "profiles": "fleet"}
        # What was learned meanwhile reached the restarted (empty) server: everything this
        # worker knows, which counts all 3 x PER_PHASE prompts.
        scheduler.save()
        shared = shared_profiles(redis_server.url, "outage", "x")
        assert shared is not None
        prior_n = Profiles.prior().prompt_lengths.tokens.n_seen
        assert shared.prompt_lengths.tokens.n_seen == prior_n + 3 * PER_PHASE
        assert ledger.sync_now() and ledger.totals() is not None
    finally:
        scheduler.close()
        await remote.aclose()
        redis_server.stop()
