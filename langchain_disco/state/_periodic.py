"""A daemon thread that calls one function every few seconds, or sooner when woken.

What syncs with a shared store runs here, off every request's path. A process forked from one
that started it (gunicorn --preload) gets a thread of its own: threads do not survive a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Periodic:
    """`Periodic(fn, every_s, name)`: `fn()` every `every_s`, at once after `wake()`, and a
    last time on `close()`. An exception from `fn` is logged, never raised."""

    def __init__(self, fn: Callable[[], None], every_s: float, name: str) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be > 0")
        self._fn = fn
        self._every_s = every_s
        self._name = name
        self._closed = False
        self._start()
        ref = weakref.ref(self)

        def restart_in_child() -> None:
            periodic = ref()
            if periodic is not None and not periodic._closed:
                periodic._start()

        os.register_at_fork(after_in_child=restart_in_child)

    def _start(self) -> None:
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run `fn` now rather than at the next tick."""
        self._woken.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop, after one last call (bounded by `timeout_s`)."""
        self._closed = True
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            self._woken.wait(self._every_s)
            self._woken.clear()
            self._call()
            if self._stop.is_set():
                return

    def _call(self) -> None:
        try:
            self._fn()
        except Exception:  # the store's fault or ours: never the request path's
            logger.exception("%s failed; retrying at the next tick", self._name)
