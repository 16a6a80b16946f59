"""Drive the async core from synchronous code without a second implementation.

Sync calls (`invoke`, `stream`, `batch`) run the async generator on one long-lived event loop in
a daemon thread. One loop (rather than `asyncio.run` per call) keeps loop-bound resources such
as the OpenAI client's connection pool valid across calls, and works even when the caller's
thread already runs an event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="disco-sync-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def iterate(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Iterate an async iterator from sync code; closing this iterator closes that one."""
    loop = background_loop()
    agen = factory()

    async def step() -> T:
        return await agen.__anext__()

    async def close() -> None:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()

    try:
        while True:
            future = asyncio.run_coroutine_threadsafe(step(), loop)
            try:
                item = future.result()
            except StopAsyncIteration:
                return
            except BaseException:
                future.cancel()
                raise
            yield item
    finally:
        asyncio.run_coroutine_threadsafe(close(), loop).result()
