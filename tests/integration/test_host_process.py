"""What `DiscoChatModel` leaves alone in the process that hosts it: its output and its loops.

Each check runs a small program in a subprocess, because what is under test is process-wide:
the stdout and stderr file descriptors, and what the interpreter prints when an event loop is
closed or garbage-collected and when it exits.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from langchain_disco.testing import LoopbackServer

pytestmark = pytest.mark.timeout(180)


def run_python(source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `source` in a fresh interpreter; its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=150,
    )


# A program that prints numbered lines to both streams from a thread for as long as the model
# loads (the first request) and streams, then says how many it printed.
CHATTER_WHILE_THE_MODEL_LOADS = """
    import sys, threading, time
    from langchain_disco import DiscoChatModel

    done = threading.Event()
    printed = []

    def chatter():
        n = 0
        while not done.is_set():
            print(f"out {n}", flush=True)
            print(f"err {n}", file=sys.stderr, flush=True)
            n += 1
            time.sleep(0.002)
        printed.append(n)

    thread = threading.Thread(target=chatter)
    thread.start()
    model = DiscoChatModel(mode="local", local_n_threads=1, max_tokens=8, temperature=0.0)
    for chunk in model.stream("The three primary colours are"):
        pass
    done.set()
    thread.join()
    print(f"printed {printed[0]}", flush=True)
"""


@pytest.mark.llama
def test_every_line_the_program_prints_while_the_local_model_loads_reaches_its_streams() -> None:
    """llama-cpp-python's `verbose=False` points fds 1 and 2 at /dev/null while it loads."""
    result = run_python(CHATTER_WHILE_THE_MODEL_LOADS)
    assert result.returncode == 0, result.stderr
    out_lines = result.stdout.splitlines()
    assert out_lines[-1].startswith("printed "), result.stdout
    printed = int(out_lines[-1].split()[1])
    assert printed > 10, "the program must have printed throughout the load"
    assert out_lines[:-1] == [f"out {n}" for n in range(printed)]
    err_lines = [line for line in result.stderr.splitlines() if line.startswith("err ")]
    assert err_lines == [f"err {n}" for n in range(printed)]
    # llama.cpp's own log goes to `logging` (DEBUG), not to the program's stderr.
    assert "llama_model_loader" not in result.stderr


# A program that runs one `astream` on an event loop it manages itself, closes that loop the
# way such programs do (`loop.close()`, no `shutdown_asyncgens()`), then collects garbage and
# exits. argv: mode ("local", "remote", "race"), remote base URL, how the consumer reads
# ("all", or "first": it stops after the first chunk and drops the stream).
ASTREAM_ON_A_LOOP_THEN_CLOSE_IT = """
    import asyncio, gc, sys
    from langchain_disco import DiscoChatModel

    mode, base_url, reads = sys.argv[1:4]
    model = DiscoChatModel(
        mode=mode,
        remote_base_url=base_url,
        remote_model="loopback",
        remote_continuation="none",
        local_n_threads=1,
        max_tokens=24,
        temperature=0.0,
    )

    async def consume(stream):
        async for _chunk in stream:
            if reads == "first":
                break

    loop = asyncio.new_event_loop()
    loop.run_until_complete(consume(model.astream("The three primary colours are")))
    loop.close()
    del model, loop
    gc.collect()
    print("exited cleanly", flush=True)
"""

LOOP_ERRORS = ("Event loop is closed", "Exception ignored", "no running event loop")


@pytest.fixture(scope="module")
def echo_remote() -> Iterator[LoopbackServer]:
    """A model-free loopback remote: these programs are about the process, not the answer."""
    with LoopbackServer(backend="echo", latency_profile="none") as server:
        yield server


@pytest.mark.llama
def test_a_local_stream_dropped_on_a_loop_that_is_then_closed_raises_nothing_at_gc(
    echo_remote: LoopbackServer,
) -> None:
    """The generation stops and its stream is collected without touching the closed loop.

    (asyncio itself still reports LangChain's own `astream` generator, which the consumer left
    unclosed, as a destroyed pending task; only `asyncio.run` or `shutdown_asyncgens()` closes
    it, for any chat model.)
    """
    result = run_python(ASTREAM_ON_A_LOOP_THEN_CLOSE_IT, "local", echo_remote.base_url, "first")
    assert result.returncode == 0, result.stderr
    assert "exited cleanly" in result.stdout
    for error in LOOP_ERRORS:
        assert error not in result.stderr, result.stderr


@pytest.mark.llama
@pytest.mark.parametrize(
    "mode",
    ["local", "remote"],
)
def test_a_stream_read_to_the_end_on_a_loop_that_is_then_closed_leaves_nothing_pending(
    echo_remote: LoopbackServer, mode: str
) -> None:
    result = run_python(ASTREAM_ON_A_LOOP_THEN_CLOSE_IT, mode, echo_remote.base_url, "all")
    assert result.returncode == 0, result.stderr
    assert "exited cleanly" in result.stdout
    for error in (*LOOP_ERRORS, "Task was destroyed but it is pending"):
        assert error not in result.stderr, result.stderr


# A bare openai SDK stream read to the end on a loop that is then closed; argv: base URL, and
# "owned" to close the generators it started with `OwnedGenerators` (the fix `OpenAIEndpoint`
# needs), or "sdk" to leave them to the loop.
SDK_STREAM_ON_A_LOOP_THEN_CLOSE_IT = """
    import asyncio, gc, sys
    import openai
    from langchain_disco.endpoints._owned_generators import OwnedGenerators

    base_url, how = sys.argv[1:3]

    async def main():
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
        owned = OwnedGenerators()
        with owned.recording():
            stream = await client.chat.completions.create(
                model="loopback", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            await asyncio.ensure_future(stream.__anext__())  # in a task, as `_within` does
        async for _chunk in stream:
            pass
        await stream.close()
        if how == "owned":
            await owned.aclose()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    gc.collect()
    print("exited cleanly", flush=True)
"""


@pytest.mark.parametrize("how", ["sdk", "owned"])
def test_closing_the_generators_an_sdk_stream_started_leaves_nothing_pending_on_the_loop(
    echo_remote: LoopbackServer, how: str
) -> None:
    """The "sdk" case shows the openai SDK's own leftovers (should it stop leaving them, it
    fails and `OwnedGenerators` can go); "owned" shows that closing them ourselves is enough."""
    result = run_python(SDK_STREAM_ON_A_LOOP_THEN_CLOSE_IT, echo_remote.base_url, how)
    assert result.returncode == 0, result.stderr
    assert "exited cleanly" in result.stdout
    left_pending = "Task was destroyed but it is pending" in result.stderr
    assert left_pending == (how == "sdk"), result.stderr
