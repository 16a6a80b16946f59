"""Closing the async generators a library leaves behind, before we return, not at gc.

The openai SDK stops reading its stream at ``[DONE]`` without closing the async generators it
reads through (its SSE decoder, then httpx's and httpcore's byte streams: a dozen, nested). Each
is closed later by the event loop's async-generator finalizer, one task per generator, one
after the other. On a loop the caller manages (``run_until_complete``, then ``close``) the loop
stops before that chain has run, and ``loop.close()`` reports the rest: "Task was destroyed but
it is pending! ... async_generator_athrow". (A bare `AsyncOpenAI` stream does the same.)

`OwnedGenerators` records every async generator first iterated while `recording()` is active,
in this task and in the tasks it starts meanwhile (a context variable; the thread's
``firstiter`` hook, which asyncio installs per loop run, is wrapped, never replaced), so that
the code that started them can close them itself with `aclose()`.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

_Hook = Callable[[AsyncGenerator[Any, Any]], None]

_recording: contextvars.ContextVar[list[AsyncGenerator[Any, Any]] | None] = contextvars.ContextVar(
    "disco_owned_generators", default=None
)


class OwnedGenerators:
    """The async generators started inside `recording()`; `aclose()` closes them."""

    def __init__(self) -> None:
        self._generators: list[AsyncGenerator[Any, Any]] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the generators first iterated in the body (no `yield` of ours inside it)."""
        _install_hook()
        token = _recording.set(self._generators)
        try:
            yield
        finally:
            _recording.reset(token)

    async def aclose(self) -> None:
        """Close them, outermost first; one still running elsewhere is left to the loop."""
        generators, self._generators = self._generators, []
        for generator in generators:
            # "Already running": the loop closes it. Anything else a library's generator raises
            # while closing must not replace what is propagating (a cancellation, our error).
            with contextlib.suppress(Exception):
                await generator.aclose()


def _install_hook() -> None:
    """Wrap this thread's ``firstiter`` hook (once per loop run: asyncio sets its own then)."""
    hooks = sys.get_asyncgen_hooks()
    if getattr(hooks.firstiter, "_disco_records", False):
        return
    sys.set_asyncgen_hooks(firstiter=_recorder(hooks.firstiter), finalizer=hooks.finalizer)


def _recorder(firstiter: Callable[[AsyncGenerator[Any, Any]], object] | None) -> _Hook:
    def record(generator: AsyncGenerator[Any, Any]) -> None:
        owned = _recording.get()
        if owned is not None:
            owned.append(generator)
        if firstiter is not None:
            firstiter(generator)

    record._disco_records = True  # type: ignore[attr-defined]
    return record
